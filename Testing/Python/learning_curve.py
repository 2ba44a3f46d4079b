"""Learning curve of the own-data landmark trainer: how many annotated films a protocol needs.

Trains the two-stage model (``spine-align train --trainer levels``, the level-sequence family, or
``--trainer generic``, one heatmap per landmark) on N training films for each N, with the same number of
optimisation steps for every N (so a small set is not also a short training), exports each run
(``spine-align export``, which measures the validation split end to end), and writes a table and a plot.
Sizes listed in ``--seeded-sizes`` are trained once per ``--seeds`` value (another draw of the training
patients and of the augmentation); the others with the first seed.

    python Testing/Python/learning_curve.py --data DATASET --protocol coronal-spine --val-list VAL.txt \\
        --runs runs/lc --sizes 25 50 100 200 all --steps 1800 --refine-steps 450 --seeds 0 1 \\
        --seeded-sizes 25 50 --out SpineAlignmentLib/training/learning_curve.json \\
        --plot Resources/Screenshots/learning-curve-levels.png

``--report-only`` collects finished runs without training; ``--run-all RUN`` takes an existing full-data run
as the ``all`` point (its own epochs are reported). The figures printed and written are measured on the
validation films named in ``--val-list`` (never trained on).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from SpineAlignmentLib.training.card import plot_learning_curve


def _epochs(n: int, steps: int, per_step: int, drop_last: bool) -> int:
    per_epoch = (n // per_step if drop_last and n > per_step else math.ceil(n / per_step)) or 1
    return max(1, round(steps / per_epoch))


def _n_train(run: Path) -> int:
    return len(json.loads((run / "split.json").read_text())["train"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="dataset-format folder")
    ap.add_argument("--protocol", default="coronal-spine")
    ap.add_argument("--val-list", required=True, help="validation images (one per line)")
    ap.add_argument("--runs", required=True, help="folder of the run folders (n25, n50, ..., nall)")
    ap.add_argument("--models", default=None, help="folder for the exported models (default RUNS/models)")
    ap.add_argument("--sizes", nargs="+", default=["25", "50", "100", "200", "all"])
    ap.add_argument("--steps", type=int, default=1800, help="stage-1 optimisation steps per run (batch 8)")
    ap.add_argument("--refine-steps", type=int, default=450, help="stage-2 steps per run (4 films per step)")
    ap.add_argument("--n-all", type=int, default=None, help="training films of the full split (to plan 'all')")
    ap.add_argument("--trainer", choices=("levels", "generic"), default="levels",
                    help="stage-1 design (default: the level-sequence family, train's default)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the sizes in --seeded-sizes")
    ap.add_argument("--seeded-sizes", nargs="*", default=[], help="sizes trained once per seed")
    ap.add_argument("--run-all", default=None, help="an existing full-data run folder to report as 'all'")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--design", default=None, help="what the trainer's design was when the curve was measured (each "
                                                   "row keeps it; the card names it)")
    ap.add_argument("--out", default=None, help="write the rows to this JSON file "
                                                "(SpineAlignmentLib/training/learning_curve.json is the curve every "
                                                "exported own-data model card quotes and plots)")
    ap.add_argument("--plot", default=None, help="and the plot to this PNG (docs: Resources/Screenshots/learning-curve-levels.png)")
    args = ap.parse_args(argv)
    runs, models = Path(args.runs), Path(args.models or Path(args.runs) / "models")
    rows = []
    todo = [(size, seed) for size in args.sizes for seed in (args.seeds if size in args.seeded_sizes else args.seeds[:1])]
    for size, seed in todo:
        tag = f"n{size}" + (f"-s{seed}" if seed else "")
        run = Path(args.run_all) if size == "all" and args.run_all else runs / tag
        if not args.report_only and not (run / "final_metrics.json").exists():
            n = int(size) if size != "all" else int(args.n_all or 10 ** 6)
            epochs = _epochs(n, args.steps, 8, True)
            cmd = [sys.executable, "-m", "SpineAlignmentLib.cli", "train", "--protocol", args.protocol, "--data", args.data,
                   "--out", str(run), "--val-list", args.val_list, "--no-progress", "--trainer", args.trainer,
                   "--epochs", str(epochs), "--val-every", str(epochs), "--seed", str(seed),
                   "--refine-epochs", str(_epochs(n, args.refine_steps, 4, False))]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if size != "all":
                cmd += ["--train-images", size]
            if (run / "last.pt").exists():
                cmd += ["--resume"]
            subprocess.run(cmd, check=True)
        model = models / f"lc-{tag}"
        if not (model / "metadata.json").exists():
            subprocess.run([sys.executable, "-m", "SpineAlignmentLib.cli", "export", "--run", str(run), "--out", str(model),
                            "--data", args.data], check=True)
        md = json.loads((model / "metadata.json").read_text())
        v = md["validation"]
        rec = md["training"]["recipe"]
        rows.append({"size": size, "seed": seed, "trainer": args.trainer, "n_train": _n_train(run), "epochs": rec["epochs"], "refine_epochs": rec["refine_epochs"],
                     **{k: v.get(k) for k in ("n_images", "median_error_px", "mean_error_px", "smape_pct", "cmae_deg",
                                              "named_right_pct", "aasce_images_complete", "seconds_per_image")},
                     # of every validation film (a film with a level left out is not named right)
                     "named_right_of_all_pct": (100.0 * v["level_shifts"].get("0", 0) / v["n_images"]
                                                if v.get("level_shifts") else v.get("named_right_pct")),
                     **({"design": args.design} if args.design else {})})
        print(json.dumps(rows[-1]))
    if args.out:
        out = Path(args.out)
        out.write_text(json.dumps(rows, indent=1))
        if args.plot:
            plot_learning_curve(rows, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
