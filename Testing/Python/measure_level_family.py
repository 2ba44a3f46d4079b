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
* MAE of the chosen parameters against the generator's exact values (or, where the generator states none, e.g.
  cSVA, the value measured on the true landmarks), over the films where both exist, and on how many films;
* films whose every reported level is the level it lies on, overall and among the cropped films, and those
  named right *or* flagged "levels unreliable" (a chain shorter than on any training film);
* lumbar pairs: MAE of IROM, dST (mm) and dST_pct per pair and level;
* whole spine: the same figures on ``--partial`` extra films cropped at T10 (``cropped_at_T10``).

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

PARAMETERS = {"sagittal-whole-spine": ("PI", "PT", "SS", "LL"), "cervical-lateral": ("C2C7", "cSVA", "C0C2", "T1S"),
              "lumbar-dynamic": ("SA_L4L5", "SA_L5S1")}
#: lumbar-dynamic pair parameters (the generator's ``pair_expected``) and the per-film value each is a difference of
PAIR_SOURCES = {"IROM": "SA", "dST": "ST", "dST_pct": "ST_pct"}


def _truth_value(it, protocol: str, name: str, expected: dict):
    """The generator's exact value of a parameter, or (when the generator does not state it, e.g. cSVA) the
    parameter measured on the film's true landmarks: the measurement is exact (tests), so the only error left
    is the landmarks'. In px on films without a spacing, like the prediction."""
    if name in expected:
        return float(expected[name])
    from SpineAlignmentLib.pipeline import measure

    res = measure(dict(it.landmarks), protocol, image_size=tuple(it.image_size),
                  patient_orientation=it.patient_orientation)
    got = res.parameters.get(name)
    return float(got.value) if got is not None and got.value is not None else None


