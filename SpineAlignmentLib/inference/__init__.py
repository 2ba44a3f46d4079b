"""Inference: preprocessing, heatmap decoding, landmark prediction with warnings."""

from __future__ import annotations

from .predict import PredictedLandmark, predict_landmarks

__all__ = ["PredictedLandmark", "predict_landmarks", "predict"]


def predict(radiograph, model, *, flip_tta: bool = False, info: dict | None = None):
    """Landmarks of a film from any packaged model, by the kind its metadata declares (``decoding.method``).

    Returns:
        ``(landmarks, warnings, label_map)``: ``label_map`` is the
        :class:`~SpineAlignmentLib.inference.segment.LabelMap` of a segmentation model
        (``mask-keypoints``), else ``None``. ``info`` receives what a landmark model reports besides
        (e.g. ``levels``, see :func:`predict_landmarks`).
    """
    from ..models.registry import model_kind

    if model_kind(model.metadata) == "segmentation":
        from .segment import predict_from_masks

        return predict_from_masks(radiograph, model, flip_tta=flip_tta)
    landmarks, warnings = predict_landmarks(radiograph, model, flip_tta=flip_tta, info=info)
    return landmarks, warnings, None
