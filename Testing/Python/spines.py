"""Synthetic landmark sets for tests: plausible spines in either facing direction."""

from __future__ import annotations

import numpy as np

from SpineAlignmentLib.protocols import get_protocol

SAGITTAL_VERTEBRAE = [f"C{i}" for i in range(2, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]


def _rot(theta_deg: float) -> np.ndarray:
    t = np.radians(theta_deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def lateral_spine(rng: np.random.Generator, facing: int = +1, jitter: float = 1.0) -> dict[str, np.ndarray]:
    """All corners, centres, S1 and femoral heads of a random lateral spine in pixels.

    Built in an anatomical (a, s) frame, then mapped to image (x, y) with the
    patient facing +x (facing=+1) or -x (facing=-1) and y downwards.
    """
    pts: dict[str, np.ndarray] = {}
    # centre line: from C2 at the top to L5, gentle S-curve in the anterior direction
    n = len(SAGITTAL_VERTEBRAE)
    s_vals = np.linspace(1500, 300, n)
    a_vals = 40 * np.sin(np.linspace(0, 2 * np.pi, n) + rng.uniform(-0.5, 0.5)) + rng.normal(0, 5, n)
    for k, v in enumerate(SAGITTAL_VERTEBRAE):
        c = np.array([a_vals[k], s_vals[k]])
        tilt = rng.uniform(-25, 25)
        hw, hh = rng.uniform(18, 28), rng.uniform(10, 16)
        wedge = rng.uniform(-4, 4)
        sup_dir = _rot(tilt + wedge) @ np.array([1.0, 0.0])
        inf_dir = _rot(tilt - wedge) @ np.array([1.0, 0.0])
        up = _rot(tilt) @ np.array([0.0, 1.0])
        pts[f"{v}_AS"] = c + up * hh + sup_dir * hw
        pts[f"{v}_PS"] = c + up * hh - sup_dir * hw
        pts[f"{v}_AI"] = c - up * hh + inf_dir * hw
        pts[f"{v}_PI"] = c - up * hh - inf_dir * hw
        pts[f"{v}c"] = c + rng.normal(0, jitter, 2)
    ss = np.radians(rng.uniform(20, 55))
    s1ps = np.array([rng.uniform(-60, -20), 260.0])
    width = rng.uniform(35, 50)
    pts["S1_PS"] = s1ps
    pts["S1_AS"] = s1ps + width * np.array([np.cos(ss), -np.sin(ss)])
    ha = s1ps + np.array([rng.uniform(10, 90), -rng.uniform(80, 140)])
    pts["FH_1"] = ha + np.array([rng.uniform(-8, 8), rng.uniform(-8, 8)])
    pts["FH_2"] = 2 * ha - pts["FH_1"]
    pts["OD"] = pts["C2c"] + np.array([rng.uniform(0, 10), rng.uniform(25, 35)])
    # to image pixels: x = x0 + facing * a, y = y0 - s
    return {k: np.array([800.0 + facing * p[0], 1800.0 - p[1]]) for k, p in pts.items()}


def select(points: dict[str, np.ndarray], protocol: str) -> dict[str, tuple[float, float]]:
    ids = get_protocol(protocol).landmark_ids
    return {i: (float(points[i][0]), float(points[i][1])) for i in ids if i in points}


def cervical_spine(rng: np.random.Generator, facing: int = +1) -> dict[str, tuple[float, float]]:
    pts = lateral_spine(rng, facing)
    c2 = pts["C2c"]
    up = np.array([0.0, -1.0])
    ant = np.array([facing, 0.0])
    pts["DENS"] = c2 + up * rng.uniform(30, 40) + ant * rng.uniform(-3, 5)
    pts["PNS"] = c2 + up * rng.uniform(50, 70) + ant * rng.uniform(30, 50)
    pts["OCC"] = c2 + up * rng.uniform(35, 55) - ant * rng.uniform(60, 90)
    return select(pts, "cervical-lateral")


def coronal_spine(thetas: list[float], x0: float = 400.0, y0: float = 100.0, width: float = 40.0,
                  height: float = 22.0, disc: float = 8.0, wedges: list[float] | None = None) -> dict[str, tuple[float, float]]:
    """17 vertebrae T1..L5 stacked along a path; vertebra k tilted by thetas[k] degrees.

    Tilt + means the image-right end is higher (the patient's left when Patient Orientation is L,F).
    Corners are labelled by image side (TL, TR, BL, BR) as in the AASCE data.
    """
    names = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    wedges = wedges or [0.0] * 17
    out: dict[str, tuple[float, float]] = {}
    pos = np.array([x0, y0])
    for k, v in enumerate(names):
        t = np.radians(thetas[k])
        w = np.radians(wedges[k])
        right = lambda a: np.array([np.cos(a), -np.sin(a)])  # noqa: E731 image coords, y down
        down = np.array([np.sin(t), np.cos(t)])
        top_c = pos
        bot_c = pos + down * height
        out[f"{v}_TL"] = tuple(top_c - right(t + w) * width / 2)
        out[f"{v}_TR"] = tuple(top_c + right(t + w) * width / 2)
        out[f"{v}_BL"] = tuple(bot_c - right(t - w) * width / 2)
        out[f"{v}_BR"] = tuple(bot_c + right(t - w) * width / 2)
        pos = bot_c + down * disc
    return {k: (float(a), float(b)) for k, (a, b) in out.items()}
