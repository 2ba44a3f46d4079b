"""Anatomical frame from DICOM Patient Orientation or from the landmarks (definitions.md §1.1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import LandmarkError
from .orientation import parse_patient_orientation  # noqa: F401  (re-exported for callers of the frame)
from .primitives import Frame

UP = (0.0, -1.0)  # image "up" in (x, y) with y downwards


def _horizontal_code(orientation: tuple[str, str], u_sup: tuple[float, float]) -> str:
    """Dominant patient direction of the image axis perpendicular to ``u_sup`` (A/P on laterals, L/R on coronals)."""
    return orientation[0][0] if u_sup[0] == 0.0 else orientation[1][0]


def _sup_from_orientation(orientation: tuple[str, str] | None) -> tuple[float, float]:
    if orientation is not None:
        col, row = orientation
        if row[0] == "H":
            return (0.0, 1.0)
        if col[0] == "H":
            return (1.0, 0.0)
        if col[0] == "F":
            return (-1.0, 0.0)
    return UP


@dataclass(frozen=True)
class FrameInfo:
    """How the frame was obtained, for the result and the user."""

    frame: Frame
    source: str  # "patient-orientation", "landmarks", "default"
    facing: str  # lateral: "image-left"/"image-right"; coronal: "patient-left=image-right" ...
    side_known: bool = True


def lateral_frame(points_mm: dict[str, np.ndarray], orientation: tuple[str, str] | None) -> tuple[FrameInfo, list[str]]:
    """Frame for a lateral film: ``u_ant`` and ``u_sup``.

    ``u_ant`` comes from Patient Orientation's first value (A or P) when given;
    otherwise from the landmarks: the mean anterior-minus-posterior ``x`` over
    vertebrae with both corners, cross-checked with the femoral heads lying
    anterior to the S1 posterosuperior corner.

    Raises:
        LandmarkError: when the facing direction cannot be determined, or Patient Orientation and the
            vertebral corners contradict each other.
    """
    warnings: list[str] = []
    u_sup = _sup_from_orientation(orientation)
    horiz = np.array([abs(u_sup[1]), abs(u_sup[0])])  # the image axis perpendicular to u_sup

    diffs = []
    for name in points_mm:
        for ant, post in (("_AS", "_PS"), ("_AI", "_PI")):
            if name.endswith(ant):
                other = name[: -len(ant)] + post
                if other in points_mm:
                    diffs.append(float((points_mm[name] - points_mm[other]) @ horiz))
    landmark_sign = 0.0
    if diffs:
        landmark_sign = float(np.sign(np.mean(diffs)))
    fh_sign = 0.0
    if "S1_PS" in points_mm and "FH_1" in points_mm and "FH_2" in points_mm:
        ha = (points_mm["FH_1"] + points_mm["FH_2"]) / 2.0
        fh_sign = float(np.sign((ha - points_mm["S1_PS"]) @ horiz))

    orient_sign = 0.0
    if orientation is not None:
        first = _horizontal_code(orientation, u_sup)
        orient_sign = {"A": 1.0, "P": -1.0}.get(first, 0.0)

    if orient_sign:
        sign, source = orient_sign, "patient-orientation"
        if landmark_sign and landmark_sign != orient_sign:
            # every sagittal angle's sign depends on the facing: with the two contradicting, any value is a guess
            said = "image-right" if orient_sign * (horiz[0] + horiz[1]) > 0 else "image-left"
            other = "image-left" if said == "image-right" else "image-right"
            raise LandmarkError(
                f"Patient Orientation {','.join(orientation)} says the patient faces {said}, but the "
                f"vertebral corners (anterior minus posterior) say {other}; fix the orientation (the file's tag "
                "or --patient-orientation) or the anterior/posterior corner labels."
            )
    elif landmark_sign:
        sign, source = landmark_sign, "landmarks"
        if fh_sign and fh_sign != landmark_sign:
            warnings.append(
                "Facing direction is ambiguous: vertebral corners and femoral heads disagree; "
                "check the anterior/posterior corner labels."
            )
    elif fh_sign:
        sign, source = fh_sign, "landmarks"
    else:
        raise LandmarkError(
            "Cannot tell which way the patient faces: give Patient Orientation (e.g. 'A,F') or at least "
            "one vertebra with both anterior and posterior corners."
        )
    u_ant = (float(sign * horiz[0]), float(sign * horiz[1]))
    facing = "image-right" if u_ant[0] > 0 or u_ant[1] > 0 else "image-left"
    return FrameInfo(Frame(u_ant, u_sup), source, facing), warnings


def coronal_frame(orientation: tuple[str, str] | None) -> FrameInfo:
    """Frame for a coronal film: ``u_left`` (patient's left) and ``u_sup``.

    Without Patient Orientation the patient's side is unknown; the frame then
    assumes the usual radiological display (patient's left on image right) so
    that magnitudes can be computed, and ``side_known`` is False.
    """
    u_sup = _sup_from_orientation(orientation)
    horiz = (abs(u_sup[1]), abs(u_sup[0]))
    if orientation is not None:
        first = _horizontal_code(orientation, u_sup)
        if first in ("L", "R"):
            sign = 1.0 if first == "L" else -1.0
            u_left = (sign * horiz[0], sign * horiz[1])
            facing = "patient-left=image-right" if sign > 0 else "patient-left=image-left"
            return FrameInfo(Frame(u_left, u_sup), "patient-orientation", facing, True)
    return FrameInfo(Frame(horiz, u_sup), "default", "unknown", False)
