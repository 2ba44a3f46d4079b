"""Inference: preprocessing, heatmap decoding, landmark prediction with warnings."""

from .predict import PredictedLandmark, predict_landmarks

__all__ = ["PredictedLandmark", "predict_landmarks"]
