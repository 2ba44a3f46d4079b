"""Segmentation network of the shoulder model (study 000's family: a U-Net with a residual encoder).

A MONAI :class:`~monai.networks.nets.UNet` with residual units at every level,
trained from scratch (nothing is downloaded). Input: one normalised radiograph
channel of ``H x W`` (both divisible by 16); output: one logit map per label
(background and one per segment of the protocol table, e.g. patient-left and
patient-right clavicle) at the input resolution.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["SegmentationUNet"]


class SegmentationUNet(nn.Module):
    """Residual U-Net producing per-pixel label logits.

    Args:
        in_channels: image channels (1).
        out_channels: labels including background.
        channels: features per level (the first at full resolution).
        strides: down-sampling stride between levels (``len(channels) - 1`` values).
        num_res_units: residual units per level.
        dropout: dropout probability inside the units.

    Shapes:
        input (B, in_channels, H, W) -> logits (B, out_channels, H, W).
    """

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 3, channels: Sequence[int] = (24, 48, 96, 192, 384),
                 strides: Sequence[int] = (2, 2, 2, 2), num_res_units: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.unet = UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=tuple(channels),
                         strides=tuple(strides), num_res_units=num_res_units, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)
