"""Second stage of a generic landmark model: one ROI per vertebral level, refined near the original resolution.

Protocol-generic counterpart of :mod:`SpineAlignmentLib.models.refine` (which refines the four corners
of a coronal vertebra in a rotated ROI). Here the landmarks are grouped by the vertebral level their ID
starts with (``T5_TL``, ``T5_TR``, ... -> ``T5``; ``L3c`` -> ``L3``; an ID without a level, such as ``OD``
or ``FH_1``, is a group of its own), and every group gets one square ROI on the centre of its first-stage
points, turned along the spine for a level (:func:`group_angles`: the direction from the previous level found to
the next, so a vertebra is seen the same way up whatever the curve, as the coronal refiner turns its ROI to the
vertebra; upright for a landmark outside the chain, and for every group of a model exported before
``roi.rotate``):

1. The ROI side is ``extent`` x the median size of a level group on the film (the diagonal of the bounding
   box of its first-stage landmarks), so it scales with the vertebrae on the film, whatever the film's size,
   framing or how much of the spine it shows.
2. The film is resized (antialiased) so that this side spans ``size`` pixels (never enlarged), the ROI is
   sampled bilinearly at ``size x size`` around the group's centre and contrast-stretched per patch
   (:func:`~SpineAlignmentLib.models.refine.normalise_patches`).
3. One small heatmap network serves every landmark: it has one output channel per landmark *part*
   (the landmark ID without its vertebral level: ``T5_TL`` -> ``TL``, ``L3c`` -> ``c``, ``OD`` -> ``OD``),
   so the corner types of 17 vertebrae share what they learn; each landmark's point is the DSNT of its
   part's channel in its group's patch, mapped back to original pixels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .dsnt import dsnt, flat_softmax, peak_mass
from .landmarks import flip_permutation
from .refine import RoiSpec, _scale_points, from_roi, normalise_patches, resize_for_rois, roi_grid, sample_rois

__all__ = ["LandmarkRoi", "landmark_parts", "landmark_groups", "level_groups", "group_angles", "landmark_span",
           "refine_landmarks"]

#: a vertebral level at the start of a landmark ID (``C2``..``C7``, ``T1``..``T12``, ``L1``..``L5``, ``S1``)
_LEVEL = re.compile(r"^(C[1-7]|T1[0-2]|T[1-9]|L[1-6]|S[1-5])(?=_|c$)_?")


def landmark_parts(ids: Sequence[str], pairs: Sequence[tuple[str, str]] | None = None
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Parts of landmark IDs, the part index of each ID, and the part permutation of a left-right mirror
    (``pairs``: the protocol's ``flip_pairs``, see :func:`~SpineAlignmentLib.models.landmarks.flip_permutation`).

    Returns:
        ``(parts, index, mirror)``: distinct parts in order of first appearance, (K,) part index per ID,
        and (P,) ``mirror[p]`` = the part ``p`` becomes in a mirrored patch (``TL`` <-> ``TR``; itself
        when the protocol has no left/right partner for it).
    """
    names = [_LEVEL.sub("", i) or i for i in ids]
    parts = list(dict.fromkeys(names))
    index = np.array([parts.index(n) for n in names], dtype=np.int64)
    mirror = np.arange(len(parts))
    for k, partner in enumerate(flip_permutation(ids, pairs)):
        mirror[index[k]] = index[partner]
    return parts, index, mirror


def landmark_groups(ids: Sequence[str]) -> list[np.ndarray]:
    """Indices of the landmarks of each vertebral level (order of first appearance); IDs without a level
    are groups of their own. Within a group every part occurs once (IDs are unique)."""
    keys = [(m.group(1) if (m := _LEVEL.match(i)) else "#" + i) for i in ids]
    order = list(dict.fromkeys(keys))
    return [np.array([k for k, key in enumerate(keys) if key == g], dtype=np.int64) for g in order]


