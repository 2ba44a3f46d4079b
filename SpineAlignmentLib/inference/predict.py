"""Landmark prediction on a radiograph: preprocess, heatmaps, decode, map back, sanity warnings.

Public entry: :func:`predict_landmarks`. Coordinates returned are pixels of the
original image (``x`` right, ``y`` down, pixel-centre convention).

Image-level warnings are produced when the result should not be trusted
blindly: low confidence (the typical sign of a lateral, chest, empty or noise
image), vertebrae out of top-to-bottom order, corner order broken inside a
vertebra, or irregular spacing between consecutive vertebrae.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import RadiographError
from ..geometry.label_checks import check_labels
from ..geometry.levels import vertebra_chain
from ..result import Landmark
from .preprocess import letterbox, normalise_intensity

__all__ = ["PredictedLandmark", "predict_landmarks", "predict_array", "plausibility_warnings"]

log = logging.getLogger(__name__)

#: Images smaller than this (either side, pixels) carry too little detail for 17 vertebrae.
MIN_SIDE = 64


#: Predicted landmarks are the result file's own landmark type (x, y in original pixels, confidence in [0, 1]).
PredictedLandmark = Landmark


def _pixels(image: Any) -> np.ndarray:
    pixels = getattr(image, "pixels", image)
    a = np.asarray(pixels)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3].mean(axis=-1)
    if a.ndim != 2:
        raise RadiographError(f"Expected a 2-D grayscale image, got an array of shape {a.shape}; pass one frame.")
    return a.astype(np.float32, copy=False)


def _off_film(points: np.ndarray, shape) -> np.ndarray:
    """(K,) whether each (x, y) original-pixel point lies off a film of ``shape`` (rows, cols); NaN counts as off."""
    rows, cols = shape[:2]
    x, y = points[:, 0], points[:, 1]
    return ~((x >= -0.5) & (x <= cols - 0.5) & (y >= -0.5) & (y <= rows - 0.5))


def predict_array(pixels: np.ndarray, model, *, flip_tta: bool = False, refine: bool = True,
                  info: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predict landmarks on a 2-D array.

    Args:
        pixels: (rows, cols) intensities, bone bright (MONOCHROME2 sense).
        model: :class:`~SpineAlignmentLib.models.registry.LoadedModel`.
        flip_tta: also predict on the mirrored image (channels swapped back:
            ``TL`` <-> ``TR``, ``BL`` <-> ``BR``) and average the two (both stages). Models of lateral
            views (metadata ``decoding.facing``) instead always predict both and keep the orientation
            they are more confident in (they learnt one facing direction); ``flip_tta`` does not apply.
        refine: run the model's second stage (ROI refinement per vertebra) when
            it has one; ``False`` returns the first stage's corners.
        info: optional dict that receives, for a vertebra-centres model, ``level_features``
            (:func:`~SpineAlignmentLib.inference.levels.chain_features` of the first stage's chain),
            ``chain`` (the :class:`~SpineAlignmentLib.inference.anchor.ChainState` a level anchor
            re-names the chain from) and, when the metadata has a ``levels`` block, ``levels`` (the
            chain's level confidence, :func:`~SpineAlignmentLib.inference.levels.assess_levels`).

    Returns:
        ``(points, confidence)``: (K, 2) ``(x, y)`` original pixels and (K,) in [0, 1]
        (calibrated when the metadata has a ``decoding.calibration`` table); a landmark the model reports as
        not found (a level-family model: its level or its own peak not detected, or its point off the film) is NaN with confidence 0.
    """
    import torch

    from ..models.landmarks import flip_permutation
    from ..protocols import get_protocol
    from .decode import decode_heatmaps

    md = model.metadata
    img_spec = md["network_data_format"]["inputs"]["image"]
    inten = img_spec["intensity"]
    dec = md["decoding"]
    norm = normalise_intensity(pixels, inten["low_percentile"], inten["high_percentile"])
    x, geo = letterbox(norm, tuple(model.input_shape))
    batch = x[None, None]
    facing = dec.get("facing")  # a lateral model learnt one facing direction: try the film as it is and mirrored
    if flip_tta or facing:
        batch = np.concatenate([batch, batch[..., ::-1]], axis=0)
    with torch.inference_mode():
        out = model.network(torch.from_numpy(np.ascontiguousarray(batch)))
    if dec["method"] == "vertebra-centres":
        from ..models.vertebra import decode_vertebrae

        kw = {}
        if model.levels is not None:
            from ..models.levels import make_identifier

            ident = model.metadata["identification"]["decoding"]
            identifier = make_identifier(model.levels, model.levels_roi, geo.to_original, model.input_shape[1], image=norm)
            kw = {"identify": identifier, "anchor_weight": float(ident["anchor_weight"]), "extra": int(ident["extra"]),
                  "min_extra_score": float(ident["min_extra_score"])}
        candidates: list = []
        coords, conf = decode_vertebrae(out, model.stride, len(model.landmark_ids) // 4, search=int(dec["window"]),
                                        radius=int(dec.get("refine_radius", 2)), candidates=candidates, **kw)
    elif dec["method"] == "level-family":
        from ..models.level_family import anchor_indices, decode_levels, level_layout

        fam: list = []
        layout = level_layout(model.landmark_ids)
        anchors = anchor_indices(layout, dec.get("anchors", {}), model.name)  # checked when the model was loaded
        coords, conf = decode_levels(out, model.stride, layout, min_score=float(dec["min_score"]),
                                     part_window=dec.get("part_window"), part_radius=int(dec.get("part_radius", 2)),
                                     part_floor=float(dec.get("part_floor", 0.0)), anchors=anchors,
                                     anchor_geometry=dec.get("anchor_naming") == "geometry", info=fam)
        # A part whose offsets put it off the film is not on it, even when its part map has a peak just inside the
        # edge (the cut vertebra's visible rim); the letterbox is centred, so a mirrored prediction has the same
        # bounds.
        for b, d in enumerate(fam):
            o = geo.to_original(d["offset_points"])
            cut = np.isfinite(o).all(axis=1) & _off_film(o, norm.shape)
            coords[b][cut], conf[b][cut] = np.nan, 0.0
    else:
        c_t, conf_t, _ = decode_heatmaps(out, model.stride, window=int(dec["window"]),
                                         conf_radius=float(dec["confidence_radius"]))
        coords, conf = c_t.numpy(), conf_t.numpy()
    coords, conf = np.asarray(coords, dtype=np.float64), np.asarray(conf, dtype=np.float64)
    if info is not None and dec["method"] == "vertebra-centres":
        from .levels import assess_levels, model_level_features

        feats = model_level_features(model, out, coords[0], geo, norm, geo.to_original)
        info["level_features"] = feats
        if "levels" in md:
            info["levels"] = assess_levels(feats, md["levels"])
    pts, c = coords[0], conf[0]
    mirrored = False
    if facing:
        # Keep the orientation in which the network is more confident; its points go back to the film's own x.
        mirrored = bool(np.mean(conf[1]) > np.mean(conf[0]))
        if mirrored:
            pts, c = coords[1].copy(), conf[1]
            pts[:, 0] = (model.input_shape[1] - 1) - pts[:, 0]
        if info is not None:
            info["facing_mirrored"] = mirrored
    elif flip_tta:
        # The mirrored prediction is already ordered top to bottom; un-mirror x and swap left/right corners.
        perm = flip_permutation(model.landmark_ids, get_protocol(model.protocol).flip_pairs)
        w = model.input_shape[1]
        fp = coords[1][perm].copy()
        fp[:, 0] = (w - 1) - fp[:, 0]
        pts = 0.5 * (pts + fp)
        c = 0.5 * (c + conf[1][perm])
    pts = geo.to_original(pts)
    roi_image = None
    if refine and model.refiner is not None:
        from ..models.refine import refine_resized, resize_for_rois, vertebra_frames

        # the resized image is kept for a level anchor, which refines the vertebrae it adds on it
        roi_image = resize_for_rois(norm, float(np.median(vertebra_frames(pts.reshape(-1, 4, 2))[1])), model.roi)
        pts, _ = refine_resized(model.refiner, roi_image[0], roi_image[1], pts, model.roi, stride=model.refiner.stride,
                                iterations=int(model.metadata["refinement"]["iterations"]), flip_tta=flip_tta)
    elif refine and model.landmark_refiner is not None:
        from ..models.landmark_roi import landmark_groups, landmark_parts, level_groups, refine_landmarks

        cols = norm.shape[1]
        work = np.ascontiguousarray(norm[:, ::-1]) if mirrored else norm
        p = pts.copy()
        if mirrored:
            p[:, 0] = (cols - 1) - p[:, 0]
        p, _ = refine_landmarks(model.landmark_refiner, work, p, np.asarray(md["landmark_refinement"]["part_index"]),
                                landmark_groups(model.landmark_ids), level_groups(model.landmark_ids), model.landmark_roi,
                                stride=model.landmark_refiner.stride,
                                mirror_parts=(landmark_parts(model.landmark_ids, get_protocol(model.protocol).flip_pairs)[2]
                                              if flip_tta and not facing else None))
        if mirrored:
            p[:, 0] = (cols - 1) - p[:, 0]
        pts = p
    if dec["method"] == "level-family":
        # This decoder reports a landmark that is not on the film as not found; a part of a level cut by the
        # film's edge is placed from its centre's offsets, so the part that lands off the film is not on it, and
        # a part its part map does not see (confidence 0, kept until its level's ROI was placed) is not found.
        off = _off_film(pts, norm.shape) | ~(c > 0)
        pts[off], c = np.nan, np.where(off, 0.0, c)
    cal = dec.get("calibration")
    if cal:
        # Isotonic map from the raw heatmap score to the observed probability that the corner is
        # within the stated tolerance (fitted on the validation split at export).
        c = np.where(np.isfinite(pts).all(axis=1), np.interp(c, cal["raw"], cal["calibrated"]), 0.0)
    if info is not None and dec["method"] == "vertebra-centres" and not mirrored:
        from .chain import ChainState

        first = candidates[0]
        info["chain"] = ChainState(first["centers"], first["corners"], first["scores"], first["chain"],
                                   first["corner_prob"], model.stride, int(dec["window"]),
                                   int(dec.get("refine_radius", 2)), geo, pts, c, model, roi_image=roi_image,
                                   flip_tta=flip_tta, levels=info.get("levels"))
    return pts, c


