"""Slicer markups JSON (``.mrk.json``) without Slicer: write landmarks, read them back.

The writer produces the file Slicer's own markups reader
(``vtkMRMLMarkupsJsonStorageNode``) loads: one ``Fiducial`` markup whose
control-point ``id`` is the canonical landmark ID (Slicer keeps the file's IDs
on load, and the GUI does not let users edit them), ``label`` the same ID (a
user may rename it; meaning never comes from the label), ``description`` the
protocol's description. Positions are written in the coordinate system named by
the file's ``coordinateSystem`` field (``LPS``, Slicer's default for files, or
``RAS``); the reader honours the field.

Provenance. Slicer keeps a control point's ``description`` when it loads and
saves a ``.mrk.json`` but drops node attributes and unknown fields, so a point
placed by a model carries, after the protocol's description, the tag
``SpineAlignment:{"confidence": c, "at": [x, y], "model": {"name", "version"}}``
(:func:`describe_point`). Read back (:func:`markups_landmarks`), a point keeps
its confidence while it is still where the model put it (``at``, pixels): a point
a user moved is the user's and trusted, one left in place stays untrusted.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import LandmarkError
from ..result import Landmark
from ..safefiles import load_json_file
from .geometry import OFF_PLANE_SLICES, pixels_to_ras, ras_to_pixels

#: Schema Slicer 5.x writes and reads (older readers ignore unknown newer fields).
SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
COORDINATE_SYSTEMS = ("LPS", "RAS")
_IDENTITY_ORIENTATION = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]
#: Marks the machine-readable provenance at the end of a control point's description.
PROVENANCE_TAG = "SpineAlignment:"
_PROVENANCE = re.compile(r"\s*" + re.escape(PROVENANCE_TAG) + r"(\{.*\})\s*$")
#: A point within this many pixels of where the model put it has not been moved.
MOVED_PX = 1e-3


def describe_point(description: str, confidence: float | None = None, at: tuple[float, float] | None = None,
                   model: Mapping[str, Any] | None = None) -> str:
    """A control-point description with the provenance tag (plain ``description`` when there is none)."""
    tag: dict[str, Any] = {}
    if confidence is not None:
        tag["confidence"] = round(float(confidence), 4)
        if at is not None:
            tag["at"] = [round(float(at[0]), 4), round(float(at[1]), 4)]
    if model:
        tag["model"] = {k: model.get(k) for k in ("name", "version") if model.get(k) is not None}
    if not tag:
        return description
    return f"{description} {PROVENANCE_TAG}{json.dumps(tag, separators=(',', ':'))}".strip()


def parse_description(text: str) -> tuple[str, dict[str, Any]]:
    """``(description, provenance)`` of a control-point description (``{}`` without a valid tag)."""
    m = _PROVENANCE.search(text or "")
    if m is None:
        return text or "", {}
    try:
        tag = json.loads(m.group(1))
    except ValueError:
        return text, {}
    return text[:m.start()], tag if isinstance(tag, dict) else {}


@dataclass(frozen=True)
class MarkupsPoint:
    """One control point read from a ``.mrk.json`` file; ``ras`` is always RAS (mm)."""

    id: str
    label: str
    description: str
    ras: tuple[float, float, float]
    defined: bool = True
    provenance: Mapping[str, Any] | None = None  #: parsed :func:`describe_point` tag (None without one)


def _xy(v: Any) -> tuple[float, float]:
    if hasattr(v, "x") and hasattr(v, "y"):
        return float(v.x), float(v.y)
    if isinstance(v, Mapping):
        return float(v["x"]), float(v["y"])
    return float(v[0]), float(v[1])


def markups_dict(
    landmarks: Mapping[str, Any],
    ijk_to_ras: Any,
    *,
    protocol: str | None = None,
    coordinate_system: str = "LPS",
    color: tuple[float, float, float] | None = None,
    model: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON object of a ``.mrk.json`` file for these landmarks.

    Args:
        landmarks: canonical ID -> Landmark, ``(x, y)`` or ``{"x":, "y":}`` in pixels.
        ijk_to_ras: 4x4 IJK-to-RAS of the image (see :mod:`.geometry`).
        protocol: protocol ID; gives descriptions and the canonical order.
        coordinate_system: ``"LPS"`` (Slicer's file default) or ``"RAS"``.
        color: display colour (r, g, b) in 0..1.
        model: ``{"name", "version"}`` of the model that placed the points; with each landmark's
            confidence and position it goes into the descriptions (:func:`describe_point`).
    """
    if coordinate_system not in COORDINATE_SYSTEMS:
        raise ValueError(f"coordinate_system must be one of {COORDINATE_SYSTEMS}, got {coordinate_system!r}")
    descriptions: dict[str, str] = {}
    order = list(landmarks)
    if protocol is not None:
        from ..protocols import get_protocol

        proto = get_protocol(protocol)
        descriptions = {lm.id: lm.description for lm in proto.landmarks + proto.extra_landmarks}
        rank = {k: i for i, k in enumerate(proto.landmark_ids)}
        order.sort(key=lambda k: rank.get(k, len(rank)))
        if color is None and proto.groups:
            color = proto.groups[0][1]
    ids = list(order)
    xy = np.array([_xy(landmarks[k]) for k in ids]).reshape(-1, 2)
    ras = pixels_to_ras(ijk_to_ras, xy)
    if coordinate_system == "LPS":
        ras = ras * np.array([-1.0, -1.0, 1.0])
    points = []
    for key, pos, (x, y) in zip(ids, ras, xy):
        confidence = getattr(landmarks[key], "confidence", None)
        if confidence is None and isinstance(landmarks[key], Mapping):
            confidence = landmarks[key].get("confidence")
        points.append({
            "id": key,
            "label": key,
            "description": describe_point(descriptions.get(key, ""), confidence, (x, y), model),
            "associatedNodeID": "",
            "position": [round(float(c), 6) for c in pos],
            "orientation": list(_IDENTITY_ORIENTATION),
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": "defined",
        })
    color = tuple(float(c) for c in (color or (0.4, 1.0, 1.0)))
    return {
        "@schema": SCHEMA,
        "markups": [{
            "type": "Fiducial",
            "coordinateSystem": coordinate_system,
            "coordinateUnits": "mm",
            "locked": False,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": len(points),
            "controlPoints": points,
            "measurements": [],
            "display": {
                "visibility": True,
                "opacity": 1.0,
                "color": list(color),
                "selectedColor": list(color),
                "propertiesLabelVisibility": False,
                "pointLabelsVisibility": True,
                "textScale": 2.0,
                "glyphType": "Sphere3D",
                "glyphScale": 1.5,
                "glyphSize": 5.0,
                "useGlyphScale": True,
                "sliceProjection": False,
                "lineThickness": 0.2,
                "snapMode": "toVisibleSurface",
            },
        }],
    }