def level_naming(layout, truth: dict, pred: dict) -> bool:
    """Whether every level the model reports is the level it is on (the nearest labelled level centre to the
    reported centre has its name); a film with nothing reported names nothing right."""
    true_c, pred_c = {}, {}
    for li, lv in enumerate(layout.levels):
        ks = [layout.ids[k] for k in layout.members[li] if k >= 0]
        t = [truth[k] for k in ks if k in truth]
        q = [pred[k] for k in ks if k in pred]
        if t:
            true_c[lv] = np.mean(t, axis=0)
        if q:
            pred_c[lv] = np.mean(q, axis=0)
    if not true_c or not pred_c:
        return False
    names, centres = list(true_c), np.array(list(true_c.values()))
    return all(names[int(np.argmin(np.linalg.norm(centres - c, axis=1)))] == lv for lv, c in pred_c.items())


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
    from SpineAlignmentLib.inference.predict import LEVELS_UNRELIABLE
    from SpineAlignmentLib.pipeline import analyze
    from SpineAlignmentLib.protocols import get_protocol
    from SpineAlignmentLib.models.level_family import level_layout
    from SpineAlignmentLib.training.generic import mirrors_for_facing

    proto = get_protocol(protocol)
    layout = level_layout(proto.landmark_ids)
    errs, base, missed, off_found, off_total, per_param = [], [], 0, 0, 0, {p: [] for p in PARAMETERS[protocol]}
    worst, named, named_cropped, results, none_reported = [], [], [], {}, 0
    flagged, named_or_flagged, cropped_or_flagged = [], [], []
    for it in test_items:
        stem = Path(it.image).stem
        rg = read_radiograph(it.image)
        res = analyze(rg, protocol, model=model_name)
        pred_xy = {k: (lm.x, lm.y) for k, lm in res.landmarks.items()}
        ok = level_naming(layout, it.landmarks, pred_xy)
        flag = any(LEVELS_UNRELIABLE in w for w in res.warnings)
        none_reported += not pred_xy
        named.append(ok)
        flagged.append(flag)
        named_or_flagged.append(ok or flag)
        if meta[stem].get("absent"):
            named_cropped.append(ok)
            cropped_or_flagged.append(ok or flag)
        results[stem] = res
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
            if got is not None and got.value is not None and np.isfinite(got.value):
                truth_v = _truth_value(it, protocol, p, expected)
                if truth_v is not None:
                    per_param[p].append(abs(float(got.value) - truth_v))
        worst.append((float(np.max(film_errs)) if film_errs else float("nan"), stem))
    errs_a = np.asarray(errs)
    pairs = _pair_errors(test_items, results, meta) if protocol == "lumbar-dynamic" else {}
    return {
        "films_levels_named_right": int(sum(named)), "films_cropped": len(named_cropped),
        "films_cropped_levels_named_right": int(sum(named_cropped)),
        "films_flagged_levels_unreliable": int(sum(flagged)),
        "films_levels_named_right_or_flagged": int(sum(named_or_flagged)),
        "films_cropped_levels_named_right_or_flagged": int(sum(cropped_or_flagged)),
        "films_with_nothing_reported": none_reported,
        **({"pairs": pairs} if pairs else {}),
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


def _pair_errors(test_items, results: dict, meta: dict) -> dict:
    """MAE of IROM, dST (mm: the predicted px times the generator's spacing) and dST_pct per level over the test
    pairs, from the two films' predicted SA/ST/ST_pct (the pair measurement's own differences, definitions §5)."""
    by_patient: dict = {}
    for it in test_items:
        by_patient.setdefault(it.patient, {})[meta[Path(it.image).stem]["role"]] = Path(it.image).stem
    errs: dict[str, list] = {}
    for roles in by_patient.values():
        if set(roles) != {"flexion", "extension"}:
            continue
        f, e = results[roles["flexion"]], results[roles["extension"]]
        truth = meta[roles["flexion"]]["pair_expected"]
        scale = float(meta[roles["flexion"]]["spacing_mm"][0])
        for key in truth:
            kind, lv = key.rsplit("_", 1)
            src = PAIR_SOURCES[kind]
            pf, pe = f.parameters.get(f"{src}_{lv}"), e.parameters.get(f"{src}_{lv}")
            if pf is None or pe is None or pf.value is None or pe.value is None:
                continue
            got = (pe.value - pf.value) if kind == "IROM" else (pf.value - pe.value)
            if kind == "dST" and pf.unit == "px":
                got *= scale
            errs.setdefault(kind, []).append(abs(float(got) - float(truth[key])))
    return {k: {"n": len(v), "mae": float(np.mean(v))} for k, v in errs.items()}


def _partial_films(out: Path, protocol: str, n: int, seed: int, meta: dict) -> list:
    """``n`` extra test films cropped at T10 (T10..S1 and the femoral heads in view; never trained on): does the
    model name the levels of a film that shows part of the spine?"""
    from synthetic_lateral import lateral_film

    from SpineAlignmentLib.io.dataset import read_dataset, write_labelled_image

    folder = out / "partial"
    if not (folder / "patients.csv").exists():
        rng = np.random.default_rng(seed + 1000)
        for i in range(n):
            image, lms, m = lateral_film(protocol, rng, crop="t10", facing=int(rng.choice([-1, 1])))
            write_labelled_image(folder, image, lms, protocol, name=f"T10CROP{i:03d}", patient=f"T10CROP{i:03d}")
            meta[f"T10CROP{i:03d}"] = {"expected": m["expected"], "absent": m["absent"]}
        (out / "partial_meta.json").write_text(json.dumps(meta, default=str))
    meta.update(json.loads((out / "partial_meta.json").read_text()))
    return sorted(read_dataset(folder, protocol).items, key=lambda it: Path(it.image).name)


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
    ap.add_argument("--crop", type=float, default=0.0,
                    help="train with this probability of a film cropped to part of its span (RandSpanCropd); the "
                         "runs and models get the suffix -crop<percent>")
    ap.add_argument("--partial", type=int, default=None,
                    help="whole spine: extra test films cropped at T10 (default 20; 0: none)")
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
        keep = ("expected", "absent", "role", "pair_expected", "spacing_mm")
        (out / "meta.json").write_text(json.dumps({k: {f: v[f] for f in keep if f in v} for k, v in meta.items()},
                                                  default=str))
    meta = json.loads((out / "meta.json").read_text())
    items = sorted(read_dataset(data, args.protocol).items, key=lambda it: Path(it.image).name)
    patients = sorted({it.patient for it in items})
    test_patients = set(patients[len(patients) - args.test // per:])
    test = [it for it in items if it.patient in test_patients]
    train = [it for it in items if it.patient not in test_patients]
    (out / "test.txt").write_text("\n".join(Path(it.image).name for it in test) + "\n")
    mean = _mean_shape(args.protocol, train)
    n_partial = args.partial if args.partial is not None else (20 if args.protocol == "sagittal-whole-spine" else 0)
    partial = _partial_films(out, args.protocol, n_partial, args.seed, meta) if n_partial else []
    models = out / "models"
    os.environ["SPINEALIGN_MODELS"] = str(models)
    figures = json.loads((out / "figures.json").read_text()) if (out / "figures.json").exists() else {}
    for fam in args.families:
        tag = fam + (f"-crop{round(args.crop * 100)}" if args.crop else "")
        run = out / f"run-{tag}"
        cfg = GenericConfig(protocol=args.protocol, data=str(data), out=str(run), seed=0, epochs=args.epochs,
                            refine_epochs=args.refine_epochs, threads=args.threads, val_list=str(out / "test.txt"),
                            val_every=max(args.epochs, 1), family=fam, crop=args.crop)
        name = f"synthetic-{tag}"
        fig = {}
        if not args.measure_only:
            t0 = time.time()
            train_generic(cfg, progress=False)
            fig["train_minutes"] = round((time.time() - t0) / 60, 1)
            export_run(run, models / name, name=name)
        else:
            fig["train_minutes"] = figures.get(tag, {}).get("train_minutes")
        fig.update(measure_model(name, args.protocol, test, meta, mean))
        if partial:
            fig["cropped_at_T10"] = measure_model(name, args.protocol, partial, meta, mean)
        fig.update({"family": fam, "crop": args.crop, "n_train": len(train), "epochs": args.epochs,
                    "refine_epochs": args.refine_epochs})
        figures[tag] = fig
        (out / "figures.json").write_text(json.dumps(figures, indent=1))
        print(json.dumps(fig, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
