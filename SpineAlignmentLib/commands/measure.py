"""``spine-align measure``: re-measure landmark files (JSON in, result JSON / JSON Lines out)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import SpineAlignmentError
from ..pipeline import measure_dict
from ..result import Result, load_json
from . import add_min_confidence, degrees, positive_mm

HELP = "compute the parameters of landmark JSON files (one result JSON, or JSON Lines for several)"


def add_arguments(parser) -> None:
    parser.add_argument("landmarks", nargs="+", type=Path, metavar="LANDMARKS.json",
                        help="landmark files (the result JSON format of protocols.md; only 'landmarks' is required), "
                             "or Slicer .mrk.json files with --image and --protocol")
    parser.add_argument("--protocol", help="protocol ID; default: the file's 'protocol' field")
    parser.add_argument("--spacing", nargs=2, type=positive_mm, metavar=("ROW", "COL"),
                        help="pixel spacing in mm (overrides the file's spacing_mm; labelled manual:user)")
    parser.add_argument("--patient-orientation", help="DICOM Patient Orientation, e.g. A,F (overrides the file)")
    add_min_confidence(parser)
    parser.add_argument("--min-curve", type=degrees, default=None, help="smallest coronal curve reported, degrees (default 5)")
    parser.add_argument("--image", metavar="IMAGE",
                        help="the film a .mrk.json was placed on: its geometry maps the points back to pixels, "
                             "its size and spacing are used (the model's confidences in the file are kept)")
    parser.add_argument("--no-construction", action="store_true", help="leave the drawing constructions out of the output")


def measure_file(path: Path, args) -> Result:
    """Measure one landmark file with the command-line overrides; every error names the file."""
    try:
        return _measure_file(path, args)
    except SpineAlignmentError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise type(exc)(f"{path}: {exc}") from None


def _measure_file(path: Path, args) -> Result:
    if path.name.lower().endswith(".mrk.json"):
        from ..batch import analyze_one
        from ..errors import LandmarkError

        if not args.image or not args.protocol:
            raise LandmarkError(f"{path}: a .mrk.json holds positions in the scene's millimetres; give the film it "
                                "was placed on with --image and the protocol with --protocol.")
        return analyze_one(args.image, args.protocol, None, spacing=args.spacing, landmarks_path=path,
                           patient_orientation=args.patient_orientation, min_confidence=args.min_confidence,
                           min_curve_deg=args.min_curve)
    return measure_dict(
        load_json(path), source=str(path), protocol=args.protocol,
        spacing_mm=tuple(args.spacing) if args.spacing else None, patient_orientation=args.patient_orientation,
        min_confidence=args.min_confidence, min_curve_deg=args.min_curve, image=path.name,
    )


def run(args) -> int:
    construction = not args.no_construction
    if len(args.landmarks) == 1:
        res = measure_file(args.landmarks[0], args)
        print(json.dumps(res.to_dict(construction=construction), indent=1))
        return 0
    # JSON Lines in input order; a bad file (any input error) is reported on stderr and as an error line,
    # the rest go on, and the exit status says that something failed.
    failed = []
    for path in args.landmarks:
        try:
            res = measure_file(path, args)
            sys.stdout.write(json.dumps(res.to_dict(construction=construction)) + "\n")
        except SpineAlignmentError as exc:
            failed.append(str(path))
            print(f"error: {exc}", file=sys.stderr)
            sys.stdout.write(json.dumps({"schema": "spinealignment.error/1", "image": str(path), "error": str(exc)}) + "\n")
    sys.stdout.flush()
    if failed:
        print(f"{len(failed)} of {len(args.landmarks)} files failed: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0
