"""Fit and measure the level confidence of a coronal model (:mod:`SpineAlignmentLib.inference.levels`).

``python -m SpineAlignmentLib.training.level_confidence --model Resources/Models/coronal-spine-landmarks
--data ../shared/datasets/aasce-train [--framings 3]``

Steps:

1. **Fit, on the training split only** (every usable image of the dataset that is
   not in the model's validation list): each training film as it is and
   ``framings`` re-framed copies (:func:`~SpineAlignmentLib.training.framing.random_framing`:
   top between C4 and T3, bottom between L4 and below the sacrum) is predicted by
   the model's first stage; the chain's features
   (:func:`~SpineAlignmentLib.inference.levels.chain_features`) and its real
   naming (all named right, or the sign of its level shift) give a standardised
   multinomial logistic regression with an L2 penalty (hand-written: three
   classes and ~20 features do not need a library model; solved by SciPy's
   L-BFGS). The warning threshold is the 5th percentile of the level confidence
   of the training films named right; the incomplete-chain floor is the 1st
   percentile of the weakest chain vertebra's centre score on the training films
   as they are.
2. **Measure, on images the fit never saw**: the validation split as it is, the
   validation split re-framed (another seed; some framings cut T1 or L5 off), re-framed
   so that all 17 vertebrae stay on the film, and partial films cut from the
   validation images (only the thoracic or only the lumbar spine), each with
   the identification rate, the level shifts and the warning's precision and recall.
3. Write the ``levels`` block into the model's ``metadata.json`` (weights untouched)
   and regenerate its card.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["film_record", "collect_records", "fit_level_model", "measure_records", "partial_framing", "fit_levels_block",
           "levels_block", "calibrate_levels"]

#: L2 penalty of the logistic fit (on standardised features)
L2 = 1e-2
#: the threshold lets at most this fraction of the training films named right warn
FALSE_ALARM_FRACTION = 0.05
#: share of whole training films (as they are) whose weakest vertebra may fall below the incomplete-chain floor
INCOMPLETE_FALSE_ALARM_FRACTION = 0.01
#: classes of the fit, in the order of ``SHIFTS`` (-1, 0, +1)
_CLASS = {-1: 0, 0: 1, 1: 2}


def film_record(**fields) -> dict:
    """One predicted film, a plain dict (so a pickled cache loads from any entry point): ``name``, ``kind``
    (original, reframed, thoracic-only, lumbar-only), ``features``, ``shift``
    (:func:`~SpineAlignmentLib.evaluation.levels.level_shift`), ``right``
    (:func:`~SpineAlignmentLib.evaluation.levels.named_right`), ``pred`` and ``truth`` (68, 2) and ``height``."""
    return dict(fields)


def partial_framing(points: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[float, float]:
    """``(top, bottom)`` rows of a film showing only part of the spine.

    ``thoracic-only``: top between C4 and T1, bottom between the T10 and L1 centres (L2..L5 cut off);
    ``lumbar-only``: top between the T10 and T12 centres (T1..T9 cut off), bottom between L5 and below the sacrum.
    """
    from .framing import level_rows

    r = level_rows(points)
    c = np.asarray(points, dtype=float).reshape(-1, 4, 2).mean(axis=1)[:, 1]
    if kind == "thoracic-only":
        return float(rng.uniform(r["C4"], r["T1"])), float(rng.uniform(c[9], c[12]))
    if kind == "lumbar-only":
        return float(rng.uniform(c[9], c[11])), float(rng.uniform(r["L5"], r["below_sacrum"]))
    raise ValueError(f"unknown partial film kind {kind!r}")


def collect_records(model, samples, *, framings: int = 0, seed: int = 0, original: bool = True,
                    partial: tuple[str, ...] = (), refine: bool = False, progress: bool = False,
                    complete: int = 0, neck: int = 0, neck_margin: tuple[float, float] | None = None) -> list[dict]:
    """Predict each sample's film (as it is, ``framings`` re-framed copies, ``complete`` re-framed copies that
    keep all 17 vertebrae (:func:`~SpineAlignmentLib.training.framing.complete_framing`), ``neck`` copies with a
    synthetic neck above T1 whose top lies ``neck_margin`` T1-T2 spacings above T1
    (:func:`~SpineAlignmentLib.training.neck.add_neck`; default the neck-visible validation framing), and one
    film of each ``partial`` kind) with the model (its first stage, and its second with ``refine``: the names
    are the first stage's either way, the corners the Cobb end vertebrae are measured on are not) and record
    the chain's level features and its real naming."""
    from PIL import Image
    from tqdm import tqdm

    from ..inference.predict import predict_array
    from .framing import complete_framing, random_framing, reframe
    from .neck import VALIDATION_MARGIN, add_neck
    from ..evaluation.levels import level_shift, named_right

    margin = neck_margin or VALIDATION_MARGIN
    records: list[dict] = []
    for i, s in enumerate(tqdm(samples, desc="level features", disable=not progress)):
        with Image.open(s.image_path) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.float32)
        rng = np.random.default_rng((seed, i))

        def framed(frame):
            return lambda: reframe(pixels, s.points, *frame)

        films = [("original", lambda: (pixels, s.points))] if original else []
        films += [("reframed", framed(random_framing(s.points, rng))) for _ in range(framings)]
        films += [("complete", framed(complete_framing(s.points, rng))) for _ in range(complete)]
        films += [(k, framed(partial_framing(s.points, k, rng))) for k in partial]
        for _ in range(neck):
            m, nrng = float(rng.uniform(*margin)), np.random.default_rng(rng.integers(1 << 62))
            films.append(("neck", lambda m=m, nrng=nrng: add_neck(pixels, s.points, m, nrng)))
        for kind, make in films:
            film, truth = make()
            info: dict = {}
            pred, _ = predict_array(film, model, refine=refine, info=info)
            records.append(film_record(name=s.name, kind=kind, features=info["level_features"], pred=pred,
                                      truth=truth, height=film.shape[0], shift=level_shift(pred, truth),
                                      right=named_right(pred, truth)))
    return records


