"""Level anchors: re-name a model's vertebra chain from one vertebra a person named, or from a level shift.

The first stage of a vertebra-centres model finds vertebrae well but may name
the chain one level off (C7 called T1). A person who sees that gives one fact
(:class:`LevelAnchor`):

* *this vertebra is T1* (any level name, at a point in original image pixels): the chain is decoded again
  from the first stage's own vertebra candidates (kept from the first pass in a :class:`ChainState`; no
  network re-run): starting at the candidate under the point, it walks up and down the spine to the
  17 vertebrae T1..L5 (:func:`walk`: the path of candidates maximising the sum of their log centre
  scores minus a penalty on spacings unlike the chain's own);
* *the chain is one level off* (``shift`` as in the result's ``levels.alternative.shift``: -1 the chain
  is named one level too high, its T1 is really C7; +1 one level too low, its T1 is really T2): every
  name moves by exactly that many vertebrae; the vertebra that enters the chain at the freed end is
  the next candidate found by the same walk.

Vertebrae the new chain shares with the old one keep their corners; only the others get the corner
heatmap refinement and the model's second stage. The result's level confidence then says the levels
were confirmed (:func:`confirmed_levels`). An anchor that cannot be used (outside the film, on no
vertebra candidate, an unknown level name, a chain pushed past the film) raises
:class:`~SpineAlignmentLib.errors.LandmarkError` with one sentence saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import LandmarkError
from ..geometry.levels import SPINE_LEVELS
from ..result import Landmark
from .chain import ChainState
from .levels import anchor_text

__all__ = ["SPINE_LEVELS", "LevelAnchor", "ChainState", "level_position", "walk", "anchored_chain",
           "shifted_chain", "apply_level_anchor", "confirmed_levels", "anchor_text"]

#: the spacing penalty's weight and its hard limits (a step this much shorter or longer than expected is no step);
#: weights 1 to 6 name the same validation chains right (Testing/Python/benchmark_level_anchor.py)
SPACING_WEIGHT = 4.0
STEP_RANGE = (0.5, 2.2)
#: a point is on a candidate vertebra when it lies within this many candidate heights of its centre
ON_VERTEBRA = 1.0


@dataclass(frozen=True)
class LevelAnchor:
    """One fact about a chain's levels and who gave it.

    Attributes:
        by: who set it: ``"user"`` (CLI / library), ``"file:<csv name>"``, ``"slicer"``.
        level: the name of the vertebra at (``x``, ``y``) (``"T1"``), or None for a shift.
        x, y: the point, original image pixels (x right, y down).
        shift: the chain's level error (-1: named one level too high; +1: one level too low), or None.
    """

    by: str
    level: str | None = None
    x: float | None = None
    y: float | None = None
    shift: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result JSON's ``levels.anchor``."""
        if self.shift is not None:
            return {"by": self.by, "shift": int(self.shift)}
        return {"by": self.by, "level": self.level, "x": round(float(self.x), 2), "y": round(float(self.y), 2)}


def level_position(level: str, names: list[str]) -> int:
    """Chain position of a level name: 0 for the chain's first name (T1), -1 for the one above (C7), ...

    Raises:
        LandmarkError: a name that is not a vertebra level (C1..C7, T1..T12, L1..L5, S1..S5).
    """
    key = str(level).strip().upper()
    if key not in SPINE_LEVELS or names[0] not in SPINE_LEVELS:
        raise LandmarkError(f"'{level}' is not a vertebra level; name one of C1..C7, T1..T12, L1..L5 or S1..S5.")
    return SPINE_LEVELS.index(key) - SPINE_LEVELS.index(names[0])


def _heights(corners: np.ndarray) -> np.ndarray:
    q = np.asarray(corners, dtype=np.float64)
    return np.maximum(np.linalg.norm(q[:, 2:].mean(1) - q[:, :2].mean(1), axis=-1), 1e-3)


