"""Measurement objects: a value with its unit, calibration, landmarks and drawing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Construction kinds a viewer knows how to draw (all points in original-image pixels):
#: ``line``   — a segment between two points (endplate, ray, reference line);
#: ``plumb``  — the image vertical through one point;
#: ``offset`` — a horizontal (or frame-aligned) distance between two points;
#: ``angle``  — three points, vertex in the middle, when an angle node fits;
#: ``point``  — a derived point (midpoint, centroid, hip axis).
CONSTRUCT_KINDS = ("line", "plumb", "offset", "angle", "point")

_UNIT_TEXT = {"deg": "°", "mm": " mm", "px": " px", "%": " %", "ratio": ""}


def format_value(value: float, unit: str) -> str:
    """Display text of a value: 0.1 for angles and distances, 0.01 for ratios (definitions.md §1.4)."""
    number = f"{value:.2f}" if unit == "ratio" else f"{value:.1f}"
    return f"{number}{_UNIT_TEXT.get(unit, ' ' + unit)}"


@dataclass(frozen=True)
class Construct:
    """One element a viewer draws for a measurement.

    Attributes:
        kind: one of :data:`CONSTRUCT_KINDS`.
        points: ``((x, y), ...)`` in original-image pixels.
        label: short role, e.g. ``"upper endplate"`` or ``"S1m"``.
    """

    kind: str
    points: tuple[tuple[float, float], ...]
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "points": [[round(x, 3), round(y, 3)] for x, y in self.points], "label": self.label}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Construct":
        return cls(kind=d["kind"], points=tuple((float(x), float(y)) for x, y in d["points"]), label=d.get("label", ""))


@dataclass
class Measurement:
    """A computed parameter.

    Attributes:
        id: canonical parameter ID.
        value: the value (degrees, mm, px, ratio or %).
        unit: ``deg``, ``mm``, ``px``, ``ratio`` or ``%``.
        landmarks: landmark IDs used.
        calibration: calibration label (definitions.md §7.4) for ``mm``/``px`` values, else None.
        detail: extra structured facts (end vertebrae, convexity, sign convention, ...).
        construction: what a viewer draws.
        warnings: caveats specific to this value (e.g. unstable ratio).
    """

    id: str
    value: float
    unit: str
    landmarks: tuple[str, ...]
    calibration: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    construction: list[Construct] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, *, construction: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"value": round(float(self.value), 6), "unit": self.unit, "landmarks": list(self.landmarks)}
        if self.calibration is not None:
            d["calibration"] = self.calibration
        if self.detail:
            d["detail"] = self.detail
        if self.warnings:
            d["warnings"] = list(self.warnings)
        if construction and self.construction:
            d["construction"] = [c.to_dict() for c in self.construction]
        return d

    @classmethod
    def from_dict(cls, parameter_id: str, d: dict[str, Any]) -> "Measurement":
        return cls(
            id=parameter_id,
            value=float(d["value"]),
            unit=d["unit"],
            landmarks=tuple(d.get("landmarks", ())),
            calibration=d.get("calibration"),
            detail=dict(d.get("detail", {})),
            construction=[Construct.from_dict(c) for c in d.get("construction", [])],
            warnings=list(d.get("warnings", [])),
        )
