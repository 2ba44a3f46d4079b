"""The result object and its JSON form (protocols.md "Result file", schema ``spinealignment.result/1``).

A result holds one image's landmarks (pixels of the original image, x right,
y down), the parameters computed from them, and the warnings a user can act
on. A lumbar flexion/extension pair keeps each image's landmarks, size and
calibration under ``views`` (``flexion``, ``extension``). The same JSON with only
landmarks (and size, spacing, orientation) is the input of a measurement run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LandmarkError
from .safefiles import load_json_file
from .geometry.measurement import Measurement
from .geometry.orientation import parse_patient_orientation

SCHEMA = "spinealignment.result/1"
#: No radiograph is a million pixels across: a coordinate beyond this is a unit or file error, not a position.
MAX_COORDINATE_PX = 1e6
#: Largest image side accepted in ``image_size`` (a radiograph is a few thousand pixels per side).
MAX_IMAGE_SIDE_PX = 100_000


@dataclass(frozen=True)
class Landmark:
    """A landmark in original-image pixels with an optional model confidence in [0, 1]."""

    x: float
    y: float
    confidence: float | None = None

    def to_dict(self) -> dict[str, float]:
        d = {"x": float(self.x), "y": float(self.y)}
        if self.confidence is not None:
            d["confidence"] = round(float(self.confidence), 4)
        return d


@dataclass
class View:
    """One image of a multi-image protocol (lumbar flexion or extension)."""

    landmarks: dict[str, Landmark]
    image: str | None = None
    image_size: tuple[int, int] | None = None
    spacing_mm: tuple[float, float] | None = None
    calibration: str = "pixels-only"
    patient_orientation: tuple[str, str] | None = None
    dicom: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "image": self.image,
            "image_size": list(self.image_size) if self.image_size else None,
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
            "calibration": self.calibration,
            "patient_orientation": list(self.patient_orientation) if self.patient_orientation else None,
            "landmarks": {k: v.to_dict() for k, v in self.landmarks.items()},
        }
        if self.dicom:
            d["dicom"] = dict(self.dicom)
        return d


@dataclass
class Result:
    """One analysed image (or image pair).

    Attributes:
        protocol: protocol ID.
        landmarks: landmark ID -> :class:`Landmark` (empty for a pair; see ``views``).
        parameters: parameter ID -> :class:`Measurement`; parameters that could not be
            computed are absent and explained in ``warnings`` / ``omitted``.
        omitted: parameter ID -> reason it was left out (machine-readable twin of the warnings).
        frame: how the anatomical frame was obtained (source, facing direction).
        software_version: the SpineAlignmentLib version that computed the parameters.
        fingerprint: what a batch run that wrote this result was given (protocol, model and weights,
            options that change values, software version); resume re-uses a result only when it matches.
        dicom: for a DICOM source film, its ``study_instance_uid``, ``series_instance_uid``,
            ``sop_instance_uid`` and ``sop_class_uid`` (links a value back to the film in a PACS;
            never patient name or ID). For a pair, each view carries its own.
        levels: for a model's vertebra chain, how likely it is named at the right level
            (``confidence``, ``shift_probabilities``, ``alternative``, ``warn_below``, ``uncertain``;
            :func:`SpineAlignmentLib.inference.levels.assess_levels`), or None.
    """

    protocol: str
    landmarks: dict[str, Landmark] = field(default_factory=dict)
    parameters: dict[str, Measurement] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    image: str | None = None
    model: dict[str, str] | None = None
    image_size: tuple[int, int] | None = None
    spacing_mm: tuple[float, float] | None = None
    calibration: str = "pixels-only"
    patient_orientation: tuple[str, str] | None = None
    omitted: dict[str, str] = field(default_factory=dict)
    frame: dict[str, str] = field(default_factory=dict)
    views: dict[str, View] = field(default_factory=dict)
    software_version: str | None = None
    fingerprint: dict[str, Any] | None = None
    dicom: dict[str, str] | None = None
    levels: dict[str, Any] | None = None
    #: label map of a segmentation model (:class:`~SpineAlignmentLib.inference.segment.LabelMap`); not in the JSON
    segmentation: Any = field(default=None, repr=False, compare=False)
    #: ``{"file": ..., "labels": {value: segment ID}}`` when the label map was written next to the result
    masks: dict[str, Any] | None = None
    #: a coronal film's paired lateral (its landmarks, size, spacing, UIDs), when one was measured with it
    paired_lateral: View | None = None
    #: a vertebra-centres model's first pass (:class:`~SpineAlignmentLib.inference.anchor.ChainState`), from which
    #: a level anchor re-names the chain (:func:`~SpineAlignmentLib.pipeline.reanchor`); not in the JSON
    chain: Any = field(default=None, repr=False, compare=False)

    def value(self, parameter_id: str) -> float | None:
        """The parameter's value, or None if it was left out."""
        m = self.parameters.get(parameter_id)
        return None if m is None else m.value

    def to_dict(self, *, construction: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA,
            "image": self.image,
            "protocol": self.protocol,
            "model": self.model,
            "image_size": list(self.image_size) if self.image_size else None,
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
            "calibration": self.calibration,
            "patient_orientation": list(self.patient_orientation) if self.patient_orientation else None,
            "landmarks": {k: v.to_dict() for k, v in self.landmarks.items()},
            "parameters": {k: m.to_dict(construction=construction) for k, m in self.parameters.items()},
            "warnings": list(self.warnings),
            "omitted": dict(self.omitted),
            "frame": dict(self.frame),
            "software_version": self.software_version,
        }
        if self.fingerprint:
            d["fingerprint"] = dict(self.fingerprint)
        if self.views:
            d["views"] = {k: v.to_dict() for k, v in self.views.items()}
        if self.paired_lateral is not None:
            d["paired_lateral"] = self.paired_lateral.to_dict()
        if self.dicom:
            d["dicom"] = dict(self.dicom)
        if self.levels is not None:
            d["levels"] = dict(self.levels)
        if self.masks:
            d["masks"] = dict(self.masks)
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(**kw), indent=1)

    def write_json(self, path: str | Path) -> Path:
        """Write atomically (a batch interrupted mid-write never leaves a half file)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(self.to_json() + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "result") -> "Result":
        """A result from its JSON form; every field of the wrong JSON type is one :class:`LandmarkError`."""
        if not isinstance(d, dict):
            raise LandmarkError(f"{source}: expected a JSON object with 'protocol' and 'landmarks'.")
        if "protocol" not in d:
            raise LandmarkError(f"{source}: no 'protocol' field; add e.g. \"protocol\": \"coronal-spine\".")
        check_fields(d, source)
        for role, v in (d.get("views") or {}).items():
            check_fields(v, f"{source} (views.{role})", _VIEW_FIELDS)
        if d.get("paired_lateral") is not None:
            check_fields(d["paired_lateral"], f"{source} (paired_lateral)", _VIEW_FIELDS)
        views = {role: _view(v, f"{source} ({role})") for role, v in (d.get("views") or {}).items()}
        lms = d.get("landmarks", {}) or {}
        # A pair given as nested landmarks {"flexion": {...}, "extension": {...}} (image roles of the protocol
        # tables) shares the top-level calibration.
        if lms and all(isinstance(v, dict) and v and all(isinstance(p, (dict, list)) for p in v.values()) for v in lms.values()) \
                and set(lms) <= _image_roles():
            for role, sub in lms.items():
                views[role] = View(parse_landmarks(sub, source=f"{source} ({role})"), d.get("image"),
                                   _pair(d.get("image_size"), int, "image_size", source),
                                   _pair(d.get("spacing_mm"), float, "spacing_mm", source),
                                   d.get("calibration") or ("manual:file" if d.get("spacing_mm") else "pixels-only"),
                                   _orientation(d.get("patient_orientation")))
            lms = {}
        spacing = _pair(d.get("spacing_mm"), float, "spacing_mm", source)
        return cls(
            protocol=d["protocol"],
            landmarks=parse_landmarks(lms, source=source),
            parameters=_parameters(d.get("parameters"), source),
            warnings=list(d.get("warnings") or []),
            image=d.get("image"),
            model=d.get("model"),
            image_size=_pair(d.get("image_size"), int, "image_size", source),
            spacing_mm=spacing,
            calibration=d.get("calibration") or ("manual:file" if spacing else "pixels-only"),
            patient_orientation=_orientation(d.get("patient_orientation")),
            omitted=dict(d.get("omitted") or {}),
            frame=dict(d.get("frame") or {}),
            views=views,
            software_version=d.get("software_version"),
            fingerprint=d.get("fingerprint") if isinstance(d.get("fingerprint"), dict) else None,
            dicom=_uids(d.get("dicom"), source),
            levels=dict(d["levels"]) if isinstance(d.get("levels"), dict) else None,
            paired_lateral=_view(d["paired_lateral"], f"{source} (paired_lateral)")
            if d.get("paired_lateral") is not None else None,
        )

    @classmethod
    def read_json(cls, path: str | Path) -> "Result":
        return cls.from_dict(load_json(path), source=str(path))


_OBJECT, _ARRAY, _TEXT, _NUMBER = (dict,), (list,), (str,), (int, float)
#: JSON types each field of a result / landmark file may have (any field may also be null).
_FIELDS: dict[str, tuple[type, ...]] = {
    "schema": _TEXT, "protocol": _TEXT, "image": _TEXT, "model": _OBJECT, "image_size": _ARRAY,
    "spacing_mm": _ARRAY, "calibration": _TEXT, "patient_orientation": _ARRAY + _TEXT, "landmarks": _OBJECT,
    "parameters": _OBJECT, "warnings": _ARRAY, "omitted": _OBJECT, "frame": _OBJECT, "views": _OBJECT,
    "paired_lateral": _OBJECT,
}
def _image_roles() -> set[str]:
    """Film roles of every protocol table (``image_roles``), e.g. ``flexion`` and ``extension``."""
    from .protocols import list_protocols

    return {role for p in list_protocols() for role in p.image_roles}


#: Fields of one view (``views.flexion``) and of ``paired_lateral``.
_VIEW_FIELDS = {k: _FIELDS[k] for k in ("image", "image_size", "spacing_mm", "calibration", "patient_orientation",
                                        "landmarks")}
_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "true/false", type(None): "null"}


def check_fields(d: Any, source: str, fields: dict[str, tuple[type, ...]] = _FIELDS, *,
                 protocol_given: bool = False) -> None:
    """Raise one :class:`LandmarkError` naming the file and the field whose JSON type is wrong.

    ``protocol`` may not be null, unless ``protocol_given`` (the command names the protocol, so a
    landmark file may hold only ``landmarks``, as protocols.md allows); other fields may. Unknown
    fields are allowed (later schema versions may add some).
    """
    if not isinstance(d, dict):
        raise LandmarkError(f"{source}: must be a JSON object, not {_JSON_NAMES.get(type(d), type(d).__name__)}; "
                            "fix the file.")
    for name, types in fields.items():
        value = d.get(name)
        if value is None and (name != "protocol" or protocol_given):
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            want = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in types))
            got = _JSON_NAMES.get(type(value), type(value).__name__)
            raise LandmarkError(f"{source}: field '{name}' must be {want}, not {got}; fix the file.")


def _parameters(raw: dict | None, source: str) -> dict[str, Measurement]:
    out = {}
    for k, v in (raw or {}).items():
        try:
            out[k] = Measurement.from_dict(k, v)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LandmarkError(f"{source}: parameter '{k}' is not a measurement object ({_short(exc)}); "
                                "fix the entry or remove 'parameters'.") from None
    return out


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120] or type(exc).__name__


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise LandmarkError(f"key '{k}' appears twice; keep one entry per landmark")
        seen[k] = v
    return seen


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, refusing duplicated keys (a silently dropped landmark is a wrong result).

    The file must be a regular file within the size and depth limits of :mod:`.safefiles`.
    """
    path = Path(path)
    try:
        data = load_json_file(path, LandmarkError, what="landmark JSON file", object_pairs_hook=_reject_duplicates)
    except LandmarkError as exc:
        msg = str(exc)
        raise LandmarkError(msg if msg.startswith(str(path)) else f"{path}: {msg}.") from None
    if not isinstance(data, dict):
        raise LandmarkError(f"{path}: expected a JSON object with 'protocol' and 'landmarks'.")
    return data


