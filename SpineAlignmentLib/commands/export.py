"""``spine-align export``: a finished generic training run -> a model folder that analyze, batch and Slicer list."""

from __future__ import annotations

import argparse
import json

from . import add_progress_option, shows_progress

HELP = "write a model folder (metadata, weights with SHA-256, card with measured validation figures) from a training run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by 'spine-align train' (generic landmark trainer)")
    parser.add_argument("--out", required=True,
                        help="model folder to write, normally inside a models folder ($SPINEALIGN_MODELS or the user "
                             "models folder) so that analyze/batch/Slicer find it by its name")
    parser.add_argument("--name", default=None, help="model name (default: the --out folder's name; lower case, digits, '-')")
    parser.add_argument("--version", default="1.0.0", help="model version (semantic version, default 1.0.0)")
    parser.add_argument("--data", default=None, help="dataset folder, when it moved since training (default: the run's)")
    parser.add_argument("--license-weights", default=None, help="licence of the exported weights (recorded in the card)")
    parser.add_argument("--license-data", default=None, help="licence of the training films (recorded in the card)")
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..training.export_generic import export_run

    md = export_run(Path(args.run), Path(args.out), name=args.name, version=args.version,
                    data=Path(args.data) if args.data else None, license_weights=args.license_weights,
                    license_data=args.license_data, progress=shows_progress(args))
    v = md["validation"]
    print(json.dumps({"model": md["name"], "version": md["version"], "folder": str(Path(args.out)),
                      **{k: v[k] for k in ("n_images", "n_points", "median_error_px", "mean_error_px", "median_error_mm",
                                          "smape_pct", "cmae_deg", "named_right_pct") if k in v}}, indent=1))
    return 0
