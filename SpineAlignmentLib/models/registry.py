"""Model registry: one folder per model under ``Resources/Models/<name>/``.

Each folder holds ``metadata.json`` (validated against
``metadata.schema.json`` on load), the weights file it names, and a README.
The weights' SHA-256 is checked before ``torch.load(..., weights_only=True)``;
a missing or corrupted file raises :class:`~SpineAlignmentLib.errors.ModelError`
naming the file and the checksum it should have. Nothing is ever downloaded.

Models are searched in a path of folders (:func:`model_search_path`), first to last:

1. every folder of ``$SPINEALIGN_MODELS`` (several separated by ``os.pathsep``: ``:`` on
   Linux/macOS, ``;`` on Windows), in the order given;
2. the per-user folder ``~/.spinealignment/models`` (:func:`user_models_dir`;
   ``$SPINEALIGN_USER_MODELS`` names another one, or none when set empty);
3. the shipped ``Resources/Models`` (:func:`shipped_models_dir`).

A model is a sub-folder; its name is the folder name. When two folders hold a model of
the same name, the first in the path is used and the listing notes the one it hides
(so a model a user exports under a shipped model's name replaces it for that user,
and ``spine-align models`` says so). The default model of a protocol is the first
model for it in the path (by folder order, then name).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..safefiles import load_json_file

__all__ = ["LoadedModel", "models_dir", "shipped_models_dir", "user_models_dir", "model_search_path",
           "model_locations", "find_model", "list_models", "model_problems", "read_metadata", "load_model",
           "resolve_model", "model_kind", "sha256_file", "SCHEMA_PATH", "MODELS_ENV", "USER_MODELS_ENV"]

SCHEMA_PATH = Path(__file__).with_name("metadata.schema.json")
#: Extra model folders, searched first (several separated by os.pathsep).
MODELS_ENV = "SPINEALIGN_MODELS"
#: Overrides the per-user models folder (an empty value: no per-user folder).
USER_MODELS_ENV = "SPINEALIGN_USER_MODELS"

log = logging.getLogger(__name__)


def shipped_models_dir() -> Path:
    """``Resources/Models`` of the source tree / installed extension: the models shipped with SpineAlignment."""
    return Path(__file__).resolve().parents[2] / "Resources" / "Models"


def models_dir() -> Path:
    """The shipped models folder (kept for callers of earlier versions; see :func:`model_search_path`)."""
    return shipped_models_dir()


def user_models_dir() -> Path | None:
    """The per-user models folder: ``$SPINEALIGN_USER_MODELS``, else ``~/.spinealignment/models`` (None: switched off)."""
    env = os.environ.get(USER_MODELS_ENV)
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    return Path.home() / ".spinealignment" / "models"


_REPORTED_MISSING: set[str] = set()


def model_search_path() -> list[Path]:
    """Model folders in search order: ``$SPINEALIGN_MODELS`` entries, the per-user folder, the shipped folder.

    The same folder given twice is searched once (at its first place). Folders that do not exist are kept
    (a listing says where it looked).
    """
    folders = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p.strip()]
    for f in folders:
        if not f.is_dir() and str(f) not in _REPORTED_MISSING:  # said once per process, not at every look-up
            _REPORTED_MISSING.add(str(f))
            log.warning("%s names %s, which is not an existing folder; its models are not found (check the "
                        "variable).", MODELS_ENV, f)
    user = user_models_dir()
    folders += ([user] if user is not None else []) + [shipped_models_dir()]
    seen: set[str] = set()
    out = []
    for f in folders:
        key = os.path.realpath(f)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _model_folders(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # missing or unreadable folder: nothing installed there
        return []


def model_locations() -> dict[str, dict]:
    """Every model folder by name, in search order: ``{name: {"folder": Path, "hidden": [Path, ...]}}``.

    ``hidden`` lists same-named folders later in the path, which are not used. Reads only folder names
    (no metadata, no torch), so the Slicer module can call it at start-up.
    """
    out: dict[str, dict] = {}
    for root in model_search_path():
        for folder in _model_folders(root):
            if folder.name in out:
                out[folder.name]["hidden"].append(folder)
            else:
                out[folder.name] = {"folder": folder, "hidden": []}
    return out


def find_model(name: str) -> Path:
    """The folder of the model called ``name`` (the first in :func:`model_search_path`).

    Raises:
        ModelError: no folder of that name in any models folder.
    """
    entry = model_locations().get(name) if name and Path(name).name == name else None
    if entry is None:
        known = ", ".join(m["name"] for m in list_models()) or "none"
        where = os.pathsep.join(str(p) for p in model_search_path())
        raise ModelError(f"Model '{name}' not found in {where} (installed: {known}); check the model name.")
    return entry["folder"]


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def validate_metadata(metadata: dict, source: str = "metadata") -> None:
    """Raise :class:`ModelError` unless ``metadata`` follows the schema."""
    import jsonschema

    try:
        jsonschema.validate(metadata, _schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ModelError(f"Model metadata {source} is invalid at {where}: {exc.message}; fix or reinstall the model folder.") from None


def read_metadata(folder: Path) -> dict:
    """Read and validate ``folder/metadata.json`` (size and depth limited, see :mod:`..safefiles`)."""
    path = Path(folder) / "metadata.json"
    if not path.exists():
        raise ModelError(f"Model folder {folder} has no metadata.json; reinstall the model.")
    try:
        data = load_json_file(path, ModelError, what="model metadata file")
    except ModelError as exc:
        raise ModelError(f"Model metadata {exc} Reinstall the model.") from None
    if not isinstance(data, dict):
        raise ModelError(f"Model metadata {path} is not a JSON object; reinstall the model.")
    validate_metadata(data, str(path))
    return data


def _scan(protocol: str | None) -> tuple[list[dict], list[str]]:
    """Valid metadata in search order (each with ``folder`` and ``hidden``) and one message per unusable folder."""
    good: list[dict] = []
    broken: list[str] = []
    for entry in model_locations().values():
        folder = entry["folder"]
        try:
            md = read_metadata(folder)
        except ModelError as exc:
            if protocol is None or _declared_protocol(folder) in (None, protocol):
                broken.append(str(exc))
            continue
        if protocol is None or md["protocol"] == protocol:
            good.append({**md, "folder": str(folder), "hidden": [str(h) for h in entry["hidden"]]})
        else:
            hides = [h for h in entry["hidden"] if _declared_protocol(h) == protocol]
            if hides or folder.name != md["name"]:  # another protocol's model copied under this one's name
                broken.append(f"Model folder {folder} holds '{md['name']}', a model for protocol '{md['protocol']}', "
                              f"not '{protocol}'" + (f", and hides the '{protocol}' model in {hides[0]}" if hides else "")
                              + "; give it a folder of its own name, or put the protocol's model back.")
    return good, broken


def _declared_protocol(folder: Path) -> str | None:
    """The protocol an unusable metadata file names, when it can be read at all (None: unknown)."""
    try:
        value = load_json_file(folder / "metadata.json", ModelError).get("protocol")
    except (ModelError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def model_kind(metadata: dict) -> str:
    """``segmentation`` for a model whose landmarks come from masks (``decoding.method`` ``mask-keypoints``),
    else ``landmarks`` (the kinds of :data:`~SpineAlignmentLib.protocols.MODEL_KINDS`)."""
    return "segmentation" if metadata["decoding"]["method"] == "mask-keypoints" else "landmarks"


def list_models(protocol: str | None = None) -> list[dict]:
    """Metadata of every valid model, optionally only those for ``protocol``, in search order.

    Each dict is the model's metadata plus ``folder`` (where it lives) and ``hidden`` (same-named
    folders later in the search path, not used). Folders whose metadata does not validate are
    skipped here; :func:`model_problems` says why (and :func:`resolve_model` reports it when no
    model is left).
    """
    return _scan(protocol)[0]


def model_problems(protocol: str | None = None) -> list[str]:
    """One sentence per model folder that cannot be used (folder, file and reason).

    With ``protocol``, folders whose metadata names another protocol are left out;
    folders whose metadata cannot be read at all are always listed.
    """
    return _scan(protocol)[1]


@dataclass
class LoadedModel:
    """A network ready for inference plus the metadata that says how to feed it.

    Attributes:
        name, version: from the metadata.
        metadata: the validated metadata dict.
        network: the torch module in eval mode (float32).
        landmark_ids: channel order.
        input_shape: (rows, cols) of the network input.
        stride: input pixels per heatmap pixel.
        folder: the model folder.
        refiner: second-stage ROI network (eval mode), or ``None`` when the model has none.
        roi: its :class:`~SpineAlignmentLib.models.refine.RoiSpec`, or ``None``.
        levels: vertebra identification network (:mod:`SpineAlignmentLib.models.levels`, eval
            mode), or ``None``.
        levels_roi: its context patch :class:`~SpineAlignmentLib.models.refine.RoiSpec`, or ``None``.
        landmark_refiner: second stage of a generic landmark model (one ROI per landmark,
            :mod:`SpineAlignmentLib.models.landmark_roi`), or ``None``.
        landmark_roi: its :class:`~SpineAlignmentLib.models.landmark_roi.LandmarkRoi`, or ``None``.
    """

    name: str
    version: str
    metadata: dict
    network: Any
    landmark_ids: tuple[str, ...]
    input_shape: tuple[int, int]
    stride: int
    folder: Path
    refiner: Any = None
    roi: Any = None
    levels: Any = None
    levels_roi: Any = None
    landmark_refiner: Any = None
    landmark_roi: Any = None

    @property
    def protocol(self) -> str:
        return self.metadata["protocol"]

    def info(self) -> dict:
        """``{"name", "version"}`` as written into result files."""
        return {"name": self.name, "version": self.version}


def _network_class(dotted: str):
    module, _, cls = dotted.rpartition(".")
    if not module.startswith("SpineAlignmentLib.models"):
        raise ModelError(f"Network class {dotted} is outside SpineAlignmentLib.models; refusing to import it.")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise ModelError(f"Network class {dotted} named in the model metadata does not exist in this version; update SpineAlignmentLib.") from None


def build_network(metadata: dict):
    """Instantiate the metadata's network from its constructor arguments (random weights)."""
    return _network_class(metadata["network"]["class"])(**metadata["network"]["args"])


