"""Patient orientation of a projection image (DICOM Patient Orientation, 0020,0020).

DICOM gives, for a projection image, the patient direction of increasing column
index (first value, image ``+x``) and of increasing row index (second value,
image ``+y``), each as one to three letters from ``A`` (anterior), ``P``
(posterior), ``L`` (patient left), ``R`` (patient right), ``H`` (head) and ``F``
(foot); the first letter is the dominant direction, further letters describe
an oblique axis (PS3.3 C.7.6.1.1.1). See definitions.md §1.1 for how the
anatomical frame is built from it.

The command line spells it with a comma (``L,F``) because a backslash is awkward
in shells; both spellings are accepted here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..errors import OrientationError

__all__ = [
    "DIRECTIONS",
    "OPPOSITE",
    "ImageAxes",
    "parse_patient_orientation",
    "format_patient_orientation",
    "image_axes",
    "direction_vector",
]

#: Patient direction letter -> human-readable name.
DIRECTIONS = {
    "A": "anterior",
    "P": "posterior",
    "L": "patient left",
    "R": "patient right",
    "H": "head",
    "F": "foot",
}

#: Each direction letter and its opposite.
OPPOSITE = {"A": "P", "P": "A", "L": "R", "R": "L", "H": "F", "F": "H"}

# The three patient axes, as the set of the two letters pointing along each.
_AXIS_OF = {"A": "AP", "P": "AP", "L": "LR", "R": "LR", "H": "HF", "F": "HF"}


def _validate_value(value: str, original: object) -> str:
    """Check one Patient Orientation value (e.g. ``"L"`` or ``"FL"``)."""
    if not value:
        raise OrientationError(
            f"Patient orientation {original!r} has an empty value; give two values such as 'L,F'."
        )
    if len(value) > 3 or any(ch not in DIRECTIONS for ch in value):
        raise OrientationError(
            f"Patient orientation value {value!r} in {original!r} is not made of the letters "
            "A, P, L, R, H, F (at most three); use for example 'L,F'."
        )
    axes = [_AXIS_OF[ch] for ch in value]
    if len(set(axes)) != len(axes):
        # 'LR' or 'LL' cannot describe a direction: each letter must add a new patient axis.
        raise OrientationError(
            f"Patient orientation value {value!r} in {original!r} repeats a patient axis; "
            "each letter must name a different axis (for example 'FL', not 'LR')."
        )
    return value


def parse_patient_orientation(value: object) -> tuple[str, str] | None:
    """Parse a Patient Orientation in DICOM or command-line spelling.

    Args:
        value: ``None``/empty (unknown), a string such as ``"L\\\\F"``, ``"L,F"``
            or ``"L F"``, or a sequence of two strings (a pydicom MultiValue,
            a list or a tuple).

    Returns:
        ``(x_direction, y_direction)`` in upper case, e.g. ``("L", "F")``: the
        patient direction toward which image ``+x`` (increasing column) and
        image ``+y`` (increasing row) point; ``None`` when no value is given.

    Raises:
        OrientationError: the value does not have two valid, mutually
            orthogonal directions.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        parts = [p for p in re.split(r"[\\,;/\s]+", text) if p != ""]
    elif isinstance(value, Iterable):
        parts = [str(p).strip() for p in value]
        if not parts or all(p == "" for p in parts):
            return None
    else:
        raise OrientationError(
            f"Patient orientation {value!r} is neither text nor a pair of values; use for example 'L,F'."
        )
    if len(parts) != 2:
        raise OrientationError(
            f"Patient orientation {value!r} must have exactly two values (image +x, image +y), "
            "for example 'L,F'."
        )
    x_dir, y_dir = (_validate_value(p.upper(), value) for p in parts)
    if _AXIS_OF[x_dir[0]] == _AXIS_OF[y_dir[0]]:
        raise OrientationError(
            f"Patient orientation {value!r} gives the same patient axis for image rows and columns; "
            "the two values must be orthogonal, for example 'L,F' or 'A,F'."
        )
    return x_dir, y_dir


def format_patient_orientation(orientation: tuple[str, str] | None, sep: str = ",") -> str | None:
    """Format a parsed orientation, e.g. ``("L", "F") -> "L,F"`` (``sep="\\\\"`` for DICOM)."""
    if orientation is None:
        return None
    return sep.join(orientation)


@dataclass(frozen=True)
class ImageAxes:
    """Meaning of the image axes in patient terms.

    Attributes:
        x: dominant patient direction of image ``+x`` (to the right on screen).
        y: dominant patient direction of image ``+y`` (downwards on screen).
        oblique: True when either value has more than one letter (the axes are
            then only approximately aligned with the patient).
    """

    x: str
    y: str
    oblique: bool = False

    @property
    def image_right(self) -> str:
        """Patient direction shown on the right of the image."""
        return self.x

    @property
    def image_left(self) -> str:
        return OPPOSITE[self.x]

    @property
    def image_down(self) -> str:
        return self.y

    @property
    def image_up(self) -> str:
        return OPPOSITE[self.y]

    def describe(self) -> dict[str, str]:
        """Readable summary, e.g. ``{"image_right": "patient left", "image_up": "head", ...}``."""
        return {
            "image_right": DIRECTIONS[self.image_right],
            "image_left": DIRECTIONS[self.image_left],
            "image_up": DIRECTIONS[self.image_up],
            "image_down": DIRECTIONS[self.image_down],
        }


def image_axes(orientation: tuple[str, str] | str | None) -> ImageAxes | None:
    """Dominant patient direction of each image axis, or ``None`` when unknown."""
    parsed = parse_patient_orientation(orientation)
    if parsed is None:
        return None
    x_dir, y_dir = parsed
    return ImageAxes(x=x_dir[0], y=y_dir[0], oblique=len(x_dir) > 1 or len(y_dir) > 1)


def direction_vector(orientation: tuple[str, str] | str | None, direction: str) -> tuple[float, float] | None:
    """Unit vector in image ``(x, y)`` pixels pointing toward a patient direction.

    Uses the dominant letter of each value. For example with ``("L", "F")``,
    ``"H"`` (toward the head) is ``(0.0, -1.0)`` (image up) and ``"L"`` is
    ``(1.0, 0.0)``.

    Args:
        orientation: parsed or unparsed Patient Orientation.
        direction: one of ``A P L R H F``.

    Returns:
        ``(dx, dy)`` or ``None`` when the orientation is unknown or does not
        include that patient axis (e.g. ``"A"`` on a coronal ``L,F`` image).
    """
    direction = direction.upper()
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown patient direction {direction!r}; expected one of A P L R H F")
    axes = image_axes(orientation)
    if axes is None:
        return None
    if axes.x == direction:
        return (1.0, 0.0)
    if axes.x == OPPOSITE[direction]:
        return (-1.0, 0.0)
    if axes.y == direction:
        return (0.0, 1.0)
    if axes.y == OPPOSITE[direction]:
        return (0.0, -1.0)
    return None
