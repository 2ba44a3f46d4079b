"""Run checkpoints that load without running code: one writer and one reader for every trainer and export.

A run folder is something people hand each other. ``torch.load`` with
``weights_only=False`` unpickles arbitrary objects, so a ``last.pt`` crafted
to pickle ``os.system`` runs its payload on load. Every checkpoint is
therefore written with plain types only (tensors, numbers, strings, lists,
tuples, dicts, ``None``) and read with ``torch.load(weights_only=True)``,
which refuses anything else before it is built.

What a trainer stores that is not plain is converted here, in one place:
NumPy arrays become tensors, NumPy scalars Python numbers, and the NumPy
random state (a tuple holding a ``uint32`` array) a dict of plain values
(:func:`rng_state` / :func:`restore_rng`).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SpineAlignmentError
from ..safefiles import check_input_file

__all__ = ["plain", "save_checkpoint", "load_checkpoint", "init_states", "rng_state", "restore_rng",
           "MAX_CHECKPOINT_BYTES"]

#: a run checkpoint larger than this is refused before it is read (the largest networks here are ~100 MB with Adam state)
MAX_CHECKPOINT_BYTES = 4 << 30


def plain(obj: Any) -> Any:
    """``obj`` with every value turned into a type ``torch.load(weights_only=True)`` accepts.

    Tensors, ``str``, ``bool``, ``int``, ``float`` and ``None`` stay; NumPy arrays become tensors,
    NumPy scalars Python numbers; dicts, lists and tuples are converted item by item (dict keys must be
    plain already). Anything else raises ``TypeError`` naming its type, so a new field is caught when it
    is written, not when a resume fails.
    """
    if obj is None or isinstance(obj, (str, bool, int, float, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    raise TypeError(f"a checkpoint cannot hold a {type(obj).__name__}; store it as plain values")


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (converted by :func:`plain`) to ``path`` atomically (a ``.tmp`` file, then a rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(plain(payload), tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, what: str = "training checkpoint") -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain values only, never code.

    Returns a dict (a bare state dict is returned as it is).

    Raises:
        SpineAlignmentError: missing, not a regular file, too large, not a PyTorch file, holds anything
            but plain values (a pickle that would run code, or a checkpoint written by an older version
            that stored NumPy objects), or not a dict; the message names the file and what to do.
    """
    p = Path(path)
    check_input_file(p, what=what, max_bytes=MAX_CHECKPOINT_BYTES)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = [ln.strip() for ln in str(exc).splitlines() if "global" in ln.lower() and "unsupported" in ln.lower()]
        if refused:  # weights_only found a class or function to build: the file would run code
            raise SpineAlignmentError(
                f"{p}: refused to load: it holds more than weights and plain values ({refused[0][:120]}), so loading it "
                "could run code; use a checkpoint written by this version of SpineAlignment, or start the run again.") from None
        raise SpineAlignmentError(f"{p}: is not a readable PyTorch {what} (damaged pickle); "
                                  "give the run's own last.pt or start the run again.") from None
    except Exception as exc:  # torch raises RuntimeError/EOFError/zipfile errors/ValueError for damaged files
        raise SpineAlignmentError(
            f"{p}: is not a readable PyTorch {what} ({type(exc).__name__}); "
            "give the run's own last.pt or start the run again.") from None
    if not isinstance(state, dict):
        raise SpineAlignmentError(f"{p}: is not a {what} (it holds a {type(state).__name__}, not a dict); "
                                  "give the run's own last.pt or start the run again.")
    return state


def init_states(path: str | Path, *, second: bool = True) -> tuple[dict, dict | None]:
    """The weights ``--init-from`` names, read the same way by every trainer: ``(first-stage state, second-stage
    state or None)``.

    ``path`` is a run's checkpoint (``{"stage1": ..., "model": ...}`` once a two-stage run's second stage has
    begun, else ``{"model": ...}``) or a model folder's weights file (a bare state dict; the ``refine.pt`` beside
    it is the second stage, read only when ``second``). How the states are put into a network is the trainer's
    own rule (the vertebra trainer grows a head by new channels, the own-data trainers refuse weights of
    another design).
    """
    p = Path(path)
    ck = load_checkpoint(p, "weights file (--init-from)")
    if "stage1" in ck:
        return ck["stage1"], ck["model"] if second else None
    if "model" in ck:
        return ck["model"], None
    refine = p.with_name("refine.pt")
    return ck, (load_checkpoint(refine, "weights file (--init-from)") if second and refine.is_file() else None)


def rng_state() -> dict:
    """The Python, NumPy and torch global random states as plain values (see :func:`restore_rng`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def restore_rng(state: dict) -> None:
    """Set the global random states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
