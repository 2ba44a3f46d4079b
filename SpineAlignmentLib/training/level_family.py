"""Training pieces of the level-sequence family (:mod:`SpineAlignmentLib.models.level_family`).

The family is trained by the generic trainer's own loop, checkpoint/resume, second stage and export
(:mod:`SpineAlignmentLib.training.generic`, :mod:`SpineAlignmentLib.training.export_generic`) with
``GenericConfig.family = "levels"``; only the first stage's output channels, loss and decoding differ, and
they come from here. Before any epoch, :func:`check_family_data` names a level the dataset never labels
(its name could never be learnt).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import SpineAlignmentError
from ..models.level_family import HEAT_PRIOR, LevelFamilyLoss, level_layout, never_labelled
from ..models.network import SpineLandmarkNet

__all__ = ["MIN_SCORE", "build_family_net", "family_loss", "check_family_data", "family_blocks",
           "family_description", "fit_decoding", "level_errors"]


def build_family_net(net_args: dict, ids: Sequence[str]) -> SpineLandmarkNet:
    """First-stage network of the family for these landmark IDs (heatmap logits start at a 1 % prior)."""
    layout = level_layout(ids)
    net = SpineLandmarkNet(in_channels=1, out_channels=layout.n_channels, **net_args)
    with torch.no_grad():
        for ch in layout.heat_channels:
            net.head.bias[ch] = HEAT_PRIOR
    return net


def family_loss(net, ids: Sequence[str]) -> LevelFamilyLoss:
    return LevelFamilyLoss(level_layout(ids), net.stride)


def check_family_data(items, ids: Sequence[str], data: str) -> None:
    """Refuse a protocol table that is no level sequence, or training data on which a level of the protocol is
    never labelled (one sentence each, before any epoch).

    Raises:
        SpineAlignmentError: naming the table's landmark, or the dataset and the levels no film labels.
    """
    level_layout(ids)  # a table that is no level sequence is named here, before any film is cached
    never = never_labelled([it.landmarks for it in items], ids)
    if never:
        raise SpineAlignmentError(
            f"No film of {data} labels level{'s' if len(never) > 1 else ''} {', '.join(never)}, so the level family "
            "cannot learn to name it; label it on some films, or train the per-landmark model (--trainer generic).")


#: decoding threshold of an exported family model (level centres and single landmarks)
MIN_SCORE = 0.3
#: a level's part is looked for on its part map within this many output pixels of its offsets' point, and placed at
#: the soft-argmax of PART_RADIUS pixels around the maximum there (the specialised coronal network's corner search)
PART_WINDOW, PART_RADIUS = 3, 2


def family_blocks(md: dict, ids: Sequence[str], fitted: dict | None = None) -> dict:
    """Turn the per-landmark model blocks (:func:`~SpineAlignmentLib.training.generic_model.model_blocks`) into
    the family's: the first stage's output channels and the ``level-family`` decoding block (the layout itself
    is read from the ``landmarks`` list at load time, so it cannot disagree with it; ``part_window`` and
    ``part_radius`` say how a level's parts are searched on its part maps). ``fitted``: the run's threshold and
    part search chosen on its training films (:func:`fit_decoding`); without it (a run trained before the
    choice), the defaults. The trainer's validation
    and the export build the model from these same blocks."""
    layout = level_layout(ids)
    md["network"]["args"]["out_channels"] = layout.n_channels
    md["network_data_format"]["outputs"]["pred"]["num_channels"] = layout.n_channels
    md["network"]["coarse_to_fine"] = "stage 1 level centres + part offsets on the whole film, stage 2 one ROI per level"
    md["decoding"] = {**md["decoding"], "method": "level-family", "min_score": MIN_SCORE, "part_window": PART_WINDOW,
                      "part_radius": PART_RADIUS}
    if fitted:  # the run's own choice on its training films (fit_decoding)
        md["decoding"].update(min_score=float(fitted["min_score"]), part_window=int(fitted["part_window"]),
                              part_floor=float(fitted.get("part_floor", 0.0)), min_levels=int(fitted.get("min_levels", 0)),
                              chosen_on=f"{fitted['fitted_on']}: {fitted['candidates']}")
        if fitted.get("anchors") and fitted.get("anchor_naming", "none") != "none":  # anchors that name better
            md["decoding"].update(anchors=fitted["anchors"], anchor_naming=fitted["anchor_naming"])
    return md


def family_description(protocol: str, ids: Sequence[str]) -> str:
    """The model folder's ``description`` of a family model for ``protocol`` and these landmark IDs."""
    layout = level_layout(ids)
    return (
        f"Level-sequence landmark model for protocol {protocol}: a MONAI residual UNet behind a strided stem "
        f"on the letterboxed film predicts one level-centre heatmap shared by its {len(layout.levels)} levels "
        f"({layout.levels[0]}..{layout.levels[-1]}), each level's position in the chain, the offsets of the "
        f"{len(layout.parts)} level parts from the centre, and a heatmap per landmark outside any level "
        f"({', '.join(layout.ids[k] for k in layout.singles) or 'none'}); a level or landmark not detected is "
        "reported as not found. A second network refines each found level in its own ROI near the original "
        "resolution (one heatmap per landmark part, DSNT).")


#: the centre thresholds and part searches (output pixels; 0: the offsets alone) a family model's decoding is
#: chosen from, on its own training films (:func:`fit_decoding`)
MIN_SCORES = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
PART_WINDOWS = (0, 1, 2, 3)
PART_FLOORS = (0.0, 0.05, 0.1, 0.2, 0.3)
#: how a chain with an anchor found is named (:func:`~SpineAlignmentLib.models.level_family.decode_levels`): as
#: without one (the anchors unused), by the regressed positions corrected by the anchor, or by counting the centres
#: from it; a tie goes to the earlier
ANCHOR_NAMINGS = ("none", "positions", "geometry")
#: training films the decoding is chosen on (a seeded sample; never validation films)
FIT_FILMS = 100


def level_errors(points: np.ndarray, truth: np.ndarray, layout) -> tuple[int, int]:
    """``(missed, wrong)`` levels of one film's decoded ``points`` against its labels ``truth`` (both (K, 2), NaN
    where not found / not labelled).

    *Missed*: a level whose every table part is labelled but that is not found. *Wrong*: a found level that is not
    labelled on the film, or whose centre (over the parts found and labelled) is farther from the labelled one
    than half the film's median spacing between neighbouring labelled levels (a level named as its neighbour).
    """
    members = layout.members
    n_lv = members.shape[0]
    centres = np.full((n_lv, 2), np.nan)
    full = np.zeros(n_lv, dtype=bool)
    for li in range(n_lv):
        ks = members[li][members[li] >= 0]
        lab = np.isfinite(truth[ks]).all(axis=1)
        if lab.any():
            centres[li] = truth[ks[lab]].mean(axis=0)
        full[li] = lab.all()
    labelled = np.isfinite(centres).all(axis=1)
    idx = np.where(labelled)[0]
    steps = [np.linalg.norm(centres[b] - centres[a]) / (b - a) for a, b in zip(idx[:-1], idx[1:])]
    spacing = float(np.median(steps)) if steps else np.inf
    missed = wrong = 0
    for li in range(n_lv):
        ks = members[li][members[li] >= 0]
        found = np.isfinite(points[ks]).all(axis=1)
        if not found.any():
            missed += int(full[li])
            continue
        both = found & np.isfinite(truth[ks]).all(axis=1)
        if not both.any():
            wrong += 1
        elif np.linalg.norm(points[ks[both]].mean(axis=0) - truth[ks[both]].mean(axis=0)) > 0.5 * spacing:
            wrong += 1
    return missed, wrong


def fit_decoding(model, films, seed: int = 0) -> dict:
    """Choose a family model's centre threshold and part search on its training films.

    ``model``: the first stage as exported (:func:`~SpineAlignmentLib.training.generic_model.run_model`);
    ``films``: training films cached as the trainer caches them (``image`` the letterboxed input in the learnt
    facing, ``points`` its labels in input pixels, NaN where not labelled); up to :data:`FIT_FILMS` of them
    (seeded). The threshold (:data:`MIN_SCORES`) is the one with the fewest level errors (:func:`level_errors`:
    levels missed + levels reported that the film does not show or names wrongly; a tie goes to the higher
    threshold, which reports less); then the part search (:data:`PART_WINDOWS`) with the lowest median landmark
    error (a tie goes to the smaller window); then, with a part search, the part floor (:data:`PART_FLOORS`, a part
    its map does not see is not found) with the fewest part errors: labelled parts of the levels found that it
    drops + parts reported that the film does not label (a tie goes to the lower floor, which drops less).
    Training films flatter the model; they are what the choice may see.

    ``min_levels`` is the fewest levels any training film labels whole (all ``films``): a film on which fewer are
    found shows a framing the model never learnt, and its level names are flagged as unreliable. ``anchors`` are
    the landmarks outside any level that anchor a level's name on every training film (all ``films``' labels,
    :func:`~SpineAlignmentLib.models.level_family.level_anchors`); the candidates above are decoded without them, and
    with anchors, how an anchored chain is named (:data:`ANCHOR_NAMINGS`, "none": the anchors are not used) is
    chosen last, by the fewest level errors.

    Returns:
        ``{"min_score", "part_window", "part_floor", "min_levels", "anchors", "anchor_naming", "fitted_on"}`` and
        the figures each candidate measured (``"candidates"``).
    """
    import random

    import torch

    from ..models.level_family import anchor_indices, decode_levels, level_anchors, level_layout

    layout = level_layout(model.landmark_ids)
    whole = [int(sum(np.isfinite(f.points[row[row >= 0]]).all() for row in layout.members)) for f in films]
    anchors = level_anchors(layout, [f.points for f in films])
    anchor_index = anchor_indices(layout, anchors, getattr(model, "name", "training run"))
    pick = list(films)
    random.Random(seed).shuffle(pick)
    pick = pick[:FIT_FILMS]
    outs = []
    with torch.inference_mode():
        for f in pick:
            x = torch.from_numpy(np.ascontiguousarray(f.image, dtype=np.float32) / 255.0)[None, None]
            outs.append(model.network(x))
    has_maps = bool(outs) and outs[0].shape[1] >= layout.n_channels

    def decode(min_score, window, floor=0.0, naming="none"):
        res = [decode_levels(o, model.stride, layout, min_score=min_score, part_window=window or None, part_floor=floor,
                             anchors=anchor_index if naming != "none" else None, anchor_geometry=naming == "geometry")
               for o in outs]
        return [np.where((c[0] > 0)[:, None], p[0], np.nan) for p, c in res]  # confidence 0: not found

    by_score = {}
    for t in MIN_SCORES:
        errs = [level_errors(p, f.points, layout) for p, f in zip(decode(t, 0), pick)]
        by_score[t] = {"missed": int(sum(e[0] for e in errs)), "wrong": int(sum(e[1] for e in errs))}
    best = min(MIN_SCORES, key=lambda t: (by_score[t]["missed"] + by_score[t]["wrong"], -t))
    by_window = {}
    for wdw in (PART_WINDOWS if has_maps else (0,)):
        e = np.concatenate([np.linalg.norm(p - f.points, axis=1) for p, f in zip(decode(best, wdw), pick)])
        e = e[np.isfinite(e)]
        by_window[wdw] = float(np.median(e)) if e.size else float("inf")
    window = min(by_window, key=lambda w: (by_window[w], w))
    by_floor = {}
    for fl in (PART_FLOORS if window else (0.0,)):
        dec = decode(best, window, fl)
        if fl == 0.0:
            reached = [np.isfinite(p).all(axis=1) for p in dec]  # the parts of the levels found
        dropped = sum(int((r & ~np.isfinite(p).all(axis=1) & np.isfinite(f.points).all(axis=1)).sum())
                      for r, p, f in zip(reached, dec, pick))
        extra = sum(int((np.isfinite(p).all(axis=1) & ~np.isfinite(f.points).all(axis=1)).sum()) for p, f in zip(dec, pick))
        by_floor[fl] = {"dropped": dropped, "unlabelled_reported": extra}
    floor = min(by_floor, key=lambda v: (by_floor[v]["dropped"] + by_floor[v]["unlabelled_reported"], v))
    by_naming = {}
    for mode in (ANCHOR_NAMINGS if anchors else ()):
        errs = [level_errors(p, f.points, layout) for p, f in zip(decode(best, window, floor, mode), pick)]
        by_naming[mode] = {"missed": int(sum(e[0] for e in errs)), "wrong": int(sum(e[1] for e in errs))}
    naming = min(by_naming, key=lambda m: (by_naming[m]["missed"] + by_naming[m]["wrong"], ANCHOR_NAMINGS.index(m)),
                 default="none")
    return {"min_score": best, "part_window": window, "part_floor": floor, "min_levels": min(whole, default=0),
            "anchors": anchors, "anchor_naming": naming, "fitted_on": f"{len(pick)} training films",
            "candidates": {"min_score": {str(t): v for t, v in by_score.items()},
                           "part_window_median_error_input_px": {str(w): round(v, 3) for w, v in by_window.items()},
                           "part_floor": {str(v): n for v, n in by_floor.items()},
                           **({"anchor_naming": by_naming} if by_naming else {})}}
