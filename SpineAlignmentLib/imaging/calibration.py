"""Pixel spacing and its calibration label (definitions.md §7.4).

The decision procedure, in order (the first that applies wins):

===========================================  ====================  ==========================================
Situation                                    Spacing (row, col)    Label
===========================================  ====================  ==========================================
manual calibration given                     the manual spacing    ``manual:<where>`` (``manual:user`` for a
                                                                   spacing typed by the user)
Pixel Spacing and Imager Pixel Spacing       Pixel Spacing         ``calibrated:<Pixel Spacing Calibration
both present and different (> 1e-6 mm)                             Type>`` or ``calibrated:unspecified``
Imager Pixel Spacing (Pixel Spacing absent   IPS / M               ``estimated(ERMF)``
or equal), magnification M known: ERMF, or
else SID / SOD
Imager Pixel Spacing, no magnification       IPS                   ``detector-plane (magnified)``
Pixel Spacing only                           Pixel Spacing         ``unknown-meaning``
Nominal Scanned Pixel Spacing only           NSPS                  ``scanned-film``
nothing                                      ``None``              ``pixels-only``
===========================================  ====================  ==========================================

Everything here is a pure function of tag values, so it works on a pydicom
``Dataset`` as well as on a plain ``dict`` keyed by DICOM keywords (useful for
tests and for metadata that came from elsewhere). Spacing is always
``(row, col)`` in mm per pixel, the DICOM order; SimpleITK's ``GetSpacing()`` is
never used for DICOM radiographs because it returns Imager Pixel Spacing for
CR/DX even when a calibrated Pixel Spacing exists (definitions.md §7.3).

A tag whose value is unusable (wrong number of values, zero, negative, not a
number) is treated as absent and reported in ``Calibration.warnings``: one bad
tag should not stop a batch, and the label then honestly says what was used.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import CalibrationError

__all__ = [
    "PIXELS_ONLY",
    "DETECTOR_PLANE",
    "ESTIMATED_ERMF",
    "UNKNOWN_MEANING",
    "SCANNED_FILM",
    "SPACING_TOLERANCE_MM",
    "ManualCalibration",
    "Calibration",
    "validate_spacing",
    "resolve_calibration",
    "resolve_spacing",
    "has_mm",
]

log = logging.getLogger(__name__)

PIXELS_ONLY = "pixels-only"
DETECTOR_PLANE = "detector-plane (magnified)"
ESTIMATED_ERMF = "estimated(ERMF)"
UNKNOWN_MEANING = "unknown-meaning"
SCANNED_FILM = "scanned-film"
#: Two spacings closer than this (mm, per component) count as equal.
SPACING_TOLERANCE_MM = 1e-6
#: A radiograph pixel is well under 1 mm; a spacing of this many mm per pixel or more is a mistake (e.g. cm or
#: pixels per mm), refused rather than turned into absurd distances.
MAX_SPACING_MM = 10.0


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise CalibrationError(f"spacing value {value!r} is not a number; give mm per pixel such as 0.143.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"spacing value {value!r} is not a number; give mm per pixel such as 0.143.") from None


#: Plausible pixel spacings, mm (detectors and film scanners use 0.05 to 0.2; a downsampled copy a few mm).
#: Outside this range a value is a unit error (m or µm written as mm) or a damaged header, never a radiograph.
MIN_SPACING_MM = 0.001
MAX_SPACING_MM = 10.0


def validate_spacing(row: Any, col: Any, *, what: str = "spacing") -> tuple[float, float]:
    """Check a (row, col) pixel spacing and return it as floats.

    Args:
        row: mm per pixel along the rows (vertical, between rows).
        col: mm per pixel along the columns (horizontal, between columns).
        what: name of the value used in the error message (e.g. a file name).

    Returns:
        ``(row, col)`` as Python floats, mm per pixel.

    Raises:
        CalibrationError: a value is not a number, not finite, zero or negative,
            or outside [:data:`MIN_SPACING_MM`, :data:`MAX_SPACING_MM`].
    """
    r, c = _as_float(row), _as_float(col)
    for name, v in (("row", r), ("column", c)):
        if not math.isfinite(v) or v <= 0 or v >= MAX_SPACING_MM:
            raise CalibrationError(
                f"{what}: {name} spacing {v!r} mm is not a positive finite number below {MAX_SPACING_MM:g} mm; "
                "give mm per pixel as ROW COL, for example 0.143 0.143."
            )
        if not MIN_SPACING_MM <= v <= MAX_SPACING_MM:
            raise CalibrationError(
                f"{what}: {name} spacing {v:g} mm is outside the {MIN_SPACING_MM:g} to {MAX_SPACING_MM:g} mm per "
                "pixel any radiograph has; give mm per pixel as ROW COL, for example 0.143 0.143."
            )
    return r, c


@dataclass(frozen=True)
class ManualCalibration:
    """A spacing decided by a person or a calibration marker (overrides all tags).

    Attributes:
        spacing_mm: ``(row, col)`` mm per pixel.
        where: short tag for the label ``manual:<where>``, e.g. ``"user"`` for a
            spacing typed on the command line, ``"marker"`` for a sphere of
            known size, ``"ruler"`` for a ruler drawn in Slicer.
    """

    spacing_mm: tuple[float, float]
    where: str = "user"

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing_mm", validate_spacing(*_pair(self.spacing_mm, "manual spacing")))
        where = str(self.where).strip()
        if not where or any(ch.isspace() for ch in where):
            raise CalibrationError(
                f"manual calibration source {self.where!r} must be one word such as 'user' or 'marker'."
            )
        object.__setattr__(self, "where", where)

    @property
    def label(self) -> str:
        return f"manual:{self.where}"

    @classmethod
    def from_marker(
        cls,
        known_mm: float,
        measured_px_row: float,
        measured_px_col: float | None = None,
        where: str = "marker",
    ) -> "ManualCalibration":
        """Spacing from an object of known size: ``known_mm / measured_px`` per axis.

        Args:
            known_mm: true size of the marker in mm (e.g. a sphere's diameter).
            measured_px_row: its extent in pixels along the rows (vertical).
            measured_px_col: its extent in pixels along the columns; defaults to
                ``measured_px_row`` (square pixels assumed).
            where: label suffix, ``manual:<where>``.
        """
        known = _as_float(known_mm)
        pr = _as_float(measured_px_row)
        pc = pr if measured_px_col is None else _as_float(measured_px_col)
        if not (math.isfinite(known) and known > 0 and math.isfinite(pr) and pr > 0 and math.isfinite(pc) and pc > 0):
            raise CalibrationError(
                f"marker of {known_mm!r} mm measured as {measured_px_row!r} x {measured_px_col!r} px cannot give "
                "a spacing; both the size and the measurement must be positive."
            )
        return cls((known / pr, known / pc), where)


@dataclass(frozen=True)
class Calibration:
    """Outcome of the §7.4 decision procedure.

    Attributes:
        spacing_mm: ``(row, col)`` mm per pixel, or ``None`` (pixels only).
        label: calibration label carried into every mm output.
        source: which value the spacing came from: ``"manual"``,
            ``"PixelSpacing"``, ``"ImagerPixelSpacing"``,
            ``"NominalScannedPixelSpacing"`` or ``None``.
        magnification: the factor Imager Pixel Spacing was divided by, if any.
        description: Pixel Spacing Calibration Description when present.
        warnings: problems a user should know about (ignored tags, odd values).
    """

    spacing_mm: tuple[float, float] | None
    label: str
    source: str | None = None
    magnification: float | None = None
    description: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


def has_mm(label: str) -> bool:
    """True when a label comes with a spacing (every label except ``pixels-only``)."""
    return label != PIXELS_ONLY


def _pair(value: Any, what: str) -> tuple[Any, Any]:
    if isinstance(value, str):
        parts = [p for p in value.replace(",", "\\").split("\\") if p.strip()]
    elif isinstance(value, Sequence) or hasattr(value, "__iter__"):
        parts = list(value)
    else:
        raise CalibrationError(f"{what} {value!r} must be two numbers (row, col) in mm per pixel.")
    if len(parts) != 2:
        raise CalibrationError(f"{what} {value!r} must be two numbers (row, col) in mm per pixel.")
    return parts[0], parts[1]


def _get(tags: Any, keyword: str) -> Any:
    """Value of a DICOM keyword in a pydicom Dataset or a mapping; ``None`` when absent/empty."""
    if tags is None:
        return None
    if isinstance(tags, Mapping) or hasattr(tags, "get"):
        value = tags.get(keyword)
    else:
        value = getattr(tags, keyword, None)
    # pydicom returns the DataElement for tag-style lookups and the value for keywords;
    # unwrap in case a caller passed a mapping of DataElements.
    value = getattr(value, "value", value)
    if value is None or (isinstance(value, (str, bytes, list, tuple)) and len(value) == 0):
        return None
    return value


def _spacing_tag(tags: Any, keyword: str, warnings: list[str]) -> tuple[float, float] | None:
    value = _get(tags, keyword)
    if value is None:
        return None
    try:
        return validate_spacing(*_pair(value, keyword), what=keyword)
    except CalibrationError:
        warnings.append(f"{keyword} {_show(value)} is not two positive spacings between {MIN_SPACING_MM:g} and {MAX_SPACING_MM:g} mm and was ignored.")
        return None


def _positive_tag(tags: Any, keyword: str, warnings: list[str]) -> float | None:
    value = _get(tags, keyword)
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v <= 0:
        warnings.append(f"{keyword} {_show(value)} is not a positive number and was ignored.")
        return None
    return v


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    try:
        return "[" + ", ".join(str(v) for v in value) + "]"
    except TypeError:
        return repr(value)


def _equal(a: tuple[float, float], b: tuple[float, float], tol: float) -> bool:
    return abs(a[0] - b[0]) <= tol and abs(a[1] - b[1]) <= tol


def resolve_calibration(
    tags: Any = None,
    manual: ManualCalibration | Sequence[float] | None = None,
    *,
    tolerance: float = SPACING_TOLERANCE_MM,
) -> Calibration:
    """Run the definitions.md §7.4 decision procedure.

    Args:
        tags: a pydicom ``Dataset`` or a mapping from DICOM keywords
            (``PixelSpacing``, ``ImagerPixelSpacing``,
            ``PixelSpacingCalibrationType``, ``PixelSpacingCalibrationDescription``,
            ``EstimatedRadiographicMagnificationFactor``,
            ``DistanceSourceToDetector``, ``DistanceSourceToPatient``,
            ``NominalScannedPixelSpacing``) to values; ``None`` for no tags.
        manual: a :class:`ManualCalibration`, or a ``(row, col)`` spacing in mm
            typed by the user (label ``manual:user``). Overrides every tag.
        tolerance: mm; Pixel Spacing and Imager Pixel Spacing closer than this
            per component count as equal (no calibration applied).

    Returns:
        A :class:`Calibration` with spacing ``(row, col)`` mm or ``None`` and
        the label.

    Raises:
        CalibrationError: the manual spacing is zero, negative or not finite.
    """
    warnings: list[str] = []
    if manual is not None:
        if not isinstance(manual, ManualCalibration):
            manual = ManualCalibration(tuple(_pair(manual, "manual spacing")), "user")  # type: ignore[arg-type]
        return Calibration(manual.spacing_mm, manual.label, source="manual")

    ps = _spacing_tag(tags, "PixelSpacing", warnings)
    ips = _spacing_tag(tags, "ImagerPixelSpacing", warnings)
    nsps = _spacing_tag(tags, "NominalScannedPixelSpacing", warnings)
    description = _get(tags, "PixelSpacingCalibrationDescription")
    description = str(description).strip() if description is not None else None

    if ps is not None and ips is not None and not _equal(ps, ips, tolerance):
        # Pixel Spacing differs from the detector spacing, so someone corrected it (§7.2).
        cal_type = _get(tags, "PixelSpacingCalibrationType")
        cal_type = str(cal_type).strip().upper() if cal_type is not None else ""
        label = "calibrated:" + (cal_type or "unspecified")
        if ps[0] > ips[0] + tolerance or ps[1] > ips[1] + tolerance:
            # A magnification correction only ever shrinks the spacing; larger is suspicious.
            warnings.append(
                f"PixelSpacing {list(ps)} is larger than ImagerPixelSpacing {list(ips)}; "
                "a magnification correction should make it smaller, so check the calibration."
            )
        return _done(Calibration(ps, label, "PixelSpacing", None, description, tuple(warnings)))

    if ips is not None:
        magnification = _positive_tag(tags, "EstimatedRadiographicMagnificationFactor", warnings)
        if magnification is None:
            sid = _positive_tag(tags, "DistanceSourceToDetector", warnings)
            sod = _positive_tag(tags, "DistanceSourceToPatient", warnings)
            if sid is not None and sod is not None:
                magnification = sid / sod
        if magnification is None:
            return _done(Calibration(ips, DETECTOR_PLANE, "ImagerPixelSpacing", None, description, tuple(warnings)))
        if magnification < 1.0:
            warnings.append(
                f"radiographic magnification {magnification:g} is below 1 (DICOM defines it as SID/SOD); "
                "the estimated spacing is larger than the detector spacing, so check the file."
            )
        spacing = (ips[0] / magnification, ips[1] / magnification)
        return _done(
            Calibration(spacing, ESTIMATED_ERMF, "ImagerPixelSpacing", magnification, description, tuple(warnings))
        )

    if ps is not None:
        return _done(Calibration(ps, UNKNOWN_MEANING, "PixelSpacing", None, description, tuple(warnings)))
    if nsps is not None:
        return _done(
            Calibration(nsps, SCANNED_FILM, "NominalScannedPixelSpacing", None, description, tuple(warnings))
        )
    return _done(Calibration(None, PIXELS_ONLY, None, None, description, tuple(warnings)))


def _done(cal: Calibration) -> Calibration:
    for w in cal.warnings:
        log.warning(w)
    return cal


def resolve_spacing(
    ds_or_tags: Any = None,
    manual: ManualCalibration | Sequence[float] | None = None,
    *,
    tolerance: float = SPACING_TOLERANCE_MM,
) -> tuple[tuple[float, float] | None, str]:
    """Spacing and calibration label of definitions.md §7.4.

    Same arguments as :func:`resolve_calibration`.

    Returns:
        ``(spacing_mm, label)``: ``spacing_mm`` is ``(row, col)`` mm per pixel or
        ``None``; ``label`` one of ``manual:<where>``,
        ``calibrated:<CalibrationType or unspecified>``, ``estimated(ERMF)``,
        ``detector-plane (magnified)``, ``unknown-meaning``, ``scanned-film``,
        ``pixels-only``.
    """
    cal = resolve_calibration(ds_or_tags, manual, tolerance=tolerance)
    return cal.spacing_mm, cal.label
