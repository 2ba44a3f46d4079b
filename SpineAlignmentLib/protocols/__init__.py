"""Protocols as data: one JSON file per protocol in this folder.

The JSON files are the single table read by the library, the CLI, the Slicer
module, the tests and the model metadata (landmark channel order). Their IDs
are those of ``protocols.md`` and must never be renamed.

Each table names its measuring module (``"module"``, an importable module name): the module's
``measure(proto, job)`` computes the protocol's parameters, so the pipeline, the CLI and the Slicer
module never branch on a protocol ID. A new protocol is one table and one module: the table goes in
this folder, or in a folder listed in ``$SPINEALIGN_PROTOCOLS`` (several separated by ``os.pathsep``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import ProtocolError

log = logging.getLogger(__name__)

#: Name of the measuring routine a protocol's module exposes: ``measure(proto, job) -> None``.
ENTRY_POINT = "measure"

#: Kinds of model a protocol may accept: heatmap landmark networks, or segmentation networks whose masks give
#: the landmarks (the protocol's ``segments``).
MODEL_KINDS = ("landmarks", "segmentation")

#: Units a parameter may declare. ``mm`` becomes ``px`` when no spacing is known.
UNITS = ("deg", "mm", "px", "ratio", "%")


@dataclass(frozen=True)
class LandmarkSpec:
    """One landmark of a protocol.

    Attributes:
        id: canonical ID (protocols.md).
        description: anatomical description shown to users.
        group: display group ID.
        color: display colour (r, g, b) in 0..1 from the group.
        optional: True if no parameter of the default set needs it to be present.
    """

    id: str
    description: str
    group: str
    color: tuple[float, float, float]
    optional: bool = False


@dataclass(frozen=True)
class SegmentSpec:
    """One structure a segmentation model of the protocol labels (a label-map value).

    Attributes:
        value: label-map value (0 is background).
        id: machine name (also the Slicer segment ID).
        name: human-readable name.
        side: patient side ``"L"`` or ``"R"`` (sides are the patient's, never the image's).
        color: display colour (r, g, b) in 0..1.
        mirror: the segment a horizontal flip turns this one into (``""`` for none).
        landmarks: landmark IDs derived from this segment's mask.
        aliases: other names of the segment's mask folder in a training dataset (e.g. SCR's ``left_clavicle``).
    """

    value: int
    id: str
    name: str
    side: str
    color: tuple[float, float, float]
    mirror: str = ""
    landmarks: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter a protocol offers.

    Attributes:
        id: canonical parameter ID.
        title: human-readable title.
        unit: one of :data:`UNITS`.
        landmarks: landmark IDs the parameter needs.
        definition: formula in the notation of definitions.md §1.3.
        convention: sign convention in words.
        flags: extra switches from the table (``pair``, ``per_image``, ``paired_lateral``,
            ``needs_image_size``, ``dynamic_landmarks``).
        plausible: ``(low, high)`` in ``unit``: values outside it are reported with a warning (ranges from
            the studies' populations and definitions.md); None: no check.
    """

    id: str
    title: str
    unit: str
    landmarks: tuple[str, ...]
    definition: str
    convention: str = ""
    flags: frozenset[str] = frozenset()
    plausible: tuple[float, float] | None = None


