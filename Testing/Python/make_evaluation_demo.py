"""Demonstration of ``spine-align evaluate`` on the AASCE training labels.

Ground truth: the 68 vertebra corners of each image (``labels/<image>.mat``,
array ``p2``) and the AASCE triple from ``labels/angles.csv``. "Predictions": the
same corners plus Gaussian noise (fixed seed), with the triple recomputed by
:func:`SpineAlignmentLib.geometry.aasce.aasce_triple` from the noisy corners
(falling back to ``angles.csv`` plus noise when that module is absent). A
second, less noisy copy plays a simulated rater so that the ICC heat map has
more than one comparison. Nothing here is a model output: it shows what the
report looks like and that the statistics react to known perturbations.

Usage::

    python Testing/Python/make_evaluation_demo.py OUT_DIR [--sigma 3] [--rater-sigma 1.5] [--limit N]

Writes ``OUT_DIR/{truth,pred,rater}/*.json`` and the report in ``OUT_DIR/report``.
The dataset is found at ``../shared/datasets/aasce-train`` beside the repository,
or under ``$SPINEALIGN_DATASETS``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

log = logging.getLogger("make_evaluation_demo")

VERTEBRAE = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
CORNERS = ("TL", "TR", "BL", "BR")
LANDMARK_IDS = [f"{v}_{c}" for v in VERTEBRAE for c in CORNERS]


def datasets_root() -> Path:
    env = os.environ.get("SPINEALIGN_DATASETS")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


def load_aasce(root: Path, limit: int | None = None) -> list[dict]:
    """Read names, corner points (68, 2), angles and image size of the AASCE training labels."""
    from PIL import Image
    from scipy.io import loadmat

    labels = root / "labels"
    with open(labels / "filenames.csv", newline="", encoding="utf-8") as fh:
        names = [row[0].strip() for row in csv.reader(fh) if row]
    with open(labels / "angles.csv", newline="", encoding="utf-8") as fh:
        angles = [[float(v) for v in row] for row in csv.reader(fh) if row]
    if len(names) != len(angles):
        raise SystemExit(f"filenames.csv has {len(names)} rows but angles.csv {len(angles)}")
    items = []
    for name, ang in zip(names, angles):
        mat = labels / f"{name}.mat"
        if not mat.exists():
            log.warning("no label file %s; skipped", mat.name)
            continue
        p2 = np.asarray(loadmat(mat)["p2"], dtype=float)
        with Image.open(root / "images" / name) as im:  # reads the header only
            cols, rows = im.size
        items.append({"name": name, "points": p2, "angles": ang, "size": (rows, cols)})
        if limit and len(items) >= limit:
            break
    return items


def result_dict(name: str, points: np.ndarray, angles, size, model: dict | None) -> dict:
    return {
        "schema": "spinealignment.result/1",
        "image": name,
        "protocol": "coronal-spine",
        "model": model,
        "image_size": [int(size[0]), int(size[1])],
        "spacing_mm": None,
        "calibration": "pixels-only",
        "landmarks": {k: {"x": float(x), "y": float(y)} for k, (x, y) in zip(LANDMARK_IDS, points)},
        "parameters": {f"AASCE_{i + 1}": {"value": float(a), "unit": "deg"} for i, a in enumerate(angles)
                       if np.isfinite(a)},
        "warnings": [],
    }


def perturb(items: list[dict], sigma: float, rng: np.random.Generator, triple) -> list[tuple]:
    out = []
    for it in items:
        noisy = it["points"] + rng.normal(0.0, sigma, size=it["points"].shape)
        if triple is not None:
            angles = list(triple(noisy, float(it["size"][0])).angles)
        else:  # geometry.aasce not available: perturb the reference angles instead
            angles = [max(0.0, a + rng.normal(0.0, sigma)) for a in it["angles"]]
        out.append((noisy, angles))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--sigma", type=float, default=3.0, help="noise SD per coordinate for the predictions (px)")
    ap.add_argument("--rater-sigma", type=float, default=1.5,
                    help="noise SD for the simulated rater (px); 0 to leave the rater out")
    ap.add_argument("--seed", type=int, default=20190413)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    root = datasets_root() / "aasce-train"
    if not root.is_dir():
        print(f"AASCE training data not found at {root}; set SPINEALIGN_DATASETS", file=sys.stderr)
        return 2
    try:
        from SpineAlignmentLib.geometry.aasce import aasce_triple
    except ImportError:
        aasce_triple = None
        log.warning("SpineAlignmentLib.geometry.aasce not available: predicted angles = angles.csv + noise")

    items = load_aasce(root, args.limit)
    log.info("%d labelled images", len(items))
    if aasce_triple is not None:
        # Sanity check of the port on the clean labels (not used for the truth, which is angles.csv).
        diffs = np.array([np.abs(np.array(aasce_triple(it["points"], float(it["size"][0])).angles)
                                 - np.array(it["angles"])).max() for it in items])
        log.info("aasce_triple on the clean labels vs angles.csv: max |diff| %.4f deg, %d images > 0.01 deg",
                 float(diffs.max()), int((diffs > 0.01).sum()))

    rng = np.random.default_rng(args.seed)
    folders = {"truth": args.out / "truth", "pred": args.out / "pred"}
    sets = {"truth": [(it["points"], it["angles"]) for it in items],
            "pred": perturb(items, args.sigma, rng, aasce_triple)}
    models = {"truth": None, "pred": {"name": f"perturbed-labels-sigma{args.sigma:g}px", "version": "0"}}
    if args.rater_sigma > 0:
        folders["rater"] = args.out / "rater"
        sets["rater"] = perturb(items, args.rater_sigma, rng, aasce_triple)
        models["rater"] = {"name": f"simulated-rater-sigma{args.rater_sigma:g}px", "version": "0"}
    for key, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        for it, (pts, ang) in zip(items, sets[key]):
            with open(folder / f"{Path(it['name']).stem}.json", "w", encoding="utf-8") as fh:
                json.dump(result_dict(it["name"], pts, ang, it["size"], models[key]), fh)

    from SpineAlignmentLib.evaluation import evaluate

    raters = {"sim_rater": folders["rater"]} if "rater" in folders else None
    report = evaluate(folders["truth"], folders["pred"], raters=raters, out_dir=args.out / "report")
    print(report.table1.to_string(index=False))
    print(report.cobb.to_string(index=False))
    print(report.icc[["parameter", "comparison", "n", "icc2_1", "icc2_1_ci_low", "icc2_1_ci_high",
                      "icc3_1"]].to_string(index=False))
    cols = ["parameter", "ba_bias", "ba_loa_lower", "ba_loa_upper", "smape_pct", "circular_mae"]
    print(report.parameters[cols].to_string(index=False))
    all_row = report.landmarks[report.landmarks["landmark"] == "ALL"].iloc[0]
    print(f"landmarks: {int(all_row['n'])} points, error px mean {all_row['error_px_mean']:.2f} "
          f"(SD {all_row['error_px_sd']:.2f}), median {all_row['error_px_median']:.2f}; "
          f"normalised median {all_row['normalised_error_median']:.3f}")
    print(f"report: {args.out / 'report' / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
