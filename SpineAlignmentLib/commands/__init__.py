"""Sub-commands of ``spine-align`` (one module each) and the options they share."""

from __future__ import annotations

import argparse


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """Options of every command that analyses images: model, spacing, orientation, flip TTA."""
    parser.add_argument("--model", help="registered model name (default: the protocol's model, if any)")
    parser.add_argument("--spacing", nargs=2, type=float, metavar=("ROW", "COL"),
                        help="pixel spacing in mm for every image (label manual:user); overrides DICOM tags; "
                             "without it non-DICOM images give angles and ratios only")
    parser.add_argument("--patient-orientation", metavar="X,Y",
                        help="DICOM Patient Orientation when files lack it, e.g. L,F (patient's left on image right)")
    parser.add_argument("--flip-tta", action="store_true", help="average the model with its mirrored prediction")
