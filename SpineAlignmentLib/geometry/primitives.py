"""Signed geometric primitives of definitions.md §1.3, in a 2-D anatomical frame.

All functions take points in *millimetre space* (``x`` right, ``y`` down, already
multiplied by the column and row spacing, definitions.md §1.1 step 2) so that
angles are never computed in anisotropic pixel space. Angles are in degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """Orthonormal anatomical frame in the image plane.

    Attributes:
        u_a: unit vector toward the patient's front (lateral films) or the
            patient's left (coronal films), in (x, y) image axes.
        u_s: unit vector toward the head, in (x, y) image axes.
    """

    u_a: tuple[float, float]
    u_s: tuple[float, float]

    def comp(self, v: np.ndarray) -> tuple[float, float]:
        """Components ``(a, s)`` of vector ``v`` (definitions.md ``comp``)."""
        v = np.asarray(v, dtype=float)
        return float(v @ np.asarray(self.u_a)), float(v @ np.asarray(self.u_s))


def wrap180(angle: float) -> float:
    """Map an angle in degrees into (-180, 180]."""
    a = math.fmod(angle, 360.0)
    if a <= -180.0:
        a += 360.0
    elif a > 180.0:
        a -= 360.0
    return a


def mid(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Midpoint of two points."""
    return (np.asarray(p, dtype=float) + np.asarray(q, dtype=float)) / 2.0


def phi(frame: Frame, p_post: np.ndarray, p_ant: np.ndarray) -> float:
    """Inclination of the line drawn posterior→anterior; + when the anterior end is higher."""
    a, s = frame.comp(np.asarray(p_ant, dtype=float) - np.asarray(p_post, dtype=float))
    return math.degrees(math.atan2(s, a))


def lord(phi_upper: float, phi_lower: float) -> float:
    """Signed angle between an upper and a lower line; + = lordosis (converge posteriorly)."""
    return wrap180(phi_upper - phi_lower)


def kyph(phi_upper: float, phi_lower: float) -> float:
    """Signed angle between an upper and a lower line; + = kyphosis."""
    return -lord(phi_upper, phi_lower)


def slope(frame: Frame, p_post: np.ndarray, p_ant: np.ndarray) -> float:
    """Slope of an endplate against the horizontal; + when the anterior end is lower."""
    return -phi(frame, p_post, p_ant)


def vtilt(frame: Frame, origin: np.ndarray, target: np.ndarray) -> float:
    """Angle of the ray origin→target from the vertical; + when target is anterior to origin."""
    a, s = frame.comp(np.asarray(target, dtype=float) - np.asarray(origin, dtype=float))
    return math.degrees(math.atan2(a, s))


def offset(frame: Frame, p: np.ndarray, ref: np.ndarray) -> float:
    """a-component of ``p - ref``: + when ``p`` is anterior to ``ref`` (plumb-line offsets)."""
    return frame.comp(np.asarray(p, dtype=float) - np.asarray(ref, dtype=float))[0]


def height(frame: Frame, p: np.ndarray, ref: np.ndarray) -> float:
    """s-component of ``p - ref``: + when ``p`` is higher (toward the head) than ``ref``."""
    return frame.comp(np.asarray(p, dtype=float) - np.asarray(ref, dtype=float))[1]


def unsigned_angle(vertex: np.ndarray, p: np.ndarray, q: np.ndarray) -> float:
    """Unsigned angle at ``vertex`` between rays vertex→p and vertex→q, in [0, 180]."""
    u = np.asarray(p, dtype=float) - np.asarray(vertex, dtype=float)
    w = np.asarray(q, dtype=float) - np.asarray(vertex, dtype=float)
    cross = u[0] * w[1] - u[1] * w[0]
    return math.degrees(math.atan2(abs(cross), float(u @ w)))
