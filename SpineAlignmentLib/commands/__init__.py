"""Sub-commands of ``spine-align`` (one module each) and the options they share."""

from __future__ import annotations

import argparse
import math


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_mm(text: str) -> float:
    """argparse type: one pixel spacing in mm, as :func:`~SpineAlignmentLib.imaging.calibration.validate_spacing` allows."""
    from ..errors import CalibrationError
    from ..imaging.calibration import validate_spacing

    try:
        return validate_spacing(text, text, what="--spacing")[0]
    except CalibrationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def probability(text: str) -> float:
    """argparse type: a finite number in [0, 1] (a confidence threshold)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a confidence between 0 and 1")
    return value


def degrees(text: str) -> float:
    """argparse type: a finite angle in [0, 90] degrees (smallest curve reported)."""
    value = _number(text)
    if not 0.0 <= value <= 90.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an angle between 0 and 90 degrees")
    return value


def add_min_confidence(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-confidence", type=probability, default=None, metavar="C",
                        help="landmarks with a model confidence below C (0..1) are not trusted (default 0.3)")


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """Options of every command that analyses images: model, spacing, orientation, flip TTA."""
    parser.add_argument("--model", help="registered model name (default: the protocol's model, if any)")
    parser.add_argument("--spacing", nargs=2, type=positive_mm, metavar=("ROW", "COL"),
                        help="pixel spacing in mm for every image (label manual:user); overrides DICOM tags; "
                             "without it non-DICOM images give angles and ratios only")
    parser.add_argument("--patient-orientation", metavar="X,Y",
                        help="DICOM Patient Orientation when files lack it, e.g. L,F (patient's left on image right)")
    parser.add_argument("--flip-tta", action="store_true", help="average the model with its mirrored prediction")
    parser.add_argument("--level-anchors", metavar="FILE.csv",
                        help="re-name a model's vertebra chain per film: rows image,level,x,y (the vertebra at x, y "
                             "in image pixels is that level, e.g. T1) or image,shift (-1: the chain is named one "
                             "level too high, its T1 is C7; +1: one level too low); image = the film's path or "
                             "file name (spine-align review writes this file)")
    add_min_confidence(parser)
    parser.add_argument("--save-masks", action="store_true",
                        help="segmentation models (coronal-shoulder): also write <name>.seg.nrrd, the label map on the "
                             "input's pixel grid (0 background, then the protocol's segments; loads in Slicer as a "
                             "segmentation)")


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` of the commands that draw a progress bar on stderr (``-q`` silences it too)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr (-q: none either)")


def shows_progress(args: argparse.Namespace) -> bool:
    """Whether a command draws its progress bar: not with ``-q`` (spine-align's own option) or ``--no-progress``."""
    return not (getattr(args, "quiet", False) or getattr(args, "no_progress", False))
