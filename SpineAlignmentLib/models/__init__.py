"""Networks, heatmap decoding and the model registry (``Resources/Models``).

The network module (MONAI, several seconds to import) is loaded on first use, so that
reading the registry (batch fingerprints, ``list_models``) stays fast and works without torch.
"""

from .registry import LoadedModel, list_models, load_model

__all__ = ["SpineLandmarkNet", "LoadedModel", "list_models", "load_model"]


def __getattr__(name: str):
    if name == "SpineLandmarkNet":
        from .network import SpineLandmarkNet

        return SpineLandmarkNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