def _load_network(net: dict, w: dict, folder: Path):
    """Build a metadata ``network`` entry and load its ``weights`` entry after the SHA-256 check (eval mode)."""
    import torch

    wpath = folder / w["file"]
    if not wpath.is_file():
        raise ModelError(f"Weights file {wpath} is missing; restore it (expected SHA-256 {w['sha256']}).")
    actual = sha256_file(wpath)
    if actual != w["sha256"]:
        raise ModelError(f"Weights file {wpath} is corrupted (SHA-256 {actual}, expected {w['sha256']}); restore it from the release.")
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad archive
        raise ModelError(f"Weights file {wpath} cannot be read ({exc}); restore it (expected SHA-256 {w['sha256']}).") from None
    return network_from_state(net, state, f"Weights file {wpath}")


def network_from_state(net: dict, state: dict, source: str):
    """Build a metadata ``network`` entry with the weights of ``state`` (stored tensors widened to float32; eval mode).

    The one way weights enter a network for inference: a model folder's files (:func:`load_model`) and a
    training run's in-memory weights (:func:`~SpineAlignmentLib.training.generic_model.run_model`).
    """
    network = build_network({"network": net})
    try:
        network.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as exc:
        raise ModelError(f"{source} does not fit the network in metadata.json ({str(exc).splitlines()[0]}); reinstall the model.") from None
    return network.eval()


