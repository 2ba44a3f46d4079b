"""AASCE triple of a coronal model on every validation film whose 68 corners it finds, trusted or not (a
measurement tool, not a test).

The export's SMAPE (``analyze``: the product's figure) is computed only on films whose every corner is found and
trusted, so two models that trust different films are not compared on the same footing. This computes the
triple (:func:`SpineAlignmentLib.geometry.aasce.aasce_triple`) straight from the predicted corners of every
film on which all 68 were found and compares it with the dataset's ``angles.csv`` (SMAPE and circular MAE,
:mod:`SpineAlignmentLib.evaluation.statistics`), with the median and mean landmark error of every landmark found.

    python Testing/Python/aasce_triple_all_found.py MODELS/fam-s1 --data /data/aasce-dataset \\
        --labels ../shared/datasets/aasce-train/labels --val-list VAL.txt [--stage1]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="model folder")
    ap.add_argument("--data", required=True, help="the AASCE films in the dataset format (spine-align dataset import-aasce)")
    ap.add_argument("--labels", required=True, help="the AASCE labels folder (filenames.csv, angles.csv)")
    ap.add_argument("--val-list", required=True, help="validation film names, one per line")
    ap.add_argument("--stage1", action="store_true", help="the first stage alone")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch

    from SpineAlignmentLib.evaluation.statistics import circular_mae, smape
    from SpineAlignmentLib.geometry.aasce import aasce_triple
    from SpineAlignmentLib.imaging.radiograph import read_radiograph
    from SpineAlignmentLib.inference.predict import predict_landmarks
    from SpineAlignmentLib.io.dataset import read_dataset
    from SpineAlignmentLib.models.registry import load_model

    torch.set_num_threads(a.threads)
    labels = Path(a.labels)
    names_all = [ln.strip() for ln in (labels / "filenames.csv").read_text().splitlines() if ln.strip()]
    with open(labels / "angles.csv", newline="") as fh:
        angles = {n: np.array([float(x) for x in row]) for n, row in zip(names_all, csv.reader(fh))}
    wanted = {ln.strip() for ln in Path(a.val_list).read_text().splitlines() if ln.strip()}
    items = [it for it in read_dataset(Path(a.data), "coronal-spine").items if Path(it.image).name in wanted]
    model = load_model(Path(a.model).name, folder=Path(a.model))
    ids = list(model.landmark_ids)
    pred, ref, errs, incomplete = [], [], [], 0
    for it in items:
        rg = read_radiograph(it.image)
        found, _ = predict_landmarks(rg, model, refine=not a.stage1)
        errs += [float(np.hypot(found[k].x - x, found[k].y - y)) for k, (x, y) in it.landmarks.items() if k in found]
        if not all(k in found for k in ids):
            incomplete += 1
            continue
        pts = np.array([[found[k].x, found[k].y] for k in ids])
        pred.append(aasce_triple(pts, float(rg.pixels.shape[0])).angles)
        ref.append(angles[Path(it.image).name])
    pred_a, ref_a = np.array(pred), np.array(ref)
    print(json.dumps({"model": str(a.model), "stage": "first stage" if a.stage1 else "both stages",
                      "n_films": len(items), "films_all_found": len(pred), "films_incomplete": incomplete,
                      "median_error_px": float(np.median(errs)), "mean_error_px": float(np.mean(errs)),
                      "smape_pct": smape(ref_a, pred_a) if len(pred) else None,
                      "cmae_deg": circular_mae(ref_a, pred_a) if len(pred) else None}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
