"""A generic landmark run's model as inference sees it, and the one measurement of it.

``spine-align train`` (every validation of :func:`~SpineAlignmentLib.training.generic.train_generic`) and
``spine-align export`` (:func:`~SpineAlignmentLib.training.export_generic.export_run`) measure a generic
model the same way: :func:`evaluate_films` passes each labelled film through
:func:`SpineAlignmentLib.pipeline.analyze` (facing chosen by the network's confidence on lateral views, as
for a new film; no flip TTA, the model's default) and pools the landmark errors of all films. The model
is assembled from the same metadata blocks (:func:`model_blocks`) and the weights as the model folder stores
them (float16, :func:`~SpineAlignmentLib.training.weights.stored_weights`) -- by :func:`run_model` in memory
during training, by :func:`~SpineAlignmentLib.models.registry.load_model` from the exported folder -- so the
last validation row of a run's ``metrics.jsonl`` holds the landmark figures the export writes in the card.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

__all__ = ["CANONICAL_FACING", "CORRECT_FRACTION", "model_blocks", "run_model", "evaluate_films", "LANDMARK_FIGURES"]

#: facing every lateral film is normalised to (definitions.md: the anterior direction on the image)
CANONICAL_FACING = "image-right"

#: a landmark counts as found when its error is at most this fraction of the film's landmark span
#: (about half a vertebral body on a whole-spine film); the confidence is calibrated to that probability
CORRECT_FRACTION = 0.02

#: the figures of :func:`evaluate_films` that depend only on where the landmarks are (not on the confidence
#: calibration the export adds): what the trainer logs as ``val_<figure>`` and what it must agree on with the card
LANDMARK_FIGURES = ("n_images", "n_points", "median_error_px", "mean_error_px", "median_error_mm")


def _num(v):
    """JSON-safe float (None for NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def model_blocks(cfg, ids, stage1: dict, stage2: dict | None, fitted: dict | None = None) -> dict:
    """The metadata blocks inference reads (``network``, ``network_data_format``, ``landmarks``, ``decoding``
    and, with a second stage, ``landmark_refinement``), their ``weights`` naming only the file; a run of the
    level-sequence family (``cfg.family == "levels"``) gets the family's head and ``level-family`` decoding,
    with ``fitted`` (:func:`~SpineAlignmentLib.training.level_family.fit_decoding`) when the run chose it."""
    from ..models.landmark_roi import landmark_parts
    from ..protocols import get_protocol

    proto = get_protocol(cfg.protocol)
    rows, cols = (int(v) for v in cfg.input_shape)
    md = {
        "network": {"class": "SpineAlignmentLib.models.network.SpineLandmarkNet",
                    "args": {"in_channels": 1, "out_channels": len(ids), **cfg.net}, "stride": 2,
                    "parameters": int(sum(v.numel() for v in stage1.values() if v.is_floating_point())),
                    "coarse_to_fine": "stage 1 on the whole film, stage 2 one ROI per landmark"},
        "weights": {"file": "model.pt"},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "grayscale, bone bright (MONOCHROME2)", "num_channels": 1,
                                 "spatial_shape": [rows, cols], "dtype": "float32", "value_range": [0.0, 1.0],
                                 "intensity": {"method": "percentile-minmax", "low_percentile": 0.5, "high_percentile": 99.5},
                                 "resize": "letterbox-centred"}},
            "outputs": {"pred": {"type": "heatmap", "format": "logits", "num_channels": len(ids)}}},
        "landmarks": list(ids),
        "decoding": {"method": "local-soft-argmax", "window": 3, "confidence_radius": 2.0, "low_confidence": 0.3,
                     "flip_tta_default": False},
    }
    if proto.view == "lateral":
        md["decoding"]["facing"] = {"normalised_to": CANONICAL_FACING, "method": "confidence"}
    if cfg.family == "levels":  # the level-sequence family: its own head and decoding
        from .level_family import family_blocks

        family_blocks(md, ids, fitted)
    if stage2 is not None:
        parts, part_index, _ = landmark_parts(ids, proto.flip_pairs)
        md["landmark_refinement"] = {
            "network": {"class": "SpineAlignmentLib.models.network.SpineLandmarkNet",
                        "args": {"in_channels": 1, "out_channels": len(parts), **cfg.refine_net}, "stride": 2,
                        "parameters": int(sum(v.numel() for v in stage2.values() if v.is_floating_point()))},
            "weights": {"file": "refine.pt"},
            "roi": {"size": int(cfg.roi_size), "fraction": float(cfg.roi_fraction),
                    **({"extent": float(cfg.roi_extent)} if cfg.roi_extent else {}),
                    **({"rotate": True} if cfg.roi_rotate else {})},
            "parts": parts, "part_index": [int(i) for i in part_index]}
        if cfg.roi_rotate:
            md["network"]["coarse_to_fine"] += " (a level's ROI turned along the spine)"
    return md


def run_model(cfg, ids, stage1: dict, stage2: dict | None = None, *, fp16: bool = True, fitted: dict | None = None):
    """The model a training run's weights make, in memory, exactly as its exported folder loads
    (weights stored as the export stores them, widened back by the registry's own loader; ``fitted``: a family
    run's decoding choice)."""
    from ..models.registry import assemble_model, network_from_state
    from .weights import stored_weights

    md = {"name": Path(cfg.out).name, "version": "training", "protocol": cfg.protocol, **model_blocks(cfg, ids, stage1, stage2, fitted)}
    states = {"model.pt": stored_weights(stage1, fp16), "refine.pt": stored_weights(stage2, fp16) if stage2 else None}
    return assemble_model(md, Path(cfg.out),
                          lambda net, w: network_from_state(net, states[w["file"]], f"Weights of run {cfg.out}"))


