"""Level confidence: how likely a predicted T1..L5 chain is named at the right level, versus one level off.

A vertebra-centres first stage finds vertebrae well but may take C7 for T1
(the chain then runs C7..L4, "one level too high") or skip T1 and take S1 for
L5 (T2..S1, "one level too low"). The landmark confidence cannot see this:
every vertebra of a shifted chain is a real vertebra, found sharply. This
module scores the chain as a whole from what the model has:

* the first stage's centre heatmap one vertebra spacing above the top and
  below the bottom vertebra of the chain (is there another vertebra there?),
  and at the chain's ends;
* the chain's size and spacing trend (vertebrae widen from T1 to L5; the
  end vertebrae against their neighbours);
* the film's framing (how far the chain ends lie from the film's edges, in
  vertebra spacings; how much of the film the chain spans);
* with an identification stage (:mod:`SpineAlignmentLib.models.levels`):
  its class probabilities of the top and bottom vertebra, as the log-odds of
  the three hypotheses (named right / one level too high / one level too low).

A multinomial logistic model (:func:`level_probabilities_from_features`,
coefficients in the model's ``metadata.json`` block ``levels``, fitted by
:mod:`SpineAlignmentLib.training.level_confidence` on the training split and
on re-framed copies of it) turns these features into the probabilities of the
three hypotheses. The level confidence is the probability that all 17
vertebrae are named right; below the block's ``warn_below`` the result
carries a warning that names the more likely alternative.

A film that shows only part of the spine (only the thoracic or only the
lumbar spine) still gets 17 names from a decoder that takes the 17 strongest
centres: some of them land where there is no vertebra, and their centre score
is far below any vertebra's on a whole film. The block's
``vertebra_score_floor`` (a low percentile of the weakest chain vertebra's
score on the training films) marks such a chain *incomplete*: uncertain
whatever its level confidence, with a warning that says how many vertebrae
are weak (:func:`incomplete_chain`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["SHIFTS", "FEATURES", "chain_features", "level_probabilities_from_features", "assess_levels",
           "incomplete_chain", "alternative_names", "levels_may_be", "levels_line", "level_warning", "anchor_text"]

#: the hypotheses, as the level shift of the chain: -1 one level too high (C7..L4), 0 right, +1 too low (T2..S1)
SHIFTS = (-1, 0, 1)

#: every feature :func:`chain_features` can give (the metadata names the ones its fit uses)
FEATURES = ("above1", "above2", "below1", "below2", "top_score", "bottom_score", "margin_top", "margin_bottom",
            "width_ratio_ends", "height_ratio_ends", "width_top_vs_next", "width_bottom_vs_previous",
            "height_bottom_vs_previous", "spacing_bottom_trend", "spacing_top_trend", "span_fraction",
            "ident_high_vs_right", "ident_low_vs_right", "weakest_score", "second_weakest_score",
            "spacing_irregularity")

#: how far (in chain spacings) the framing margins are counted
MAX_MARGIN = 8.0


def _window_max(prob: np.ndarray, xy: np.ndarray, radius: float, stride: int) -> float:
    """Maximum of a heatmap (h, w) within ``radius`` input pixels (at least one heatmap pixel) of input point ``xy``;
    0 when the window lies outside the map."""
    h, w = prob.shape
    off = (stride - 1) / 2.0
    cx, cy = (xy[0] - off) / stride, (xy[1] - off) / stride
    r = max(radius / stride, 1.0)
    x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, w)
    y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return 0.0
    return float(prob[y0:y1, x0:x1].max())


def chain_features(centre_prob: np.ndarray, chain: np.ndarray, stride: int, content_rows: tuple[float, float], *,
                   end_probabilities: tuple[np.ndarray, np.ndarray] | None = None,
                   score_floor: float | None = None) -> dict[str, float]:
    """Features of one decoded chain (see the module text).

    Args:
        centre_prob: (h, w) the first stage's vertebra-centre probabilities (sigmoid of channel 0).
        chain: (68, 2) the decoded corners T1_TL..L5_BR in network-input pixels, top to bottom.
        stride: network-input pixels per heatmap pixel.
        content_rows: first and last network-input row covered by the film (the letterbox leaves the rest empty).
        end_probabilities: the identification stage's class probabilities (5,) of the top and of the bottom
            vertebra (:data:`~SpineAlignmentLib.models.levels.LEVEL_CLASSES` order), when the model has one.
        score_floor: the model's ``vertebra_score_floor``; adds ``weak_vertebrae``, the number of chain
            vertebrae whose centre score lies below it (not a fit feature: it names the count in the warning).

    Returns:
        feature name -> value (:data:`FEATURES`; the two ``ident_*`` only with ``end_probabilities``).
    """
    q = np.asarray(chain, dtype=np.float64).reshape(-1, 4, 2)
    c = q.mean(axis=1)
    width = 0.5 * (np.linalg.norm(q[:, 1] - q[:, 0], axis=1) + np.linalg.norm(q[:, 3] - q[:, 2], axis=1))
    height = 0.5 * (np.linalg.norm(q[:, 2] - q[:, 0], axis=1) + np.linalg.norm(q[:, 3] - q[:, 1], axis=1))
    width, height = np.maximum(width, 1e-3), np.maximum(height, 1e-3)
    up, down = c[1] - c[0], c[-1] - c[-2]
    s_up, s_down = max(float(np.linalg.norm(up)), 1e-3), max(float(np.linalg.norm(down)), 1e-3)
    top_row, bottom_row = content_rows
    f = {
        "above1": _window_max(centre_prob, c[0] - up, 0.4 * s_up, stride),
        "above2": _window_max(centre_prob, c[0] - 2 * up, 0.4 * s_up, stride),
        "below1": _window_max(centre_prob, c[-1] + down, 0.4 * s_down, stride),
        "below2": _window_max(centre_prob, c[-1] + 2 * down, 0.4 * s_down, stride),
        "top_score": _window_max(centre_prob, c[0], 0.0, stride),
        "bottom_score": _window_max(centre_prob, c[-1], 0.0, stride),
        "margin_top": float(np.clip((c[0, 1] - top_row) / s_up, 0.0, MAX_MARGIN)),
        "margin_bottom": float(np.clip((bottom_row - c[-1, 1]) / s_down, 0.0, MAX_MARGIN)),
        "width_ratio_ends": float(np.log(width[-1] / width[0])),
        "height_ratio_ends": float(np.log(height[-1] / height[0])),
        "width_top_vs_next": float(np.log(width[0] / width[1])),
        "width_bottom_vs_previous": float(np.log(width[-1] / width[-2])),
        "height_bottom_vs_previous": float(np.log(height[-1] / height[-2])),
        "spacing_bottom_trend": float(np.log(s_down / max(float(np.linalg.norm(c[-2] - c[-3])), 1e-3))),
        "spacing_top_trend": float(np.log(s_up / max(float(np.linalg.norm(c[2] - c[1])), 1e-3))),
        "span_fraction": float((c[-1, 1] - c[0, 1]) / max(bottom_row - top_row, 1.0)),
    }
    # a chain stretched over fewer vertebrae than it names holds weak or irregularly spaced members
    scores = np.sort([_window_max(centre_prob, ci, 0.0, stride) for ci in c])
    f["weakest_score"] = float(scores[0])
    f["second_weakest_score"] = float(scores[1]) if len(scores) > 1 else float(scores[0])
    steps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    f["spacing_irregularity"] = float(np.max(np.abs(np.log(np.maximum(steps, 1e-3) / max(float(np.median(steps)), 1e-3)))))
    if score_floor is not None:
        f["weak_vertebrae"] = float(np.sum(scores < score_floor))
    if end_probabilities is not None:
        from ..models.levels import ABOVE, BELOW, FIRST, INNER, LAST

        top, bottom = (np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1.0)) for p in end_probabilities)
        right = top[FIRST] + bottom[LAST]
        f["ident_high_vs_right"] = float(top[ABOVE] + bottom[INNER] - right)
        f["ident_low_vs_right"] = float(top[INNER] + bottom[BELOW] - right)
    return f


def level_probabilities_from_features(features: dict[str, float], block: dict) -> np.ndarray:
    """(3,) probabilities of :data:`SHIFTS` from the metadata block's standardised multinomial logistic model."""
    x = np.array([features[k] for k in block["features"]], dtype=np.float64)
    z = (x - np.asarray(block["mean"], dtype=np.float64)) / np.asarray(block["scale"], dtype=np.float64)
    logits = np.asarray(block["coef"], dtype=np.float64) @ z + np.asarray(block["intercept"], dtype=np.float64)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def alternative_names(shift: int, names: tuple[str, ...] = ("T1", "L5")) -> tuple[str, str]:
    """What the vertebrae named ``names`` (top, bottom of the chain) are when the chain is off by ``shift``
    (:data:`SHIFTS`: -1 every name one level up, T1 -> C7; +1 one level down, T1 -> T2)."""
    from ..geometry.levels import adjacent_level

    top, bottom = (adjacent_level(n, shift) or n for n in names)
    return top, bottom


