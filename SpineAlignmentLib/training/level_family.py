"""Training pieces of the level-sequence family (:mod:`SpineAlignmentLib.models.level_family`).

The family is trained by the generic trainer's own loop, checkpoint/resume, second stage and export
(:mod:`SpineAlignmentLib.training.generic`, :mod:`SpineAlignmentLib.training.export_generic`) with
``GenericConfig.family = "levels"``; only the first stage's output channels, loss and decoding differ, and
they come from here. Before any epoch, :func:`check_family_data` names a level the dataset never labels
(its name could never be learnt).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import SpineAlignmentError
from ..models.level_family import HEAT_PRIOR, LevelFamilyLoss, level_layout, never_labelled
from ..models.network import SpineLandmarkNet

__all__ = ["MIN_SCORE", "build_family_net", "family_loss", "check_family_data", "family_blocks",
           "family_description"]


def build_family_net(net_args: dict, ids: Sequence[str]) -> SpineLandmarkNet:
    """First-stage network of the family for these landmark IDs (heatmap logits start at a 1 % prior)."""
    layout = level_layout(ids)
    net = SpineLandmarkNet(in_channels=1, out_channels=layout.n_channels, **net_args)
    with torch.no_grad():
        for ch in layout.heat_channels:
            net.head.bias[ch] = HEAT_PRIOR
    return net


def family_loss(net, ids: Sequence[str]) -> LevelFamilyLoss:
    return LevelFamilyLoss(level_layout(ids), net.stride)


def check_family_data(items, ids: Sequence[str], data: str) -> None:
    """Refuse a protocol table that is no level sequence, or training data on which a level of the protocol is
    never labelled (one sentence each, before any epoch).

    Raises:
        SpineAlignmentError: naming the table's landmark, or the dataset and the levels no film labels.
    """
    level_layout(ids)  # a table that is no level sequence is named here, before any film is cached
    never = never_labelled([it.landmarks for it in items], ids)
    if never:
        raise SpineAlignmentError(
            f"No film of {data} labels level{'s' if len(never) > 1 else ''} {', '.join(never)}, so the level family "
            "cannot learn to name it; label it on some films, or train the per-landmark model (--trainer generic).")


#: decoding threshold of an exported family model (level centres and single landmarks)
MIN_SCORE = 0.3


def family_blocks(md: dict, ids: Sequence[str]) -> dict:
    """Turn the per-landmark model blocks (:func:`~SpineAlignmentLib.training.generic_model.model_blocks`) into
    the family's: the first stage's output channels and the ``level-family`` decoding block (the layout itself
    is read from the ``landmarks`` list at load time, so it cannot disagree with it). The trainer's validation
    and the export build the model from these same blocks."""
    layout = level_layout(ids)
    md["network"]["args"]["out_channels"] = layout.n_channels
    md["network_data_format"]["outputs"]["pred"]["num_channels"] = layout.n_channels
    md["network"]["coarse_to_fine"] = "stage 1 level centres + part offsets on the whole film, stage 2 one ROI per level"
    md["decoding"] = {**md["decoding"], "method": "level-family", "min_score": MIN_SCORE}
    return md


def family_description(protocol: str, ids: Sequence[str]) -> str:
    """The model folder's ``description`` of a family model for ``protocol`` and these landmark IDs."""
    layout = level_layout(ids)
    return (
        f"Level-sequence landmark model for protocol {protocol}: a MONAI residual UNet behind a strided stem "
        f"on the letterboxed film predicts one level-centre heatmap shared by its {len(layout.levels)} levels "
        f"({layout.levels[0]}..{layout.levels[-1]}), each level's position in the chain, the offsets of the "
        f"{len(layout.parts)} level parts from the centre, and a heatmap per landmark outside any level "
        f"({', '.join(layout.ids[k] for k in layout.singles) or 'none'}); a level or landmark not detected is "
        "reported as not found. A second network refines each found level in its own ROI near the original "
        "resolution (one heatmap per landmark part, DSNT).")