#: metadata blocks of the optional networks that follow the first stage, each with its own weights file
OPTIONAL_STAGES = ("refinement", "identification", "landmark_refinement")


def weights_checksums(md: dict) -> dict[str, str]:
    """``{weights file: SHA-256}`` of every network of a model (first stage and optional stages)."""
    return {st["weights"]["file"]: st["weights"]["sha256"]
            for st in (md, *(md[k] for k in OPTIONAL_STAGES if k in md))}


def load_model(name: str, *, folder: Path | None = None):
    """Load a registered model by name (or from an explicit folder).

    Raises:
        ModelError: unknown name, invalid metadata, missing or corrupted
            weights (the message names the file and its expected SHA-256).
    """
    folder = Path(folder) if folder is not None else find_model(name)
    if not folder.is_dir():
        known = ", ".join(m["name"] for m in list_models()) or "none"
        raise ModelError(f"Model '{name}' not found in {folder.parent} (installed: {known}); check the model name.")
    md = read_metadata(folder)
    try:
        return assemble_model(md, folder, lambda net, w: _load_network(net, w, folder))
    except ModelError as exc:
        if str(folder) in str(exc):
            raise
        raise ModelError(f"Model folder {folder} (metadata.json): {exc}") from None


def assemble_model(md: dict, folder: Path, load) -> LoadedModel:
    """A :class:`LoadedModel` from metadata, every network built by ``load(network entry, weights entry)``.

    Raises:
        ModelError: a level-family model whose level anchors (``decoding.anchors``) its protocol does not have,
            before any network is read.
    """
    from .refine import RoiSpec

    if md.get("decoding", {}).get("method") == "level-family" and md["decoding"].get("anchors"):
        from .level_family import anchor_indices, level_layout

        anchor_indices(level_layout(md["landmarks"]), md["decoding"]["anchors"], md["name"])
    network = load(md["network"], md["weights"])
    stages = {}
    for key in ("refinement", "identification"):
        if key in md:
            st = md[key]
            stages[key] = (load(st["network"], st["weights"]), RoiSpec(int(st["roi"]["size"]), float(st["roi"]["extent"])))
    if "landmark_refinement" in md:
        from .landmark_roi import LandmarkRoi

        st = md["landmark_refinement"]
        stages["landmark_refinement"] = (load(st["network"], st["weights"]),
                                         LandmarkRoi(int(st["roi"]["size"]), float(st["roi"]["fraction"]),
                                                     float(st["roi"]["extent"]) if "extent" in st["roi"] else None,
                                                     bool(st["roi"].get("rotate", False))))
    refiner, roi = stages.get("refinement", (None, None))
    levels, levels_roi = stages.get("identification", (None, None))
    landmark_refiner, landmark_roi = stages.get("landmark_refinement", (None, None))
    image = md["network_data_format"]["inputs"]["image"]
    return LoadedModel(
        name=md["name"], version=md["version"], metadata=md, network=network,
        landmark_ids=tuple(md["landmarks"]), input_shape=tuple(image["spatial_shape"]),
        stride=int(md["network"]["stride"]), folder=folder, refiner=refiner, roi=roi,
        levels=levels, levels_roi=levels_roi, landmark_refiner=landmark_refiner, landmark_roi=landmark_roi,
    )


