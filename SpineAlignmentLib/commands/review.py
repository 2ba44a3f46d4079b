"""``spine-align review OUT_DIR``: a review page for a whole study (one card per film, least certain first).

Writes ``OUT_DIR/review.html`` (or ``--out``) and its crops in ``review/`` beside it;
the page saves the reviewer's decisions as ``level-anchors.csv`` for
``spine-align batch ... --level-anchors``. See :mod:`SpineAlignmentLib.io.review`.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = ("write a review page of a batch's results (review.html): the top and bottom of each film's vertebra chain, "
        "least certain first, to confirm or shift the level names; saves level-anchors.csv for --level-anchors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="OUT_DIR", help="the --out folder of spine-align batch or analyze")
    parser.add_argument("--out", metavar="HTML", help="the page to write (default OUT_DIR/review.html); its crops "
                                                      "go to a review/ folder beside it")
    parser.add_argument("--films", action="append", default=[], metavar="DIR",
                        help="folder holding the source films when summary.csv does not name where they are now "
                             "(searched by the result's image name; repeatable)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import OutputError
    from ..io.review import build_review

    for folder in args.films:
        if not Path(folder).is_dir():
            raise OutputError(f"{folder}: no such folder; give the folder holding the source films with --films.")

    def progress(done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            print(f"[{done}/{total}] crops", file=sys.stderr, flush=True)

    summary = build_review(args.results, args.out, films=args.films, progress=None if args.quiet else progress)
    for note in summary["skipped_notes"]:
        print(f"note: {note}", file=sys.stderr)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0