def _target(r: dict) -> int:
    """Class index of a record (-1 when it cannot be told: not all right, but no net shift either way)."""
    if r["right"]:
        return _CLASS[0]
    if r["shift"]:
        return _CLASS[int(np.sign(r["shift"]))]
    off = int(np.sign(np.sum(_offsets(r["pred"], r["truth"]))))
    return _CLASS[off] if off else -1


def _offsets(pred, truth) -> np.ndarray:
    pc = np.asarray(pred, dtype=float).reshape(-1, 4, 2).mean(1)
    tc = np.asarray(truth, dtype=float).reshape(-1, 4, 2).mean(1)
    return np.linalg.norm(pc[:, None] - tc[None], axis=-1).argmin(1) - np.arange(len(pc))


def fit_level_model(records: list[dict], features: tuple[str, ...], l2: float = L2) -> dict:
    """Standardised multinomial logistic regression of the records' naming on ``features``; the
    ``levels`` metadata block without its threshold (``features``, ``mean``, ``scale``, ``coef``, ``intercept``)."""
    from scipy.optimize import minimize

    y = np.array([_target(r) for r in records])
    keep = y >= 0
    x = np.array([[r["features"][k] for k in features] for r in records], dtype=np.float64)[keep]
    y = y[keep]
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    k, d = 3, z.shape[1]

    def loss(theta):
        w, b = theta[:k * d].reshape(k, d), theta[k * d:]
        logits = z @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        p = np.exp(logp)
        onehot = np.eye(k)[y]
        n = len(y)
        grad_logits = (p - onehot) / n
        value = -logp[np.arange(n), y].mean() + l2 * (w ** 2).sum()
        grad = np.concatenate([(grad_logits.T @ z + 2 * l2 * w).ravel(), grad_logits.sum(axis=0)])
        return value, grad

    res = minimize(loss, np.zeros(k * d + k), jac=True, method="L-BFGS-B")
    w, b = res.x[:k * d].reshape(k, d), res.x[k * d:]
    return {"features": list(features), "mean": [round(float(v), 6) for v in mean],
            "scale": [round(float(v), 6) for v in scale], "coef": [[round(float(v), 6) for v in row] for row in w],
            "intercept": [round(float(v), 6) for v in b]}


def _confidences(records: list[dict], block: dict) -> tuple[np.ndarray, np.ndarray]:
    """(N,) level confidence and (N,) alternative shift of each record under ``block``."""
    from ..inference.levels import level_probabilities_from_features

    p = np.array([level_probabilities_from_features(r["features"], block) for r in records])
    return p[:, 1], np.where(p[:, 0] >= p[:, 2], -1, 1)