def walk(centers: np.ndarray, heights: np.ndarray, scores: np.ndarray, pool: np.ndarray, start: int, direction: int,
         steps: int, spacing: float) -> list[int] | None:
    """The ``steps`` vertebrae after candidate ``start`` along the spine (``direction`` +1 down, -1 up).

    A path through the candidates of ``pool`` beyond ``start`` (ordered by ``y``) that maximises
    ``sum log(score) - SPACING_WEIGHT * sum log(step / expected)**2``, where the expected step between two
    candidates is ``spacing`` x their mean height; steps outside :data:`STEP_RANGE` x expected are not
    allowed. A candidate between two vertebrae (a double detection) is stepped over; a vertebra in line is
    taken down to a centre score of about 0.13 (skipping it costs ``SPACING_WEIGHT * log(2)**2``).

    Returns:
        candidate indices, nearest first; None when no such path exists (the spine leaves the film).
    """
    if steps <= 0:
        return []
    beyond = [int(j) for j in pool if (centers[j, 1] - centers[start, 1]) * direction > 0]
    nodes = [start, *sorted(beyond, key=lambda j: direction * centers[j, 1])]
    n = len(nodes)
    if n - 1 < steps:
        return None
    p, h = centers[nodes], heights[nodes]
    step = np.linalg.norm(p[:, None] - p[None], axis=-1)
    ratio = np.maximum(step, 1e-3) / (spacing * 0.5 * (h[:, None] + h[None]))
    gain = np.log(np.clip(scores[nodes], 1e-3, 1.0))[None, :] - SPACING_WEIGHT * np.log(ratio) ** 2
    allowed = (np.arange(n)[:, None] < np.arange(n)[None]) & (ratio >= STEP_RANGE[0]) & (ratio <= STEP_RANGE[1])
    trans = np.where(allowed, gain, -np.inf)
    best = np.full(n, -np.inf)
    best[0] = 0.0
    back = []
    for _ in range(steps):
        total = best[:, None] + trans
        back.append(total.argmax(axis=0))
        best = total.max(axis=0)
    if not np.isfinite(best.max()):
        return None
    j = int(best.argmax())
    path = [j]
    for s in range(steps - 1, 0, -1):
        j = int(back[s][j])
        path.append(j)
    return [nodes[k] for k in reversed(path)]


def _pool(state: ChainState) -> np.ndarray:
    """Distinct candidates whose centre lies on the film (the letterbox's padding holds no vertebra)."""
    from ..models.vertebra import _select_distinct

    n = len(state.chain)
    pool = _select_distinct(state.centers, state.corners, state.scores, n, 0.5, n_max=len(state.scores))
    orig = state.geo.to_original(state.centers[pool])
    rows, cols = state.geo.src_shape
    inside = (orig[:, 0] >= -0.5) & (orig[:, 0] <= cols - 0.5) & (orig[:, 1] >= -0.5) & (orig[:, 1] <= rows - 0.5)
    return np.union1d(pool[inside], state.chain).astype(int)


def _spacing(state: ChainState) -> float:
    """The chain's centre spacing in vertebra heights (the walk's expected step)."""
    c = state.centers[state.chain]
    steps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    return float(np.median(steps) / np.median(_heights(state.corners[state.chain])))


def anchored_chain(state: ChainState, level: str, xy: tuple[float, float]) -> np.ndarray:
    """Candidate indices (top to bottom) of the chain in which the vertebra at ``xy`` (original pixels) is ``level``.

    Raises:
        LandmarkError: a point outside the film or on no vertebra candidate, an unknown level, or a chain
            that would run past the film.
    """
    names = state.names
    k = level_position(level, names)
    rows, cols = state.geo.src_shape
    x, y = float(xy[0]), float(xy[1])
    if not (np.isfinite(x) and np.isfinite(y) and -0.5 <= x <= cols - 0.5 and -0.5 <= y <= rows - 0.5):
        raise LandmarkError(f"the point ({x:g}, {y:g}) for {level} lies outside the {rows} x {cols} film.")
    pool = _pool(state)
    heights = _heights(state.corners)
    p = state.geo.to_input(np.array([x, y]))
    d = np.linalg.norm(state.centers[pool] - p, axis=1)
    a = int(pool[int(d.argmin())])
    if d.min() > ON_VERTEBRA * heights[a]:
        raise LandmarkError(f"the point ({x:g}, {y:g}) for {level} is on no vertebra the model found; put it on "
                            "the middle of that vertebra's body.")
    n = len(names)
    up_steps, down_steps = max(k, 0), max(n - 1 - k, 0)
    spacing = _spacing(state)
    up = walk(state.centers, heights, state.scores, pool, a, -1, up_steps, spacing)
    down = walk(state.centers, heights, state.scores, pool, a, 1, down_steps, spacing)
    if up is None or down is None:
        end = names[0] if up is None else names[-1]
        raise LandmarkError(f"with {level} at ({x:g}, {y:g}) the chain would run past the film: no vertebra "
                            f"candidate for {end}; check the level name and the point.")
    full = [*reversed(up), a, *down]  # positions k - up_steps .. k + down_steps
    first = k - up_steps
    return np.array(full[-first:][:n] if first < 0 else full[:n], dtype=int)