def write_markups_json(path: str | Path, landmarks: Mapping[str, Any], ijk_to_ras: Any, **kwargs: Any) -> Path:
    """Write a ``.mrk.json`` atomically (see :func:`markups_dict` for the arguments)."""
    path = Path(path)
    data = markups_dict(landmarks, ijk_to_ras, **kwargs)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_markups_json(path: str | Path) -> list[MarkupsPoint]:
    """All control points of the first markup in a ``.mrk.json`` file, positions in RAS.

    Raises:
        LandmarkError: if the file is not a markups JSON file.
    """
    path = Path(path)
    data = load_json_file(path, LandmarkError, what="markups JSON file")
    try:
        markup = data["markups"][0]
        if not isinstance(markup, dict):
            raise TypeError("the first markup is not an object")
    except (KeyError, IndexError, TypeError) as exc:
        raise LandmarkError(f"{path}: not a Slicer markups JSON file ({exc}); export the landmarks from Slicer "
                            "as .mrk.json.") from None
    system = markup.get("coordinateSystem", "LPS")
    if system not in COORDINATE_SYSTEMS:
        raise LandmarkError(f"{path}: coordinateSystem {system!r} is neither LPS nor RAS.")
    kind = markup.get("type", "Fiducial")
    if kind != "Fiducial":
        raise LandmarkError(f"{path}: is a {str(kind)[:40]!r} markup, not a point list (type 'Fiducial'); export the "
                            "landmarks as a point list from Slicer.")
    units = markup.get("coordinateUnits", "mm")
    if units != "mm":
        raise LandmarkError(f"{path}: coordinateUnits is {str(units)[:40]!r}; SpineAlignment reads positions in mm "
                            "(Slicer's default), so save the point list with mm units.")
    points = markup.get("controlPoints")
    if points is not None and not isinstance(points, list):
        raise LandmarkError(f"{path}: 'controlPoints' is not a list of control points; export the landmarks from "
                            "Slicer again.")
    flip = np.array([-1.0, -1.0, 1.0]) if system == "LPS" else np.ones(3)
    out = []
    for i, cp in enumerate(points or []):
        if not isinstance(cp, dict):
            raise LandmarkError(f"{path}: control point {i + 1} of 'controlPoints' is not an object with a 3-number "
                                "'position'; export the landmarks from Slicer again.")
        pos = cp.get("position")
        defined = cp.get("positionStatus", "defined") == "defined" and pos is not None
        ras = tuple((_position(pos, path, i, cp.get("id")) * flip).tolist()) if pos is not None else (math.nan,) * 3
        description, tag = parse_description(str(cp.get("description", "")))
        out.append(MarkupsPoint(str(cp.get("id", "")), str(cp.get("label", "")), description, ras, defined,
                                tag or None))
    return out