def assess_levels(features: dict[str, float], block: dict) -> dict[str, Any]:
    """The ``levels`` entry of a result: level confidence, the probabilities of the shifts and the alternative.

    Returns:
        ``{"confidence": P(named right), "shift_probabilities": {"-1":, "0":, "+1":},
        "alternative": {"shift": -1 | 1, "probability":, "top": "C7" | "T2", "bottom": "L4" | "S1"},
        "warn_below": threshold, "uncertain": confidence < threshold}``.
    """
    p = level_probabilities_from_features(features, block)
    alt = -1 if p[0] >= p[2] else 1
    top, bottom = alternative_names(alt)
    conf = float(p[1])
    thr = float(block["warn_below"])
    out = {"confidence": round(conf, 4),
           "shift_probabilities": {"-1": round(float(p[0]), 4), "0": round(conf, 4), "+1": round(float(p[2]), 4)},
           "alternative": {"shift": alt, "probability": round(float(p[0 if alt == -1 else 2]), 4), "top": top,
                           "bottom": bottom},
           "warn_below": thr, "uncertain": conf < thr}
    if incomplete_chain(features, block):
        out.update(uncertain=True, incomplete=True, weak_vertebrae=max(int(features.get("weak_vertebrae", 1)), 1),
                   weakest_score=round(float(features["weakest_score"]), 4),
                   score_floor=float(block["vertebra_score_floor"]))
    return out


