"""Clavicle masks to the shoulder keypoints of definitions.md §4.1 (``Clav_top``, ``Clav_med``, ``Clav_lat``).

The rule is written down in docs/definitions.md §4.1 and is applied alike to a
model's masks and to reference masks, so the evaluation compares like with like:

* the clavicle is the largest 8-connected component of its label;
* the work is done in millimetre space (``x * col_spacing``, ``y * row_spacing``)
  so that anisotropic pixels do not bend the axis;
* **Clav_top**: the centroid of the mask pixels within half a pixel of the most
  superior one (``s = p · u_sup``);
* **Clav_med / Clav_lat**: the mask's principal axis (largest-eigenvalue direction
  of the pixel covariance) is oriented toward the patient's side of the clavicle
  (``+u_left`` for the left, ``−u_left`` for the right); each end point is the
  centroid of the pixels whose projection on that axis lies within
  :data:`END_CAP_FRACTION` of the clavicle's length from the extreme
  (the lateral end at the maximum, the medial end at the minimum).

Confidence of a side (0..1): the mean predicted probability over its component
times the component's share of the label's pixels (a split or speckled mask
scores low) times an elongation factor (a clavicle is long and thin: principal
axis ratio ≥ :data:`MIN_ELONGATION` scores 1, a round blob scores near 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClavicleKeypoints", "END_CAP_FRACTION", "MIN_ELONGATION", "clavicle_keypoints", "largest_component"]

#: fraction of the clavicle length whose pixels form an end cap
END_CAP_FRACTION = 0.03
#: principal-axis ratio (sqrt of the eigenvalue ratio) from which a mask counts as clavicle-shaped
MIN_ELONGATION = 3.0


@dataclass
class ClavicleKeypoints:
    """Keypoints of one clavicle in original-image pixels (x right, y down).

    Attributes:
        top, medial, lateral: (x, y) pixel coordinates.
        confidence: 0..1 (see the module docstring).
        area_px: pixels of the component used.
        component_share: its share of all pixels with this label.
        elongation: principal-axis length ratio.
        cut_ends: ``"top"``, ``"medial"`` and/or ``"lateral"`` when that point's pixels reach the image border
            (the clavicle may go on beyond the film, so the point is where the film stops, not on the bone).
    """

    top: tuple[float, float]
    medial: tuple[float, float]
    lateral: tuple[float, float]
    confidence: float
    area_px: int
    component_share: float
    elongation: float
    cut_ends: tuple[str, ...] = ()


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The largest 8-connected component of a boolean mask and its share of the mask's pixels."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros_like(mask, dtype=bool), 0.0
    sizes = np.bincount(lab.ravel())[1:]
    k = int(np.argmax(sizes)) + 1
    return lab == k, float(sizes[k - 1] / sizes.sum())


def clavicle_keypoints(mask: np.ndarray, side: str, u_left: tuple[float, float], u_sup: tuple[float, float],
                       spacing: tuple[float, float] | None = None, probability: np.ndarray | None = None,
                       min_pixels: int = 20) -> ClavicleKeypoints | None:
    """Keypoints of one clavicle mask, or ``None`` when the mask has fewer than ``min_pixels`` pixels.

    Args:
        mask: (rows, cols) boolean mask of one clavicle in the original image grid.
        side: ``"L"`` or ``"R"``: the patient side of this clavicle.
        u_left, u_sup: the film's frame (image ``(x, y)`` unit vectors toward the patient's left and the head;
            :func:`SpineAlignmentLib.geometry.frame.coronal_frame`).
        spacing: (row, col) mm per pixel; ``None`` works in pixels (square pixels assumed).
        probability: optional (rows, cols) probability of this label (for the confidence); without it the
            probability factor is 1.

    Returns:
        :class:`ClavicleKeypoints` or ``None``.
    """
    mask = np.asarray(mask, dtype=bool)
    comp, share = largest_component(mask)
    ys, xs = np.nonzero(comp)
    if ys.size < min_pixels:
        return None
    sy, sx = (float(spacing[0]), float(spacing[1])) if spacing else (1.0, 1.0)
    pts = np.stack([xs * sx, ys * sy], axis=1).astype(np.float64)  # mm (or px) space
    to_px = np.array([1.0 / sx, 1.0 / sy])
    centre = pts.mean(axis=0)
    cov = np.cov((pts - centre).T)
    evals, evecs = np.linalg.eigh(cov)
    axis = evecs[:, 1]
    lateral_dir = np.asarray(u_left, dtype=float) * (1.0 if side == "L" else -1.0)
    if axis @ lateral_dir < 0:
        axis = -axis
    elongation = float(np.sqrt(max(evals[1], 0.0) / max(evals[0], 1e-12)))

    t = (pts - centre) @ axis
    length = float(t.max() - t.min())
    cap = END_CAP_FRACTION * length + 0.5 * min(sx, sy)
    lat_cap, med_cap = t >= t.max() - cap, t <= t.min() + cap
    lateral = pts[lat_cap].mean(axis=0)
    medial = pts[med_cap].mean(axis=0)
    rows, cols = mask.shape
    at_border = (ys == 0) | (xs == 0) | (ys == rows - 1) | (xs == cols - 1)
    # an end counts as cut when the pixels near it (a quarter of the length) touch the border
    near_lat, near_med = t >= t.max() - 0.25 * length, t <= t.min() + 0.25 * length
    cut = tuple(name for name, near in (("medial", near_med), ("lateral", near_lat)) if (at_border & near).any())
    s = pts @ np.asarray(u_sup, dtype=float)
    top_sel = s >= s.max() - 0.5 * min(sx, sy)
    top = pts[top_sel].mean(axis=0)
    if at_border[top_sel].any():
        cut = ("top",) + cut

    p = 1.0 if probability is None else float(np.asarray(probability)[ys, xs].mean())
    elong_factor = float(np.clip((elongation - 1.0) / (MIN_ELONGATION - 1.0), 0.0, 1.0))
    conf = float(np.clip(p * share * elong_factor, 0.0, 1.0))
    return ClavicleKeypoints(
        top=tuple(float(v) for v in top * to_px), medial=tuple(float(v) for v in medial * to_px),
        lateral=tuple(float(v) for v in lateral * to_px), confidence=conf, area_px=int(ys.size),
        component_share=share, elongation=elongation, cut_ends=cut)
