"""A model folder's weight files: the state dict as the folder stores it, and its metadata ``weights`` entry.

Every export (:mod:`~SpineAlignmentLib.training.export`, :mod:`~SpineAlignmentLib.training.export_generic`,
:mod:`~SpineAlignmentLib.training.export_segmentation`) and the trainer's in-memory model
(:func:`~SpineAlignmentLib.training.generic_model.run_model`) store weights through here, so the model a run
validates is the model its folder loads. The files hold tensors only (the registry reads them with
``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["stored_weights", "save_weights"]


def stored_weights(model_state: dict, fp16: bool) -> dict:
    """The state dict as a model folder stores it: floating tensors in fp16 when ``fp16``."""
    return {k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in model_state.items()}


def save_weights(model_state: dict, wpath: Path, fp16: bool) -> dict:
    """Save a state dict (:func:`stored_weights`); the metadata ``weights`` entry."""
    import torch

    from ..models.registry import sha256_file

    torch.save(stored_weights(model_state, fp16), wpath)
    return {"file": wpath.name, "sha256": sha256_file(wpath), "dtype": "float16" if fp16 else "float32",
            "size_bytes": wpath.stat().st_size}