def shifted_chain(state: ChainState, shift: int) -> np.ndarray:
    """Candidate indices (top to bottom) of the chain renamed by ``shift`` (the chain's level error: -1 named one
    level too high, +1 one level too low): every vertebra keeps its candidate, each name moves by ``|shift|``
    vertebrae, and the freed end takes the next candidates along the spine.

    A shift of 0 confirms the chain as it is named (its candidates unchanged).

    Raises:
        LandmarkError: a shift that pushes the chain past the film.
    """
    shift = int(shift)
    names = state.names
    n = len(names)
    if shift == 0:
        return np.asarray(state.chain, dtype=int).copy()
    if abs(shift) >= n:
        raise LandmarkError(f"shift {shift} is not a level shift; give -1 (the chain is named one level too high: "
                            "its T1 is C7), +1 (one level too low: its T1 is T2) or 0 (named right).")
    chain = [int(j) for j in state.chain]
    pool = _pool(state)
    heights = _heights(state.corners)
    spacing = _spacing(state)
    if shift < 0:  # old vertebra i is named i + shift: the top -shift leave, new ones below the bottom
        more = walk(state.centers, heights, state.scores, pool, chain[-1], 1, -shift, spacing)
        new = None if more is None else chain[-shift:] + more
        end = f"{names[-1]} below the chain's {names[-1]}"
    else:
        more = walk(state.centers, heights, state.scores, pool, chain[0], -1, shift, spacing)
        new = None if more is None else [*reversed(more), *chain[:n - shift]]
        end = f"{names[0]} above the chain's {names[0]}"
    if new is None:
        raise LandmarkError(f"shift {shift:+d} pushes the chain past the film: no vertebra candidate for a new {end}.")
    return np.array(new, dtype=int)


def confirmed_levels(anchor: LevelAnchor, model_levels: dict | None) -> dict[str, Any]:
    """The ``levels`` entry of an anchored chain: confirmed, confidence 1, who set it and how.

    ``model_confidence`` keeps the model's own level confidence of the first pass (None without one).
    """
    out: dict[str, Any] = {"confidence": 1.0, "confirmed": True, "uncertain": False, "anchor": anchor.to_dict(),
                           "shift_probabilities": {"-1": 0.0, "0": 1.0, "+1": 0.0},
                           "model_confidence": (model_levels or {}).get("confidence")}
    if model_levels and "warn_below" in model_levels:
        out["warn_below"] = model_levels["warn_below"]
    return out


@dataclass
class AnchoredChain:
    """An anchored chain: landmarks (original pixels, model confidence), the detection's warnings, ``levels``,
    and the state to anchor it again from."""

    landmarks: dict[str, Landmark]
    warnings: list[str]
    levels: dict[str, Any]
    state: ChainState


def apply_level_anchor(state: ChainState, anchor: LevelAnchor) -> AnchoredChain:
    """Re-name the chain of ``state`` by ``anchor`` and refine the vertebrae that changed (see the module text).

    Raises:
        LandmarkError: an anchor that cannot be used (one sentence saying why).
    """
    from ..models.vertebra import chain_points
    from .predict import plausibility_warnings

    if anchor.shift is not None:
        chain = shifted_chain(state, anchor.shift)
    else:
        if anchor.level is None or anchor.x is None or anchor.y is None:
            raise LandmarkError("a level anchor needs a level name and a point x, y (or a shift).")
        chain = anchored_chain(state, anchor.level, (anchor.x, anchor.y))
    model = state.model
    old = {int(j): i for i, j in enumerate(state.chain)}
    pts = np.zeros((4 * len(chain), 2))
    conf = np.zeros(4 * len(chain))
    new_pos = [i for i, j in enumerate(chain) if int(j) not in old]
    for i, j in enumerate(chain):
        if int(j) in old:
            o = old[int(j)]
            pts[4 * i:4 * i + 4], conf[4 * i:4 * i + 4] = state.points[4 * o:4 * o + 4], state.confidence[4 * o:4 * o + 4]
    if new_pos:
        sel = chain[new_pos]
        p_in, c = chain_points(state.corner_prob, state.corners[sel], state.scores[sel], state.stride,
                               search=state.search, radius=state.radius)
        p = state.geo.to_original(p_in)
        if state.roi_image is not None and model.refiner is not None:
            from ..models.refine import refine_resized

            p, _ = refine_resized(model.refiner, state.roi_image[0], state.roi_image[1], p, model.roi,
                                  stride=model.refiner.stride, iterations=int(model.metadata["refinement"]["iterations"]),
                                  flip_tta=state.flip_tta)
        cal = model.metadata["decoding"].get("calibration")
        if cal:
            c = np.interp(c, cal["raw"], cal["calibrated"])
        if state.image_warnings:
            c = np.minimum(c, 0.05)
        for k, i in enumerate(new_pos):
            pts[4 * i:4 * i + 4], conf[4 * i:4 * i + 4] = p[4 * k:4 * k + 4], c[4 * k:4 * k + 4]
    ids = model.landmark_ids
    levels = confirmed_levels(anchor, state.levels)
    low = float(model.metadata["decoding"]["low_confidence"])
    warnings = list(state.image_warnings) + plausibility_warnings(pts, conf, ids, low)
    landmarks = {lid: Landmark(float(q[0]), float(q[1]), float(cc)) for lid, q, cc in zip(ids, pts, conf)}
    return AnchoredChain(landmarks, warnings, levels, replace(state, chain=np.asarray(chain), points=pts,
                                                              confidence=conf, detection_warnings=list(warnings)))
