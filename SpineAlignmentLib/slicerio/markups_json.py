"""Slicer markups JSON (``.mrk.json``) without Slicer: write landmarks, read them back.

The writer produces the file Slicer's own markups reader
(``vtkMRMLMarkupsJsonStorageNode``) loads: one ``Fiducial`` markup whose
control-point ``id`` is the canonical landmark ID (Slicer keeps the file's IDs
on load, and the GUI does not let users edit them), ``label`` the same ID (a
user may rename it; meaning never comes from the label), ``description`` the
protocol's description. Positions are written in the coordinate system named by
the file's ``coordinateSystem`` field (``LPS``, Slicer's default for files, or
``RAS``); the reader honours the field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import LandmarkError
from ..safefiles import load_json_file
from .geometry import pixels_to_ras, ras_to_pixels

#: Schema Slicer 5.x writes and reads (older readers ignore unknown newer fields).
SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
COORDINATE_SYSTEMS = ("LPS", "RAS")
_IDENTITY_ORIENTATION = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]


@dataclass(frozen=True)
class MarkupsPoint:
    """One control point read from a ``.mrk.json`` file; ``ras`` is always RAS (mm)."""

    id: str
    label: str
    description: str
    ras: tuple[float, float, float]
    defined: bool = True


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
) -> dict[str, Any]:
    """The JSON object of a ``.mrk.json`` file for these landmarks.

    Args:
        landmarks: canonical ID -> Landmark, ``(x, y)`` or ``{"x":, "y":}`` in pixels.
        ijk_to_ras: 4x4 IJK-to-RAS of the image (see :mod:`.geometry`).
        protocol: protocol ID; gives descriptions and the canonical order.
        coordinate_system: ``"LPS"`` (Slicer's file default) or ``"RAS"``.
        color: display colour (r, g, b) in 0..1.
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
    for key, pos in zip(ids, ras):
        points.append({
            "id": key,
            "label": key,
            "description": descriptions.get(key, ""),
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
    flip = np.array([-1.0, -1.0, 1.0]) if system == "LPS" else np.ones(3)
    out = []
    for i, cp in enumerate(markup.get("controlPoints") or []):
        try:
            pos = cp.get("position")
            defined = cp.get("positionStatus", "defined") == "defined" and pos is not None
            ras = tuple(float(c) for c in (np.asarray(pos, dtype=float).reshape(3) * flip)) if pos is not None \
                else (math.nan,) * 3
        except (AttributeError, TypeError, ValueError):
            raise LandmarkError(f"{path}: control point {i + 1} is not an object with a 3-number 'position'; "
                                "export the landmarks from Slicer again.") from None
        out.append(MarkupsPoint(str(cp.get("id", "")), str(cp.get("label", "")), str(cp.get("description", "")),
                                ras, defined))
    return out


def landmarks_from_markups_json(path: str | Path, ijk_to_ras: Any, protocol: str) -> dict[str, tuple[float, float]]:
    """Canonical landmarks (pixels) from a ``.mrk.json`` file, keyed by control-point ID.

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
    if not points:
        return {}
    xy = ras_to_pixels(ijk_to_ras, np.array([p.ras for p in points]))
    return {p.id: (float(x), float(y)) for p, (x, y) in zip(points, xy)}