def resolve_model(model: Any, protocol: str) -> LoadedModel:
    """A loaded model from a :class:`LoadedModel`, a registered name, or ``None`` (the protocol's default).

    Raises:
        ModelError: no model is registered for ``protocol``, or the named one cannot be loaded,
            or it was trained for another protocol.
    """
    if isinstance(model, LoadedModel):
        loaded = model
    elif model is None:
        candidates, broken = _scan(protocol)
        if not candidates:
            if broken:
                raise ModelError(broken[0])
            raise ModelError(f"No model is installed for protocol '{protocol}'; place the landmarks by hand "
                             "or measure a landmark file with 'spine-align measure'.")
        loaded = _cached_load(Path(candidates[0]["folder"]).name)
    elif isinstance(model, str):
        loaded = _cached_load(model)
    else:
        raise ModelError(f"Model must be a name or a loaded model, not {type(model).__name__}.")
    if loaded.protocol != protocol:
        raise ModelError(f"Model '{loaded.name}' is for protocol '{loaded.protocol}', not '{protocol}'; choose a matching model.")
    from ..protocols import get_protocol

    kinds = get_protocol(protocol).model_kinds
    if model_kind(loaded.metadata) not in kinds:
        raise ModelError(f"Model '{loaded.name}' is a {model_kind(loaded.metadata)} model; protocol '{protocol}' takes "
                         f"{' or '.join(kinds)} models; choose another model.")
    return loaded


_LOADED: dict[str, LoadedModel] = {}


def _cached_load(name: str) -> LoadedModel:
    # Loading the weights (and checking their SHA-256) once per process is enough; keyed by the folder,
    # so that another models folder ($SPINEALIGN_MODELS) never gets a model loaded from the first.
    folder = find_model(name)
    key = str(folder)
    if key not in _LOADED:
        _LOADED[key] = load_model(name, folder=folder)
    return _LOADED[key]