@dataclass(frozen=True)
class Protocol:
    """A measurement protocol read from its JSON table.

    ``module`` is the importable module whose ``measure(proto, job)`` computes the parameters
    (:func:`measuring_routine`); ``order`` places the protocol in listings (protocols.md's order).
    What models and inference need from the protocol is here too: ``model_kinds`` (of
    :data:`MODEL_KINDS`; the first is what ``spine-align train`` builds), ``flip_pairs`` (landmarks a left-right mirror swaps; None: derived
    from the ``L``/``R``, ``TL``/``TR``, ``BL``/``BR`` suffixes), ``image_roles`` (the films of a pair; empty:
    one film) and ``view`` (``lateral`` films are normalised to one facing direction). ``film`` names the kind
    of radiograph in messages ("an AP/PA spine radiograph").
    """

    id: str
    title: str
    view: str
    study: str
    description: str
    landmarks: tuple[LandmarkSpec, ...]
    parameters: tuple[ParameterSpec, ...]
    groups: tuple[tuple[str, tuple[float, float, float]], ...]
    module: str = ""
    order: int | None = None
    model_kinds: tuple[str, ...] = ("landmarks",)
    flip_pairs: tuple[tuple[str, str], ...] | None = None
    image_roles: tuple[str, ...] = ()
    extra_landmarks: tuple[LandmarkSpec, ...] = field(default=())
    segments: tuple[SegmentSpec, ...] = field(default=())
    film: str = ""

    @property
    def landmark_ids(self) -> tuple[str, ...]:
        """Canonical landmark order (also a model's channel order)."""
        return tuple(lm.id for lm in self.landmarks)

    @property
    def parameter_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.parameters)

    def landmark(self, landmark_id: str) -> LandmarkSpec:
        for lm in self.landmarks + self.extra_landmarks:
            if lm.id == landmark_id:
                return lm
        raise ProtocolError(f"Landmark '{landmark_id}' is not part of protocol '{self.id}'.")

    def parameter(self, parameter_id: str) -> ParameterSpec:
        for p in self.parameters:
            if p.id == parameter_id:
                return p
        raise ProtocolError(
            f"Parameter '{parameter_id}' is not part of protocol '{self.id}'; "
            f"its parameters are: {', '.join(self.parameter_ids)}."
        )

    def to_dict(self) -> dict:
        """JSON-ready description (used by ``spine-align protocols --json``)."""
        return {
            "id": self.id,
            "title": self.title,
            "view": self.view,
            "study": self.study,
            "description": self.description,
            "image_roles": list(self.image_roles),
            "groups": [{"id": g, "color": list(c)} for g, c in self.groups],
            "landmarks": [
                {"id": lm.id, "description": lm.description, "group": lm.group, "optional": lm.optional}
                for lm in self.landmarks
            ],
            "parameters": [
                {
                    "id": p.id,
                    "title": p.title,
                    "unit": p.unit,
                    "landmarks": list(p.landmarks),
                    "definition": p.definition,
                    "convention": p.convention,
                }
                for p in self.parameters
            ],
            **({"segments": [{"value": g.value, "id": g.id, "name": g.name, "side": g.side,
                              "landmarks": list(g.landmarks)} for g in self.segments]} if self.segments else {}),
        }


_FLAG_KEYS = ("pair", "per_image", "paired_lateral", "needs_image_size", "dynamic_landmarks")


def _parse(data: dict, source: str = "protocol table") -> Protocol:
    for key in ("id", "title", "view", "study", "description", "groups", "landmarks", "parameters", "module"):
        if key not in data:
            raise ProtocolError(f"{source}: no '{key}' field; every protocol table needs one (see an existing table).")
    if not isinstance(data["module"], str) or not data["module"].replace(".", "").replace("_", "").isalnum():
        raise ProtocolError(f"{source}: 'module' must be an importable module name such as "
                            f"'SpineAlignmentLib.geometry.sagittal', got {data['module']!r}.")
    colors = {g["id"]: tuple(float(c) for c in g["color"]) for g in data["groups"]}

    def lm(d: dict) -> LandmarkSpec:
        return LandmarkSpec(
            id=d["id"],
            description=d["description"],
            group=d["group"],
            color=colors.get(d["group"], (1.0, 1.0, 0.0)),
            optional=bool(d.get("optional", False)),
        )

    params = []
    for p in data["parameters"]:
        if p["unit"] not in UNITS:
            raise ProtocolError(f"Protocol table '{data['id']}': parameter {p['id']} has unknown unit {p['unit']!r}.")
        rng = p.get("plausible")
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2
                                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
                                    and rng[0] < rng[1]):
            raise ProtocolError(f"{source}: parameter {p['id']}: 'plausible' must be [low, high] with low < high, "
                                f"got {rng!r}.")
        params.append(
            ParameterSpec(
                id=p["id"],
                title=p["title"],
                unit=p["unit"],
                landmarks=tuple(p["landmarks"]),
                definition=p["definition"],
                convention=p.get("convention", ""),
                flags=frozenset(k for k in _FLAG_KEYS if p.get(k)),
                plausible=(float(rng[0]), float(rng[1])) if rng is not None else None,
            )
        )
    ids = {d["id"] for d in data["landmarks"]}
    kinds = tuple(data.get("model_kinds", ("landmarks",)))
    if not kinds or set(kinds) - set(MODEL_KINDS) or ("segmentation" in kinds and not data.get("segments")):
        raise ProtocolError(f"{source}: 'model_kinds' must list some of {', '.join(MODEL_KINDS)} "
                            f"('segmentation' only with 'segments'), got {list(kinds)!r}.")
    pairs = data.get("flip_pairs")
    if pairs is not None:
        flat = [i for pair in pairs for i in pair]
        if any(len(pair) != 2 for pair in pairs) or set(flat) - ids or len(flat) != len(set(flat)):
            raise ProtocolError(f"{source}: 'flip_pairs' must be pairs of the table's landmark IDs, each ID in one "
                                f"pair at most, got {pairs!r}.")
        pairs = tuple((str(a), str(b)) for a, b in pairs)
    return Protocol(
        id=data["id"],
        title=data["title"],
        view=data["view"],
        study=data["study"],
        description=data["description"],
        landmarks=tuple(lm(d) for d in data["landmarks"]),
        parameters=tuple(params),
        groups=tuple(colors.items()),
        module=data["module"],
        order=data.get("order"),
        model_kinds=kinds,
        flip_pairs=pairs,
        image_roles=tuple(data.get("image_roles", ())),
        extra_landmarks=tuple(lm({**d, "group": d["group"]}) for d in data.get("paired_lateral_landmarks", ())),
        segments=tuple(
            SegmentSpec(value=int(d["value"]), id=d["id"], name=d["name"], side=d["side"],
                        color=tuple(float(c) for c in d["color"]), mirror=d.get("mirror", ""),
                        landmarks=tuple(d.get("landmarks", ())), aliases=tuple(d.get("aliases", ())))
            for d in data.get("segments", ())),
        film=str(data.get("film") or f"a {data['title']} radiograph"),
    )


