"""Affine warps of an image and its keypoints alike (one matrix for both, so they never disagree).

Below the augmentations that use them (:mod:`~SpineAlignmentLib.training.transforms`,
:mod:`~SpineAlignmentLib.training.framing`): plain NumPy/SciPy, no MONAI.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["affine_matrix", "apply_to_points", "warp_image"]


def affine_matrix(
    shape: tuple[int, int],
    angle_deg: float = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    shift: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
) -> np.ndarray:
    """Forward 3x3 homogeneous matrix on ``(x, y, 1)`` pixel coordinates.

    The image is rotated by ``angle_deg`` (counter-clockwise as seen on screen)
    and scaled by ``scale = (sx, sy)`` about its centre, shifted by ``shift =
    (dx, dy)`` pixels and then, if ``flip``, mirrored left-right.
    """
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    a = math.radians(angle_deg)
    # y points down, so a screen-counter-clockwise rotation has this sign pattern.
    rot = np.array([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    scl = np.diag([scale[0], scale[1], 1.0])
    to_c = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, cx + shift[0]], [0.0, 1.0, cy + shift[1]], [0.0, 0.0, 1.0]])
    m = back @ rot @ scl @ to_c
    if flip:
        m = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m


def apply_to_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 forward matrix to (K, 2) ``(x, y)`` points."""
    p = np.asarray(points, dtype=np.float64)
    hom = np.concatenate([p, np.ones((len(p), 1))], axis=1)
    return (hom @ matrix.T)[:, :2]


def warp_image(image: np.ndarray, matrix: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample a (C, H, W) image so that content at ``p`` moves to ``matrix @ p``; outside is 0."""
    inv = np.linalg.inv(matrix)
    # scipy works in (row, col) = (y, x): swap the axes of the inverse map.
    swap = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rc = swap @ inv @ swap
    out = np.empty_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        out[c] = ndimage.affine_transform(image[c].astype(np.float32, copy=False), rc[:2, :2], offset=rc[:2, 2],
                                          order=order, mode="constant", cval=0.0, prefilter=False)
    return out
