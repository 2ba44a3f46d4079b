"""Networks, heatmap decoding and the model registry (``Resources/Models``)."""

from .network import SpineLandmarkNet
from .registry import LoadedModel, list_models, load_model

__all__ = ["SpineLandmarkNet", "LoadedModel", "list_models", "load_model"]