def incomplete_chain(features: dict[str, float], block: dict) -> bool:
    """Whether a chain names more vertebrae than the film shows clearly: its weakest vertebra's centre score lies
    below the block's ``vertebra_score_floor`` (a film of only the thoracic or only the lumbar spine; blocks
    fitted before the floor existed never say so)."""
    floor = block.get("vertebra_score_floor")
    return floor is not None and "weakest_score" in features and float(features["weakest_score"]) < float(floor)


def levels_may_be(levels: dict[str, Any] | None) -> str:
    """Short form of an uncertain chain for tables and the overlay: ``""`` when the levels are not uncertain,
    the alternative names (``"C7-L4"``, ``"T2-S1"``), or ``"incomplete (5 of 17 weak)"``."""
    if not levels or not levels.get("uncertain"):
        return ""
    if levels.get("incomplete"):
        return f"incomplete ({levels['weak_vertebrae']} of 17 weak)"
    return f"{levels['alternative']['top']}-{levels['alternative']['bottom']}"


def levels_line(levels: dict[str, Any]) -> str:
    """One line for people (the CLI, the overlay panel): ``"level confidence 0.84"``, with
    ``" (uncertain: may be C7-L4)"`` or ``" (incomplete (5 of 17 weak))"`` when the levels are uncertain, or
    ``"level confidence 1.00 (confirmed by user: T1 at (512, 140))"`` when a level anchor confirmed them."""
    if levels.get("confirmed"):

        anchor = levels.get("anchor") or {}
        return f"level confidence {levels['confidence']:.2f} (confirmed by {anchor.get('by', 'user')}: {anchor_text(anchor)})"
    may_be = levels_may_be(levels)
    suffix = "" if not may_be else f" ({may_be})" if levels.get("incomplete") else f" (uncertain: may be {may_be})"
    return f"level confidence {levels['confidence']:.2f}{suffix}"


