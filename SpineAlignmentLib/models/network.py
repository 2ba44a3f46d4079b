"""Heatmap network for vertebra-corner landmarks, built from MONAI blocks.

Layout (input ``H x W``, e.g. 512 x 256):

* stem: a strided 5x5 convolution (H/2) and a strided residual unit (H/4);
* body: a MONAI :class:`~monai.networks.nets.UNet` with residual units working
  at H/4 (its deepest level is H/64, so the receptive field spans the whole
  spine, which is what tells T7 from T8);
* head: one 2x2 stride-2 transposed convolution from the H/4 features to one
  H/2 heatmap (logits) per landmark (each H/4 feature vector predicts its 2x2
  block; an extra 3x3 convolution at H/2 made a CPU training step about 40 %
  slower in our timing runs, so it was left out).

Working at H/4 instead of full resolution keeps training affordable on a CPU;
the H/2 heatmaps are decoded to sub-pixel coordinates by DSNT
(:mod:`SpineAlignmentLib.models.dsnt`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import UNet
from torch import nn

__all__ = ["SpineLandmarkNet"]


class SpineLandmarkNet(nn.Module):
    """Landmark heatmap network.

    Args:
        in_channels: image channels (1 for a radiograph).
        out_channels: number of landmarks (one heatmap each).
        stem_channels: channels after the two stem stages (H/2, H/4).
        channels: UNet channels per level, starting at H/4.
        num_res_units: residual units per UNet level.
        features: channels of the UNet output feeding the head (at least
            about the number of landmarks: every heatmap is a linear map of
            these features).
        norm: normalisation layer name (MONAI ``Norm`` factory).
        dropout: UNet dropout probability.

    Shapes:
        input (B, in_channels, H, W) with H and W divisible by
        ``4 * 2 ** (len(channels) - 1)``; output (B, out_channels, H/2, W/2)
        heatmap logits.
    """

    #: input pixels per output heatmap pixel
    stride: int = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 68,
        stem_channels: Sequence[int] = (16, 32),
        channels: Sequence[int] = (32, 64, 128, 256, 256),
        num_res_units: int = 1,
        features: int = 64,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        s0, s1 = stem_channels
        self.stem = nn.Sequential(
            Convolution(2, in_channels, s0, strides=2, kernel_size=5, norm=norm, act="prelu"),
            ResidualUnit(2, s0, s1, strides=2, norm=norm, act="prelu"),
        )
        self.body = UNet(
            spatial_dims=2,
            in_channels=s1,
            out_channels=features,
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
        self.head = nn.ConvTranspose2d(features, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmap logits (B, out_channels, H/2, W/2) for images (B, in_channels, H, W)."""
        return self.head(self.body(self.stem(x)))