def protocol_dirs() -> list[Path]:
    """Folders holding protocol tables: this package's, then those of ``$SPINEALIGN_PROTOCOLS``."""
    extra = [Path(p) for p in os.environ.get("SPINEALIGN_PROTOCOLS", "").split(os.pathsep) if p]
    return [Path(__file__).resolve().parent, *extra]


def _table_paths() -> dict[str, Path]:
    """Protocol ID (the file name) -> its table; the first folder of :func:`protocol_dirs` wins."""
    return _scan(tuple(protocol_dirs()))


@lru_cache(maxsize=None)
def _scan(folders: tuple[Path, ...]) -> dict[str, Path]:
    # Read once per set of folders (a process does not gain protocols while it runs).
    paths: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
            paths.setdefault(path.name[: -len(".json")], path)
    return paths


@lru_cache(maxsize=None)
def _read(path: Path) -> Protocol:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"Protocol table {path} cannot be read ({exc}); fix or remove the file.") from None
    proto = _parse(data, str(path))
    if proto.id != path.name[: -len(".json")]:
        raise ProtocolError(f"Protocol table {path} has id '{proto.id}'; name the file '{proto.id}.json'.")
    return proto


def protocol_ids() -> tuple[str, ...]:
    """IDs of every protocol table found, in the tables' ``order`` (protocols.md's), then by ID.

    A table that cannot be used is logged and left out here; :func:`get_protocol` names its problem.
    """
    protos = []
    for path in _table_paths().values():
        try:
            protos.append(_read(path))
        except ProtocolError as exc:
            log.error("%s", exc)
    big = float("inf")
    return tuple(p.id for p in sorted(protos, key=lambda p: (big if p.order is None else p.order, p.id)))


#: The protocols found when the library was imported (for choices fixed at import, e.g. the Slicer module).
PROTOCOL_IDS = protocol_ids()


def get_protocol(protocol_id: str) -> Protocol:
    """Return the protocol with this ID.

    Raises:
        ProtocolError: if the ID is unknown (the message lists the valid IDs), or its table is broken.
    """
    path = _table_paths().get(protocol_id) if isinstance(protocol_id, str) else None
    if path is None:
        raise ProtocolError(
            f"Unknown protocol '{protocol_id}'; use one of: {', '.join(protocol_ids())} "
            "(spine-align protocols lists them)."
        )
    return _read(path)


def list_protocols() -> list[Protocol]:
    """All protocols, in the order of protocols.md (then any added tables by ID)."""
    return [get_protocol(pid) for pid in protocol_ids()]


def measuring_routine(proto: Protocol) -> Callable[..., None]:
    """The ``measure(proto, job)`` function of the module the protocol's table names.

    Raises:
        ProtocolError: the module cannot be imported or has no callable ``measure``.
    """
    try:
        module = importlib.import_module(proto.module)
    except ImportError as exc:
        raise ProtocolError(f"Protocol '{proto.id}': its table names module '{proto.module}', which cannot be "
                            f"imported ({exc}); fix the table's 'module' or install the module.") from None
    fn = getattr(module, ENTRY_POINT, None)
    if not callable(fn):
        raise ProtocolError(f"Protocol '{proto.id}': module '{proto.module}' has no {ENTRY_POINT}(proto, job) "
                            "function; add it (see SpineAlignmentLib.geometry.sagittal.measure).")
    return fn