def plausibility_warnings(points: np.ndarray, confidence: np.ndarray, ids, low_confidence: float,
                          film: str = "a spine radiograph") -> list[str]:
    """Image-level warnings for a model's landmarks; ``film`` is the protocol table's kind of radiograph
    ("an AP/PA spine radiograph"), named when the confidence is low overall. The order checks apply to
    four-corner vertebra landmarks (sequences of TL, TR, BL, BR)."""
    warns: list[str] = []
    mean_conf = float(np.mean(confidence))
    n_low = int(np.sum(confidence < low_confidence))
    if mean_conf < low_confidence:
        warns.append(f"Low landmark confidence (mean {mean_conf:.2f} < {low_confidence:.2f}): this may not be {film}, "
                     "or the spine is hard to see; check every landmark before using the values.")
    elif n_low:
        names = [ids[i] for i in np.where(confidence < low_confidence)[0]]
        warns.append(f"{n_low} landmark(s) with low confidence ({', '.join(names[:6])}{'...' if n_low > 6 else ''}); check them.")
    vnames = list(vertebra_chain(ids))
    if vnames:
        res = check_labels(points, "prediction", vertebra_names=vnames)
        kinds = {f.check for f in res.findings}
        if "vertebra_order" in kinds:
            warns.append("Predicted vertebrae are not in top-to-bottom order; the landmarks are implausible, check them.")
        if "corner_order" in kinds:
            bad = sorted({vnames[f.vertebra] for f in res.findings if f.check == "corner_order" and f.vertebra is not None})
            warns.append(f"Corner order broken in {', '.join(bad)}; check those vertebrae.")
        if "misplaced_point" in kinds:
            warns.append("Irregular vertebra size or spacing between vertebrae; some landmarks are likely misplaced, check them.")
    return warns


