"""Landmarks in, parameters out: :func:`measure` (and :func:`analyze` for images, with a model).

Every parameter is computed from trusted landmarks only. A parameter whose
landmarks are missing or untrusted is left out and explained, never guessed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__
from .errors import CalibrationError, LandmarkError, ProtocolError
from .geometry.context import Context
from .geometry.frame import FrameInfo, coronal_frame, lateral_frame
from .geometry.orientation import parse_patient_orientation
from .imaging.calibration import validate_spacing as _validate_spacing
from .geometry.measurement import Measurement, format_value
from .protocols import Protocol, get_protocol, measuring_routine
from .result import Landmark, Result, View, parse_landmarks, validate_image_size

log = logging.getLogger(__name__)

#: Landmarks whose model confidence is below this are not trusted (not used for parameters).
DEFAULT_MIN_CONFIDENCE = 0.3

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


class MeasureJob:
    """What a protocol's measuring routine gets from :func:`measure`: the result to fill, the caller's options,
    and the steps every protocol shares (trust, frame, one parameter, the films of a pair).

    A protocol's table names its module (``"module"``); the module's ``measure(proto, job)`` fills
    ``job.result`` (parameters, omitted with reasons, warnings, frame) through these steps, so the
    pipeline never needs to know which protocol it measures.

    Attributes:
        result: the :class:`Result` being filled (landmarks, spacing, calibration, orientation, image size set).
        source: name of the input, for messages.
        min_confidence: landmarks with a lower confidence are not trusted.
        min_curve_deg: the caller's smallest reported curve (None: the protocol's default).
        views: the films of a multi-image protocol by role (``image_roles``), or None.
        paired_lateral: the paired lateral film of a protocol with ``paired_lateral_landmarks``, or None.
        frame_error: set by :meth:`film_context` when the film's frame cannot be built (nothing was measured).
    """

    def __init__(self, proto: Protocol, result: Result, *, source: str, min_confidence: float,
                 min_curve_deg: float | None, views: Mapping[str, View] | None,
                 paired_lateral: Mapping[str, Any] | None) -> None:
        self.proto = proto
        self.result = result
        self.source = source
        self.min_confidence = min_confidence
        self.min_curve_deg = min_curve_deg
        self.views = views
        self.paired_lateral = paired_lateral
        self.frame_error: LandmarkError | None = None

    def frame_failure(self, exc: LandmarkError, landmarks: Mapping[str, Landmark],
                      points: Mapping[str, np.ndarray]) -> LandmarkError:
        """Why no frame could be built, the untrusted landmarks first when some were set aside: their low
        confidence is the cause, not the orientation the frame then lacked."""
        untrusted = [k for k in landmarks if k not in points]
        if not untrusted:
            return exc
        names = ", ".join(untrusted[:8]) + (f" and {len(untrusted) - 8} more" if len(untrusted) > 8 else "")
        which = "no landmark is trusted" if not points else "landmarks not trusted"
        text = str(exc)
        return LandmarkError(f"{which} (confidence below {self.min_confidence:g}: {names}), so "
                             f"{text[:1].lower()}{text[1:]}")

    def trusted(self, landmarks: Mapping[str, Landmark], warnings: list[str]) -> dict[str, np.ndarray]:
        """Positions of the landmarks confident enough to use; the others are named in ``warnings``."""
        return _trusted(landmarks, self.min_confidence, warnings)

    @staticmethod
    def context(points: dict[str, np.ndarray], view: str, spacing, calibration, orientation, image_size,
                warnings: list[str]) -> Context:
        """Context of one film (``view`` ``lateral`` or ``coronal``). Raises LandmarkError when no frame can be built."""
        return _context(points, view, spacing, calibration, orientation, image_size, warnings)

    def film_context(self) -> Context | None:
        """Context of the result's one film in the protocol's view; None (every parameter left out, and why)
        when its frame cannot be built."""
        r = self.result
        points = self.trusted(r.landmarks, r.warnings)
        try:
            ctx = self.context(points, self.proto.view, r.spacing_mm, r.calibration, r.patient_orientation,
                               r.image_size, r.warnings)
        except LandmarkError as exc:
            exc = self.frame_failure(exc, r.landmarks, points)
            for p in self.proto.parameters:
                r.omitted[p.id] = str(exc)
            r.warnings.append(f"No parameter computed: {exc}")
            self.frame_error = exc
            return None
        r.frame = _frame_dict(ctx.frame_info)
        return ctx

    def films(self) -> dict[str, View]:
        """The films to measure by role: ``views`` (roles from the table's ``image_roles``), else the result's
        one film under role ``""``; none when there are no landmarks.

        Raises:
            LandmarkError: a role the protocol does not take.
        """
        r = self.result
        if self.views:
            roles = dict(self.views)
        elif r.landmarks:
            roles = {"": View(r.landmarks, r.image, r.image_size, r.spacing_mm, r.calibration, r.patient_orientation)}
        else:
            roles = {}
        bad = sorted(set(roles) - {"", *self.proto.image_roles})
        if bad:
            takes = " and ".join(f"'{x}'" for x in self.proto.image_roles)
            raise LandmarkError(f"{self.source}: views {', '.join(bad)} are not known; {self.proto.id} takes {takes}.")
        return roles

    def view_context(self, role: str, view: View, warnings: list[str]) -> Context | None:
        """Context of one film of a pair after checking its landmarks and spacing (messages name the role);
        None, and why in ``warnings``, when its frame cannot be built.

        Raises:
            LandmarkError, CalibrationError: landmarks or a spacing that cannot be used.
        """
        where = f"{self.source} ({role or 'image'})"
        check_landmarks(view.landmarks, self.proto, where)
        spacing = validate_spacing(view.spacing_mm, where)
        label = view.calibration if spacing else "pixels-only"
        pts = self.trusted(view.landmarks, warnings)
        try:
            return self.context(pts, self.proto.view, spacing, label, view.patient_orientation, view.image_size,
                                warnings)
        except LandmarkError as exc:
            warnings.append(f"no parameter computed: {self.frame_failure(exc, view.landmarks, pts)}")
            return None

    def paired_lateral_context(self, parameter_ids: list[str]) -> Context | None:
        """Context of the paired lateral film (its landmarks are the table's ``paired_lateral_landmarks``);
        None, with ``parameter_ids`` left out and why, when it is not given or has no frame.

        Raises:
            LandmarkError, CalibrationError: landmarks the protocol does not use, or an unusable spacing.
        """
        r, paired = self.result, self.paired_lateral
        if not paired:
            for pid in parameter_ids:
                r.omitted[pid] = "needs the paired lateral film's landmarks (paired_lateral)"
            return None
        lat_lms = parse_landmarks(dict(paired.get("landmarks") or {}), source="paired_lateral")
        extra = {lm.id for lm in self.proto.extra_landmarks}
        unknown = sorted(set(lat_lms) - extra)
        if unknown:
            raise LandmarkError(f"paired_lateral: landmark IDs {', '.join(unknown)} are not used; give {', '.join(sorted(extra))}.")
        lat_spacing = validate_spacing(paired.get("spacing_mm"), "paired_lateral")
        lat_points = self.trusted(lat_lms, r.warnings)
        lat_orientation = parse_patient_orientation(paired.get("patient_orientation"))
        try:
            return self.context(lat_points, "lateral", lat_spacing, "manual:user" if lat_spacing else "pixels-only",
                                lat_orientation, None, r.warnings)
        except LandmarkError as exc:
            for pid in parameter_ids:
                r.omitted[pid] = str(exc)
            r.warnings.append(f"Paired lateral parameters left out: {exc}")
            return None

    def missing_reason(self, missing: list[str]) -> str:
        """Why landmarks are unusable: absent from the input, or present but not trusted."""
        absent = [m for m in missing if m not in self.result.landmarks]
        untrusted = [m for m in missing if m in self.result.landmarks]
        parts = []
        if absent:
            parts.append(f"missing {', '.join(absent)}")
        if untrusted:
            parts.append(f"not trusted {', '.join(untrusted)}")
        return "; ".join(parts)

    def run(self, pid: str, needed: tuple[str, ...], ctx: Context, fn) -> None:
        """Compute parameter ``pid`` with ``fn(ctx)`` when its ``needed`` landmarks are usable; else leave it out
        and say why (a ``ValueError`` from ``fn`` is a reason too)."""
        r = self.result
        missing = [lm for lm in needed if lm not in ctx.points_px]
        if missing:
            reason = self.missing_reason(missing)
            r.omitted[pid] = reason
            r.warnings.append(f"{pid} left out: {reason}.")
            return
        try:
            m = fn(ctx)
        except ValueError as exc:
            r.omitted[pid] = str(exc)
            r.warnings.append(f"{pid} left out: {exc}.")
            return
        r.parameters[pid] = m
        r.warnings.extend(f"{pid}: {w}" for w in m.warnings)

    def measure_table(self, functions: Mapping[str, Any]) -> None:
        """:meth:`run` every parameter of the protocol's table with ``functions[parameter ID]`` on the one film,
        in table order (nothing when its frame cannot be built: :meth:`film_context`)."""
        ctx = self.film_context()
        if ctx is None:
            return
        for spec in self.proto.parameters:
            self.run(spec.id, spec.landmarks, ctx, functions[spec.id])


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

    The protocol's own routine (``measure(proto, job)`` of the module its table names) computes the
    parameters; this function checks the input and adds the outside-the-image warnings.

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
        views: the films of a protocol whose table lists ``image_roles``, by role
            (``lumbar-dynamic``: ``{"flexion": View, "extension": View}``).
        paired_lateral: for a protocol whose table lists ``paired_lateral_landmarks`` (``coronal-spine``):
            ``{"landmarks":, "spacing_mm":, "patient_orientation":}`` of the paired lateral film.

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
    job = MeasureJob(proto, result, source=source, min_confidence=min_confidence, min_curve_deg=min_curve_deg,
                     views=views, paired_lateral=paired_lateral)
    measuring_routine(proto)(proto, job)
    _implausible_warnings(result, proto)
    if job.frame_error is None:
        for role, view in (result.views or {"": View(lms, image_size=size)}).items():
            _outside_warnings(result, outside_image(view.landmarks, validate_image_size(view.image_size, source)),
                              view.image_size, role)
    return result


def _implausible_warnings(result: Result, proto: Protocol) -> None:
    """A value outside its parameter's plausible range (protocol table) keeps its value and gets a warning
    naming the landmarks it came from (a misplaced point is the usual cause)."""
    roles = tuple(result.views or ())
    for pid, m in result.parameters.items():
        base = next((pid[: -len(r) - 1] for r in roles if pid.endswith(f"_{r}")), pid)
        try:
            spec = proto.parameter(base)
        except ProtocolError:
            continue
        if spec.plausible is None or m.unit != spec.unit:  # px instead of mm: no range in pixels
            continue
        low, high = spec.plausible
        if not low <= m.value <= high:
            m.warnings.append(
                f"{pid} = {format_value(m.value, m.unit)} is outside the plausible range "
                f"{format_value(low, m.unit)} to {format_value(high, m.unit)}; check the landmarks it comes from: "
                f"{', '.join(m.landmarks)}."
            )


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
        LandmarkError, ProtocolError, CalibrationError: input that cannot be used (naming ``source``), such as
            a file of another protocol than ``protocol`` (as ``batch --landmarks-dir`` refuses one).
    """
    if protocol and data.get("protocol") not in (None, "", protocol):
        raise LandmarkError(f"{source}: landmarks are for protocol '{data['protocol']}', not '{protocol}'; "
                            f"pass --protocol {data['protocol']} or give a {protocol} file.")
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


@dataclass
class Detection:
    """What a model found on one film (:func:`detect`): landmarks in original pixels with confidences,
    the model's warnings, its name and version, the vertebra-level assessment and a label map."""

    landmarks: dict[str, Landmark]
    warnings: list[str]
    model: dict[str, str]
    levels: dict[str, Any] | None = None
    segmentation: Any = None
    #: the first pass a level anchor starts from (:class:`~SpineAlignmentLib.inference.anchor.ChainState`), or None
    chain: Any = None


def detect(radiograph, protocol: str, *, model=None, flip_tta: bool = False) -> Detection:
    """Find the landmarks of ``protocol`` on one film with a packaged model (no measurement).

    The one way a model's landmarks are obtained: :func:`analyze` (one film) and a film of a pair
    (:mod:`SpineAlignmentLib.pairs`, batch ``--pairs``) both call it.

    Args:
        radiograph: a :class:`~SpineAlignmentLib.imaging.Radiograph`.
        protocol: protocol ID.
        model: a loaded model, a model name from the registry, or None for the protocol's default model.
        flip_tta: average with the horizontally flipped image (left/right corners swapped).

    Raises:
        ModelError: no model for the protocol, or a damaged one.
    """
    from .inference import predict  # torch is only needed here
    from .models.registry import resolve_model

    proto = get_protocol(protocol)
    loaded = resolve_model(model, proto.id)
    info: dict = {}
    landmarks, model_warnings, labels = predict(radiograph, loaded, flip_tta=flip_tta, info=info)
    chain = info.get("chain")
    if chain is not None:
        chain.read_warnings = list(getattr(radiograph, "warnings", None) or [])
        chain.detection_warnings = list(model_warnings)
    return Detection(dict(landmarks), list(model_warnings), {"name": loaded.name, "version": loaded.version},
                     info.get("levels"), labels, chain)


def analyze(
    radiograph,
    protocol: str,
    *,
    model=None,
    flip_tta: bool = False,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_curve_deg: float | None = None,
) -> Result:
    """Find the landmarks of ``protocol`` on a radiograph with a packaged model (:func:`detect`), then :func:`measure`.

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
    found = detect(radiograph, protocol, model=model, flip_tta=flip_tta)
    image = str(radiograph.path.name) if getattr(radiograph, "path", None) else None
    result = measure(
        found.landmarks, protocol,
        spacing_mm=radiograph.spacing_mm, calibration=radiograph.calibration,
        image_size=tuple(radiograph.shape), patient_orientation=radiograph.patient_orientation,
        min_confidence=min_confidence, min_curve_deg=min_curve_deg,
        image=image, model=found.model, source=image or "radiograph",
    )
    result.warnings[:0] = list(getattr(radiograph, "warnings", [])) + found.warnings
    result.dicom = source_uids(radiograph)
    result.levels = found.levels
    result.segmentation = found.segmentation
    result.chain = found.chain
    return result


def reanchor(result: Result, anchor, *, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
             min_curve_deg: float | None = None) -> Result:
    """Re-name a model result's vertebra chain by a level anchor and measure again (no network re-run).

    Args:
        result: a result of :func:`analyze` (or an earlier :func:`reanchor`) that still holds its ``chain``.
        anchor: a :class:`~SpineAlignmentLib.inference.anchor.LevelAnchor` (a vertebra's level at a point,
            or the chain's level shift).

    Returns:
        A new :class:`Result`: the re-named landmarks, their parameters, ``levels`` confirmed with
        ``levels.anchor`` saying who set it and how.

    Raises:
        LandmarkError: the result holds no model chain, or the anchor cannot be used (one sentence saying why).
    """
    from .inference.anchor import apply_level_anchor

    state = result.chain
    if state is None:
        raise LandmarkError(f"{result.image or 'this result'}: its vertebra levels cannot be anchored, it holds no "
                            "model chain (analyse the film with a vertebra-centres model first).")
    anchored = apply_level_anchor(state, anchor)
    new = measure(anchored.landmarks, result.protocol, spacing_mm=result.spacing_mm,
                  calibration=result.calibration if result.spacing_mm else None, image_size=result.image_size,
                  patient_orientation=result.patient_orientation, min_confidence=min_confidence,
                  min_curve_deg=min_curve_deg, image=result.image, model=result.model,
                  source=result.image or "radiograph")
    new.warnings[:0] = list(getattr(state, "read_warnings", [])) + anchored.warnings
    new.dicom, new.segmentation, new.fingerprint = result.dicom, result.segmentation, result.fingerprint
    new.levels, new.chain = anchored.levels, anchored.state
    return new


def source_uids(radiograph) -> dict[str, str] | None:
    """The DICOM UIDs a result carries for its film (None for non-DICOM images)."""
    uids = (getattr(radiograph, "metadata", None) or {}).get("dicom_uids")
    return dict(uids) if uids else None
