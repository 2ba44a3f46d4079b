"""Protocols as data: one JSON file per protocol in this folder.

The JSON files are the single table read by the library, the CLI, the Slicer
module, the tests and the model metadata (landmark channel order). Their IDs
are those of ``protocols.md`` and must never be renamed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ..errors import ProtocolError

PROTOCOL_IDS = (
    "sagittal-whole-spine",
    "cervical-lateral",
    "coronal-spine",
    "coronal-shoulder",
    "lumbar-dynamic",
)

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
    """

    id: str
    title: str
    unit: str
    landmarks: tuple[str, ...]
    definition: str
    convention: str = ""
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Protocol:
    """A measurement protocol read from its JSON table."""

    id: str
    title: str
    view: str
    study: str
    description: str
    landmarks: tuple[LandmarkSpec, ...]
    parameters: tuple[ParameterSpec, ...]
    groups: tuple[tuple[str, tuple[float, float, float]], ...]
    image_roles: tuple[str, ...] = ()
    extra_landmarks: tuple[LandmarkSpec, ...] = field(default=())
    segments: tuple[SegmentSpec, ...] = field(default=())

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


def _parse(data: dict) -> Protocol:
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
        params.append(
            ParameterSpec(
                id=p["id"],
                title=p["title"],
                unit=p["unit"],
                landmarks=tuple(p["landmarks"]),
                definition=p["definition"],
                convention=p.get("convention", ""),
                flags=frozenset(k for k in _FLAG_KEYS if p.get(k)),
            )
        )
    return Protocol(
        id=data["id"],
        title=data["title"],
        view=data["view"],
        study=data["study"],
        description=data["description"],
        landmarks=tuple(lm(d) for d in data["landmarks"]),
        parameters=tuple(params),
        groups=tuple(colors.items()),
        image_roles=tuple(data.get("image_roles", ())),
        extra_landmarks=tuple(lm({**d, "group": d["group"]}) for d in data.get("paired_lateral_landmarks", ())),
        segments=tuple(
            SegmentSpec(value=int(d["value"]), id=d["id"], name=d["name"], side=d["side"],
                        color=tuple(float(c) for c in d["color"]), mirror=d.get("mirror", ""),
                        landmarks=tuple(d.get("landmarks", ())), aliases=tuple(d.get("aliases", ())))
            for d in data.get("segments", ())),
    )


@lru_cache(maxsize=None)
def get_protocol(protocol_id: str) -> Protocol:
    """Return the protocol with this ID.

    Raises:
        ProtocolError: if the ID is unknown (the message lists the valid IDs).
    """
    if protocol_id not in PROTOCOL_IDS:
        raise ProtocolError(
            f"Unknown protocol '{protocol_id}'; use one of: {', '.join(PROTOCOL_IDS)} "
            "(spine-align protocols lists them)."
        )
    text = resources.files(__name__).joinpath(f"{protocol_id}.json").read_text(encoding="utf-8")
    return _parse(json.loads(text))


def list_protocols() -> list[Protocol]:
    """All protocols, in the order of protocols.md."""
    return [get_protocol(pid) for pid in PROTOCOL_IDS]
