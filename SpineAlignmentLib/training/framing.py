"""Film framing changes: crop or pad an AP spine film so that its top and bottom move along the spine.

Unseen films show more neck or more pelvis than the AASCE training images, and
a first stage that learned "the topmost clear vertebra is T1" names such films
a level off. These functions simulate that framing: the film's top row is
moved to a level between C4 and T3 and its bottom row between L4 and below
the sacrum (cropping where the new edge lies inside the film, padding with
the film's darkest value where it lies outside), and the reference corners
follow. They serve the level-confidence calibration
(:mod:`SpineAlignmentLib.training.level_confidence`) and its measurements.

Level positions beyond the labelled T1..L5 are extrapolated along the spine:
a cervical level is taken as :data:`CERVICAL_SPACING` x the T1-T2 centre
distance, the sacrum as :data:`SACRUM_LEVELS` x the L4-L5 distance below L5.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CERVICAL_SPACING", "SACRUM_LEVELS", "level_rows", "reframe", "random_framing"]

#: centre distance of the cervical vertebrae relative to the T1-T2 distance (C7..C4 are smaller than T1)
CERVICAL_SPACING = 0.8
#: how far below the L5 centre the sacrum ends, in L4-L5 centre distances
SACRUM_LEVELS = 4.0


def level_rows(points: np.ndarray) -> dict[str, float]:
    """Row (y, original pixels) of the framing limits for (68, 2) T1..L5 corners.

    Keys: ``C4`` (centre of C4, extrapolated), ``T1``, ``T3``, ``L4``, ``L5`` (centres) and
    ``below_sacrum`` (the sacrum's lower end, extrapolated).
    """
    c = np.asarray(points, dtype=float).reshape(-1, 4, 2).mean(axis=1)[:, 1]
    top, bottom = c[1] - c[0], c[-1] - c[-2]
    return {"C4": float(c[0] - 4 * CERVICAL_SPACING * top), "T1": float(c[0]), "T3": float(c[2]),
            "L4": float(c[-2]), "L5": float(c[-1]), "below_sacrum": float(c[-1] + SACRUM_LEVELS * bottom)}


def reframe(pixels: np.ndarray, points: np.ndarray, top: float, bottom: float) -> tuple[np.ndarray, np.ndarray]:
    """The film with its top row at ``top`` and its bottom row at ``bottom`` (original rows, may lie outside).

    Rows outside the film are padded with its minimum value; the returned
    points are the input points in the new film's pixels (they may lie outside it).
    """
    a = np.asarray(pixels)
    t, b = int(round(top)), int(round(bottom))
    if b <= t:
        raise ValueError(f"framing bottom {bottom} must lie below top {top}")
    out = np.full((b - t + 1, a.shape[1]), a.min(), dtype=a.dtype)
    s0, s1 = max(t, 0), min(b, a.shape[0] - 1)
    if s1 >= s0:
        out[s0 - t:s1 - t + 1] = a[s0:s1 + 1]
    q = np.asarray(points, dtype=float).copy()
    q[:, 1] -= t
    return out, q


def random_framing(points: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """``(top, bottom)`` rows: top uniform between C4 and T3, bottom uniform between L4 and below the sacrum."""
    r = level_rows(points)
    return float(rng.uniform(r["C4"], r["T3"])), float(rng.uniform(r["L4"], r["below_sacrum"]))