def image_problems(pixels: np.ndarray, what: str) -> list[str]:
    """Warnings for a film nothing can be found on: fewer than :data:`MIN_SIDE` pixels a side, or no contrast.

    ``what`` names what a model looks for (``"vertebra landmarks"``); any warning means whatever the model
    returns on this film must not look confident.
    """
    warns: list[str] = []
    rows, cols = pixels.shape
    if rows < MIN_SIDE or cols < MIN_SIDE:
        warns.append(f"Image is only {rows}x{cols} pixels; too small for {what}, results are unreliable.")
    finite = pixels[np.isfinite(pixels)]  # a full-size copy, freed on return (not kept during inference)
    if finite.size == 0 or float(np.ptp(finite)) == 0.0:
        warns.append(f"Image has no contrast (blank); {what} found on it are meaningless.")
    return warns


def _twins(pts: np.ndarray, conf: np.ndarray) -> list[tuple[int, int]]:
    """``(k, j)`` for each found landmark ``k`` at exactly the point of a more confident found landmark ``j``
    (a result may not hold two landmarks on one point: measuring refuses it)."""
    out, seen = [], {}
    for k in np.argsort(-np.asarray(conf), kind="stable"):
        if not np.isfinite(pts[k]).all():
            continue
        key = (float(pts[k, 0]), float(pts[k, 1]))
        if key in seen:
            out.append((int(k), seen[key]))
        else:
            seen[key] = int(k)
    return out


#: words every "levels unreliable" warning carries (tools that count such films look for them)
LEVELS_UNRELIABLE = "its level names are unreliable"


