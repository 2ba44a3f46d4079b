"""``spine-align evaluate``: agreement statistics, plots and an HTML report."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import SpineAlignmentError

HELP = "compare predicted result files with ground truth (and raters): statistics, plots, HTML report"

log = logging.getLogger(__name__)


def _rater(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not name.strip() or not folder.strip():
        raise argparse.ArgumentTypeError(f"--rater expects NAME=DIR, got {text!r}")
    return name.strip(), Path(folder.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--truth", required=True, type=Path, metavar="DIR",
                        help="folder of ground-truth result JSON files (searched recursively)")
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR",
                        help="folder of predicted result JSON files, matched to the truth by image name")
    parser.add_argument("--rater", action="append", type=_rater, default=[], metavar="NAME=DIR",
                        help="a further rater's result folder for the ICC among sources (repeatable)")
    parser.add_argument("--out", required=True, type=Path, metavar="REPORT_DIR",
                        help="folder to write CSV tables, PNG plots and report.html into")


def run(args: argparse.Namespace) -> int:
    try:
        from ..evaluation import evaluate
        import pandas  # noqa: F401  (fail early with one clear sentence)
        import pingouin  # noqa: F401
    except ImportError as exc:
        raise SpineAlignmentError(
            f"evaluate needs the statistics extra ({exc.name} is missing); install it with "
            "pip install 'SpineAlignmentLib[stats]'.") from None
    raters: dict[str, Path] = {}
    for name, folder in args.rater:
        if name in raters:
            raise SpineAlignmentError(f"rater name {name!r} is given twice; give each --rater a distinct NAME.")
        raters[name] = folder
    report = evaluate(args.truth, args.pred, raters=raters or None, out_dir=args.out)
    prov = report.provenance
    print(f"model: {', '.join(prov['models'])}; predictions by SpineAlignmentLib "
          f"{', '.join(prov['prediction_software_versions'])}; evaluated with SpineAlignmentLib "
          f"{prov['software_version']} on {prov['date']}")
    print(f"inputs: truth {prov['inputs']['truth']}, prediction {prov['inputs']['prediction']}")
    c = report.counts
    print(f"images: {c['matched']} matched, {c['missing_in_pred']} in truth only, "
          f"{c['missing_in_truth']} in prediction only, {c['failed']} failed, {len(c.get('ignored_files', []))} "
          f"ignored (not results), {len(c.get('recomputed_files', []))} measured from landmarks")
    if len(report.table1):
        print(report.table1.to_string(index=False))
    if len(report.cobb):
        for _, r in report.cobb.iterrows():
            print(f"{r['set']}: SMAPE {r['smape_pct']:.2f} %, circular MAE {r['circular_mae']:.2f} deg "
                  f"over {r['n_images']} images used; {r['n_missing']} missing: SMAPE "
                  f"{r['smape_pct_missing_as_failure']:.2f} %, circular MAE "
                  f"{r['circular_mae_missing_as_failure']:.2f} deg counting them as failures")
    from ..evaluation.levels import level_lines

    for line in level_lines(report.levels):
        print(line)
    lm = report.landmarks
    if len(lm):
        all_row = lm[lm["landmark"] == "ALL"].iloc[0]
        unit = "mm" if all_row["n_mm"] else "px"
        print(f"landmarks: median error {all_row[f'error_{unit}_median']:.2f} {unit}, "
              f"mean {all_row[f'error_{unit}_mean']:.2f} {unit} over {int(all_row['n'])} points")
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
