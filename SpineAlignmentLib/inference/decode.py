"""Heatmap logits -> sub-pixel coordinates and per-landmark confidence.

Coarse-to-fine decode (the refinement is done on the heatmap, not by a second
network): the coarse location is the maximum of each H/2 probability map; the
fine location is the probability-weighted mean (soft-argmax) in a small window
around that maximum, which is sub-pixel and ignores distant secondary modes.
"""

from __future__ import annotations

import torch

from ..models.dsnt import flat_softmax, local_soft_argmax, peak_mass

__all__ = ["decode_heatmaps"]


def decode_heatmaps(logits: torch.Tensor, stride: int, window: int = 3, conf_radius: float = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode heatmap logits.

    Args:
        logits: (B, C, h, w) network output.
        stride: input pixels per heatmap pixel.
        window: half-size (heatmap pixels) of the refinement window.
        conf_radius: radius (heatmap pixels) of the disc whose probability mass
            is the confidence.

    Returns:
        ``(coords, confidence, prob)``: (B, C, 2) ``(x, y)`` in network-input
        pixels, (B, C) confidence in [0, 1], and the (B, C, h, w) probabilities.
    """
    prob = flat_softmax(logits)
    coords = local_soft_argmax(prob, stride, radius=window)
    conf = peak_mass(prob, coords, stride, radius=conf_radius)
    return coords, conf, prob
