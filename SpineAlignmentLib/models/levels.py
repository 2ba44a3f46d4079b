"""Vertebra identification: which detected vertebra is the first (T1) and which the last (L5).

The first stage finds vertebrae well but sometimes names them a level off: C7
(or S1) looks like a vertebra to a network that sees the whole spine at a fifth
of its resolution, and the 17 strongest centres are then C7..L4 or T2..S1.
Telling T1 from C7 takes context: T1 carries the first pair of ribs, L5 sits on
the sacrum between the iliac crests.

The identification network classifies a wide, rotated context patch around
each candidate vertebra (``extent`` vertebra widths, so two levels above and
below and the rib heads are in view) into :data:`LEVEL_CLASSES`. The decoder
(:func:`SpineAlignmentLib.models.vertebra.decode_vertebrae`, ``identify``)
then chooses the first and last vertebra of the run with these probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets import Classifier

from .refine import RoiSpec, _scale_points, normalise_patches, roi_grid, sample_rois, vertebra_frames

__all__ = ["LEVEL_CLASSES", "ABOVE", "FIRST", "INNER", "LAST", "BELOW", "LevelClassifier", "level_probabilities",
           "neighbour_vertebrae", "make_identifier"]

#: classes of a candidate vertebra: above the first (C7, C6), the first (T1), between, the last (L5), below (S1, S2)
LEVEL_CLASSES = ("above", "first", "inner", "last", "below")
ABOVE, FIRST, INNER, LAST, BELOW = range(5)


class LevelClassifier(Classifier):
    """MONAI residual :class:`~monai.networks.nets.Classifier` on a square one-channel patch (logits out)."""

    def __init__(self, size: int = 96, channels=(16, 32, 64, 128, 128), num_res_units: int = 1,
                 dropout: float | None = 0.1) -> None:
        super().__init__(in_shape=(1, size, size), classes=len(LEVEL_CLASSES), channels=tuple(channels),
                         strides=(2,) * len(channels), num_res_units=num_res_units, dropout=dropout)


@torch.no_grad()
def level_probabilities(network: torch.nn.Module, resized: np.ndarray, f: tuple[float, float], corners: np.ndarray,
                        spec: RoiSpec) -> np.ndarray:
    """(V, 5) class probabilities of the (V, 4, 2) candidate vertebrae (original pixels).

    ``resized`` and ``f`` come from :func:`~SpineAlignmentLib.models.refine.resize_for_rois` with ``spec``.
    Each patch is the candidate's frame (centre, width, mid-line angle) at ``spec.extent`` widths.
    """
    q = _scale_points(np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2), f)
    if len(q) == 0:
        return np.zeros((0, len(LEVEL_CLASSES)))
    centre, width, angle = vertebra_frames(q)
    x = normalise_patches(sample_rois(resized, roi_grid(centre, width, angle, spec)))
    return torch.softmax(network(x).float(), dim=1).numpy().astype(np.float64)


def neighbour_vertebrae(corners: np.ndarray, steps: int) -> np.ndarray:
    """Corners (4, 2) of the vertebra ``steps`` levels beyond the ends of a (V, 4, 2) run, by extrapolation.

    ``steps`` < 0 goes above the first vertebra (C7 for -1), > 0 below the last
    (S1 for +1): the end vertebra moved by ``|steps|`` times the centre distance to
    its inner neighbour (the shape is kept). Used to cut training patches of the
    "above" and "below" classes, which are not labelled in the data.
    """
    q = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    c = q.mean(axis=1)
    if steps < 0:
        return q[0] + (-steps) * (c[0] - c[1])
    return q[-1] + steps * (c[-1] - c[-2])


def make_identifier(network: torch.nn.Module, spec: RoiSpec, to_original, input_width: int, *,
                    image: np.ndarray | None = None, resized: tuple[np.ndarray, tuple[float, float]] | None = None):
    """The ``identify`` callback of :func:`~SpineAlignmentLib.models.vertebra.decode_vertebrae` for one image.

    Args:
        network: :class:`LevelClassifier` (eval mode).
        spec: its context patch (size, extent in vertebra widths).
        to_original: maps (N, 2) network-input pixels to original pixels (the letterbox).
        input_width: network input width; batch item 1 is the mirrored input (flip TTA),
            whose candidates are mirrored back (x and TL<->TR, BL<->BR) before classifying.
        image: (H, W) normalised original image in [0, 1]; resized on the first call
            for the candidates' median width (:func:`~SpineAlignmentLib.models.refine.resize_for_rois`).
        resized: or that resized image and its scale, computed by the caller.
    """
    from .refine import FLIP_CORNERS, resize_for_rois

    cache: dict = {} if resized is None else {"resized": resized}

    def identify(i: int, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2).copy()
        if i == 1:
            q = q[:, list(FLIP_CORNERS)]
            q[..., 0] = (input_width - 1) - q[..., 0]
        q = to_original(q.reshape(-1, 2)).reshape(-1, 4, 2)
        if "resized" not in cache:
            cache["resized"] = resize_for_rois(image, float(np.median(vertebra_frames(q)[1])), spec)
        p = level_probabilities(network, *cache["resized"], q, spec)
        return p[:, FIRST], p[:, LAST]

    return identify
