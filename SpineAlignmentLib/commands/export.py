"""``spine-align export``: any finished training run -> a model folder that analyze, batch and Slicer list.

One command for every run ``spine-align train`` writes; the run folder says which exporter it needs
(:func:`~SpineAlignmentLib.training.loop.run_kind`): an own-data landmark run (per-landmark or level family,
:func:`~SpineAlignmentLib.training.export_generic.export_run`), a coronal vertebra run
(:func:`~SpineAlignmentLib.training.export.export`, its last checkpoint: nothing chosen on validation films) or
a segmentation run (:func:`~SpineAlignmentLib.training.export_segmentation.export_segmentation`). Assembling the
shipped coronal model from several runs (its refiner and identification runs) stays with the maintainers' tool
``python -m SpineAlignmentLib.training.export``.
"""

from __future__ import annotations

import argparse
import json

from . import add_progress_option, shows_progress

HELP = "write a model folder (metadata, weights with SHA-256, card with measured validation figures) from a training run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder written by 'spine-align train' (any trainer)")
    parser.add_argument("--out", required=True,
                        help="model folder to write, normally inside a models folder ($SPINEALIGN_MODELS or the user "
                             "models folder) so that analyze/batch/Slicer find it by its name")
    parser.add_argument("--name", default=None, help="model name (default: the --out folder's name; lower case, digits, '-')")
    parser.add_argument("--version", default="1.0.0", help="model version (semantic version, default 1.0.0)")
    parser.add_argument("--change", default=None,
                        help="this version's changelog line (a re-export keeps the earlier versions' lines)")
    parser.add_argument("--data", default=None, help="dataset folder, when it moved since training (default: the run's)")
    parser.add_argument("--license-weights", default=None,
                        help="licence of the exported weights (recorded in the card of an own-data landmark model)")
    parser.add_argument("--license-data", default=None,
                        help="licence of the training films (recorded in the card of an own-data landmark model)")
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import SpineAlignmentError
    from ..training.loop import run_kind

    run_dir, out = Path(args.run), Path(args.out)
    kind = run_kind(run_dir)
    name = args.name or out.name
    progress = shows_progress(args)
    if kind == "landmarks":
        from ..training.export_generic import export_run

        md = export_run(run_dir, out, name=args.name, version=args.version,
                        data=Path(args.data) if args.data else None, license_weights=args.license_weights,
                        license_data=args.license_data, change=args.change, progress=progress)
        v = {k: md["validation"][k] for k in ("n_images", "n_points", "median_error_px", "mean_error_px",
                                              "median_error_mm", "smape_pct", "cmae_deg", "named_right_pct")
             if k in md["validation"]}
    else:
        if args.license_weights or args.license_data:
            raise SpineAlignmentError(f"{run_dir} is a {kind} run, whose card records the licences of its dataset "
                                      "itself; drop --license-weights/--license-data.")
        data = Path(args.data) if args.data else Path(json.loads((run_dir / "config.json").read_text())["data"])
        if kind == "segmentation":
            from ..training.export_segmentation import export_segmentation

            md = export_segmentation(run_dir, data, out, name=name, version=args.version, checkpoint="last.pt",
                                     command=f"spine-align export --run {run_dir.as_posix()} --out {out.as_posix()} "
                                             f"--version {args.version}", change=args.change, progress=progress)
        else:
            from ..training.export import export

            md = export(run_dir, data, out, name=name, version=args.version, checkpoint="last.pt", change=args.change,
                        progress=progress)
        v = {k: x for k, x in md["validation"].items() if not isinstance(x, (dict, list))}
    print(json.dumps({"model": md["name"], "version": md["version"], "folder": str(out), **v}, indent=1))
    return 0