def level_warning(levels: dict[str, Any]) -> str | None:
    """The user-facing warning of an uncertain chain (``None`` when the levels are not uncertain)."""
    if not levels.get("uncertain"):
        return None
    if levels.get("incomplete"):
        return (f"Vertebra levels unreliable: {levels['weak_vertebrae']} of the 17 named vertebrae were not found "
                f"clearly (centre score below {levels['score_floor']:.2f}, weakest {levels['weakest_score']:.2f}), so "
                "the film may show only part of the spine (e.g. only the thoracic or only the lumbar spine) and the 17 "
                "names may be stretched over fewer vertebrae; check every level before using end vertebrae, apices, "
                "per-level values or the Cobb angles.")
    alt = levels["alternative"]
    if alt["shift"] == -1:
        what = ("one level too high: the vertebra named T1 may be C7 and the one named L5 may be L4 "
                "(counted from the sacrum, the top vertebra is then C7 and L5 is not in the chain)")
    else:
        what = ("one level too low: the vertebra named T1 may be T2 and the one named L5 may be S1 "
                "(counted from the first rib, the bottom vertebra is then S1 and T1 is not in the chain)")
    return (f"Vertebra levels uncertain (level confidence {levels['confidence']:.2f} < {levels['warn_below']:.2f}): "
            f"the chain may be named {what}; check the levels on the first rib (T1) and the sacrum (L5) before using "
            "end vertebrae, apices or per-level values. The film may also not show the whole T1-L5 spine.")


def identification_end_probabilities(model, norm: np.ndarray, chain_original: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Class probabilities (5,) of the chain's top and bottom vertebra from the model's identification stage
    (``None`` when it has none). ``chain_original``: (68, 2) corners in original pixels; ``norm``: the
    normalised original image."""
    if model.levels is None:
        return None
    from ..models.levels import level_probabilities
    from ..models.refine import resize_for_rois, vertebra_frames

    q = np.asarray(chain_original, dtype=np.float64).reshape(-1, 4, 2)
    resized, f = resize_for_rois(norm, float(np.median(vertebra_frames(q)[1])), model.levels_roi)
    p = level_probabilities(model.levels, resized, f, q[[0, -1]], model.levels_roi)
    return p[0], p[1]


def model_level_features(model, out, chain_input: np.ndarray, geo, norm: np.ndarray,
                         to_original: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
    """:func:`chain_features` of the first item of a first-stage output ``out`` (1+, C, h, w) and its decoded
    chain (68, 2) in network-input pixels; ``geo`` is the letterbox, ``norm`` the normalised original image."""
    import torch

    prob = torch.sigmoid(out[0, 0].float()).numpy()
    rows = (float(geo.offset[0]), float(geo.offset[0] + geo.scale[0] * geo.src_shape[0] - 1))
    ends = identification_end_probabilities(model, norm, to_original(np.asarray(chain_input)))
    floor = model.metadata.get("levels", {}).get("vertebra_score_floor")
    return chain_features(prob, chain_input, model.stride, rows, end_probabilities=ends, score_floor=floor)


def anchor_text(anchor: dict[str, Any]) -> str:
    """``"T1 at (512, 140)"`` or ``"shift -1"`` for a ``levels.anchor`` dict."""
    if anchor.get("shift") is not None:
        return f"shift {int(anchor['shift']):+d}"
    return f"{anchor.get('level')} at ({float(anchor['x']):.0f}, {float(anchor['y']):.0f})"
