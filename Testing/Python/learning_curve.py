"""Learning curve of the generic landmark trainer: how many annotated films a protocol needs.

Trains the generic two-stage model (``spine-align train``) on N training films for each N, with the same
number of optimisation steps for every N (so a small set is not also a short training), exports each run
(``spine-align export``, which measures the validation split end to end), and writes a table and a plot.

    python Testing/Python/learning_curve.py --data DATASET --protocol coronal-spine --val-list VAL.txt \\
        --runs runs/lc --sizes 25 50 100 200 all --steps 1800 --refine-steps 450 --out docs/

``--report-only`` collects finished runs without training. The figures printed and written are measured
on the validation films named in ``--val-list`` (never trained on).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path


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
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", default=None, help="write learning-curve.json here (the plot goes to Resources/Screenshots/learning-curve.png)")
    args = ap.parse_args(argv)
    runs, models = Path(args.runs), Path(args.models or Path(args.runs) / "models")
    rows = []
    for size in args.sizes:
        run = runs / f"n{size}"
        if not args.report_only and not (run / "final_metrics.json").exists():
            n = int(size) if size != "all" else int(args.n_all or 10 ** 6)
            cmd = [sys.executable, "-m", "SpineAlignmentLib.cli", "train", "--protocol", args.protocol, "--data", args.data,
                   "--out", str(run), "--val-list", args.val_list, "--no-progress", "--trainer", "generic",
                   "--epochs", str(_epochs(n, args.steps, 8, True)),
                   "--refine-epochs", str(_epochs(n, args.refine_steps, 4, False))]
            if size != "all":
                cmd += ["--train-images", size]
            subprocess.run(cmd, check=True)
        model = models / f"lc-n{size}"
        if not (model / "metadata.json").exists():
            subprocess.run([sys.executable, "-m", "SpineAlignmentLib.cli", "export", "--run", str(run), "--out", str(model),
                            "--data", args.data], check=True)
        md = json.loads((model / "metadata.json").read_text())
        v = md["validation"]
        rec = md["training"]["recipe"]
        rows.append({"size": size, "n_train": _n_train(run), "epochs": rec["epochs"], "refine_epochs": rec["refine_epochs"],
                     **{k: v.get(k) for k in ("n_images", "median_error_px", "mean_error_px", "smape_pct", "cmae_deg",
                                              "named_right_pct", "aasce_images_complete", "seconds_per_image")}})
        print(json.dumps(rows[-1]))
    if args.out:
        out = Path(args.out)
        (out / "learning-curve.json").write_text(json.dumps(rows, indent=1))
        _plot(rows, Path(__file__).resolve().parents[2] / "Resources" / "Screenshots" / "learning-curve.png")
    return 0


def _plot(rows, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=110)
    FigureCanvasAgg(fig)
    n = [r["n_train"] for r in rows]
    for i, (key, label) in enumerate((("median_error_px", "median landmark error (px)"), ("smape_pct", "SMAPE, AASCE triple (%)"),
                                      ("named_right_pct", "all 17 levels named right (%)"))):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.plot(n, [r.get(key) if r.get(key) is not None else float("nan") for r in rows], "o-")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(n)
        ax.set_xticklabels([str(x) for x in n], fontsize=7)
        ax.set_xlabel("training films")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
