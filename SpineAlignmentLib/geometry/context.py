"""Landmarks in millimetre space, plus the frame and calibration, for parameter functions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frame import FrameInfo
from .primitives import Frame

#: Two landmarks that define a line (an endplate, the McGregor line) closer than this (mm, or px without a
#: spacing) give it no meaningful direction: the smallest real endplate is over ten times longer.
MIN_LINE_LENGTH = 2.0


@dataclass
class Context:
    """What a parameter function needs.

    Attributes:
        points_px: landmark ID -> (x, y) in original-image pixels (trusted landmarks only).
        spacing_mm: (row, col) mm per pixel, or None (then 1 px = 1 unit and distances are ``px``).
        calibration: calibration label of definitions.md §7.4.
        frame_info: the anatomical frame and how it was obtained.
        image_size: (rows, cols) or None.
    """

    points_px: dict[str, np.ndarray]
    spacing_mm: tuple[float, float] | None
    calibration: str
    frame_info: FrameInfo
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.spacing_mm is None:
            self.scale = np.array([1.0, 1.0])
        else:
            self.scale = np.array([float(self.spacing_mm[1]), float(self.spacing_mm[0])])

    @property
    def frame(self) -> Frame:
        return self.frame_info.frame

    @property
    def distance_unit(self) -> str:
        return "mm" if self.spacing_mm is not None else "px"

    def has(self, *ids: str) -> bool:
        return all(i in self.points_px for i in ids)

    def mm(self, landmark_id: str) -> np.ndarray:
        """Landmark in millimetre space (x·colSpacing, y·rowSpacing)."""
        return self.points_px[landmark_id] * self.scale

    def line(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        """The two landmarks of a line in millimetre space.

        Raises:
            ValueError: they are closer than :data:`MIN_LINE_LENGTH` (the parameter is then left out
                with this reason instead of an angle from a degenerate line).
        """
        p, q = self.mm(a), self.mm(b)
        d = float(np.hypot(*(q - p)))
        if d < MIN_LINE_LENGTH:
            raise ValueError(f"{a} and {b} are only {d:.2g} {self.distance_unit} apart, so the line through them has "
                             "no meaningful direction; one of them is misplaced, move it")
        return p, q

    def mean_mm(self, *ids: str) -> np.ndarray:
        return np.mean([self.mm(i) for i in ids], axis=0)

    def px(self, point_mm: np.ndarray) -> tuple[float, float]:
        """Back to original-image pixels, for drawing."""
        p = np.asarray(point_mm, dtype=float) / self.scale
        return float(p[0]), float(p[1])

    def pxs(self, *points_mm: np.ndarray) -> tuple[tuple[float, float], ...]:
        return tuple(self.px(p) for p in points_mm)