def measure_records(records: list[dict], block: dict, *, cobb: bool = False) -> dict:
    """Identification rate, level shifts, and the warning's precision and recall on a record set
    (with ``cobb``, also the end-vertebra agreement of the Cobb curves)."""
    from ..evaluation.levels import cobb_ends, end_vertebra_agreement, identification_figures, warning_figures
    from ..inference.levels import assess_levels

    # the warning exactly as a result gets it (assess_levels: low level confidence or an incomplete chain)
    assessed = [assess_levels(r["features"], block) for r in records]
    warned = np.array([a["uncertain"] for a in assessed], dtype=bool)
    alt = np.array([a["alternative"]["shift"] for a in assessed])
    shifts = np.array([r["shift"] for r in records])
    out = {**identification_figures([r["pred"] for r in records], [r["truth"] for r in records]),
           "warning": warning_figures(warned, [r["right"] for r in records], shifts)}
    hit = warned & (shifts != 0)
    out["warning"]["alternative_direction_right_pct"] = (
        float(100.0 * np.mean(alt[hit] == np.sign(shifts[hit]))) if hit.any() else float("nan"))
    if cobb:
        out["end_vertebrae"] = end_vertebra_agreement([cobb_ends(r["pred"], r["height"]) for r in records],
                                                      [cobb_ends(r["truth"], r["height"]) for r in records])
    return out


def _features_for(model) -> tuple[str, ...]:
    from ..inference.levels import FEATURES

    return tuple(f for f in FEATURES if model.levels is not None or not f.startswith("ident_"))


def _cached(path: Path | None, make):
    """``make()``, or the records kept as JSON at ``path`` by an earlier call (a scratch cache of predicted
    films; JSON, so a cache folder someone hands you cannot run code)."""
    if path is not None and path.exists():
        records = json.loads(path.read_text())
        for r in records:
            r["pred"], r["truth"] = np.asarray(r["pred"], dtype=float), np.asarray(r["truth"], dtype=float)
            r["right"], r["shift"] = bool(r["right"]), int(r["shift"])
        return records
    value = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{k: (np.asarray(v).tolist() if k in ("pred", "truth") else v) for k, v in r.items()}
                                    for r in value], default=float))
    return value


def fit_levels_block(model, train_samples, *, framings: int = 3, necks: int = 1, seed: int = 0, progress: bool = False,
                     cache: Path | None = None) -> dict:
    """The ``levels`` metadata block fitted on ``train_samples`` (as they are, ``framings`` re-framed copies and
    ``necks`` copies with a synthetic neck above T1, top 0.8-3 spacings above T1); ``cache``: a folder where
    the predicted films are kept for a re-run with the same model."""
    from .neck import TRAIN_MARGIN

    records = _cached(cache and cache / f"train_f{framings}_n{necks}_s{seed}.json", lambda: collect_records(
        model, train_samples, framings=framings, neck=necks, neck_margin=TRAIN_MARGIN, seed=seed, progress=progress))
    block = fit_level_model(records, _features_for(model))
    conf, _ = _confidences(records, block)
    right = np.array([r["right"] for r in records])
    thr = float(np.quantile(conf[right], FALSE_ALARM_FRACTION)) if right.any() else 0.5
    weakest = np.array([r["features"]["weakest_score"] for r in records if r["kind"] == "original"])
    floor = float(np.quantile(weakest, INCOMPLETE_FALSE_ALARM_FRACTION))
    block.update({
        "vertebra_score_floor": round(floor, 4),
        "vertebra_score_floor_rule": (
            f"the {100 * INCOMPLETE_FALSE_ALARM_FRACTION:g} % quantile of the weakest chain vertebra's centre score on "
            f"the {len(weakest)} training films as they are, every one of which shows T1..L5"),
        "method": ("multinomial logistic regression (L2 {:g}, standardised features) of the chain's naming: one level "
                   "too high (-1), right (0), one level too low (+1)").format(L2),
        "classes": [-1, 0, 1],
        "warn_below": round(thr, 4),
        "warn_rule": (f"{100 * FALSE_ALARM_FRACTION:g}th percentile of the level confidence of the training films whose "
                      "17 vertebrae are all named right"),
        "fitted_on": (f"{len(train_samples)} training-split images as they are, {framings} re-framed copies of each "
                      "(top between C4 and T3, bottom between L4 and below the sacrum) and "
                      f"{necks} with a synthetic neck above T1 (top {TRAIN_MARGIN[0]:g}-{TRAIN_MARGIN[1]:g} T1-T2 spacings "
                      f"above T1; seed {seed}): {len(records)} films, {int(right.sum())} named right"),
    })
    block["training"] = measure_records(records, block)
    return block


