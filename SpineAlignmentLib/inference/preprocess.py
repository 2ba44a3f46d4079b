"""Image preparation for the landmark networks: intensity normalisation and letterboxing.

The same functions prepare training images (:mod:`SpineAlignmentLib.training`)
and images at inference, so both see identical inputs.

Coordinates use the pixel-centre convention (pixel ``(i, j)`` is centred at
``x=j, y=i``). The letterbox keeps the aspect ratio up to rounding; the mapping
is stored *per axis* so that the rounding (or any anisotropic resize) is undone
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["Letterbox", "normalise_intensity", "letterbox", "letterbox_geometry"]


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterbox resize.

    Attributes:
        src_shape: (rows, cols) of the original image.
        dst_shape: (rows, cols) of the network input.
        scale: (sy, sx) network pixels per original pixel, per axis.
        offset: (oy, ox) padding before the resized image, network pixels.
    """

    src_shape: tuple[int, int]
    dst_shape: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[int, int]

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) ``(x, y)`` original pixels to network-input pixels."""
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] + 0.5) * self.scale[1] - 0.5 + self.offset[1]
        out[..., 1] = (xy[..., 1] + 0.5) * self.scale[0] - 0.5 + self.offset[0]
        return out

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) ``(x, y)`` network-input pixels back to original pixels."""
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] - self.offset[1] + 0.5) / self.scale[1] - 0.5
        out[..., 1] = (xy[..., 1] - self.offset[0] + 0.5) / self.scale[0] - 0.5
        return out


def normalise_intensity(pixels: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Robust min-max scaling to [0, 1] between two percentiles (bone bright stays bright).

    Args:
        pixels: (rows, cols) intensities, any real dtype (MONOCHROME2 sense).
        low_pct, high_pct: percentiles mapped to 0 and 1; values outside are clipped.

    Returns:
        (rows, cols) float32 in [0, 1]; an image with no contrast gives zeros.
    """
    a = np.asarray(pixels, dtype=np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        a = np.where(finite, a, 0.0).astype(np.float32)
    del finite
    lo, hi = np.percentile(a, [low_pct, high_pct])
    if not np.isfinite(hi - lo) or hi - lo <= 1e-6:
        return np.zeros(a.shape, dtype=np.float32)
    # Block by block (about 4 M pixels each), so that a large image needs one float32 output and small
    # float64 temporaries instead of four full-size copies; the values are those of the one-line form.
    out = np.empty(a.shape, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, int(np.prod(a.shape[1:]))))
    for r in range(0, a.shape[0], step):
        out[r:r + step] = np.clip((a[r:r + step] - lo) / (hi - lo), 0.0, 1.0)
    return out


def letterbox_geometry(src_shape: tuple[int, int], dst_shape: tuple[int, int]) -> Letterbox:
    """Largest aspect-preserving fit of ``src_shape`` into ``dst_shape``, centred."""
    h, w = int(src_shape[0]), int(src_shape[1])
    th, tw = int(dst_shape[0]), int(dst_shape[1])
    s = min(th / h, tw / w)
    nh = min(th, max(1, int(round(h * s))))
    nw = min(tw, max(1, int(round(w * s))))
    return Letterbox((h, w), (th, tw), (nh / h, nw / w), ((th - nh) // 2, (tw - nw) // 2))


def letterbox(image: np.ndarray, dst_shape: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize (antialiased bilinear) into ``dst_shape`` keeping the aspect ratio; pad with 0.

    Args:
        image: (rows, cols) float array, typically from :func:`normalise_intensity`.
        dst_shape: (rows, cols) of the network input.

    Returns:
        ``(out, geometry)``: (dst rows, dst cols) float32 and its :class:`Letterbox`.
    """
    geo = letterbox_geometry(image.shape[:2], dst_shape)
    nh = int(round(geo.scale[0] * geo.src_shape[0]))
    nw = int(round(geo.scale[1] * geo.src_shape[1]))
    # Pillow's resize filters are antialiased when downscaling (support grows with the factor).
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(image, dtype=np.float32)).resize((nw, nh), Image.BILINEAR),
        dtype=np.float32,
    )
    out = np.zeros(dst_shape, dtype=np.float32)
    oy, ox = geo.offset
    out[oy:oy + nh, ox:ox + nw] = resized
    return out, geo
