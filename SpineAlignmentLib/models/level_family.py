"""Level-sequence landmark family: one network design for every landmark protocol.

Every spine protocol is a sequence of vertebral levels, each with some parts (corners ``AS``/``PI``/``TL``...,
a centroid ``c``), plus a few landmarks that belong to no level (``OD``, ``FH_1``, ``PNS``...). The layout is
read from the protocol table's landmark IDs (:func:`level_layout`, with the grouping of
:mod:`~SpineAlignmentLib.models.landmark_roi`), never from a protocol name: the levels in spine order
(:data:`~SpineAlignmentLib.geometry.levels.SPINE_LEVELS`), each level's parts (a level may have fewer parts than
another: C2 has ``AI``, ``PI``, ``c`` in the whole-spine table, T5 five), and the landmarks outside any level.

Output channels of the first stage (a :class:`~SpineAlignmentLib.models.network.SpineLandmarkNet` at 1/stride):

* ``0``: level-centre heatmap logits, one map shared by every level (CenterNet focal loss); a level's centre is
  the mean of its landmarks in the table;
* ``1``: the level's position in the layout (0 = the first level), divided by :data:`INDEX_SCALE`, regressed
  at each centre: what names a chain of detected centres;
* ``2 .. 2 + 2P``: per part, ``(dx, dy) / OFFSET_SCALE`` from the centre pixel to the part's point;
* then per landmark outside any level: a heatmap (focal loss; all-zero on a film where the landmark is not
  labelled, so a landmark off the film is learnt as *absent*) and its ``(dx, dy)`` offset;
* then per part, a part heatmap shared by every level (focal loss on every labelled point of that part): the
  offsets say roughly where a level's part is, the part's heatmap says exactly where (as the corner-type maps of
  the specialised coronal network, :mod:`~SpineAlignmentLib.models.vertebra`, do).

Decoding (:func:`decode_levels`): the centre peaks above ``min_score`` are the detected levels (a weaker peak
inside a stronger one's level, whose extent its part offsets give, is the same level), ordered top to bottom; their names come from the chain's order, anchored by the regressed positions (a dynamic programme
assigns strictly increasing levels, so a chain shorter than the protocol's keeps its own names and is never
stretched over the protocol). The positions learn the framing of the training films as well as the anatomy, so a
landmark outside any level that sits next to one level on every training film (:func:`level_anchors`: the dens
and C2) anchors the names where it is found: the centre next to it is that level, and the rest are named by the
positions corrected by the same amount or by counting the centres from it (chosen per model on its training
films, ``decoding.anchor_naming``); the parts of each detected level are its centre plus the regressed offsets, each moved
to the soft-argmax of its part heatmap's maximum within ``part_window`` output pixels (a model exported before
the part maps has none and keeps the offsets). A
level not detected, or a landmark whose heatmap peak is below ``min_score``, is *not found* (NaN), never
invented. The second stage (:func:`~SpineAlignmentLib.models.landmark_roi.refine_landmarks`) then refines each
found level in its ROI near the original resolution, as for the per-landmark model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelError, SpineAlignmentError
from ..geometry.levels import SPINE_LEVELS
from .landmark_roi import _LEVEL, landmark_groups, landmark_parts
from .vertebra import OFFSET_SCALE, _pixel_index, _splat, focal_loss

__all__ = ["LevelLayout", "level_layout", "is_level_sequence", "never_labelled", "name_chain", "LevelFamilyLoss", "decode_levels", "level_anchors", "anchor_indices", "geometric_names", "INDEX_SCALE", "HEAT_PRIOR",
           "MIN_PART_PEAK"]

#: levels per unit of the regressed level position (keeps the target near 1)
INDEX_SCALE = 8.0
#: initial bias of the heatmap logits (a 1 % prior, CenterNet): the first steps are not swamped by background
HEAT_PRIOR = -4.6
#: centre peaks kept beyond the protocol's number of levels, strongest first (0: the strongest n_levels; more only
#: with a finite DROP_COST, when the naming may leave double or spurious peaks out)
EXTRA = 0


@dataclass(frozen=True)
class LevelLayout:
    """The level-sequence reading of a protocol's landmark IDs.

    Attributes:
        ids: landmark IDs in channel order (the protocol table's).
        levels: level names, top to bottom.
        parts: part names shared by all levels (``AS``, ``PS``, ``c``...).
        members: (L, P) landmark index of each level's part, -1 where the level has no such part.
        singles: landmark indices of the landmarks outside any level.
    """

    ids: tuple[str, ...]
    levels: tuple[str, ...]
    parts: tuple[str, ...]
    members: np.ndarray
    singles: tuple[int, ...]

    @property
    def n_channels(self) -> int:
        """First-stage output channels: centre, position, 2 per part, 3 per single landmark, 1 per part map."""
        return 2 + 3 * len(self.parts) + 3 * len(self.singles)

    @property
    def heat_channels(self) -> list[int]:
        """Channels holding heatmap logits (the centre map, each single landmark's map, each part map)."""
        return ([0] + [self.single_channel(j) for j in range(len(self.singles))]
                + [self.part_channel(p) for p in range(len(self.parts))])

    def single_channel(self, j: int) -> int:
        return 2 + 2 * len(self.parts) + 3 * j

    def part_channel(self, p: int) -> int:
        """Channel of part ``p``'s heatmap (after the single landmarks' channels)."""
        return 2 + 2 * len(self.parts) + 3 * len(self.singles) + p


def level_layout(ids: Sequence[str]) -> LevelLayout:
    """Levels, parts and single landmarks of a protocol's landmark IDs (see :class:`LevelLayout`).

    Raises:
        SpineAlignmentError: a level prefix that is no spine level (e.g. ``L6``), or no level at all (a
            protocol without vertebral levels has no level sequence to learn).
    """
    ids = tuple(ids)
    groups = landmark_groups(ids)
    level_groups, singles = [], []
    for g in groups:
        m = _LEVEL.match(ids[g[0]])
        if m is None:
            singles.append(int(g[0]))
        else:
            if m.group(1) not in SPINE_LEVELS:
                raise SpineAlignmentError(f"Landmark {ids[g[0]]} names level {m.group(1)}, which is not a spine level "
                                          f"({SPINE_LEVELS[0]}..{SPINE_LEVELS[-1]}); fix the protocol table.")
            level_groups.append((m.group(1), g))
    if not level_groups:
        raise SpineAlignmentError("The protocol's landmarks name no vertebral level (IDs such as T5_AS, L3c); "
                                  "train it with the per-landmark model (--trainer generic).")
    level_groups.sort(key=lambda t: SPINE_LEVELS.index(t[0]))
    # parts of the level landmarks only (a single landmark is not a part of any level)
    level_ids = [ids[k] for _, g in level_groups for k in g]
    parts, part_index, _ = landmark_parts(level_ids)
    members = -np.ones((len(level_groups), len(parts)), dtype=np.int64)
    j = 0
    for li, (_, g) in enumerate(level_groups):
        for k in g:
            members[li, part_index[j]] = int(k)
            j += 1
    return LevelLayout(ids, tuple(n for n, _ in level_groups), tuple(parts), members, tuple(singles))


def is_level_sequence(ids: Sequence[str]) -> bool:
    """Whether the landmark IDs read as a level sequence (:func:`level_layout` accepts them)."""
    try:
        level_layout(ids)
    except SpineAlignmentError:
        return False
    return True


def never_labelled(labels: Sequence[dict], ids: Sequence[str]) -> list[str]:
    """Levels of the layout of ``ids`` that none of the films' ``labels`` (``{ID: point}`` each) labels at all
    (top to bottom); ``[]`` for a protocol without levels."""
    if not is_level_sequence(ids):
        return []
    layout = level_layout(ids)
    return [lv for li, lv in enumerate(layout.levels)
            if not any(layout.ids[k] in lab for lab in labels for k in layout.members[li] if k >= 0)]


def _level_points(layout: LevelLayout, points: torch.Tensor, valid: torch.Tensor):
    """(B, L, P, 2) points of each level's parts, (B, L, P) labelled, (L, P) defined by the table."""
    m = torch.as_tensor(layout.members)
    defined = m >= 0
    idx = m.clamp_min(0)
    pts = points[:, idx]  # (B, L, P, 2)
    ok = valid[:, idx] & defined[None]
    return pts, ok, defined


def _around(centres: torch.Tensor, ok: torch.Tensor, h: int, w: int, stride: int):
    """Heatmap pixels of the 3x3 neighbourhood of each point: flat index (B, 9N), pixel centre (B, 9N, 2) in
    input pixels, usable (B, 9N)."""
    b = centres.shape[0]
    ix, iy = _pixel_index(centres, h, w, stride)
    dd = torch.tensor([-1, 0, 1])
    ox = (ix[..., None, None] + dd[None, None, None, :]).expand(b, -1, 3, 3).reshape(b, -1)
    oy = (iy[..., None, None] + dd[None, None, :, None]).expand(b, -1, 3, 3).reshape(b, -1)
    use = ok[..., None].expand(b, -1, 9).reshape(b, -1) & (ox >= 0) & (ox < w) & (oy >= 0) & (oy < h)
    off = (stride - 1) / 2.0
    pos = torch.stack([ox.float() * stride + off, oy.float() * stride + off], dim=-1)
    return oy.clamp(0, h - 1) * w + ox.clamp(0, w - 1), pos, use


def _gather(out: torch.Tensor, channels: list[int], flat: torch.Tensor) -> torch.Tensor:
    b, _, h, w = out.shape
    reg = out[:, channels].reshape(b, len(channels), h * w)
    return torch.gather(reg, 2, flat[:, None, :].expand(b, len(channels), flat.shape[1])).permute(0, 2, 1)


class LevelFamilyLoss(torch.nn.Module):
    """Focal losses on the centre and single-landmark heatmaps + smooth L1 on offsets and level positions.

    Call with network output (B, C, h, w), landmark points (B, K, 2) in input pixels (the protocol's order) and
    a (B, K) validity mask (labelled and inside the image). A level is a positive centre only when all its
    table parts are labelled; a partly labelled level (its edge cropped) is neither positive nor a full
    negative (its centre gets a 0.9 Gaussian, which the penalty-reduced focal loss nearly ignores). A single
    landmark that is not labelled has an all-zero target: the network learns that it is absent. A part's
    heatmap has a peak at every labelled point of that part, whatever its level (partly labelled levels too).
    An output without the part maps' channels (``layout.n_channels - len(layout.parts)``) is trained without
    them.
    Returns ``(loss, parts)`` as :class:`~SpineAlignmentLib.training.losses.DsntLoss` does.
    """

    def __init__(self, layout: LevelLayout, stride: int, sigma_center: float = 2.0, sigma_single: float = 1.5,
                 offset_weight: float = 1.0, sigma_part: float = 1.5) -> None:
        super().__init__()
        self.layout, self.stride = layout, stride
        self.sigma_center, self.sigma_single, self.offset_weight = sigma_center, sigma_single, offset_weight
        self.sigma_part = sigma_part

    def forward(self, out: torch.Tensor, points: torch.Tensor, valid: torch.Tensor):
        lay, s = self.layout, self.stride
        out = out.float()
        b, _, h, w = out.shape
        points = torch.nan_to_num(points.float())
        valid = valid.bool()
        pts, ok, defined = _level_points(lay, points, valid)
        n_ok = ok.sum(-1)
        full = n_ok == defined.sum(-1)[None]  # (B, L)
        partial = (n_ok > 0) & ~full
        centres = (pts * ok[..., None]).sum(2) / n_ok.clamp_min(1)[..., None]
        with torch.no_grad():
            t_center = torch.maximum(_splat(centres, full, h, w, s, self.sigma_center),
                                     0.9 * _splat(centres, partial, h, w, s, self.sigma_center))
            t_center = torch.where(t_center >= 1.0, t_center, t_center.clamp_max(0.99))
        l_center = focal_loss(out[:, 0], t_center)
        # offsets and level position on the 3x3 pixels around each full level's centre
        n_lv = len(lay.levels)
        flat, pos, use = _around(centres, full, h, w, s)
        rep = lambda t: t[:, :, None].expand(b, n_lv, 9, *t.shape[2:]).reshape(b, n_lv * 9, *t.shape[2:])
        g = _gather(out, list(range(1, 2 + 2 * len(lay.parts))), flat)  # (B, 9L, 1 + 2P)
        level_pos = torch.arange(n_lv, dtype=torch.float32)[None].expand(b, n_lv) / INDEX_SCALE
        l_index = (F.smooth_l1_loss(g[..., 0], rep(level_pos), reduction="none", beta=0.1) * use).sum() / use.sum().clamp_min(1)
        t_off = (rep(pts) - pos[:, :, None, :]) / OFFSET_SCALE  # (B, 9L, P, 2)
        m_off = (rep(ok) & use[..., None]).float()[..., None]
        d = F.smooth_l1_loss(g[..., 1:].reshape(b, -1, len(lay.parts), 2), t_off, reduction="none", beta=0.1)
        l_off = (d * m_off).sum() / (m_off.sum() * 2).clamp_min(1.0)
        # single landmarks: own heatmap + offset
        l_single = out.new_zeros(())
        l_soff = out.new_zeros(())
        for j, k in enumerate(lay.singles):
            ch = lay.single_channel(j)
            p, v = points[:, [k]], valid[:, [k]]
            with torch.no_grad():
                t = _splat(p, v, h, w, s, self.sigma_single)
            l_single = l_single + focal_loss(out[:, ch], t)
            fl, ps, us = _around(p, v, h, w, s)
            gs = _gather(out, [ch + 1, ch + 2], fl)
            ds = F.smooth_l1_loss(gs, (p.expand(b, 9, 2) - ps) / OFFSET_SCALE, reduction="none", beta=0.1)
            l_soff = l_soff + (ds * us[..., None]).sum() / (us.sum() * 2).clamp_min(1)
        # part maps: every labelled point of part p, at any level
        l_part = out.new_zeros(())
        if out.shape[1] >= lay.n_channels:
            with torch.no_grad():
                t_part = torch.stack([_splat(pts[:, :, p], ok[:, :, p], h, w, s, self.sigma_part)
                                      for p in range(len(lay.parts))], 1)
            l_part = focal_loss(out[:, [lay.part_channel(p) for p in range(len(lay.parts))]], t_part)
        loss = l_center + self.offset_weight * (l_off + l_index + l_soff) + l_single + l_part
        with torch.no_grad():  # error of the parts at the exact centre pixel (a training-progress figure, input px)
            g0 = g.reshape(b, n_lv, 9, -1)[:, :, 4, 1:].reshape(b, n_lv, len(lay.parts), 2)
            pred = pos.reshape(b, n_lv, 9, 2)[:, :, 4, None, :] + g0 * OFFSET_SCALE
            mv = (ok & full[..., None]).float()
            err_px = float((torch.linalg.norm(pred - pts, dim=-1) * mv).sum() / mv.sum().clamp_min(1.0))
        return loss, {"center": float(l_center.detach()), "offset": float(l_off.detach()),
                      "index": float(l_index.detach()), "single": float(l_single.detach()),
                      "part": float(l_part.detach()), "err_px": err_px}


def _peaks(prob: torch.Tensor, min_score: float, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima (3x3) of a (h, w) probability map scoring at least ``min_score``, strongest first (at most
    ``limit``): ``(flat indices, scores)``."""
    keep = F.max_pool2d(prob[None, None], 3, stride=1, padding=1)[0, 0] == prob
    score = (prob * keep).reshape(-1)
    top = torch.topk(score, min(limit, score.numel()))
    sel = top.values >= min_score
    return top.indices[sel].numpy(), top.values[sel].numpy()


#: naming costs (in levels of disagreement with the regressed positions) of leaving a detected centre unnamed and of
#: each level skipped between two named centres. Defaults: every centre named, gaps free. On the synthetic
#: whole-spine measurement (docs/training.md) the regressed positions are noisy by one or two levels locally but
#: right on average, so the number of centres found is the stronger anchor: drop 1.5 / gap 0.75 and drop 4 / gap
#: 2 named fewer films right than these defaults.
DROP_COST, GAP_COST = float("inf"), 0.0


def name_chain(positions: np.ndarray, n_levels: int, *, drop_cost: float = DROP_COST,
               gap_cost: float = GAP_COST) -> np.ndarray:
    """Level of each detected centre (top to bottom), -1 for a centre left unnamed.

    The named centres get strictly increasing levels in ``[0, n_levels)``; the naming minimises
    ``sum |position_j - level_j|`` over the named centres + ``drop_cost`` per unnamed centre + ``gap_cost`` per
    level skipped between two named centres (dynamic programme). A chain of n centres is never given more than
    n names, and a chain shorter than the protocol's keeps the names its positions say (where it starts is free).

    Args:
        positions: (n,) regressed level positions (levels) of the centres, top to bottom.
        n_levels: levels of the protocol.
    """
    r = np.asarray(positions, dtype=np.float64)
    n = len(r)
    out = -np.ones(n, dtype=np.int64)
    if n == 0:
        return out
    levels = np.arange(n_levels)
    inf = np.inf
    cost = np.full((n, n_levels), inf)  # last named centre has level a, after centre j
    prev = np.full((n, n_levels), -2, dtype=np.int64)  # -2: centre j dropped; -1: first named; else previous level
    none = 0.0  # cost of dropping every centre so far
    for j in range(n):
        here = np.abs(r[j] - levels)
        if j:
            # named here after a named predecessor a' < a: cost[j-1, a'] + gap_cost * (a - a' - 1)
            shifted = cost[j - 1] - gap_cost * levels
            run = np.minimum.accumulate(np.concatenate([[inf], shifted[:-1]]))  # min over a' < a
            arg = np.zeros(n_levels, dtype=np.int64)
            best = inf
            for a in range(1, n_levels):
                if shifted[a - 1] < best:
                    best, arg_a = shifted[a - 1], a - 1
                arg[a] = arg_a if best < inf else -2
            from_named = run + gap_cost * (levels - 1) + here
            from_none = none + here
            use_named = from_named < from_none
            assign = np.where(use_named, from_named, from_none)
            dropped = cost[j - 1] + drop_cost
            take = assign <= dropped
            cost[j] = np.where(take, assign, dropped)
            prev[j] = np.where(take, np.where(use_named, arg, -1), -2)
        else:
            cost[0] = here
            prev[0] = -1
        none += drop_cost
    a = int(np.argmin(cost[-1]))
    if not np.isfinite(cost[-1, a]) or cost[-1, a] > none:
        return out
    for j in range(n - 1, -1, -1):
        if prev[j, a] == -2:  # centre j dropped; the last named level stays a
            continue
        out[j] = a
        if prev[j, a] == -1:
            break
        a = int(prev[j, a])
    return out


#: a weaker centre peak nearer a stronger one than this many times the stronger level's extent towards it (its
#: corners' offsets projected on that direction: half a vertebra height along the spine) is the same level; the
#: next level's centre lies a vertebra height and a disc away, about 2.4 such half-heights
SIZE_SEPARATION = 1.4
#: counting from an anchor (:func:`geometric_names`), a step between two detected centres is n levels when it is at
#: least n - GAP_SLACK times its neighbouring steps (1.75 times: two levels, one missed between them)
GAP_SLACK = 0.25

#: a part heatmap's peak below this keeps the offsets' point (the map does not see the part there)
MIN_PART_PEAK = 0.1

#: a landmark outside any level anchors a level's name when, on every training film that labels it, that level's
#: centre is the nearest to it and at most this fraction of the distance to the next-nearest level's centre (the
#: dens and C2: about 0.55 on the synthetic cervical films; the femoral heads and S1, about 0.85, do not anchor)
ANCHOR_RATIO = 0.75
#: training films that must label an anchor (and two whole levels) before it is trusted
ANCHOR_MIN_FILMS = 10


def level_anchors(layout: LevelLayout, labels: Sequence[np.ndarray]) -> dict[str, dict]:
    """The landmarks outside any level that anchor a level's name, learnt from training labels.

    Anatomy, not framing: the dens is on C2 whether the film shows T1 or stops at C5, so a chain whose detected
    centre next to the dens is C2 is named from there, while the regressed positions learnt the framing of the
    training films. A single landmark anchors the level whose centre is nearest to it on every training film that
    labels it and two whole levels (at least :data:`ANCHOR_MIN_FILMS` films), at most :data:`ANCHOR_RATIO` times as
    far as the next-nearest level's centre on every one of them.

    Args:
        labels: per training film, (K, 2) landmark points in the layout's order, NaN where not labelled.

    Returns:
        ``{landmark ID: {"level": level name, "ratio": the largest nearest/next-nearest ratio, "films": n}}``.
    """
    out: dict[str, dict] = {}
    for k in layout.singles:
        nearest: set[int] = set()
        ratios: list[float] = []
        for pts in labels:
            pts = np.asarray(pts, dtype=np.float64)
            if not np.isfinite(pts[k]).all():
                continue
            cents = [(li, pts[row[row >= 0]].mean(axis=0)) for li, row in enumerate(layout.members)
                     if np.isfinite(pts[row[row >= 0]]).all()]
            if len(cents) < 2:
                continue
            d = sorted((float(np.linalg.norm(c - pts[k])), li) for li, c in cents)
            nearest.add(d[0][1])
            ratios.append(d[0][0] / max(d[1][0], 1e-9))
        if len(nearest) == 1 and len(ratios) >= ANCHOR_MIN_FILMS and max(ratios) <= ANCHOR_RATIO:
            out[layout.ids[k]] = {"level": layout.levels[nearest.pop()], "ratio": round(max(ratios), 3),
                                  "films": len(ratios)}
    return out


def anchor_indices(layout: LevelLayout, anchors: dict, model_name: str) -> dict[int, int]:
    """``{landmark index: level index}`` of a model's ``decoding.anchors`` (:func:`level_anchors`' keys and levels).

    Raises:
        ModelError: an anchor that is not a landmark of the model's protocol, or names a level it does not have
            (a model folder edited by hand or made for another protocol), in one sentence.
    """
    bad = [k for k, a in anchors.items() if k not in layout.ids or a.get("level") not in layout.levels]
    if bad:
        raise ModelError(f"Model '{model_name}' names anchor {bad[0]} in its metadata.json (decoding.anchors), which "
                         "is not a landmark of its protocol or names a level the protocol does not have; export the "
                         "model again with 'spine-align export'.")
    return {layout.ids.index(k): layout.levels.index(a["level"]) for k, a in anchors.items()}


def geometric_names(xy: np.ndarray, j0: int, a0: int, n_levels: int) -> np.ndarray:
    """Names of the centres ``xy`` (top to bottom) counted from centre ``j0`` = level ``a0`` along the chain: each
    step between consecutive centres is one level, or more where it is at least ``n - GAP_SLACK`` times the median
    of its neighbouring steps (``n`` levels: a level missed between them). -1 beyond the protocol's levels."""
    gaps = np.linalg.norm(np.diff(np.asarray(xy, dtype=np.float64), axis=0), axis=1)
    steps = np.ones(len(gaps), dtype=np.int64)
    for g in range(len(gaps)):
        near = np.concatenate([gaps[max(g - 2, 0):g], gaps[g + 1:g + 3]])
        if len(near):
            steps[g] = max(1, int(np.floor(gaps[g] / float(np.median(near)) + GAP_SLACK)))
    names = np.empty(len(gaps) + 1, dtype=np.int64)
    names[j0] = a0
    for j in range(j0 + 1, len(names)):
        names[j] = names[j - 1] + steps[j - 1]
    for j in range(j0 - 1, -1, -1):
        names[j] = names[j + 1] - steps[j]
    return np.where((names >= 0) & (names < n_levels), names, -1)


def _anchored_names(xy: np.ndarray, position: np.ndarray, n_levels: int, found: dict[int, np.ndarray],
                    anchors: dict[int, int], by_geometry: bool = False) -> np.ndarray | None:
    """Names of the detected centres ``xy`` (top to bottom) with an anchor, or None when no anchor is found, its
    nearest centre is not clearly nearer than the next (:data:`ANCHOR_RATIO`), or the anchors found disagree.

    The anchored centre ``j0`` is the anchor's level ``a0``; the regressed positions are corrected by the same
    amount in whole levels (the framing bias they learnt: on a film cut above C7 they may call C5 "T1"; a
    fraction of a level is their noise, not a bias), the centres below are named
    by :func:`name_chain` from ``a0 + 1`` on, and those above by counting up from ``a0`` (a centre beyond the first
    level is left unnamed). ``by_geometry``: every centre by counting from the anchor (:func:`geometric_names`).
    """
    picks = set()
    for k, level in anchors.items():
        if k not in found or len(xy) < 2:
            continue
        d = np.linalg.norm(xy - found[k], axis=1)
        j0, j1 = np.argsort(d)[:2]
        if d[j0] <= ANCHOR_RATIO * d[j1]:
            picks.add((int(j0), int(level)))
    if len({j - a for j, a in picks}) != 1:
        return None
    j0, a0 = min(picks)
    if by_geometry:
        return geometric_names(xy, j0, a0, n_levels)
    names = np.arange(len(xy)) - j0 + a0  # above the anchor: counted up from it
    names[names < 0] = -1
    below = np.asarray(position[j0 + 1:], dtype=np.float64) + round(a0 - float(position[j0]))  # whole levels
    if len(below):
        sub = name_chain(below - (a0 + 1), n_levels - a0 - 1) if n_levels > a0 + 1 else -np.ones(len(below), np.int64)
        names[j0 + 1:] = np.where(sub >= 0, sub + a0 + 1, -1)
    return names


@torch.no_grad()
def decode_levels(out: torch.Tensor, stride: int, layout: LevelLayout, *, min_score: float = 0.3,
                  min_separation: float = 0.5, part_window: int | None = 3, part_radius: int = 2,
                  part_floor: float = 0.0, anchors: dict[int, int] | None = None, anchor_geometry: bool = False,
                  info: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode first-stage output into the protocol's landmarks.

    Args:
        out: (B, C, h, w) network output (``layout.n_channels`` channels; a model exported before the part maps
            has ``len(layout.parts)`` fewer and is decoded from its offsets alone).
        stride: input pixels per output pixel.
        layout: the protocol's :class:`LevelLayout`.
        min_score: a level centre or a single landmark's peak below this probability is not found.
        min_separation: two centre peaks closer than this fraction of the median distance between neighbouring
            peaks are one level (the weaker is dropped).
        part_window, part_radius: a level's part moves from its offsets' point to the soft-argmax (``part_radius``
            output pixels) around its part map's maximum within ``part_window`` output pixels (None or 0: the
            offsets alone).
        part_floor: with part maps, a level's part whose map peaks below this within the window is *not seen*:
            its confidence is 0 (the caller reports it as not found, once the level's second stage has used the
            point to place its ROI) while its point is kept.
        anchors: ``{landmark index: level index}`` of the single landmarks that anchor a level's name
            (:func:`level_anchors`): when one is found and a detected centre is clearly the nearest to it, that
            centre is the anchor's level and the chain is named from it: by the regressed positions corrected by
            the anchor (default), or with ``anchor_geometry`` by counting the centres from it
            (:func:`geometric_names`).
        info: optional list that receives per image ``{"levels": [found level names, top to bottom],
            "offset_points": (K, 2) where the offsets put each found level part before its part map moved it,
            "anchored": whether an anchor named the chain}``.

    Returns:
        ``(points, confidence)``: (B, K, 2) input pixels, NaN for a landmark not found; (B, K) the peak
        probability of its level centre (or its own heatmap; with a part map, the geometric mean of the centre's
        and the part's peaks), 0 where not found or not seen (``part_floor``).
    """
    from .vertebra import refine_on_heatmap

    out = out.float()
    b, _, h, w = out.shape
    n_lv, n_parts = len(layout.levels), len(layout.parts)
    off = (stride - 1) / 2.0
    points = np.full((b, len(layout.ids), 2), np.nan)
    conf = np.zeros((b, len(layout.ids)))
    n_singles = len(layout.singles)
    use_parts = bool(part_window) and out.shape[1] >= layout.n_channels
    heat = torch.sigmoid(out[:, layout.heat_channels[:1 + n_singles + (n_parts if use_parts else 0)]])
    for i in range(b):
        idx, score = _peaks(heat[i, 0], min_score, 3 * n_lv)
        xy = np.stack([(idx % w) * stride + off, (idx // w) * stride + off], axis=-1).astype(np.float64)
        vals = out[i, 1:2 + 2 * n_parts].reshape(1 + 2 * n_parts, -1)[:, torch.from_numpy(idx)].numpy().T
        if len(idx) > 2:
            d = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(idx)) * 1e9
            d_min = min_separation * float(np.median(d.min(axis=1)))
            # a weaker peak inside a stronger one's level is the same level, however many such duplicates the film
            # has: inside = nearer than SIZE_SEPARATION x the level's extent towards it (the median of its parts'
            # offsets projected on that direction; only parts that the level its regressed position says, give or
            # take one, all have, so no offset the network was never taught is read; a centroid-only level has no
            # extent)
            lvl = np.clip(np.rint(vals[:, 0] * INDEX_SCALE), 0, n_lv - 1).astype(int)
            has = [(layout.members[max(a - 1, 0):a + 2] >= 0).all(axis=0) for a in lvl]
            offs = vals[:, 1:].reshape(len(idx), n_parts, 2) * OFFSET_SCALE

            def inside(j, k):  # peak j within level k's extent towards it (its parts' offsets projected on the way)
                if not has[k].any():
                    return False
                u = (xy[j] - xy[k]) / max(d[j, k], 1e-9)
                return d[j, k] < SIZE_SEPARATION * float(np.median(np.abs(offs[k][has[k]] @ u)))

            kept: list[int] = []
            for j in range(len(idx)):  # strongest first
                if all(d[j, k] >= d_min and not inside(j, k) for k in kept):
                    kept.append(j)
            idx, score, xy, vals = idx[kept], score[kept], xy[kept], vals[kept]
        idx, score, xy, vals = idx[:n_lv + EXTRA], score[:n_lv + EXTRA], xy[:n_lv + EXTRA], vals[:n_lv + EXTRA]
        order = np.argsort(xy[:, 1], kind="stable")  # top to bottom
        idx, score, xy, vals = idx[order], score[order], xy[order], vals[order]
        position = vals[:, 0] * INDEX_SCALE
        singles = {}
        for j, k in enumerate(layout.singles):
            ch = layout.single_channel(j)
            pk = heat[i, 1 + j].reshape(-1)
            f = int(torch.argmax(pk))
            if float(pk[f]) >= min_score:
                o = out[i, ch + 1:ch + 3].reshape(2, -1)[:, f].numpy()
                singles[k] = (np.array([(f % w) * stride + off, (f // w) * stride + off]) + o * OFFSET_SCALE, float(pk[f]))
        anchored = _anchored_names(xy, position, n_lv, {k: v[0] for k, v in singles.items()}, anchors or {},
                                   anchor_geometry)
        names = anchored if anchored is not None else name_chain(position, n_lv)
        offset_points = points[i].copy()  # filled below: every found part where its offsets put it
        part_prob = heat[i, 1 + n_singles:].numpy() if use_parts else None
        taken: dict[int, list] = {}  # per part, the map points already given to a level: one level per peak
        for j, lv in enumerate(names):
            if lv < 0:
                continue
            for p in range(n_parts):
                k = layout.members[lv, p]
                if k >= 0:
                    points[i, k] = offset_points[k] = xy[j] + vals[j, 1 + 2 * p:3 + 2 * p] * OFFSET_SCALE
                    conf[i, k] = score[j]
                    if part_prob is not None:
                        x, y, peak = refine_on_heatmap(part_prob[p], *points[i, k], stride, part_window, part_radius)
                        if any(abs(x - tx) < 1e-6 and abs(y - ty) < 1e-6 for tx, ty in taken.get(p, [])):
                            peak = 0.0  # the peak of a neighbouring level's same part: this level's part is not on it
                        elif peak >= MIN_PART_PEAK:
                            points[i, k] = (x, y)
                            taken.setdefault(p, []).append((x, y))
                        conf[i, k] = float(np.sqrt(score[j] * max(peak, 0.0))) if peak >= part_floor else 0.0
        for k, (pt, pk) in singles.items():
            points[i, k], conf[i, k] = pt, pk
        if info is not None:
            info.append({"levels": [layout.levels[lv] for lv in names if lv >= 0],
                         "offset_points": np.where(np.isfinite(points[i]), offset_points, np.nan),
                         "anchored": anchored is not None})
    return points, conf
