"""Lateral quality of the two generic first-stage designs on synthetic films (a measurement tool, not a test).

Writes one synthetic dataset (``synthetic_lateral.write_dataset``: fixed seed, both facings, a quarter of the
films cropped), trains the per-landmark model (``--trainer generic``) and the level-sequence family
(``--trainer levels``) on the first ``--train`` films with the same settings and seeds, exports both
(``spine-align export``: the product's path), and analyses the last ``--test`` films (never trained on) with
each exported model through :func:`SpineAlignmentLib.pipeline.analyze`. Reported per model:

* median landmark error (px) over the landmarks labelled on a film *and* reported, against the mean-shape
  baseline (every landmark at its mean relative position over the training films, facing-normalised);
* labelled landmarks not reported (missed);
* landmarks *not* on a film (cropped off) but reported as found, as a share of all such landmarks;
* MAE of the chosen parameters against the generator's exact values, over the films where both exist, and on
  how many films the parameter was reported.

    python Testing/Python/measure_level_family.py --out runs/lf --protocol sagittal-whole-spine \\
        --train 120 --test 30 --epochs 20 --refine-epochs 5 --threads 1

Figures go to ``OUT/figures.json`` (docs/training.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PARAMETERS = {"sagittal-whole-spine": ("PI", "PT", "SS", "LL"), "cervical-lateral": ("C2C7", "cSVA"),
              "lumbar-dynamic": ("SA_L4L5", "SA_L5S1")}


def _mean_shape(protocol, train_items):
    """Mean facing-normalised relative position of each landmark over the training films."""
    from SpineAlignmentLib.protocols import get_protocol
    from SpineAlignmentLib.training.generic import mirrors_for_facing

    proto = get_protocol(protocol)
    sums: dict[str, list] = {}
    for it in train_items:
        rows, cols = it.image_size
        m = mirrors_for_facing(proto, it.landmarks, it.patient_orientation)
        for k, (x, y) in it.landmarks.items():
            sums.setdefault(k, []).append(((cols - 1 - x) / cols if m else x / cols, y / rows))
    return {k: np.mean(v, axis=0) for k, v in sums.items()}


def measure_model(model_name: str, protocol: str, test_items, meta: dict, mean: dict) -> dict:
    from SpineAlignmentLib.imaging.radiograph import read_radiograph
    from SpineAlignmentLib.pipeline import analyze
    from SpineAlignmentLib.protocols import get_protocol
    from SpineAlignmentLib.training.generic import mirrors_for_facing

    proto = get_protocol(protocol)
    errs, base, missed, off_found, off_total, per_param = [], [], 0, 0, 0, {p: [] for p in PARAMETERS[protocol]}
    worst = []
    for it in test_items:
        stem = Path(it.image).stem
        rg = read_radiograph(it.image)
        res = analyze(rg, protocol, model=model_name)
        rows, cols = it.image_size
        m = mirrors_for_facing(proto, it.landmarks, it.patient_orientation)
        film_errs = []
        for k in proto.landmark_ids:
            truth, pred = it.landmarks.get(k), res.landmarks.get(k)
            if truth is None:
                off_total += 1
                off_found += pred is not None
                continue
            if pred is None:
                missed += 1
            else:
                e = float(np.hypot(pred.x - truth[0], pred.y - truth[1]))
                errs.append(e)
                film_errs.append(e)
            if k in mean:
                px = mean[k][0] * cols
                base.append(float(np.hypot((cols - 1 - px if m else px) - truth[0], mean[k][1] * rows - truth[1])))
        expected = meta[stem]["expected"]
        for p in per_param:
            got = res.parameters.get(p)
            if got is not None and p in expected and got.value is not None and np.isfinite(got.value):
                per_param[p].append(abs(float(got.value) - float(expected[p])))
        worst.append((float(np.max(film_errs)) if film_errs else float("nan"), stem))
    errs_a = np.asarray(errs)
    return {
        "model": model_name, "n_films": len(test_items),
        "median_error_px": float(np.median(errs_a)), "p90_error_px": float(np.percentile(errs_a, 90)),
        "mean_error_px": float(np.mean(errs_a)), "mean_shape_median_px": float(np.median(base)),
        "ratio_to_mean_shape": float(np.median(errs_a) / np.median(base)),
        "landmarks_on_film_missed": missed, "landmarks_on_film_reported": len(errs),
        "off_film_landmarks": off_total, "off_film_reported_found": off_found,
        "off_film_found_pct": 100.0 * off_found / off_total if off_total else None,
        "parameters": {p: {"n": len(v), "mae_deg_or_mm": float(np.mean(v)) if v else None} for p, v in per_param.items()},
        "films_with_a_landmark_over_10px": int(sum(1 for w, _ in worst if w > 10)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--protocol", default="sagittal-whole-spine", choices=sorted(PARAMETERS))
    ap.add_argument("--train", type=int, default=120)
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--refine-epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--families", nargs="+", default=["levels", "landmarks"])
    ap.add_argument("--measure-only", action="store_true",
                    help="re-measure the models already exported under OUT/models (after a decoding change)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import os

    from synthetic_lateral import write_dataset

    from SpineAlignmentLib.io.dataset import read_dataset
    from SpineAlignmentLib.training.export_generic import export_run
    from SpineAlignmentLib.training.generic import GenericConfig, train_generic

    out = Path(args.out)
    data = out / "data"
    meta: dict = {}
    # lumbar-dynamic: one pair is two films (flexion, extension)
    per = 2 if args.protocol == "lumbar-dynamic" else 1
    n = (args.train + args.test) // per
    if not (data / "patients.csv").exists():
        write_dataset(data, args.protocol, n, seed=args.seed, metadata=meta)
        (out / "meta.json").write_text(json.dumps({k: {"expected": v["expected"], "absent": v["absent"]}
                                                   for k, v in meta.items()}, default=str))
    meta = json.loads((out / "meta.json").read_text())
    items = sorted(read_dataset(data, args.protocol).items, key=lambda it: Path(it.image).name)
    patients = sorted({it.patient for it in items})
    test_patients = set(patients[len(patients) - args.test // per:])
    test = [it for it in items if it.patient in test_patients]
    train = [it for it in items if it.patient not in test_patients]
    (out / "test.txt").write_text("\n".join(Path(it.image).name for it in test) + "\n")
    mean = _mean_shape(args.protocol, train)
    models = out / "models"
    os.environ["SPINEALIGN_MODELS"] = str(models)
    figures = json.loads((out / "figures.json").read_text()) if (out / "figures.json").exists() else {}
    for fam in args.families:
        run = out / f"run-{fam}"
        cfg = GenericConfig(protocol=args.protocol, data=str(data), out=str(run), seed=0, epochs=args.epochs,
                            refine_epochs=args.refine_epochs, threads=args.threads, val_list=str(out / "test.txt"),
                            val_every=max(args.epochs, 1), family=fam)
        name = f"synthetic-{fam}"
        fig = {}
        if not args.measure_only:
            t0 = time.time()
            train_generic(cfg, progress=False)
            fig["train_minutes"] = round((time.time() - t0) / 60, 1)
            export_run(run, models / name, name=name)
        else:
            fig["train_minutes"] = figures.get(fam, {}).get("train_minutes")
        fig.update(measure_model(name, args.protocol, test, meta, mean))
        fig.update({"family": fam, "n_train": len(train), "epochs": args.epochs, "refine_epochs": args.refine_epochs})
        figures[fam] = fig
        (out / "figures.json").write_text(json.dumps(figures, indent=1))
        print(json.dumps(fig, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