def short_chain_warning(found: np.ndarray, model) -> str | None:
    """A level-family model's warning for a film on which fewer levels were found than on any film it learnt
    from (``decoding.min_levels``, from its training films): the film shows a framing the model never saw (only
    part of the spine), and the names it gives are read from the chain's order and positions alone. ``found``:
    (K,) whether each landmark was found. None when there is nothing to say."""
    dec = model.metadata["decoding"]
    need = int(dec.get("min_levels", 0))
    if dec["method"] != "level-family" or not need:
        return None
    from ..models.level_family import level_layout

    layout = level_layout(model.landmark_ids)
    levels = [lv for lv, row in zip(layout.levels, layout.members) if found[row[row >= 0]].any()]
    if not levels or len(levels) >= need:
        return None
    return (f"Only {len(levels)} of the {len(layout.levels)} levels were found ({levels[0]}..{levels[-1]}), fewer than "
            f"on any film the model learnt from ({need}): the film may show only part of the spine, and "
            f"{LEVELS_UNRELIABLE}; check them before using the values.")


def predict_landmarks(radiograph_or_array: Any, model, *, flip_tta: bool = False,
                      refine: bool = True, info: dict | None = None) -> tuple[dict[str, Landmark], list[str]]:
    """Predict a protocol's landmarks on a radiograph.

    Args:
        radiograph_or_array: a :class:`~SpineAlignmentLib.imaging.Radiograph`
            (its ``pixels`` are used) or a 2-D array (bone bright).
        model: a :class:`~SpineAlignmentLib.models.registry.LoadedModel`
            (see :func:`~SpineAlignmentLib.models.registry.load_model`).
        flip_tta: average with the prediction on the mirrored image.
        refine: apply the model's second stage when it has one (``False``: first stage only).
        info: optional dict that receives ``levels``, the chain's level confidence and the
            alternative naming (:func:`~SpineAlignmentLib.inference.levels.assess_levels`), when the
            model measures one; an uncertain chain also gives a warning.

    Returns:
        ``(landmarks, warnings)``: landmark ID -> :class:`~SpineAlignmentLib.result.Landmark`
        (original pixels, with confidence), and image-level warnings a user can act on. A landmark the model
        reports as not found is left out, with a warning naming it.

    Raises:
        RadiographError: not a 2-D grayscale image.
    """
    pixels = _pixels(radiograph_or_array)
    warns = image_problems(pixels, "vertebra landmarks")
    detail: dict = {} if info is None else info
    pts, conf = predict_array(pixels, model, flip_tta=flip_tta, refine=refine, info=detail)
    if "chain" in detail:  # what a level anchor starts from: the image's own problems cap its confidences
        detail["chain"].image_warnings = list(warns)
        detail["chain"].confidence = np.minimum(conf, 0.05) if warns else conf
    if "levels" in detail:
        from .levels import level_warning

        if warns:  # a blank or tiny image: its levels mean nothing either
            detail["levels"].update(confidence=0.0, uncertain=True)
        w = level_warning(detail["levels"])
        if w:
            warns.append(w)
    if warns:
        # A blank or tiny image must never look confident, whatever the network says.
        conf = np.minimum(conf, 0.05)
    found = np.isfinite(pts).all(axis=1)
    twins = _twins(pts, conf)
    if twins:  # a landmark on the very point of another: the less confident one is not found
        found[[k for k, _ in twins]] = False
        pairs = ", ".join(f"{model.landmark_ids[k]} on {model.landmark_ids[j]}" for k, j in twins[:4])
        warns.append(f"{len(twins)} landmark(s) predicted on the very point of another ({pairs}); the less "
                     "confident of each pair is left out, place it by hand.")
    ids = [lid for lid, ok in zip(model.landmark_ids, found) if ok]
    pts, conf = pts[found], conf[found]
    low = float(model.metadata["decoding"]["low_confidence"])
    from ..protocols import get_protocol

    if not found.all():
        missing = [lid for lid, ok in zip(model.landmark_ids, found) if not ok]
        warns.append(f"{len(missing)} landmark(s) not found on this film ({', '.join(missing[:8])}"
                     f"{'...' if len(missing) > 8 else ''}); they are left out, and the values that need them are not "
                     "computed (place them by hand if they are on the film).")
    if not len(ids):
        return {}, warns
    short = short_chain_warning(found, model)
    if short:
        warns.append(short)
    warns += plausibility_warnings(pts, conf, ids, low, get_protocol(model.metadata["protocol"]).film)
    landmarks = {lid: Landmark(float(p[0]), float(p[1]), float(c)) for lid, p, c in zip(ids, pts, conf)}
    return landmarks, warns
