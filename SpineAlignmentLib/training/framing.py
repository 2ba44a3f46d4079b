"""Film framing changes: crop or pad an AP spine film so that its top and bottom move along the spine.

Unseen films show more neck or more pelvis than the AASCE training images, and
a first stage that learned "the topmost clear vertebra is T1" names such films
a level off. These functions simulate that framing: the film's top row is
moved to a level between C4 and T3 and its bottom row between L4 and below
the sacrum (cropping where the new edge lies inside the film, padding with
the film's darkest value where it lies outside), and the reference corners
follow. They serve the level-confidence calibration
(:mod:`SpineAlignmentLib.training.level_confidence`) and its measurements, and, as
:class:`RandFramingd`, the first stage's training (``spine-align train --reframe P``): a
first stage that sees films whose top is C5 or T3 as often as T1 cannot learn "topmost is T1"
and has to tell T1 from C7 (and L5 from S1) by their anatomy.

Level positions beyond the labelled T1..L5 are extrapolated along the spine
by :func:`~SpineAlignmentLib.geometry.levels.level_rows` (the review page crops
by the same rule).
"""

from __future__ import annotations

import numpy as np
from monai.transforms import MapTransform, RandomizableTransform

from .warp import apply_to_points, warp_image

from ..geometry.levels import CERVICAL_SPACING, SACRUM_LEVELS, level_rows

__all__ = ["CERVICAL_SPACING", "SACRUM_LEVELS", "OUTSIDE", "level_rows", "reframe", "random_framing", "complete_framing",
           "framing_matrix", "warp_sample", "WholeChainTransform", "RandFramingd", "span_window", "RandSpanCropd"]


def reframe(pixels: np.ndarray, points: np.ndarray, top: float, bottom: float) -> tuple[np.ndarray, np.ndarray]:
    """The film with its top row at ``top`` and its bottom row at ``bottom`` (original rows, may lie outside).

    Rows outside the film are padded with its minimum value; the returned
    points are the input points in the new film's pixels (they may lie outside it).
    """
    a = np.asarray(pixels)
    t, b = int(round(top)), int(round(bottom))
    if b <= t:
        raise ValueError(f"framing bottom {bottom} must lie below top {top}")
    out = np.full((b - t + 1, a.shape[1]), a.min(), dtype=a.dtype)
    s0, s1 = max(t, 0), min(b, a.shape[0] - 1)
    if s1 >= s0:
        out[s0 - t:s1 - t + 1] = a[s0:s1 + 1]
    q = np.asarray(points, dtype=float).copy()
    q[:, 1] -= t
    return out, q