def level_groups(ids: Sequence[str]) -> np.ndarray:
    """(G,) each group of :func:`landmark_groups`' place along the spine from the head down (``C2`` < ``C7`` <
    ``T1`` < ``L5`` < ``L6`` < ``S1``: the groups of a protocol table need not be listed in that order), -1 for a
    group that is not a vertebral level (``OD``, ``FH_1``)."""
    keys = [(m.group(1) if (m := _LEVEL.match(i)) else "#" + i) for i in ids]
    return np.array([-1 if g.startswith("#") else 100 * "CTLS".index(g[0]) + int(g[1:])
                     for g in dict.fromkeys(keys)], dtype=np.int64)


def group_angles(centres: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """(G,) ROI angle (radians, :func:`~SpineAlignmentLib.models.refine.roi_grid`'s) of each group's ROI: a level's
    ROI is turned so that its rows run along the spine there, the direction from the previous to the next level
    found (the one neighbour found at the chain's ends), so a vertebra shows the same way up whatever the curve;
    0 (axis-aligned) for a landmark outside the chain or a level without a neighbour found. ``centres``: (G, 2)
    (NaN: not found); ``rank``: each group's place along the spine (:func:`level_groups`; -1: not a level)."""
    c = np.asarray(centres, dtype=np.float64)
    out = np.zeros(len(c))
    chain = sorted((g for g in range(len(c)) if rank[g] >= 0 and np.isfinite(c[g]).all()), key=lambda g: rank[g])
    for i, g in enumerate(chain):
        d = c[chain[min(i + 1, len(chain) - 1)]] - c[chain[max(i - 1, 0)]]  # down the spine
        if np.hypot(*d) > 0:
            out[g] = np.arctan2(-d[0], d[1])  # the patch's v axis (rows) along d, its u axis across the spine
    return out


def landmark_span(points: np.ndarray) -> float:
    """Diagonal (pixels) of the bounding box of the finite points of (K, 2) ``points``."""
    p = np.asarray(points, dtype=np.float64)
    p = p[np.isfinite(p).all(axis=1)]
    if len(p) < 2:
        return 0.0
    return float(np.linalg.norm(p.max(axis=0) - p.min(axis=0)))


@dataclass(frozen=True)
class LandmarkRoi:
    """ROI geometry of the second stage: ``size`` patch pixels for a side of ``extent`` x the median size of a
    level group (the diagonal of its landmarks' bounding box, over groups with two or more landmarks), or,
    without ``extent`` (models exported before it existed) or without such groups, ``fraction`` x the span
    of all landmarks."""

    size: int = 64
    fraction: float = 0.1
    extent: float | None = None
    rotate: bool = False  # a level's ROI turned along the spine (:func:`group_angles`); models before it: axis-aligned

    @property
    def spec(self) -> RoiSpec:
        return RoiSpec(size=self.size, extent=1.0)

    def side(self, points: np.ndarray, groups: Sequence[np.ndarray] | None = None) -> float:
        """ROI side in original pixels for this film's points (at least ``size`` / 4 pixels)."""
        p = np.asarray(points, dtype=np.float64)
        if self.extent is not None and groups is not None:
            sizes = [landmark_span(p[g]) for g in groups if len(g) > 1 and np.isfinite(p[g]).all(axis=1).sum() > 1]
            if sizes:
                return max(self.extent * float(np.median(sizes)), self.size / 4.0)
        return max(self.fraction * landmark_span(p), self.size / 4.0)

    def resize(self, image: np.ndarray, side: float) -> tuple[np.ndarray, tuple[float, float]]:
        """Antialiased resize of a normalised film so that ``side`` spans ``size`` pixels (never enlarged)."""
        return resize_for_rois(image, side, self.spec)

    def patches(self, resized: np.ndarray, centres: np.ndarray, side: float, angles: np.ndarray) -> torch.Tensor:
        """(K, 1, size, size) contrast-stretched patches centred on ``centres`` (resized pixels), turned by
        ``angles`` (K,)."""
        c = np.asarray(centres, dtype=np.float64)
        return normalise_patches(sample_rois(resized, roi_grid(c, np.full(len(c), side), angles, self.spec)))

    def to_image(self, uv: np.ndarray, centre: np.ndarray, side: float, angle: float) -> np.ndarray:
        """(n, 2) patch pixels of one patch (centred on ``centre``, resized pixels, turned by ``angle``) back to
        resized-image pixels."""
        return from_roi(np.asarray(uv, dtype=np.float64)[None], np.asarray(centre, dtype=np.float64)[None],
                        np.array([side]), np.array([angle]), self.spec)[0]


def group_centres(points: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """(G, 2) mean of the finite points of each group (NaN for a group without any)."""
    p = np.asarray(points, dtype=np.float64)
    out = np.full((len(groups), 2), np.nan)
    for gi, g in enumerate(groups):
        q = p[g][np.isfinite(p[g]).all(axis=1)]
        if len(q):
            out[gi] = q.mean(axis=0)
    return out


@torch.no_grad()
def refine_landmarks(network: torch.nn.Module, image: np.ndarray, points: np.ndarray, part_index: np.ndarray,
                     groups: Sequence[np.ndarray], rank: np.ndarray, roi: LandmarkRoi, *, stride: int,
                     mirror_parts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Refine first-stage landmarks with the ROI network.

    Args:
        network: ROI network (one heatmap per part), eval mode.
        image: (H, W) normalised film in [0, 1], original resolution (facing as the first stage saw it).
        points: (K, 2) first-stage landmarks, original pixels.
        part_index: (K,) part channel of each landmark (:func:`landmark_parts`).
        groups: landmark indices per ROI (:func:`landmark_groups`).
        rank: (G,) each group's place along the spine, -1 outside it (:func:`level_groups`).
        roi: the ROI geometry the network was trained with.
        stride: patch pixels per heatmap pixel.
        mirror_parts: (P,) the part each part becomes in a mirrored patch (:func:`landmark_parts`); when given,
            every patch is refined mirrored too and the two are averaged (flip test-time augmentation; the
            network learnt mirrored patches).

    Returns:
        ``(points, mass)``: (K, 2) refined landmarks in original pixels and the heatmap probability mass
        near each decoded point (K,) in [0, 1]; a group whose first-stage points are all NaN (not found)
        stays NaN with mass 0.
    """
    pts = np.asarray(points, dtype=np.float64)
    side = roi.side(pts, groups)
    resized, f = roi.resize(image, side)
    side_r = side * f[0]
    c = _scale_points(pts, f)
    centres = group_centres(c, groups)
    found = np.where(np.isfinite(centres).all(axis=1))[0]  # a group not found in the first stage stays not found
    out, m = c.copy(), np.zeros(len(c))
    if not len(found):
        return _scale_points(out, f, inverse=True), m
    angles = group_angles(centres, rank) if roi.rotate else np.zeros(len(centres))
    x = roi.patches(resized, centres[found], side_r, angles[found])
    prob = flat_softmax(network(x))
    uv_t = dsnt(prob, stride)  # (G, P, 2)
    mass_t = peak_mass(prob, uv_t, stride)  # (G, P)
    if mirror_parts is not None:
        prob_f = flat_softmax(network(torch.flip(x, dims=[-1])))[:, list(mirror_parts)]
        uv_f = dsnt(prob_f, stride)
        mass_t = 0.5 * (mass_t + peak_mass(prob_f, uv_f, stride))
        uv_f[..., 0] = (roi.size - 1) - uv_f[..., 0]
        uv_t = 0.5 * (uv_t + uv_f)
    uv, mass = uv_t.numpy(), mass_t.numpy()
    for j, gi in enumerate(found):
        g = groups[gi]
        out[g] = roi.to_image(uv[j, part_index[g]], centres[gi], side_r, angles[gi])
        m[g] = mass[j, part_index[g]]
    return _scale_points(out, f, inverse=True), m
