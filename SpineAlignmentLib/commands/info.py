"""``spine-align info IMAGE``: size, spacing, calibration label, orientation and modality as JSON.

No patient data is printed: the summary is built from the radiograph's safe
metadata only (see :meth:`SpineAlignmentLib.imaging.Radiograph.info`).
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "show an image's size, pixel spacing, calibration label, orientation and modality as JSON (no patient data)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="DICOM, PNG, JPEG, TIFF or NRRD radiograph")
    parser.add_argument(
        "--spacing",
        nargs=2,
        type=float,
        metavar=("ROW", "COL"),
        help="pixel spacing in mm (row, column); overrides DICOM tags; label manual:user",
    )
    parser.add_argument(
        "--patient-orientation",
        metavar="X,Y",
        help="patient direction of image +x and +y as in DICOM Patient Orientation, e.g. L,F "
        "(image right = patient left, image down = feet)",
    )


def run(args: argparse.Namespace) -> int:
    # Imported here so `spine-align --help` stays fast and works without pydicom's pixel plugins.
    from ..imaging import read_radiograph

    radiograph = read_radiograph(
        args.image,
        spacing=tuple(args.spacing) if args.spacing is not None else None,
        patient_orientation=args.patient_orientation,
    )
    info = radiograph.info()
    info["image"] = args.image  # as the user wrote it, not resolved to an absolute path
    json.dump(info, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
