"""What a level anchor needs from a vertebra-centres model's first pass on one film (in memory only).

Kept below both users: :mod:`~SpineAlignmentLib.inference.predict` fills it in on the first pass and
:mod:`~SpineAlignmentLib.inference.anchor` decodes the chain again from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ChainState"]


@dataclass
class ChainState:
    """What a level anchor needs from a vertebra-centres model's first pass on one film (in memory only).

    Attributes:
        centers, corners, scores: (n, 2), (n, 4, 2), (n,) the first stage's candidates (network-input pixels).
        chain: (V,) candidate indices of the film's chain, top to bottom.
        corner_prob: (4, h, w) corner-type probabilities; ``stride``, ``search``, ``radius`` the decoding's.
        geo: the letterbox (:class:`~SpineAlignmentLib.inference.preprocess.Letterbox`).
        points, confidence: (4V, 2) original pixels and (4V,) the chain's landmarks as the result has them.
        model: the loaded model (second stage, calibration, landmark IDs).
        roi_image: the image resized for the second stage and its scale ``(resized, f)``, or None.
        flip_tta: the second stage averaged with mirrored patches.
        levels: the model's own ``levels`` assessment of the first pass (None without one).
        image_warnings: the film's image problems (blank, tiny) that every result of it keeps.
        read_warnings, detection_warnings: what reading the film and the model's detection warned of
            (an anchored result keeps the first and replaces the second).
    """

    centers: np.ndarray
    corners: np.ndarray
    scores: np.ndarray
    chain: np.ndarray
    corner_prob: np.ndarray
    stride: int
    search: int
    radius: int
    geo: Any
    points: np.ndarray
    confidence: np.ndarray
    model: Any
    roi_image: tuple[np.ndarray, tuple[float, float]] | None = None
    flip_tta: bool = False
    levels: dict | None = None
    image_warnings: list[str] = field(default_factory=list)
    read_warnings: list[str] = field(default_factory=list)
    detection_warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The chain's vertebra names (``T1`` ... ``L5``), from the model's landmark IDs."""
        ids = self.model.landmark_ids
        return [ids[i].rsplit("_", 1)[0] for i in range(0, len(ids), 4)]