def evaluate_films(model, items, protocol: str, *, parameters: bool = True, progress: bool = False,
                   what: str = "validation films") -> dict:
    """Figures of ``model`` on labelled films (dataset items), end to end: the trainer's validation, the
    export's card and the learning curve.

    Each film is read from its file and its landmarks found as :func:`SpineAlignmentLib.pipeline.analyze`
    finds them (:func:`~SpineAlignmentLib.pipeline.detect`); a landmark's error is the Euclidean distance
    between the predicted and the labelled point, in pixels, and in mm on films with a spacing (``dx`` times
    the column spacing, ``dy`` times the row spacing); the median and mean pool every labelled landmark of
    every film. ``parameters``: also analyse each film's parameters and compare them with those its labels
    give (:func:`~SpineAlignmentLib.evaluation.compare.compare_results`; the export's card). ``progress``: a
    bar over the films on stderr.

    Returns:
        ``{"n_images", "n_points", "median_error_px", "mean_error_px", ["median_error_mm"], "seconds_per_image"}``,
        with ``parameters`` also ``"parameters": {id: {unit, n, mae}}, ["smape_pct", "cmae_deg"], ["named_right_pct"]``,
        and for the caller ``"_confidence"``, ``"_errors"``, ``"_tolerance"`` (per landmark) and ``"_predictions"``
        (film name -> landmark ID -> ``[x, y]``). Figures that cannot be computed are ``None`` or absent, never NaN.
    """
    from tqdm import tqdm

    from ..imaging.radiograph import read_radiograph
    from ..models.landmark_roi import landmark_span
    from ..pipeline import analyze, detect, measure

    truths, preds, conf, err, err_mm, tol, points = {}, {}, [], [], [], [], {}
    t0 = time.time()
    for it in tqdm(items, desc=f"measuring {what}", unit="film", disable=not progress, leave=False):
        name = Path(it.image).name
        rg = read_radiograph(it.image, spacing=it.spacing_mm) if it.spacing_mm else read_radiograph(it.image)
        if parameters:
            res = analyze(rg, protocol, model=model)
            truth = measure(it.landmarks, protocol, spacing_mm=it.spacing_mm, calibration=it.calibration if it.spacing_mm else None,
                            image_size=tuple(rg.shape), patient_orientation=rg.patient_orientation, image=name, source=name)
            preds[name], truths[name] = res.to_dict(), truth.to_dict()
        else:
            res = detect(rg, protocol, model=model)
        points[name] = {lid: [p.x, p.y] for lid, p in res.landmarks.items()}
        span = landmark_span(np.array(list(it.landmarks.values()), dtype=float))
        for lid, (x, y) in it.landmarks.items():
            p = res.landmarks.get(lid)
            if p is not None:
                err.append(math.hypot(p.x - x, p.y - y))
                if it.spacing_mm:
                    err_mm.append(math.hypot((p.x - x) * it.spacing_mm[1], (p.y - y) * it.spacing_mm[0]))
                conf.append(p.confidence if p.confidence is not None else 1.0)
                tol.append(CORRECT_FRACTION * span)
    seconds = (time.time() - t0) / max(len(items), 1)
    figs = {"n_images": len(items), "n_points": len(err), "seconds_per_image": round(seconds, 3),
            "median_error_px": _num(np.median(err)) if err else None, "mean_error_px": _num(np.mean(err)) if err else None}
    if err_mm:
        figs["median_error_mm"] = _num(np.median(err_mm))
    if parameters:
        figs.update(_parameter_figures(truths, preds))
    figs["_confidence"], figs["_errors"], figs["_tolerance"], figs["_predictions"] = conf, err, tol, points
    return figs


def _parameter_figures(truths: dict, preds: dict) -> dict:
    """Every parameter's error, the AASCE SMAPE / circular MAE and the levels named right, from the films'
    results (:func:`~SpineAlignmentLib.evaluation.compare.compare_results`)."""
    from ..evaluation.compare import compare_results

    rep = compare_results(truths, preds, {}, failed=[])
    figs: dict = {"parameters": {}}
    for _, r in rep.parameters.iterrows():
        if int(r.get("n_pairs") or 0):
            figs["parameters"][str(r["parameter"])] = {"unit": str(r["unit"]), "n": int(r["n_pairs"]),
                                                       "mae": _num(r["abs_error_mean"])}
    for _, r in (rep.cobb if rep.cobb is not None else []).iterrows():
        if str(r["set"]) == "AASCE":
            figs["smape_pct"], figs["cmae_deg"] = _num(r["smape_pct"]), _num(r["circular_mae"])
            figs["aasce_images_complete"] = int(r["n_images_complete"])
            figs["smape_pct_missing_as_failure"] = _num(r["smape_pct_missing_as_failure"])
    if (rep.levels or {}).get("n_images"):
        # named_right_pct: of the films whose every vertebra was found; named_right_of_all_pct: of every film
        # compared (a film with a level left out is not named right), the figure to compare with a model that
        # always reports every level
        figs["named_right_pct"] = _num(rep.levels["all_named_right_pct"])
        figs["named_right_films"] = int(rep.levels["all_named_right"])
        figs["named_right_of_all_pct"] = 100.0 * rep.levels["all_named_right"] / max(len(truths), 1)
        figs["level_shifts"] = rep.levels["shift_counts"]
    return figs
