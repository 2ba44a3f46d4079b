"""AASCE triple of a coronal model on every validation film whose 68 corners it finds, trusted or not (a
measurement tool, not a test).

The export's SMAPE (``analyze``: the product's figure) is computed only on films whose every corner is found and
trusted, so two models that trust different films are not compared on the same footing. This computes the
triple (:func:`SpineAlignmentLib.geometry.aasce.aasce_triple`) straight from the predicted corners of every
film on which all 68 were found and compares it with the dataset's ``angles.csv`` (SMAPE and circular MAE,
:mod:`SpineAlignmentLib.evaluation.statistics`), with the median and mean landmark error of every landmark found.

    python Testing/Python/aasce_triple_all_found.py MODELS/fam-s1 --data /data/aasce-dataset \\
        --labels ../shared/datasets/aasce-train/labels --val-list VAL.txt [--stage1] [--save A.json]
    python Testing/Python/aasce_triple_all_found.py MODELS/other ... --save B.json --against A.json

``--save`` keeps the per-film figures (landmark errors, the predicted and reference triples); ``--against`` sets
this model beside another's saved figures on equal terms: the films where *both* found every corner, each
model's SMAPE and circular MAE there, and the paired bootstrap 95 % interval (10,000 draws of films, seed 0) of
the difference in SMAPE (this model minus the other).
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
    ap.add_argument("--save", default=None, help="write the per-film figures to this JSON file")
    ap.add_argument("--against", default=None, help="another model's --save file: compare on the films both computed")
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
    pred, ref, errs, incomplete, per_film = [], [], [], 0, {}
    for it in items:
        rg = read_radiograph(it.image)
        found, _ = predict_landmarks(rg, model, refine=not a.stage1)
        film_errs = [float(np.hypot(found[k].x - x, found[k].y - y)) for k, (x, y) in it.landmarks.items() if k in found]
        errs += film_errs
        name = Path(it.image).name
        per_film[name] = {"errors_px": film_errs, "ref": [float(v) for v in angles[name]]}
        if not all(k in found for k in ids):
            incomplete += 1
            continue
        pts = np.array([[found[k].x, found[k].y] for k in ids])
        pred.append(aasce_triple(pts, float(rg.pixels.shape[0])).angles)
        ref.append(angles[name])
        per_film[name]["pred"] = [float(v) for v in pred[-1]]
    pred_a, ref_a = np.array(pred), np.array(ref)
    print(json.dumps({"model": str(a.model), "stage": "first stage" if a.stage1 else "both stages",
                      "n_films": len(items), "films_all_found": len(pred), "films_incomplete": incomplete,
                      "median_error_px": float(np.median(errs)), "mean_error_px": float(np.mean(errs)),
                      "smape_pct": smape(ref_a, pred_a) if len(pred) else None,
                      "cmae_deg": circular_mae(ref_a, pred_a) if len(pred) else None}, indent=1))
    if a.save:
        Path(a.save).write_text(json.dumps(per_film))
    if a.against:
        print(json.dumps(paired(per_film, json.loads(Path(a.against).read_text())), indent=1))
    return 0


def paired(this: dict, other: dict, draws: int = 10_000) -> dict:
    """Two models' per-film figures on the films both computed: SMAPE and circular MAE of each, and the paired
    bootstrap 95 % interval of the SMAPE difference (this minus other)."""
    from SpineAlignmentLib.evaluation.statistics import circular_mae, smape

    common = [n for n in this if "pred" in this[n] and "pred" in other.get(n, {})]
    if not common:
        return {"films_both_computed": 0}
    ref = np.array([this[n]["ref"] for n in common])
    p, q = np.array([this[n]["pred"] for n in common]), np.array([other[n]["pred"] for n in common])
    d = np.array([smape(ref[i:i + 1], p[i:i + 1]) - smape(ref[i:i + 1], q[i:i + 1]) for i in range(len(common))])
    rng = np.random.default_rng(0)
    boot = d[rng.integers(0, len(d), (draws, len(d)))].mean(axis=1)
    return {"films_both_computed": len(common), "smape_pct": smape(ref, p), "smape_pct_other": smape(ref, q),
            "cmae_deg": circular_mae(ref, p), "cmae_deg_other": circular_mae(ref, q),
            "smape_difference_pct": float(d.mean()),
            "smape_difference_95ci": [float(v) for v in np.percentile(boot, [2.5, 97.5])]}


if __name__ == "__main__":
    raise SystemExit(main())