def complete_framing(points: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """``(top, bottom)`` rows that keep all 17 vertebrae on the film: top uniform between C4 and T1's top edge,
    bottom uniform between L5's bottom edge and below the sacrum (a film showing more or less neck and pelvis,
    never less spine; cropping cannot add anatomy the film does not show, so "more" means padding)."""
    r = level_rows(points)
    q = np.asarray(points, dtype=float).reshape(-1, 4, 2)[:, :, 1]
    t1_top, l5_bottom = float(q[0].min()), float(q[-1].max())
    return (float(rng.uniform(min(r["C4"], t1_top - 1.0), t1_top - 1.0)),
            float(rng.uniform(l5_bottom + 1.0, max(r["below_sacrum"], l5_bottom + 1.0))))


def random_framing(points: np.ndarray, rng) -> tuple[float, float]:
    """``(top, bottom)`` rows: top uniform between C4 and T3, bottom uniform between L4 and below the sacrum
    (``rng``: a NumPy ``Generator`` or ``RandomState``)."""
    r = level_rows(points)
    return float(rng.uniform(r["C4"], r["T3"])), float(rng.uniform(r["L4"], r["below_sacrum"]))


#: where :class:`RandFramingd` moves landmarks that the new framing cuts off (outside any later affine's reach)
OUTSIDE = -1.0e4


def framing_matrix(shape: tuple[int, int], top: float, bottom: float) -> np.ndarray:
    """Forward 3x3 matrix on ``(x, y, 1)`` that frames rows ``top``..``bottom`` of an ``(h, w)`` network input
    into the whole input height, scaled equally in x about the centre column (the aspect is kept; content
    beyond the sides is cut, missing content is 0, the letterbox padding value)."""
    h, w = shape
    s = (h - 1) / max(bottom - top, 1e-6)
    cx = (w - 1) / 2.0
    return np.array([[s, 0.0, cx - s * cx], [0.0, s, -s * top], [0.0, 0.0, 1.0]])


def warp_sample(transform: MapTransform, d: dict, m: np.ndarray, pts: np.ndarray) -> dict:
    """Warp a sample's images (``transform``'s keys) and its ``transform.points_key`` points by the forward matrix
    ``m``; a point that leaves the input (or was never labelled) moves to :data:`OUTSIDE` for good."""
    h, w = np.asarray(d[transform.keys[0]]).shape[-2:]
    for key in transform.key_iterator(d):
        d[key] = warp_image(np.asarray(d[key], dtype=np.float32), m)
    q = apply_to_points(m, pts)
    out = ~np.isfinite(q).all(axis=1) | (q[:, 0] < 0) | (q[:, 0] > w - 1) | (q[:, 1] < 0) | (q[:, 1] > h - 1)
    q[out] = OUTSIDE
    d[transform.points_key] = q.astype(np.float32)
    return d


class WholeChainTransform(RandomizableTransform, MapTransform):
    """Base of the random transforms that re-frame a coronal film along its spine: applied with probability
    ``prob``, and only to a film whose T1..L5 corners (``points_key``, network-input pixels) are all known."""

    def __init__(self, keys, points_key: str = "points", prob: float = 0.5) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.points_key = points_key

    def chain(self, data) -> tuple[dict, np.ndarray | None]:
        """``(copy of data, (K, 2) corners)`` when this call transforms, ``(copy of data, None)`` when it does not
        (not drawn, or a corner already unknown: leave such a film as it is)."""
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d, None
        pts = np.asarray(d[self.points_key], dtype=np.float64)
        if not np.isfinite(pts).all() or (pts < 0).any():
            return d, None
        return d, pts


class RandFramingd(WholeChainTransform):
    """With probability ``prob``, re-frame a letterboxed coronal film (network-input pixels) as
    :func:`random_framing` does: its top row moves to a level between C4 and T3 and its bottom row to one
    between L4 and below the sacrum, the image and the (68, 2) T1..L5 corners alike. Corners that end up
    outside the input are moved to :data:`OUTSIDE`, so the affine augmentation after this one cannot bring
    them back onto the (cut) image; the validity mask follows from that.
    """

    def __call__(self, data):
        d, pts = self.chain(data)
        if pts is None:
            return d
        top, bottom = random_framing(pts, self.R)  # the transform's own RandomState (seeded by Compose)
        first = np.asarray(d[self.keys[0]])
        h, w = first.shape[-2:]
        return warp_sample(self, d, framing_matrix((h, w), top, bottom), pts)


def span_window(points: np.ndarray, rng, fraction: tuple[float, float] = (0.3, 0.8)) -> tuple[float, float, float] | None:
    """``(top, bottom, centre column)`` of a window showing part of the labelled span: its height a random
    ``fraction`` of the rows the labelled points span, placed anywhere along them (so it may keep the top or the
    bottom of the chain, or neither), centred on the points it keeps. None with fewer than 4 labelled points.
    Any protocol: it needs no level names, only the labelled points (``NaN`` rows: not labelled)."""
    p = np.asarray(points, dtype=np.float64)
    ok = np.isfinite(p).all(axis=1) & (p > OUTSIDE / 2).all(axis=1)
    if ok.sum() < 4:
        return None
    y = p[ok, 1]
    lo, hi = float(y.min()), float(y.max())
    span = max(hi - lo, 1.0)
    height = float(rng.uniform(*fraction)) * span
    top = float(rng.uniform(lo - 0.05 * span, hi - height + 0.05 * span))
    bottom = top + height
    kept = ok & (p[:, 1] >= top) & (p[:, 1] <= bottom)
    cx = float(p[kept, 0].mean()) if kept.any() else float(p[ok, 0].mean())
    return top, bottom, cx


class RandSpanCropd(RandomizableTransform, MapTransform):
    """With probability ``prob``, show only part of the spine: the letterboxed film (network-input pixels) is
    cropped to a :func:`span_window` and zoomed to fill the input (the aspect is kept, centred on the kept
    points; content beyond the film is 0, the letterbox padding value), as a film framed on part of the
    spine would be letterboxed. The landmarks that leave the input move to :data:`OUTSIDE`, so the validity
    mask (and the level family's "absent" target) follows and no later affine brings them back.

    Any protocol (``spine-align train --crop P``): real films of one protocol are framed differently (a
    whole-spine film cut at T10, a cervical film without C7), and a first stage that only saw complete chains
    learns "the topmost vertebra is the first level" instead of the anatomy.
    """

    def __init__(self, keys, points_key: str = "points", prob: float = 0.3,
                 fraction: tuple[float, float] = (0.3, 0.8)) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.points_key, self.fraction = points_key, fraction

    def __call__(self, data):
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        pts = np.asarray(d[self.points_key], dtype=np.float64)
        win = span_window(pts, self.R, self.fraction)
        if win is None:
            return d
        top, bottom, cx = win
        h, w = np.asarray(d[self.keys[0]]).shape[-2:]
        s = (h - 1) / max(bottom - top, 1e-6)
        return warp_sample(self, d, np.array([[s, 0.0, (w - 1) / 2.0 - s * cx], [0.0, s, -s * top], [0.0, 0.0, 1.0]]), pts)
