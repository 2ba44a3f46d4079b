"""Second stage: per-vertebra ROI refinement of the four corners (coarse to fine).

The first network sees the whole spine at about a fifth of the original
resolution; one of its heatmap pixels spans about 10 original pixels, and a
2-pixel error on a 30-pixel-wide vertebra tilts its mid-line by about 5
degrees. The second stage looks at one vertebra at a time, near the original
resolution:

1. For each coarse vertebra (four corners from the first stage) a square ROI
   is placed on its centre, rotated to its mid-line, with a side of
   ``extent`` vertebra widths.
2. The image is first resized (antialiased) so that the image's median
   vertebra width spans ``size / extent`` pixels; the ROI is then sampled
   bilinearly into a ``size x size`` patch (no aliasing: one patch pixel is
   about one resized pixel), whose 1st and 99th intensity percentiles are
   stretched to [0, 1] (:func:`normalise_patches`).
3. A small heatmap network (:class:`~SpineAlignmentLib.models.network.SpineLandmarkNet`
   with four output channels, TL, TR, BL, BR of the *central* vertebra) is
   decoded by DSNT to sub-pixel patch coordinates, mapped back to original
   pixels through the ROI's affine map.

Patch axes: ``u`` (columns) runs along the vertebra mid-line from left to
right, ``v`` (rows) from top to bottom perpendicular to it, so a mirrored
patch is the mirrored vertebra with TL<->TR and BL<->BR swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .dsnt import dsnt, flat_softmax, peak_mass

__all__ = ["RoiSpec", "vertebra_frames", "resize_for_rois", "roi_grid", "sample_rois", "to_roi", "from_roi",
           "refine_corners", "refine_resized", "normalise_patches", "FLIP_CORNERS"]

#: corner order after a left-right mirror of a patch (TL, TR, BL, BR -> TR, TL, BR, BL)
FLIP_CORNERS = (1, 0, 3, 2)


@dataclass(frozen=True)
class RoiSpec:
    """Shape of the second-stage input.

    Attributes:
        size: patch side, pixels (divisible by the network's total stride).
        extent: patch side in vertebra widths.
    """

    size: int = 128
    extent: float = 1.8

    @property
    def width_px(self) -> float:
        """Pixels a median-width vertebra spans after :func:`resize_for_rois`."""
        return self.size / self.extent


def vertebra_frames(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (V, 2), width (V,) and mid-line angle (V,) radians of (V, 4, 2) TL, TR, BL, BR corners.

    The width is the mean of the top (TL-TR) and bottom (BL-BR) edge lengths;
    the angle is that of the vector from the left-edge midpoint to the
    right-edge midpoint (image axes, ``y`` down).
    """
    q = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    centre = q.mean(axis=1)
    width = 0.5 * (np.linalg.norm(q[:, 1] - q[:, 0], axis=-1) + np.linalg.norm(q[:, 3] - q[:, 2], axis=-1))
    mid = 0.5 * (q[:, 1] + q[:, 3]) - 0.5 * (q[:, 0] + q[:, 2])
    return centre, width, np.arctan2(mid[:, 1], mid[:, 0])


def resize_for_rois(image: np.ndarray, median_width: float, spec: RoiSpec) -> tuple[np.ndarray, tuple[float, float]]:
    """Antialiased resize so the median vertebra spans ``spec.width_px`` (never enlarged).

    Returns:
        ``(resized, (fx, fy))``: float32 image and the per-axis scale (resized
        pixels per original pixel; ``x' = (x + 0.5) * fx - 0.5``).
    """
    f = min(1.0, spec.width_px / max(float(median_width), 1e-6))
    rows, cols = image.shape
    new = (max(int(round(cols * f)), 1), max(int(round(rows * f)), 1))
    if new == (cols, rows):
        return np.asarray(image, dtype=np.float32), (1.0, 1.0)
    im = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F").resize(new, Image.BILINEAR)
    return np.asarray(im, dtype=np.float32), (new[0] / cols, new[1] / rows)


def _scale_points(xy: np.ndarray, f: tuple[float, float], inverse: bool = False) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    s = np.array(f)
    return (xy + 0.5) / s - 0.5 if inverse else (xy + 0.5) * s - 0.5


def _affine(centre: np.ndarray, width: np.ndarray, angle: np.ndarray, spec: RoiSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per ROI: (V, 2, 2) matrix and (V, 2) offset with ``xy = M @ uv + t`` (uv patch pixels)."""
    s = spec.extent * np.asarray(width, dtype=np.float64) / spec.size  # image pixels per patch pixel
    c, sn = np.cos(angle), np.sin(angle)
    m = np.stack([np.stack([c * s, -sn * s], -1), np.stack([sn * s, c * s], -1)], -2)
    half = (spec.size - 1) / 2.0
    t = np.asarray(centre, dtype=np.float64) - np.einsum("vij,j->vi", m, np.array([half, half]))
    return m, t


def to_roi(points: np.ndarray, centre, width, angle, spec: RoiSpec) -> np.ndarray:
    """Map (V, K, 2) image points into each ROI's patch pixels."""
    m, t = _affine(centre, width, angle, spec)
    return (np.asarray(points, dtype=np.float64) - t[:, None, :]) @ np.linalg.inv(m).transpose(0, 2, 1)


def from_roi(uv: np.ndarray, centre, width, angle, spec: RoiSpec) -> np.ndarray:
    """Map (V, K, 2) patch pixels back to image points."""
    m, t = _affine(centre, width, angle, spec)
    return np.asarray(uv, dtype=np.float64) @ m.transpose(0, 2, 1) + t[:, None, :]


def roi_grid(centre, width, angle, spec: RoiSpec) -> np.ndarray:
    """(V, size, size, 2) image ``(x, y)`` of every patch pixel centre."""
    g = np.arange(spec.size, dtype=np.float64)
    uu, vv = np.meshgrid(g, g)
    uv = np.stack([uu.ravel(), vv.ravel()], -1)
    n = len(np.atleast_1d(width))
    xy = from_roi(np.broadcast_to(uv, (n, *uv.shape)), centre, width, angle, spec)
    return xy.reshape(n, spec.size, spec.size, 2)


def sample_rois(image: np.ndarray | torch.Tensor, grid: np.ndarray) -> torch.Tensor:
    """Bilinear samples (V, 1, S, S) of ``image`` (H, W) at ``grid`` (V, S, S, 2) image ``(x, y)``; 0 outside."""
    img = torch.from_numpy(np.array(image, dtype=np.float32))[None, None]
    h, w = img.shape[-2:]
    v, s = grid.shape[0], grid.shape[1]
    g = torch.as_tensor(grid, dtype=torch.float32).reshape(1, v * s, s, 2).clone()
    g[..., 0] = 2.0 * g[..., 0] / max(w - 1, 1) - 1.0
    g[..., 1] = 2.0 * g[..., 1] / max(h - 1, 1) - 1.0
    out = F.grid_sample(img, g, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(v, 1, s, s)


def normalise_patches(x: torch.Tensor, low: float = 0.01, high: float = 0.99) -> torch.Tensor:
    """Per patch, map its ``low`` and ``high`` quantiles to 0 and 1 (clipped): (V, 1, S, S).

    The whole-image normalisation leaves upper thoracic patches nearly black
    (a few grey levels); stretching each patch gives every vertebra the same
    contrast before the network (and before augmentation noise in training).
    """
    flat = x.reshape(x.shape[0], -1)
    q = torch.quantile(flat, torch.tensor([low, high], dtype=x.dtype), dim=1)  # (2, V)
    lo, hi = q[0][:, None, None, None], q[1][:, None, None, None]
    return ((x - lo) / (hi - lo).clamp_min(1e-3)).clamp(0.0, 1.0)


@torch.no_grad()
def refine_corners(network: torch.nn.Module, image: np.ndarray, corners: np.ndarray, spec: RoiSpec, *,
                   stride: int, iterations: int = 1, flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Refine coarse corners with the second-stage network.

    Args:
        network: ROI network (4 heatmap channels, TL, TR, BL, BR), eval mode.
        image: (H, W) normalised intensities in [0, 1] (as for the first stage, original resolution).
        corners: (V, 4, 2) or (4V, 2) coarse corners, original pixels.
        spec: ROI shape the network was trained with.
        stride: patch pixels per heatmap pixel.
        iterations: ROI passes; each re-centres the ROIs on the previous result.
        flip_tta: also refine mirrored patches and average.

    Returns:
        ``(corners, mass)``: refined corners with the input's shape, and per
        corner the heatmap probability mass near the decoded point (V*4,) in [0, 1].
    """
    q = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    _, widths, _ = vertebra_frames(q)
    resized, f = resize_for_rois(image, float(np.median(widths)), spec)
    return refine_resized(network, resized, f, corners, spec, stride=stride, iterations=iterations, flip_tta=flip_tta)


@torch.no_grad()
def refine_resized(network: torch.nn.Module, resized: np.ndarray, f: tuple[float, float], corners: np.ndarray,
                   spec: RoiSpec, *, stride: int, iterations: int = 1, flip_tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`refine_corners` on an image already passed through :func:`resize_for_rois` (scale ``f``)."""
    shape = np.shape(corners)
    q = _scale_points(np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2), f)
    mass = np.zeros(q.shape[:2])
    for _ in range(max(int(iterations), 1)):
        centre, width, angle = vertebra_frames(q)
        x = normalise_patches(sample_rois(resized, roi_grid(centre, width, angle, spec)))
        prob = flat_softmax(network(x))
        uv = dsnt(prob, stride)
        m = peak_mass(prob, uv, stride)
        if flip_tta:
            prob_f = flat_softmax(network(torch.flip(x, dims=[-1])))[:, list(FLIP_CORNERS)]
            uv_f = dsnt(prob_f, stride)
            m = 0.5 * (m + peak_mass(prob_f, uv_f, stride))
            uv_f[..., 0] = (spec.size - 1) - uv_f[..., 0]
            uv = 0.5 * (uv + uv_f)
        q = from_roi(uv.numpy(), centre, width, angle, spec)
        mass = m.numpy()
    return _scale_points(q, f, inverse=True).reshape(shape), mass.reshape(-1)
