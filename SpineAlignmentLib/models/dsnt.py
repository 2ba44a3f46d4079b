"""Heatmap <-> coordinate operations (DSNT / soft-argmax) shared by training and inference.

Coordinates are in *input-image pixels* with the pixel-centre convention: pixel
``(i, j)`` of an image covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]`` and its
centre is ``(x=j, y=i)``. A heatmap at ``1/stride`` of the input resolution has
its pixel ``(i, j)`` centred at input coordinate
``(stride * j + (stride - 1) / 2, stride * i + (stride - 1) / 2)``.

Reference: Nibali et al., "Numerical coordinate regression with convolutional
neural networks" (DSNT), 2018.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "flat_softmax",
    "heatmap_grid",
    "dsnt",
    "gaussian_factors",
    "gaussian_heatmaps",
    "js_divergence",
    "local_soft_argmax",
    "peak_mass",
]


def flat_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the two spatial axes.

    Args:
        logits: (B, C, h, w) unnormalised heatmaps.

    Returns:
        (B, C, h, w) probability maps, each summing to 1 over (h, w).
    """
    b, c, h, w = logits.shape
    return F.softmax(logits.reshape(b, c, h * w).float(), dim=-1).reshape(b, c, h, w)


def heatmap_grid(h: int, w: int, stride: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel coordinates of the heatmap pixel centres.

    Returns:
        ``(xs, ys)``: (w,) and (h,) float tensors in input pixels.
    """
    off = (stride - 1) / 2.0
    xs = torch.arange(w, dtype=torch.float32, device=device) * stride + off
    ys = torch.arange(h, dtype=torch.float32, device=device) * stride + off
    return xs, ys


def dsnt(prob: torch.Tensor, stride: int) -> torch.Tensor:
    """Expected coordinates under each probability map (differentiable).

    Args:
        prob: (B, C, h, w) probability maps (see :func:`flat_softmax`).
        stride: input pixels per heatmap pixel.

    Returns:
        (B, C, 2) ``(x, y)`` in input pixels.
    """
    _, _, h, w = prob.shape
    xs, ys = heatmap_grid(h, w, stride, prob.device)
    x = (prob.sum(dim=2) * xs).sum(dim=-1)
    y = (prob.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def gaussian_factors(coords: torch.Tensor, h: int, w: int, stride: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable normalised Gaussian factors: (B, C, h) over rows and (B, C, w) over columns.

    Their outer product is the target map of :func:`gaussian_heatmaps`.
    """
    xs, ys = heatmap_grid(h, w, stride, coords.device)
    s = sigma * stride
    gx = torch.exp(-0.5 * ((xs[None, None, :] - coords[..., 0:1]) / s) ** 2)
    gy = torch.exp(-0.5 * ((ys[None, None, :] - coords[..., 1:2]) / s) ** 2)
    gx = gx / gx.sum(-1, keepdim=True).clamp_min(1e-12)
    gy = gy / gy.sum(-1, keepdim=True).clamp_min(1e-12)
    return gy, gx


def gaussian_heatmaps(coords: torch.Tensor, h: int, w: int, stride: int, sigma: float) -> torch.Tensor:
    """Normalised Gaussian target maps centred on ``coords``.

    Args:
        coords: (B, C, 2) ``(x, y)`` in input pixels.
        h, w: heatmap size.
        stride: input pixels per heatmap pixel.
        sigma: standard deviation in *heatmap* pixels.

    Returns:
        (B, C, h, w) maps summing to 1 (a point far outside the map gives a
        degenerate map; the caller masks such points out of the loss).
    """
    gy, gx = gaussian_factors(coords, h, w, stride, sigma)
    return gy[..., :, None] * gx[..., None, :]


def js_divergence(p: torch.Tensor, q: torch.Tensor, log_p: torch.Tensor | None = None,
                  q_factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Jensen-Shannon divergence between spatial distributions.

    Computed as ``0.5 * sum p log p + 0.5 * sum q log q - sum m log m`` with
    ``m = (p + q) / 2``; pass ``log_p`` (log-softmax of the logits) and the
    separable factors of ``q`` to avoid two of the three full-size logarithms
    (this term dominates the cost of a training step on a CPU).

    Args:
        p, q: (B, C, h, w) maps, each summing to 1 over (h, w).
        log_p: optional ``log(p)``.
        q_factors: optional ``(qy, qx)`` with ``q = qy ⊗ qx``.

    Returns:
        (B, C) divergence in nats, in ``[0, ln 2]``.
    """
    p_logp = (torch.special.xlogy(p, p) if log_p is None else p * log_p).sum(dim=(-2, -1))
    if q_factors is not None:
        qy, qx = q_factors
        q_logq = torch.special.xlogy(qy, qy).sum(-1) + torch.special.xlogy(qx, qx).sum(-1)
    else:
        q_logq = torch.special.xlogy(q, q).sum(dim=(-2, -1))
    m = 0.5 * (p + q)
    m_logm = torch.special.xlogy(m, m).sum(dim=(-2, -1))
    return (0.5 * p_logp + 0.5 * q_logq - m_logm).clamp_min(0.0)


def local_soft_argmax(prob: torch.Tensor, stride: int, radius: int = 3) -> torch.Tensor:
    """Sub-pixel peak location: soft-argmax restricted to a window around the maximum.

    This is the refinement step of the coarse-to-fine decode: the global
    expectation (:func:`dsnt`) is pulled towards any second mode, whereas the
    windowed expectation stays on the dominant peak.

    Args:
        prob: (B, C, h, w) probability maps.
        stride: input pixels per heatmap pixel.
        radius: half-size of the window in heatmap pixels.

    Returns:
        (B, C, 2) ``(x, y)`` in input pixels.
    """
    b, c, h, w = prob.shape
    flat = prob.reshape(b, c, h * w)
    idx = flat.argmax(dim=-1)
    py = (idx // w).float()
    px = (idx % w).float()
    yy = torch.arange(h, dtype=torch.float32, device=prob.device)[None, None, :, None]
    xx = torch.arange(w, dtype=torch.float32, device=prob.device)[None, None, None, :]
    win = ((yy - py[..., None, None]).abs() <= radius) & ((xx - px[..., None, None]).abs() <= radius)
    wp = prob * win
    mass = wp.sum(dim=(-2, -1)).clamp_min(1e-12)
    x = (wp * xx).sum(dim=(-2, -1)) / mass
    y = (wp * yy).sum(dim=(-2, -1)) / mass
    off = (stride - 1) / 2.0
    return torch.stack([x * stride + off, y * stride + off], dim=-1)


def peak_mass(prob: torch.Tensor, coords: torch.Tensor, stride: int, radius: float = 2.0) -> torch.Tensor:
    """Probability mass within ``radius`` heatmap pixels of ``coords``: a confidence in [0, 1].

    A sharp, unimodal heatmap puts most of its mass near its peak; a blank,
    noisy or out-of-distribution image gives diffuse maps and a low value.

    Args:
        prob: (B, C, h, w) probability maps.
        coords: (B, C, 2) decoded ``(x, y)`` in input pixels.
        stride: input pixels per heatmap pixel.
        radius: disc radius in heatmap pixels.

    Returns:
        (B, C) mass in ``[0, 1]``.
    """
    _, _, h, w = prob.shape
    xs, ys = heatmap_grid(h, w, stride, prob.device)
    dx = (xs[None, None, None, :] - coords[..., 0, None, None]) / stride
    dy = (ys[None, None, :, None] - coords[..., 1, None, None]) / stride
    disc = (dx ** 2 + dy ** 2) <= radius ** 2
    return (prob * disc).sum(dim=(-2, -1)).clamp(0.0, 1.0)


def expected_spread(prob: torch.Tensor, stride: int) -> torch.Tensor:
    """Standard deviation of each map around its mean, in heatmap pixels: (B, C)."""
    mu = dsnt(prob, stride)
    _, _, h, w = prob.shape
    xs, ys = heatmap_grid(h, w, stride, prob.device)
    vx = (prob.sum(dim=2) * (xs - mu[..., 0:1]) ** 2).sum(-1)
    vy = (prob.sum(dim=3) * (ys - mu[..., 1:2]) ** 2).sum(-1)
    return torch.sqrt(vx + vy) / stride / math.sqrt(2.0)
