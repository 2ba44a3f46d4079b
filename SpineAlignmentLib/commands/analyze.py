"""``spine-align analyze``: find landmarks with a packaged model and measure, image by image.

Writes, per image, ``<name>.json`` (result, docs/protocols.md), ``<name>_overlay.png``
and with ``--markups`` ``<name>.mrk.json`` (loads in 3D Slicer), with ``--dicom-sr``
``<name>_sr.dcm`` (DICOM SR measurement report for PACS), then ``summary.csv``.
Every image given is analysed again (:func:`SpineAlignmentLib.batch.analyze_one`); use
``spine-align batch`` for resumable runs over folders, worker processes or a Dask cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import OutputError, SpineAlignmentError
from ..safefiles import check_output_dir, describe_os_error
from . import add_image_options, note_save_masks

HELP = "analyse radiographs with a packaged model: result JSON, overlay PNG (and .mrk.json) per image, summary CSV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="radiographs: DICOM, PNG, JPEG, TIFF, NRRD")
    parser.add_argument("--protocol", required=True, help="protocol ID (spine-align protocols)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_image_options(parser)
    parser.add_argument("--markups", action="store_true", help="also write <name>.mrk.json (3D Slicer markups)")
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    parser.add_argument("--dicom-sr", action="store_true",
                        help="also write <name>_sr.dcm, a DICOM SR measurement report (TID 1500) referencing the "
                             "film, for PACS, and with a segmentation model <name>_seg.dcm, its masks as a DICOM SEG "
                             "(DICOM input only)")


def run(args: argparse.Namespace) -> int:
    from ..batch import analyze_one, collect_inputs, make_items
    from ..geometry.measurement import format_value
    from ..inference.levels import levels_line
    from ..io.tables import summary_row, write_summary_csv
    from ..protocols import get_protocol

    protocol = get_protocol(args.protocol)
    note_save_masks(args, protocol)
    items = make_items(collect_inputs(args.images))
    if not items:
        raise SpineAlignmentError(f"No image found in {' '.join(args.images)}; give image files or folders.")
    check_output_dir(args.out, OutputError)  # before any inference: the work is never lost to a bad --out
    anchors: dict = {}
    if args.level_anchors:
        from ..io.level_anchors import match_level_anchors, read_level_anchors

        anchors, problems = match_level_anchors(read_level_anchors(args.level_anchors), items,
                                                Path(args.level_anchors).parent)
        for text in problems:
            print(f"warning: {text}", file=sys.stderr, flush=True)
    rows, failed = [], 0
    for item in items:
        try:
            res = analyze_one(item.image, protocol.id, args.out, model=args.model, spacing=args.spacing,
                              flip_tta=args.flip_tta, write_markups=args.markups, write_overlay=not args.no_overlay,
                              patient_orientation=args.patient_orientation, name=item.name,
                              min_confidence=args.min_confidence, write_dicom_sr=args.dicom_sr,
                              write_masks=args.save_masks, level_anchor=anchors.get(item.name))
        except SpineAlignmentError as exc:
            # one bad image is reported and the others are still analysed
            failed += 1
            print(f"error: {exc}", file=sys.stderr, flush=True)
            continue
        rows.append(summary_row(res, item.image))
        values = ", ".join(f"{k} {format_value(m.value, m.unit)}" for k, m in res.parameters.items())
        print(f"{item.image}: {values or 'no parameter'}")
        if res.levels:
            print(f"  levels: T1-L5, {levels_line(res.levels)}")
        for w in res.warnings:
            print(f"  warning: {w}")
    summary = None
    if rows:
        try:
            summary = write_summary_csv(f"{args.out}/summary.csv", rows, protocol.id)
        except OSError as exc:
            failed += 1
            Path(f"{args.out}/summary.csv.part").unlink(missing_ok=True)
            print(f"error: {args.out}: cannot write summary.csv ({describe_os_error(exc)}); the result files of "
                  "each image are kept.", file=sys.stderr)
    print(f"{len(rows)} analysed, {failed} failed; results in {args.out}" + (f" (summary: {summary})" if summary else ""))
    return 2 if failed else 0