#: Largest position coordinate read (mm): a film of 20,000 px at 10 mm a pixel spans 200,000 mm.
MAX_POSITION_MM = 1e6


def _position(pos: Any, path: Path, i: int, cp_id: Any) -> np.ndarray:
    """A control point's ``position``: 3 finite JSON numbers (not strings or true/false) within reach of a film."""
    name = f"control point {i + 1}" + (f" ({str(cp_id)[:40]})" if cp_id else "")
    if not (isinstance(pos, list) and len(pos) == 3
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in pos)):
        raise LandmarkError(f"{path}: {name} has no 3-number 'position' (it is {json.dumps(pos)[:40]}); export the "
                            "landmarks from Slicer again.")
    xyz = np.array(pos, dtype=float)
    if not np.all(np.isfinite(xyz)):
        raise LandmarkError(f"{path}: {name} has a position that is not a finite number ({json.dumps(pos)[:60]}); "
                            "place the point again in Slicer.")
    if np.any(np.abs(xyz) > MAX_POSITION_MM):
        raise LandmarkError(f"{path}: {name} lies far outside any film (a coordinate beyond {MAX_POSITION_MM:g} mm); "
                            "place the point again in Slicer.")
    return xyz


def _confidence(tag: Mapping[str, Any] | None, x: float, y: float) -> float | None:
    """The tag's confidence while the point is where the model put it; None once moved (or without one)."""
    if not tag or tag.get("confidence") is None:
        return None
    try:
        c = float(tag["confidence"])
        ax, ay = (float(v) for v in tag["at"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (0.0 <= c <= 1.0) or math.hypot(x - ax, y - ay) > MOVED_PX:
        return None
    return c


def model_of(tags: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The ``{"name", "version"}`` that provenance tags name (the first one found), else None."""
    for tag in tags:
        m = (tag or {}).get("model")
        if isinstance(m, Mapping) and m.get("name"):
            return {"name": str(m["name"]), "version": str(m.get("version")) if m.get("version") else None}
    return None


def markups_landmarks(path: str | Path, ijk_to_ras: Any, protocol: str) -> tuple[dict[str, Landmark], dict | None]:
    """Canonical landmarks (pixels, with the model's confidence where kept) and the model, from a ``.mrk.json``.

    Points whose ID is not a landmark of ``protocol`` are refused, so a renamed
    label never changes a point's meaning and a foreign file is not misread.
    """
    from ..protocols import get_protocol

    proto = get_protocol(protocol)
    known = set(proto.landmark_ids) | {lm.id for lm in proto.extra_landmarks}
    points = [p for p in read_markups_json(path) if p.defined]
    unknown = [p.id for p in points if p.id not in known]
    if unknown:
        raise LandmarkError(
            f"{path}: control point IDs {', '.join(unknown[:5])} are not landmarks of '{protocol}'; "
            "this file was not written by SpineAlignment for this protocol."
        )
    seen: set[str] = set()
    twice = sorted({p.id for p in points if p.id in seen or seen.add(p.id)})
    if twice:  # which of the two is meant cannot be told; the last one winning moved Cobb angles by 40 degrees
        raise LandmarkError(f"{path}: landmark {', '.join(twice[:5])} is placed twice; delete the wrong point in "
                            "Slicer and save the point list again.")
    if not points:
        return {}, model_of(p.provenance for p in points)
    xy, k = ras_to_pixels(ijk_to_ras, np.array([p.ras for p in points]), return_k=True)
    off = [p.id for p, kk in zip(points, k) if not abs(kk) <= OFF_PLANE_SLICES]
    if off:
        raise LandmarkError(f"{path}: {', '.join(off[:5])} lie{'s' if len(off) == 1 else ''} off the film's plane "
                            f"(more than {OFF_PLANE_SLICES:g} slice from it); the points were placed on another "
                            "image, so give the film they belong to.")
    landmarks = {p.id: Landmark(float(x), float(y), _confidence(p.provenance, float(x), float(y)))
                 for p, (x, y) in zip(points, xy)}
    return landmarks, model_of(p.provenance for p in points)


def landmarks_from_markups_json(path: str | Path, ijk_to_ras: Any, protocol: str) -> dict[str, Landmark]:
    """The landmarks of :func:`markups_landmarks` (without the model)."""
    return markups_landmarks(path, ijk_to_ras, protocol)[0]
