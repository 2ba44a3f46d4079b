"""``spine-align dataset``: check a training dataset folder, or import a public dataset into the format.

``dataset check DIR --protocol P`` reads every image and landmark file (docs/dataset-format.md) and prints
each file's problems and a summary; it exits 0 when at least one film is usable (warnings allowed) and 2
with one sentence when none is.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "check a training dataset folder (images + landmark files) for a protocol, or import AASCE into the format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..protocols import PROTOCOL_IDS

    sub = parser.add_subparsers(dest="dataset_command", metavar="ACTION")
    check = sub.add_parser("check", help="report per image: unknown or duplicate IDs, points outside the image, "
                                         "order along the spine, facing, calibration; and a summary",
                           description="Check a dataset folder: images (DICOM, PNG, JPEG, TIFF, NRRD) with one "
                                       "<stem>.json or <stem>.mrk.json each, optional pairs.csv and patients.csv.")
    check.add_argument("folder", metavar="DIR", help="dataset folder (searched recursively)")
    check.add_argument("--protocol", required=True, choices=PROTOCOL_IDS, help="protocol the landmarks belong to")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--headers-only", action="store_true",
                       help="read image headers only (faster; a corrupt pixel stream is not found)")
    check.set_defaults(_dataset_run=_check)
    aasce = sub.add_parser("import-aasce", help="write the AASCE training images and labels into the dataset format",
                           description="Copy the AASCE images kept by the label hygiene (fixed corners written "
                                       "fixed) with one <stem>.json each and patients.csv from the AASCE patient "
                                       "keys, into a folder outside the repository.")
    aasce.add_argument("source", metavar="SRC", help="AASCE-layout folder (images/, labels/), e.g. "
                                                     "../shared/datasets/aasce-train")
    aasce.add_argument("--out", required=True, help="dataset folder to write (outside the repository)")
    aasce.add_argument("--split", choices=("train", "val", "all"), default="all",
                       help="the patient-held-out split of 'spine-align train' (same --val-fraction and --seed), "
                            "or all (default)")
    aasce.add_argument("--val-fraction", type=float, default=0.2, help="validation fraction of the split (default 0.2)")
    aasce.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    aasce.add_argument("--limit", type=int, default=None, metavar="N", help="write only the first N images")
    aasce.set_defaults(_dataset_run=_import_aasce)


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "_dataset_run", None)
    if action is None:
        print("spine-align dataset: give an action: check or import-aasce (spine-align dataset --help)",
              file=sys.stderr)
        return 2
    return action(args)


def _check(args: argparse.Namespace) -> int:
    from ..errors import SpineAlignmentError
    from ..io.dataset import read_dataset

    report = read_dataset(args.folder, args.protocol, check_images=not args.headers_only)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(report.format_text())
    if not report.items:
        s = report.summary
        raise SpineAlignmentError(
            f"{args.folder}: no usable film for '{args.protocol}' ({s['images']} images, {s['errors']} errors, "
            f"{s['warnings']} warnings above); fix the files named above or check --protocol.")
    return 0


def _import_aasce(args: argparse.Namespace) -> int:
    from ..training.dataset import import_aasce

    summary = import_aasce(args.source, args.out, split=args.split, limit=args.limit,
                           val_fraction=args.val_fraction, seed=args.seed)
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0