def parse_landmarks(raw: Any, *, source: str = "landmarks") -> dict[str, Landmark]:
    """Landmarks from ``{"ID": {"x":..,"y":..,"confidence":..}}`` or ``{"ID": [x, y]}``.

    Raises:
        LandmarkError: for malformed entries and non-finite coordinates.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise LandmarkError(f"{source}: 'landmarks' must be an object of ID -> {{\"x\": .., \"y\": ..}}.")
    out: dict[str, Landmark] = {}
    for key, v in raw.items():
        if isinstance(v, Landmark):
            out[key] = v
            continue
        try:
            if isinstance(v, dict):
                raw_xy, c = (v["x"], v["y"]), v.get("confidence")
            else:
                raw_xy, c = tuple(v[:2]), (v[2] if len(v) > 2 else None)
            if len(raw_xy) != 2 or any(isinstance(t, bool) for t in (*raw_xy, c)):
                raise TypeError("true/false is not a coordinate")
            x, y = (float(t) for t in raw_xy)
            c = None if c is None else float(c)
        except (KeyError, TypeError, ValueError, IndexError):
            raise LandmarkError(f"{source}: landmark '{key}' is not {{\"x\": number, \"y\": number}}; fix the entry.") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise LandmarkError(f"{source}: landmark '{key}' has a non-finite coordinate ({x}, {y}); remove it or give real pixel coordinates.")
        if max(abs(x), abs(y)) > MAX_COORDINATE_PX:
            raise LandmarkError(f"{source}: landmark '{key}' at ({x:g}, {y:g}) is not a pixel position (beyond "
                                f"{MAX_COORDINATE_PX:g} px); give pixel coordinates of the original image.")
        if c is not None and not (0.0 <= c <= 1.0):
            raise LandmarkError(f"{source}: landmark '{key}' has confidence {c}, outside [0, 1].")
        out[key] = Landmark(x, y, c)
    return out


def validate_image_size(image_size: Any, source: str = "image_size") -> tuple[int, int] | None:
    """``(rows, cols)`` as two whole numbers in 1..:data:`MAX_IMAGE_SIDE_PX`, or None.

    Raises:
        LandmarkError: anything else (``[0, 0]``, fractions, true/false, absurd sizes): the AASCE triple
            would turn such a size into a wrong value and the outside-the-image check would be meaningless.
    """
    if image_size is None:
        return None
    try:
        rows, cols = image_size
        if isinstance(rows, bool) or isinstance(cols, bool):
            raise TypeError
        size = (int(rows), int(cols))
        ok = size == (float(rows), float(cols)) and all(1 <= v <= MAX_IMAGE_SIDE_PX for v in size)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        shown = list(image_size) if isinstance(image_size, (list, tuple)) else image_size
        raise LandmarkError(f"{source}: image_size {shown!r} is not an image size (two whole numbers ROWS, COLUMNS "
                            f"from 1 to {MAX_IMAGE_SIDE_PX}); fix it or leave it out.")
    return size


def _pair(value: Any, kind: type, name: str, source: str):
    if name == "image_size":
        return validate_image_size(value, source)
    if value is None:
        return None
    try:
        a, b = value
        return kind(a), kind(b)
    except (TypeError, ValueError):
        raise LandmarkError(f"{source}: '{name}' must be two numbers [row, column], got {value!r}.") from None


#: Keys of the ``dicom`` object of a result or view (all UIDs).
DICOM_UID_KEYS = ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid")


def _uids(value: Any, source: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(DICOM_UID_KEYS):
        raise LandmarkError(f"{source}: 'dicom' must be an object with only {', '.join(DICOM_UID_KEYS)}.")
    return {k: str(v) for k, v in value.items()}


def _view(v: dict[str, Any], source: str) -> View:
    """One film of a pair from its JSON form (``views.<role>`` or ``paired_lateral``)."""
    return View(
        landmarks=parse_landmarks(v.get("landmarks", {}), source=source),
        image=v.get("image"),
        image_size=_pair(v.get("image_size"), int, "image_size", source),
        spacing_mm=_pair(v.get("spacing_mm"), float, "spacing_mm", source),
        calibration=v.get("calibration") or ("manual:file" if v.get("spacing_mm") else "pixels-only"),
        patient_orientation=_orientation(v.get("patient_orientation")),
        dicom=_uids(v.get("dicom"), source),
    )


def _orientation(value: Any):
    return parse_patient_orientation(value)
