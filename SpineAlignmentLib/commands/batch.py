"""``spine-align batch``: analyse many radiographs (files or folders) into a resumable output folder.

Per image: ``<name>.json`` (result), ``<name>.mrk.json`` (Slicer markups) and
``<name>_overlay.png`` (overlay), with ``--dicom-sr`` ``<name>_sr.dcm`` (DICOM SR
measurement report), written as soon as the image is done; then
``summary.csv`` (one row per image, one column per parameter) and
``failures.csv`` (image, error, reason). Re-running re-uses a result only when it
was made with the same fingerprint (protocol, model and weights, options that
change values, software version, landmark file) and analyses the rest again,
saying how many and why; it re-tries failures (``--no-retry-failures`` keeps
them); ``--force`` analyses everything again.
Ctrl-C stops submitting new images, lets running ones finish and writes the
tables (a second Ctrl-C aborts).

``--pairs MANIFEST.csv`` (instead of inputs) measures pairs of films, one result per
pair: a flexion and an extension film (``lumbar-dynamic``), or a coronal film and its
paired lateral (``coronal-spine``); the manifest format is in
:mod:`SpineAlignmentLib.batch.pairs` and the README.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from . import add_image_options, note_save_masks

HELP = "analyse many radiographs (files or folders): result JSON, .mrk.json and overlay per image, summary.csv, resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image files or folders (searched recursively)")
    parser.add_argument("--pairs", metavar="MANIFEST",
                        help="measure pairs of films instead of single images: a CSV with the columns pair, role, "
                             "image and optionally landmarks (one row per film; roles: flexion/extension for "
                             "lumbar-dynamic, coronal/lateral for coronal-spine); one result per pair")
    parser.add_argument("--protocol", required=True, help="protocol ID (spine-align protocols)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; re-use it to resume)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1, metavar="N",
                       help="local worker processes (default 1: in this process)")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="Dask scheduler address, e.g. tcp://host:8786 (input and output folders must be "
                            "visible to the workers under the same paths)")
    add_image_options(parser)
    parser.add_argument("--landmarks-dir", metavar="DIR",
                        help="use existing landmarks: <image stem>.json (result format) or .mrk.json per image, "
                             "re-measured; works for protocols without a model")
    parser.add_argument("--no-markups", action="store_true", help="do not write .mrk.json files")
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    parser.add_argument("--dicom-sr", action="store_true",
                        help="also write <name>_sr.dcm, a DICOM SR measurement report (TID 1500) referencing the "
                             "film, for PACS, and with a segmentation model <name>_seg.dcm, its masks as a DICOM SEG "
                             "(DICOM films only; another image gets its other outputs and a warning)")
    parser.add_argument("--no-retry-failures", action="store_true", help="skip images listed in failures.csv")
    parser.add_argument("--force", action="store_true",
                        help="analyse every image again (default: re-use results made with the same fingerprint)")
    parser.add_argument("--progress", choices=("text", "jsonl", "none"), default="text",
                        help="progress on stderr as text lines or JSON Lines (default text; -q: none as text)")


def run(args: argparse.Namespace) -> int:
    from ..batch import BatchEvent, BatchOptions, BatchRunner, progress_dict
    from ..protocols import get_protocol

    from ..errors import SpineAlignmentError

    note_save_masks(args, get_protocol(args.protocol))  # an unknown protocol fails before any work
    if bool(args.inputs) == bool(args.pairs):
        raise SpineAlignmentError("give image files or folders to analyse, or --pairs MANIFEST.csv for pairs of "
                                  "films (not both).")
    options = BatchOptions(
        protocol=args.protocol, out_dir=args.out, model=args.model,
        spacing=tuple(args.spacing) if args.spacing else None, landmarks_dir=args.landmarks_dir,
        flip_tta=args.flip_tta, write_markups=not args.no_markups, write_overlay=not args.no_overlay,
        patient_orientation=args.patient_orientation, min_confidence=args.min_confidence,
        write_dicom_sr=args.dicom_sr, write_masks=args.save_masks, level_anchors=args.level_anchors,
    )

    quiet = getattr(args, "quiet", False)

    def report(p) -> None:
        if args.progress == "jsonl":
            print(json.dumps(progress_dict(p)), file=sys.stderr, flush=True)
        elif args.progress == "text" and not quiet and p.event in (BatchEvent.DONE, BatchEvent.FAILED, BatchEvent.STARTED,
                                                      BatchEvent.CANCELLED, BatchEvent.FINISHED):
            where = f" {p.image}" if p.image else ""
            extra = f": {p.message}" if p.message else ""
            print(f"[{p.finished_items}/{p.total}] {p.event.value}{where}{extra}", file=sys.stderr, flush=True)

    runner = BatchRunner(args.inputs, options, workers=args.workers, scheduler=args.scheduler, callback=report,
                         retry_failures=not args.no_retry_failures, force=args.force, pairs=args.pairs)

    def on_sigint(signum, frame) -> None:
        if runner.cancelled:
            raise KeyboardInterrupt
        print("cancelling: no new images are started; press Ctrl-C again to abort", file=sys.stderr, flush=True)
        runner.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        summary = runner.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    print(json.dumps({"total": summary.total, "done": summary.done, "failed": summary.failed,
                      "skipped": summary.skipped, "cancelled": summary.cancelled,
                      "reanalysed_stale": sum(summary.stale.values()), "stale_reasons": summary.stale,
                      "summary_csv": str(summary.summary_csv), "failures_csv": str(summary.failures_csv),
                      "write_error": summary.write_error or None}))
    if summary.write_error:
        print(f"error: {summary.write_error}", file=sys.stderr)
        return 2
    if summary.cancelled:
        return 130
    return 1 if summary.failed else 0
