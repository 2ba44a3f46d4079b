"""Two films measured as one: a lumbar flexion + extension pair, or a coronal film + its paired lateral.

The protocol's table says which: ``image_roles`` (``lumbar-dynamic``: ``flexion``, ``extension``)
names two films that both carry the protocol's landmarks; ``paired_lateral_landmarks``
(``coronal-spine``) adds a lateral film that carries only those landmarks. One function measures
a pair (:func:`measure_pair`) for every caller: the batch (a pairs manifest), the Slicer scene
(:mod:`SpineAlignmentLib.slicerio.pairs`) and the Python console.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .errors import LandmarkError, ProtocolError
from .pipeline import measure
from .protocols import Protocol, get_protocol, list_protocols
from .result import Result, View, parse_landmarks

__all__ = ["PAIRED_LATERAL_ROLES", "film_landmark_ids", "film_of", "film_result", "measure_pair", "pair_roles"]

#: Roles of a protocol whose second film is a paired lateral (its table lists ``paired_lateral_landmarks``).
PAIRED_LATERAL_ROLES = ("coronal", "lateral")


def _protocol(protocol: str | Protocol) -> Protocol:
    return protocol if isinstance(protocol, Protocol) else get_protocol(protocol)


def pair_roles(protocol: str | Protocol) -> tuple[str, str]:
    """The two films of a paired protocol, first the one that holds the table and the top-level result.

    Raises:
        LandmarkError: the protocol measures one film.
    """
    proto = _protocol(protocol)
    if len(proto.image_roles) == 2:
        return proto.image_roles[0], proto.image_roles[1]
    if proto.extra_landmarks:
        return PAIRED_LATERAL_ROLES
    paired = [p.id for p in list_protocols() if len(p.image_roles) == 2 or p.extra_landmarks]
    raise LandmarkError(f"protocol '{proto.id}' measures one film; pairs are for protocols with two image roles "
                        f"or a paired lateral ({', '.join(paired)}).")


def film_landmark_ids(protocol: str | Protocol, role: str) -> tuple[str, ...]:
    """The landmark IDs placed on a film of a pair: the protocol's on either image of a flexion/extension
    pair and on the coronal film, the paired-lateral landmarks on a paired lateral."""
    proto = _protocol(protocol)
    if not proto.image_roles and role == pair_roles(proto)[1]:
        return tuple(lm.id for lm in proto.extra_landmarks)
    return proto.landmark_ids


def film_of(protocol: str | Protocol, parameter_id: str) -> str | None:
    """The role whose film a parameter is drawn on; None for a difference between the films (IROM, dST)."""
    proto = _protocol(protocol)
    roles = pair_roles(proto)
    for role in roles:
        if parameter_id.endswith(f"_{role}"):  # per-image values of a flexion/extension pair
            return role
    try:
        flags = proto.parameter(parameter_id).flags
    except ProtocolError:  # an ID outside the table is drawn nowhere
        return None
    if "pair" in flags:
        return None
    return roles[1] if "paired_lateral" in flags else roles[0]


def measure_pair(protocol: str | Protocol, films: Mapping[str, View], *, model: dict | None = None,
                 min_confidence: float | None = None, min_curve_deg: float | None = None,
                 source: str = "pair") -> Result:
    """Measure two films' landmarks as one result.

    Args:
        protocol: a paired protocol (:func:`pair_roles`).
        films: role -> :class:`~SpineAlignmentLib.result.View` (landmarks in that film's pixels, its size,
            spacing, calibration label, orientation and DICOM UIDs).
        model: the model that found the first film's landmarks (``{"name", "version"}``), if any.
        min_confidence, min_curve_deg: as in :func:`~SpineAlignmentLib.pipeline.measure`.
        source: names the input in error messages.

    Returns:
        For ``image_roles`` protocols a result with ``views`` (one per film); for a paired lateral the
        first film's result with the lateral under ``paired_lateral`` (both round-trip through the
        result JSON and ``spine-align measure``).

    Raises:
        LandmarkError: the films are not the protocol's two roles, or their landmarks cannot be used.
    """
    proto = _protocol(protocol)
    roles = pair_roles(proto)
    if set(films) != set(roles):
        raise LandmarkError(f"{source}: {proto.id} pairs the films {' and '.join(roles)}; "
                            f"got {', '.join(films) or 'none'}.")
    kw = {k: v for k, v in (("min_confidence", min_confidence), ("min_curve_deg", min_curve_deg)) if v is not None}
    first, second = films[roles[0]], films[roles[1]]
    if first.landmarks and _same_points(first.landmarks, second.landmarks):
        raise LandmarkError(f"{source}: the {roles[0]} and {roles[1]} films carry the same landmarks at the same "
                            "places, so they are one film given twice; give each film its own landmarks.")
    if proto.image_roles:
        result = measure(None, proto.id, views={r: films[r] for r in roles}, model=model, source=source, **kw)
        return result
    result = measure(
        first.landmarks, proto.id, spacing_mm=first.spacing_mm,
        calibration=first.calibration if first.spacing_mm else None, image_size=first.image_size,
        patient_orientation=first.patient_orientation, image=first.image, model=model, source=source,
        paired_lateral={"landmarks": second.landmarks, "spacing_mm": second.spacing_mm,
                        "patient_orientation": second.patient_orientation}, **kw)
    result.dicom = dict(first.dicom) if first.dicom else None
    result.paired_lateral = replace(second, landmarks=dict(second.landmarks))
    return result


def _same_points(a: Mapping, b: Mapping) -> bool:
    """The same IDs at the same pixel positions (two films never agree to the last digit)."""
    if set(a) != set(b):
        return False
    pa, pb = parse_landmarks(dict(a)), parse_landmarks(dict(b))
    return all((pa[k].x, pa[k].y) == (pb[k].x, pb[k].y) for k in pa)


def film_result(result: Result, role: str) -> Result:
    """What one film of a pair shows: its landmarks, the parameters drawn on it, and the differences
    between the films (IROM, dST) without a drawing (their lines belong to neither film alone).

    Used for the per-film overlay of a pair; the values are those of ``result``.
    """
    proto = get_protocol(result.protocol)
    roles = pair_roles(proto)
    if role not in roles:
        raise LandmarkError(f"{proto.id} pairs the films {' and '.join(roles)}, not '{role}'.")
    if result.views:
        view = result.views.get(role) or View({})
    elif role == roles[0]:
        view = View(result.landmarks, result.image, result.image_size, result.spacing_mm, result.calibration,
                    result.patient_orientation, result.dicom)
    else:
        view = result.paired_lateral or View({})
    parameters = {}
    for pid, m in result.parameters.items():
        where = film_of(proto, pid)
        if where == role:
            parameters[pid] = m
        elif where is None:
            parameters[pid] = replace(m, construction=[])
    return Result(protocol=result.protocol, landmarks=dict(view.landmarks), parameters=parameters,
                  image=view.image, model=result.model if role == roles[0] else None, image_size=view.image_size,
                  spacing_mm=view.spacing_mm, calibration=view.calibration,
                  patient_orientation=view.patient_orientation, levels=result.levels if role == roles[0] else None)
