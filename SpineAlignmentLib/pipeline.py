"""Landmarks in, parameters out: :func:`measure` (and :func:`analyze` for images, with a model).

Every parameter is computed from trusted landmarks only. A parameter whose
landmarks are missing or untrusted is left out and explained, never guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import __version__
from .errors import CalibrationError, LandmarkError
from .geometry import cervical, coronal, lumbar, sagittal, shoulder
from .geometry.context import Context
from .geometry.frame import FrameInfo, coronal_frame, lateral_frame
from .geometry.orientation import parse_patient_orientation
from .imaging.calibration import validate_spacing as _validate_spacing
from .geometry.measurement import Measurement
from .protocols import Protocol, get_protocol
from .result import Landmark, Result, View, parse_landmarks, validate_image_size

log = logging.getLogger(__name__)

#: Landmarks whose model confidence is below this are not trusted (not used for parameters).
DEFAULT_MIN_CONFIDENCE = 0.3

_FUNCTIONS = {
    "sagittal-whole-spine": sagittal.PARAMETERS,
    "cervical-lateral": cervical.PARAMETERS,
    "coronal-shoulder": shoulder.PARAMETERS,
}


def validate_spacing(spacing: Any, source: str = "spacing") -> tuple[float, float] | None:
    """(row, col) mm per pixel validated by :func:`imaging.calibration.validate_spacing`, or None."""
    if spacing is None:
        return None
    try:
        row, col = spacing
    except (TypeError, ValueError):
        raise CalibrationError(f"{source}: spacing must be two numbers ROW COL in mm per pixel, got {spacing!r}.") from None
    return _validate_spacing(row, col, what=source)


#: A landmark this many pixels beyond the image edge is outside the image (not a point placed on the edge).
EDGE_TOLERANCE_PX = 1.0


def outside_image(landmarks: Mapping[str, Landmark], image_size: tuple[int, int] | None) -> list[str]:
    """IDs of landmarks beyond the image (more than :data:`EDGE_TOLERANCE_PX` past its edge)."""
    if image_size is None:
        return []
    rows, cols = image_size
    t = EDGE_TOLERANCE_PX
    return [k for k, lm in landmarks.items()
            if not (-0.5 - t <= lm.x <= cols - 0.5 + t and -0.5 - t <= lm.y <= rows - 0.5 + t)]


def _outside_warnings(result: Result, outside: list[str], image_size, label: str = "") -> None:
    """Warn once for the result and on every parameter that uses a landmark outside the image."""
    if not outside:
        return
    where = f"{label}: " if label else ""
    result.warnings.append(
        f"{where}{len(outside)} landmark(s) lie outside the {image_size[0]} x {image_size[1]} image "
        f"({', '.join(outside[:6])}{', ...' if len(outside) > 6 else ''}); check image_size or the landmarks: "
        "values using them are flagged.")
    bad = set(outside)
    specs = {p.id: set(p.landmarks) for p in get_protocol(result.protocol).parameters}
    for pid, m in result.parameters.items():
        # the protocol's landmark list too: the AASCE triple selects its curves from all 68 corners
        used = sorted(bad & (set(m.landmarks) | specs.get(pid, set())))
        if used:
            text = f"uses landmark(s) outside the image ({', '.join(used[:4])}); check the landmarks and image_size"
            m.warnings.append(text)
            result.warnings.append(f"{pid}: {text}.")


def check_landmarks(landmarks: Mapping[str, Landmark], protocol: Protocol, source: str) -> None:
    """Refuse unknown IDs and distinct landmarks placed on the same point."""
    known = set(protocol.landmark_ids) | {lm.id for lm in protocol.extra_landmarks}
    unknown = sorted(set(landmarks) - known)
    if unknown:
        raise LandmarkError(
            f"{source}: landmark IDs {', '.join(unknown)} are not part of protocol '{protocol.id}'; "
            "use the IDs listed by 'spine-align protocols' (names are case-sensitive)."
        )
    seen: dict[tuple[float, float], str] = {}
    for key, lm in landmarks.items():
        pos = (lm.x, lm.y)
        if pos in seen:
            raise LandmarkError(
                f"{source}: landmarks {seen[pos]} and {key} are both at ({lm.x:g}, {lm.y:g}); "
                "one of them was placed twice, move or remove it."
            )
        seen[pos] = key


def _trusted(landmarks: Mapping[str, Landmark], min_confidence: float, warnings: list[str]) -> dict[str, np.ndarray]:
    out = {}
    low = []
    for key, lm in landmarks.items():
        if lm.confidence is not None and lm.confidence < min_confidence:
            low.append(f"{key} ({lm.confidence:.2f})")
            continue
        out[key] = np.array([lm.x, lm.y], dtype=float)
    if low:
        warnings.append(
            f"Not trusted (confidence below {min_confidence:g}), so not used: {', '.join(low)}; "
            "check or move these points and re-measure."
        )
    return out


def _context(points: dict[str, np.ndarray], view: str, spacing, calibration, orientation, image_size, warnings) -> Context:
    """Context with the frame of a ``lateral`` or ``coronal`` film; lateral frame warnings go to ``warnings``."""
    scale = np.array([spacing[1], spacing[0]]) if spacing else np.array([1.0, 1.0])
    if view == "lateral":
        frame_info, w = lateral_frame({k: v * scale for k, v in points.items()}, orientation)
        warnings.extend(w)
    else:
        frame_info = coronal_frame(orientation)
    return Context(points, spacing, calibration, frame_info, image_size)


def _frame_dict(fi: FrameInfo) -> dict[str, str]:
    return {"source": fi.source, "facing": fi.facing}


def _run(pid: str, needed: tuple[str, ...], ctx: Context, fn, parameters: dict, omitted: dict, warnings: list, missing_reason) -> None:
    missing = [lm for lm in needed if lm not in ctx.points_px]
    if missing:
        reason = missing_reason(missing)
        omitted[pid] = reason
        warnings.append(f"{pid} left out: {reason}.")
        return
    try:
        m = fn(ctx)
    except ValueError as exc:
        omitted[pid] = str(exc)
        warnings.append(f"{pid} left out: {exc}.")
        return
    parameters[pid] = m
    warnings.extend(f"{pid}: {w}" for w in m.warnings)


def measure(
    landmarks: Mapping[str, Landmark | tuple[float, float] | dict] | None,
    protocol: str,
    *,
    spacing_mm: tuple[float, float] | None = None,
    calibration: str | None = None,
    image_size: tuple[int, int] | None = None,
    patient_orientation: Any = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_curve_deg: float | None = None,
    views: Mapping[str, View] | None = None,
    paired_lateral: Mapping[str, Any] | None = None,
    image: str | None = None,
    model: dict | None = None,
    source: str = "landmarks",
) -> Result:
    """Compute every parameter of ``protocol`` that the landmarks allow.

    Args:
        landmarks: landmark ID -> :class:`Landmark`, ``(x, y)`` or ``{"x":, "y":}`` in
            original-image pixels (x right, y down).
        protocol: protocol ID (``spine-align protocols``).
        spacing_mm: (row, col) mm per pixel; None measures distances in px.
        calibration: label of definitions.md §7.4 for the spacing (default
            ``manual:user`` when a spacing is given, ``pixels-only`` otherwise).
        image_size: (rows, cols); needed by the AASCE triple.
        patient_orientation: DICOM Patient Orientation, e.g. ``"A,F"`` or ``("L", "F")``.
        min_confidence: landmarks with a lower confidence are not trusted.
        min_curve_deg: coronal curves smaller than this are reported as absent.
        views: for ``lumbar-dynamic``: ``{"flexion": View, "extension": View}``.
        paired_lateral: for ``coronal-spine``: ``{"landmarks":, "spacing_mm":, "patient_orientation":}``
            of the paired lateral film (T4–T12 kyphosis, L1–L5 lordosis).

    Returns:
        :class:`Result` with the parameters that could be computed, and warnings.

    Raises:
        ProtocolError, LandmarkError, CalibrationError: for input that cannot be used.
    """
    proto = get_protocol(protocol)
    spacing = validate_spacing(spacing_mm, source)
    label = (calibration or "manual:user") if spacing else "pixels-only"
    orientation = parse_patient_orientation(patient_orientation)
    lms = parse_landmarks(dict(landmarks or {}), source=source)
    check_landmarks(lms, proto, source)
    size = validate_image_size(image_size, source)

    result = Result(protocol=proto.id, landmarks=lms, image=image, model=model, image_size=size,
                    spacing_mm=spacing, calibration=label, patient_orientation=orientation,
                    software_version=__version__)
    if proto.id == "lumbar-dynamic":
        _measure_lumbar(proto, result, views, min_confidence, source)
        for role, view in (result.views or {"": View(lms, image_size=size)}).items():
            _outside_warnings(result, outside_image(view.landmarks, validate_image_size(view.image_size, source)),
                              view.image_size, role)
        return result

    warnings = result.warnings
    points = _trusted(lms, min_confidence, warnings)
    try:
        ctx = _context(points, proto.view, spacing, label, orientation, size, warnings)
    except LandmarkError as exc:
        for p in proto.parameters:
            result.omitted[p.id] = str(exc)
        warnings.append(f"No parameter computed: {exc}")
        return result
    result.frame = _frame_dict(ctx.frame_info)

    def missing_reason(missing: list[str]) -> str:
        absent = [m for m in missing if m not in lms]
        untrusted = [m for m in missing if m in lms]
        parts = []
        if absent:
            parts.append(f"missing {', '.join(absent)}")
        if untrusted:
            parts.append(f"not trusted {', '.join(untrusted)}")
        return "; ".join(parts)

    if proto.id == "coronal-spine":
        _measure_coronal(proto, ctx, result, min_curve_deg, paired_lateral, min_confidence, missing_reason)
    else:
        funcs = _FUNCTIONS[proto.id]
        for spec in proto.parameters:
            if proto.id == "coronal-shoulder" and spec.id == "RSH" and not ({"ST_L", "ST_R"} & set(lms)):
                result.omitted["RSH"] = "no soft-tissue points ST_L/ST_R (RSH_bony is the bony surrogate)"
                continue
            _run(spec.id, spec.landmarks, ctx, funcs[spec.id], result.parameters, result.omitted, warnings, missing_reason)
        if proto.id == "coronal-shoulder":
            warnings.extend(shoulder.side_warnings(ctx))
    _outside_warnings(result, outside_image(lms, size), size)
    return result


def measure_dict(
    data: Mapping[str, Any],
    *,
    source: str = "landmarks",
    protocol: str | None = None,
    spacing_mm: tuple[float, float] | None = None,
    patient_orientation: Any = None,
    min_confidence: float | None = None,
    min_curve_deg: float | None = None,
    image: str | None = None,
) -> Result:
    """Measure a landmark / result JSON object (protocols.md format): what ``spine-align measure`` does per file,
    and what ``evaluate`` does for a file with landmarks but no parameters.

    The file's ``spacing_mm`` keeps the file's calibration label (``manual:file`` when it gives none);
    ``spacing_mm`` given here overrides it as ``manual:user``; ``patient_orientation`` overrides the file's.

    Raises:
        LandmarkError, ProtocolError, CalibrationError: input that cannot be used (naming ``source``).
    """
    protocol = protocol or data.get("protocol")
    if not protocol:
        raise LandmarkError(f"{source}: no 'protocol' field; add one or pass --protocol.")
    data = dict(data, protocol=protocol)
    parsed = Result.from_dict(data, source=source)
    spacing = spacing_mm if spacing_mm else parsed.spacing_mm
    calibration = "manual:user" if spacing_mm else (parsed.calibration if parsed.spacing_mm else None)
    views = parsed.views or None
    if views and spacing_mm:
        for v in views.values():
            v.spacing_mm, v.calibration = tuple(spacing_mm), "manual:user"
    kwargs = {} if min_confidence is None else {"min_confidence": min_confidence}
    return measure(
        parsed.landmarks, protocol,
        spacing_mm=spacing, calibration=calibration, image_size=parsed.image_size,
        patient_orientation=patient_orientation or parsed.patient_orientation,
        min_curve_deg=min_curve_deg, views=views, paired_lateral=data.get("paired_lateral"),
        image=data.get("image") or image, model=data.get("model"), source=source, **kwargs,
    )


def _measure_coronal(proto, ctx, result, min_curve_deg, paired_lateral, min_confidence, missing_reason) -> None:
    warnings = result.warnings
    all_ids = proto.landmark_ids
    missing = [i for i in all_ids if i not in ctx.points_px]
    threshold = coronal.DEFAULT_MIN_CURVE_DEG if min_curve_deg is None else float(min_curve_deg)
    if missing:
        reason = missing_reason(missing)
        for pid in ("Cobb_PT", "Cobb_MT", "Cobb_TLL", "AASCE_1", "AASCE_2", "AASCE_3"):
            result.omitted[pid] = f"needs all 17 vertebrae T1-L5; {reason}"
        warnings.append(f"Cobb curves and AASCE triple left out: they need all 68 corners; {reason}.")
    else:
        try:
            curves, w = coronal.cobb_curves(ctx, threshold)
        except ValueError as exc:  # a degenerate endplate: no curve can be trusted
            curves, w = {}, [f"Cobb curves left out: {exc}."]
            for pid in ("Cobb_PT", "Cobb_MT", "Cobb_TLL"):
                result.omitted[pid] = str(exc)
        else:
            result.omitted.update(coronal.absent_curves(curves, threshold))
        result.parameters.update(curves)
        warnings.extend(w)
        if not ctx.frame_info.side_known and curves:
            warnings.append("Convexity side is reported as 'unknown' (and by image side): the patient's left/right "
                            "is not known; give Patient Orientation (e.g. 'L,F').")
        try:
            result.parameters.update(coronal.aasce(ctx))
        except ValueError as exc:
            for k in (1, 2, 3):
                result.omitted[f"AASCE_{k}"] = str(exc)
            warnings.append(f"AASCE triple left out: {exc}.")
    # Paired lateral (study 004): T4–T12 kyphosis and L1–L5 lordosis.
    paired = {p.id: p for p in proto.parameters if "paired_lateral" in p.flags}
    if not paired_lateral:
        for pid in paired:
            result.omitted[pid] = "needs the paired lateral film's landmarks (paired_lateral)"
        return
    lat_lms = parse_landmarks(dict(paired_lateral.get("landmarks") or {}), source="paired_lateral")
    extra = {lm.id for lm in proto.extra_landmarks}
    unknown = sorted(set(lat_lms) - extra)
    if unknown:
        raise LandmarkError(f"paired_lateral: landmark IDs {', '.join(unknown)} are not used; give {', '.join(sorted(extra))}.")
    lat_spacing = validate_spacing(paired_lateral.get("spacing_mm"), "paired_lateral")
    lat_points = _trusted(lat_lms, min_confidence, warnings)
    lat_orientation = parse_patient_orientation(paired_lateral.get("patient_orientation"))
    try:
        lat_ctx = _context(lat_points, "lateral", lat_spacing, "manual:user" if lat_spacing else "pixels-only",
                           lat_orientation, None, warnings)
    except LandmarkError as exc:
        for pid in paired:
            result.omitted[pid] = str(exc)
        warnings.append(f"Paired lateral parameters left out: {exc}")
        return
    fns = {
        "TK_T4_T12": lambda c: sagittal.lord_between(c, "TK_T4_T12", ("T4_PS", "T4_AS"), ("T12_PI", "T12_AI"),
                                                     ("T4 superior endplate", "T12 inferior endplate"), kyphosis=True),
        "LL_L1_L5": lambda c: sagittal.lord_between(c, "LL_L1_L5", ("L1_PS", "L1_AS"), ("L5_PI", "L5_AI"),
                                                    ("L1 superior endplate", "L5 inferior endplate")),
    }
    for pid, spec in paired.items():
        _run(pid, spec.landmarks, lat_ctx, fns[pid], result.parameters, result.omitted, warnings, missing_reason)
        if pid in result.parameters:
            result.parameters[pid].detail["image"] = "paired lateral"


def _measure_lumbar(proto: Protocol, result: Result, views: Mapping[str, View] | None, min_confidence: float, source: str) -> None:
    warnings = result.warnings
    contexts: dict[str, Context] = {}
    roles: dict[str, View] = {}
    if views:
        roles = dict(views)
    elif result.landmarks:
        roles = {"": View(result.landmarks, result.image, result.image_size, result.spacing_mm,
                          result.calibration, result.patient_orientation)}
    bad = sorted(set(roles) - {"", "flexion", "extension"})
    if bad:
        raise LandmarkError(f"{source}: views {', '.join(bad)} are not known; lumbar-dynamic takes 'flexion' and 'extension'.")
    for role, view in roles.items():
        check_landmarks(view.landmarks, proto, f"{source} ({role or 'image'})")
        spacing = validate_spacing(view.spacing_mm, f"{source} ({role or 'image'})")
        label = view.calibration if spacing else "pixels-only"
        w: list[str] = []
        pts = _trusted(view.landmarks, min_confidence, w)
        try:
            contexts[role] = _context(pts, proto.view, spacing, label, view.patient_orientation, view.image_size, w)
            result.frame[role or "image"] = contexts[role].frame_info.facing
        except LandmarkError as exc:
            w.append(f"no parameter computed: {exc}")
        warnings.extend(f"{role}: {x}" if role else x for x in w)
    if views:
        result.views = dict(views)
        result.landmarks = {}
    for upper, lower in lumbar.LEVELS:
        lv = lumbar.level_name(upper, lower)
        needed = lumbar.level_landmarks(upper, lower)
        for role, ctx in contexts.items():
            suffix = f"_{role}" if role else ""
            missing = [m for m in needed if m not in ctx.points_px]
            if missing:
                for kind in ("SA", "ST", "ST_pct"):
                    result.omitted[f"{kind}_{lv}{suffix}"] = f"missing or not trusted: {', '.join(missing)}"
                continue
            try:
                for m in lumbar.per_image(ctx, upper, lower, suffix):
                    result.parameters[m.id] = m
            except ValueError as exc:
                result.omitted[f"SA_{lv}{suffix}"] = str(exc)
        pair_ids = (f"IROM_{lv}", f"dST_{lv}", f"dST_pct_{lv}")
        if "flexion" in contexts and "extension" in contexts:
            missing = [f"{r}:{m}" for r in ("flexion", "extension") for m in needed if m not in contexts[r].points_px]
            if missing:
                for pid in pair_ids:
                    result.omitted[pid] = f"missing or not trusted: {', '.join(missing)}"
                warnings.append(f"{lv} range of motion left out: missing or not trusted {', '.join(missing)}.")
                continue
            try:
                ms, w = lumbar.pair(contexts["flexion"], contexts["extension"], upper, lower)
            except ValueError as exc:
                for pid in pair_ids:
                    result.omitted[pid] = str(exc)
                continue
            warnings.extend(w)
            for m in ms:
                result.parameters[m.id] = m
            if f"dST_{lv}" not in result.parameters:
                result.omitted[f"dST_{lv}"] = "the two images do not share a distance unit"
        else:
            for pid in pair_ids:
                result.omitted[pid] = "needs both a flexion and an extension image (views)"


def analyze(
    radiograph,
    protocol: str,
    *,
    model=None,
    flip_tta: bool = False,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_curve_deg: float | None = None,
) -> Result:
    """Find the landmarks of ``protocol`` on a radiograph with a packaged model, then :func:`measure`.

    Args:
        radiograph: a :class:`~SpineAlignmentLib.imaging.Radiograph` (``read_radiograph(path)``).
        protocol: protocol ID.
        model: a loaded model, a model name from ``Resources/Models``, or None for the
            protocol's default model.
        flip_tta: average with the horizontally flipped image (left/right corners swapped).

    Returns:
        :class:`Result` with the model's landmarks (with confidences), the parameters and
        every warning from reading, inference and measurement; a segmentation model's label map
        (on the film's grid) is in ``result.segmentation``.

    Raises:
        ModelError: when no model ships for the protocol (place landmarks by hand in Slicer or
            re-measure a landmark file with ``spine-align measure``), or the model is damaged.
    """
    from .inference import predict  # torch is only needed here
    from .models.registry import resolve_model

    proto = get_protocol(protocol)
    loaded = resolve_model(model, proto.id)
    info: dict = {}
    landmarks, model_warnings, labels = predict(radiograph, loaded, flip_tta=flip_tta, info=info)
    image = str(radiograph.path.name) if getattr(radiograph, "path", None) else None
    result = measure(
        landmarks, proto.id,
        spacing_mm=radiograph.spacing_mm, calibration=radiograph.calibration,
        image_size=tuple(radiograph.shape), patient_orientation=radiograph.patient_orientation,
        min_confidence=min_confidence, min_curve_deg=min_curve_deg,
        image=image, model={"name": loaded.name, "version": loaded.version},
        source=image or "radiograph",
    )
    result.warnings[:0] = list(getattr(radiograph, "warnings", [])) + list(model_warnings)
    result.dicom = source_uids(radiograph)
    result.levels = info.get("levels")
    result.segmentation = labels
    return result


def source_uids(radiograph) -> dict[str, str] | None:
    """The DICOM UIDs a result carries for its film (None for non-DICOM images)."""
    uids = (getattr(radiograph, "metadata", None) or {}).get("dicom_uids")
    return dict(uids) if uids else None