def levels_block(model, train, val, *, framings: int = 3, necks: int = 1, seed: int = 0, command: str = "",
                 progress: bool = False, cache: Path | None = None) -> dict:
    """The ``levels`` metadata block: fitted on the ``train`` samples (:func:`fit_levels_block`), measured on
    the ``val`` samples as they are and re-framed (end to end, both stages, with the Cobb end vertebrae) and
    on partial films cut from them (first stage)."""
    model.metadata.pop("levels", None)
    from .neck import VALIDATION_MARGIN

    block = fit_levels_block(model, train, framings=framings, necks=necks, seed=seed, progress=progress, cache=cache)
    plain = _cached(cache and cache / "val.json", lambda: collect_records(model, val, refine=True, progress=progress))
    framed = _cached(cache and cache / f"val_f{framings}_s{seed + 1}.json", lambda: collect_records(
        model, val, framings=framings, seed=seed + 1, original=False, refine=True, progress=progress))
    whole = _cached(cache and cache / f"val_complete_f{framings}_s{seed + 3}.json", lambda: collect_records(
        model, val, complete=framings, seed=seed + 3, original=False, refine=True, progress=progress))
    partial = _cached(cache and cache / f"val_partial_s{seed + 2}.json", lambda: collect_records(
        model, val, seed=seed + 2, original=False, partial=("thoracic-only", "lumbar-only"), progress=progress))
    neck = _cached(cache and cache / f"val_neck2_s{seed + 4}.json", lambda: collect_records(
        model, val, neck=2, seed=seed + 4, original=False, refine=True, progress=progress))
    block["validation"] = {
        "original": measure_records(plain, block, cobb=True),
        "neck_visible": {**measure_records(neck, block, cobb=True),
                         "framing": (f"2 copies of each validation image with a synthetic neck above T1 (training/neck.py), "
                                     f"top {VALIDATION_MARGIN[0]:g}-{VALIDATION_MARGIN[1]:g} T1-T2 spacings above T1 "
                                     f"(the clinical films' framing; seed {seed + 4})")},
        "reframed": {**measure_records(framed, block, cobb=True),
                     "framing": (f"{framings} re-framed copies of each validation image (top between C4 and T3, bottom "
                                 f"between L4 and below the sacrum; seed {seed + 1})")},
        "reframed_complete": {**measure_records(whole, block, cobb=True),
                              "framing": (f"{framings} re-framed copies of each validation image that keep all 17 "
                                          "vertebrae (top between C4 and the top of T1, bottom between the bottom of L5 "
                                          f"and below the sacrum; seed {seed + 3})")},
        "partial": {k: measure_records([r for r in partial if r["kind"] == k], block)
                    for k in ("thoracic-only", "lumbar-only")},
    }
    block["command"] = command
    return block


def calibrate_levels(model_folder: Path, data_dir: Path, *, framings: int = 3, seed: int = 0,
                     progress: bool = False, cache: Path | None = None) -> dict:
    """:func:`levels_block` for a packaged model (training split: every usable image not in its validation
    list), written into its ``metadata.json`` (weights untouched); the card is regenerated."""
    from ..models.registry import load_model
    from .dataset import load_samples
    from .card import write_card
    from .model_folder import write_metadata

    model_folder = Path(model_folder)
    md = json.loads((model_folder / "metadata.json").read_text())
    model = load_model(md["name"], folder=model_folder)
    samples, _ = load_samples(Path(data_dir))
    val_names = set(md["training"]["split"]["val_images"])
    train = [s for s in samples if s.name not in val_names]
    val = [s for s in samples if s.name in val_names]
    command = (f"python -m SpineAlignmentLib.training.level_confidence --model {model_folder.as_posix()} "
               f"--data ../shared/datasets/aasce-train --framings {framings} --seed {seed}")
    md["levels"] = levels_block(model, train, val, framings=framings, seed=seed, command=command, progress=progress,
                                cache=cache)
    write_metadata(md, model_folder)
    write_card(md, model_folder)
    return md["levels"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model folder (its metadata.json gets the levels block)")
    p.add_argument("--data", required=True, help="the AASCE-layout dataset the model was trained on")
    p.add_argument("--framings", type=int, default=3, help="re-framed copies per image (fit and measurement)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep the predicted films here (pickles) and reuse them when run again with the same model")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("SpineAlignmentLib.training.hygiene").setLevel(logging.ERROR)
    block = calibrate_levels(Path(a.model), Path(a.data), framings=a.framings, seed=a.seed, progress=True,
                             cache=Path(a.cache) if a.cache else None)
    print(json.dumps({k: block[k] for k in ("warn_below", "fitted_on", "training", "validation")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
