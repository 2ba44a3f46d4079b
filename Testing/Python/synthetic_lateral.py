"""Synthetic lateral radiographs with exact landmarks (a test tool; never a clinical model or its data).

A parametric spine is built in the anatomical plane of definitions.md §1.1 (``a`` toward the
patient's front, ``s`` toward the head, millimetres) and drawn as an X-ray projection:
vertebral bodies C2..L5 with cortical rims and end plates, the dens, posterior elements, discs,
the sacrum (S1 body and end plate), two slightly offset femoral heads, the skull base (hard palate
ending at ``PNS``, occipital curve whose lowest point is ``OCC``), a broad soft-tissue silhouette
with the lungs, then film blur, gamma and noise.

The curve is controlled by :class:`Pose` (pelvic incidence and tilt, lumbar lordosis, thoracic
kyphosis, cervical lordosis, C0-C2 angle, Redlund-Johnell distance). Each region's angle is shared
among its discs and vertebral wedges so that the region's endplate-to-endplate angle is exactly the
requested one; :func:`expected_parameters` gives the values definitions.md predicts from the
generator's own parameters (sums of the pieces), not from the drawn landmarks.

Landmarks follow protocols.md: corners ``AS/PS/AI/PI`` are anatomical (a film facing the other way
keeps its names), a body centre (``L3c``, ``S1c``) is the mean of the body's four corners, ``OD`` is
the centre of the dens and ``DENS`` its tip, ``FH_1``/``FH_2`` the femoral-head centres. Crops and
the shoulder shadow hide landmarks: a hidden landmark is absent from the labels, never invented.

Public functions: :func:`lateral_film` (one film), :func:`lumbar_pair` (a flexion and an extension
film of one "patient" with known IROM and ΔST), :func:`write_dataset` (a dataset folder in the project's
dataset format, written by ``io.dataset.write_labelled_image``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from SpineAlignmentLib.protocols import get_protocol

CERVICAL = tuple(f"C{i}" for i in range(2, 8))
THORACIC = tuple(f"T{i}" for i in range(1, 13))
LUMBAR = tuple(f"L{i}" for i in range(1, 6))
CHAIN = CERVICAL + THORACIC + LUMBAR  # top to bottom; the disc of a vertebra is the one below it
LEVELS = tuple(zip(LUMBAR, LUMBAR[1:] + ("S1",)))  # lumbar-dynamic levels (upper, lower)
CORNERS = ("AS", "PS", "AI", "PI")

#: Films' default (rows, cols) per protocol.
DEFAULT_SHAPE = {"sagittal-whole-spine": (512, 256), "cervical-lateral": (320, 256), "lumbar-dynamic": (320, 256)}
#: Crops each protocol accepts (the first is the one :func:`write_dataset` draws): ``femoral_heads`` ends the film
#: above the femoral-head centres, ``c7`` ends the film just above C7's upper end plate (C7 and T1 cut off),
#: ``t10`` starts the film just above T10 (only T10..S1 and the femoral heads in view: a film showing part of
#: the spine, for measuring level naming).
CROPS = {"sagittal-whole-spine": ("femoral_heads", "t10"), "cervical-lateral": ("c7",), "lumbar-dynamic": ("femoral_heads",)}
#: Crops that cut the top of the film (the others cut its bottom).
TOP_CROPS = ("t10",)
#: Calibration label written with a spacing: the generator knows its spacing exactly (definitions.md §7.4 manual:<where>).
CALIBRATION = "manual:synthetic"


def _dir(deg: float) -> np.ndarray:
    """Unit vector at inclination ``deg`` in the (a, s) plane (definitions.md ``phi``: + anterior end higher)."""
    r = math.radians(deg)
    return np.array([math.cos(r), math.sin(r)])


def _up(deg: float) -> np.ndarray:
    return _dir(deg + 90.0)


def _spread(total: float, weights, rng: np.random.Generator, jitter: float = 0.3) -> np.ndarray:
    """``total`` shared among pieces in proportion to jittered positive ``weights`` (the sum stays exact)."""
    w = np.asarray(weights, float) * rng.uniform(1 - jitter, 1 + jitter, len(weights))
    return total * w / w.sum()


@dataclass(frozen=True)
class Pose:
    """The sagittal curve (degrees, signs of definitions.md §1.4; ``None`` draws a plausible random value).

    Attributes:
        PI, PT: pelvic incidence and tilt (SS = PI - PT).
        LL: lord(L1 superior, S1 superior).
        TK: global thoracic kyphosis kyph(T1 superior, T12 inferior) (GTK).
        CL: cervical lordosis lord(C2 inferior, C7 inferior).
        TL, CT: the T12-L1 and C7-T1 disc angles (lord, + lordotic).
        C0C2: lord(McGregor line OCC->PNS, C2 inferior).
        RJD: Redlund-Johnell distance in mm (C2 inferior-endplate midpoint below McGregor's line).
        ST: static translation (method A, mm) of every lumbar level; ``None`` draws a small one per level.
    """

    PI: float | None = None
    PT: float | None = None
    LL: float | None = None
    TK: float | None = None
    CL: float | None = None
    TL: float | None = None
    CT: float | None = None
    C0C2: float | None = None
    RJD: float | None = None
    ST: float | None = None


@dataclass
class Anatomy:
    """One synthetic patient: sizes (mm) and the piecewise curve (degrees) of :class:`Pose`.

    ``wedge[v]`` = lord(v superior, v inferior) (+ anterior taller); ``disc[v]`` = lord(v inferior, next
    lower superior) for the disc below ``v`` (``disc["L5"]`` is L5-S1); ``st[v]`` the translation (method A)
    of ``v`` over the vertebra below, mm, + anterior.
    """

    PI: float
    PT: float
    depth: dict[str, float]
    height: dict[str, float]
    disc_height: dict[str, float]
    wedge: dict[str, float]
    disc: dict[str, float]
    st: dict[str, float]
    s1_depth: float
    pelvic_radius: float
    fh_offset: np.ndarray
    fh_radius: float
    dens_height: float
    c0c2: float
    rjd: float
    pns_anterior: float
    occ_posterior: float
    trunk: dict[str, float] = field(default_factory=dict)

    @property
    def SS(self) -> float:
        return self.PI - self.PT


def sample_anatomy(rng: np.random.Generator, pose: Pose | None = None) -> Anatomy:
    """A random plausible patient; every field of ``pose`` that is set is honoured exactly."""
    p = pose or Pose()
    u = rng.uniform

    def pick(v, lo, hi):
        return float(v) if v is not None else float(u(lo, hi))

    PI = pick(p.PI, 40, 65)
    PT = pick(p.PT, 5, 25)
    LL = pick(p.LL, max(20.0, PI - 10), min(75.0, PI + 12))
    TK = pick(p.TK, 20, 55)
    CL = pick(p.CL, -5, 25)
    scale = u(0.9, 1.1)
    depth, height, dh = {}, {}, {}
    for k, v in enumerate(CHAIN):
        jit = u(0.95, 1.05)
        if v in CERVICAL:
            d, h, g = 16 + 0.4 * k, (21.0 if v == "C2" else 13.5), 5.0
        elif v in THORACIC:
            i = THORACIC.index(v)
            d, h, g = 20 + 1.1 * i, 17 + 0.55 * i, 4.0 + 0.15 * i
        else:
            i = LUMBAR.index(v)
            d, h, g = 36 + 1.0 * i, 26 + 0.3 * i, 9.0 + 0.7 * i
        depth[v], height[v], dh[v] = d * scale * jit, h * scale * jit, g * scale * u(0.9, 1.1)
    wedge: dict[str, float] = {}
    disc: dict[str, float] = {}
    lum = _spread(LL, [1.0, 1.3, 1.7, 2.3, 2.8, 0.2, 0.3, 0.5, 0.8, 1.4], rng)
    for i, v in enumerate(LUMBAR):
        disc[v], wedge[v] = float(lum[i]), float(lum[5 + i])
    bump = 0.5 + np.sin(np.pi * (np.arange(12) + 0.5) / 12)
    tho = _spread(-TK, np.concatenate([bump, 0.4 * bump[:11]]), rng)
    for i, v in enumerate(THORACIC):
        wedge[v] = float(tho[i])
        if i < 11:
            disc[v] = float(tho[12 + i])
    cer = _spread(CL, [1.0, 1.0, 1.1, 1.2, 1.2, 0.2, 0.2, 0.2, 0.2, 0.3], rng)
    for i, v in enumerate(CERVICAL[:5]):
        disc[v] = float(cer[i])
        wedge[CERVICAL[i + 1]] = float(cer[5 + i])
    disc["T12"] = pick(p.TL, -3, 3)
    disc["C7"] = pick(p.CT, -3, 3)
    wedge["C2"] = float(u(-2, 2))
    st = {v: (float(p.ST) if p.ST is not None else float(u(-1.0, 1.5))) for v in LUMBAR}
    return Anatomy(
        PI=PI, PT=PT, depth=depth, height=height, disc_height=dh, wedge=wedge, disc=disc, st=st,
        s1_depth=42 * scale * u(0.95, 1.05), pelvic_radius=u(95, 125) * scale,
        fh_offset=np.array([u(-6, 6), u(-5, 5)]) * scale, fh_radius=u(21, 25) * scale,
        dens_height=u(12, 16) * scale, c0c2=pick(p.C0C2, 8, 25), rjd=pick(p.RJD, 36, 46),
        pns_anterior=u(20, 32) * scale, occ_posterior=u(45, 60) * scale,
        trunk={"neck_ant": u(40, 55), "neck_post": u(55, 75), "chest_ant": u(120, 170), "back": u(50, 75),
               "belly_ant": u(130, 200), "pelvis_post": u(80, 110)},
    )


def expected_parameters(an: Anatomy) -> dict[str, float]:
    """What definitions.md gives on this patient, from the generator's own pieces (not from landmarks).

    Angles in degrees; ``RJD`` and the lumbar ``ST_*`` in mm; ``SA_*``/``ST_*``/``ST_pct_*`` per lumbar level.
    """
    w, d = an.wedge, an.disc

    def lordosis(wedges, discs):
        return sum(w[v] for v in wedges) + sum(d[v] for v in discs)

    LL = lordosis(LUMBAR, LUMBAR)
    GTK = -lordosis(THORACIC, THORACIC[:11])
    T1S = an.SS - LL - d["T12"] + GTK  # T1 superior end plate's inclination, accumulated from the sacrum
    out = {
        "PI": an.PI, "PT": an.PT, "SS": an.SS, "LL": LL,
        "L4SL": lordosis(("L4", "L5"), ("L4", "L5")),
        "GTK": GTK,
        "PTK": -lordosis(THORACIC[:5], THORACIC[:4]),
        "MTK": -lordosis(THORACIC[4:], THORACIC[4:11]),
        "CL": lordosis(CERVICAL[1:], CERVICAL[:5]), "C2C7": lordosis(CERVICAL[1:], CERVICAL[:5]),
        "C2C6": lordosis(CERVICAL[1:5], CERVICAL[:4]),
        "T1S": T1S, "C7S": T1S - d["C7"] - w["C7"],
        "C0C2": an.c0c2, "RJD": an.rjd,
    }
    for upper, lower in LEVELS:
        lv = upper + lower
        depth = an.s1_depth if lower == "S1" else an.depth[lower]
        out[f"SA_{lv}"] = d[upper]
        out[f"ST_{lv}"] = an.st[upper]
        out[f"ST_pct_{lv}"] = 100.0 * an.st[upper] / depth
    return out


# ------------------------------------------------------------------ the skeleton in (a, s) mm
def skeleton(an: Anatomy) -> tuple[dict[str, np.ndarray], list[tuple]]:
    """Every landmark (a, s) in mm (S1 end-plate midpoint at the origin) and the shapes to draw.

    Shapes: ``("poly", vertices, value, rim_mm, rim_value)`` convex polygons (counter-clockwise in (a, s)),
    ``("disk", centre, (ra, rs), angle_deg, value, rim_mm, rim_value)`` ellipses; values are attenuations.
    """
    pts: dict[str, np.ndarray] = {}
    shapes: list[tuple] = []
    phi = -an.SS
    e = _dir(phi)
    pts["S1_PS"], pts["S1_AS"] = -an.s1_depth / 2 * e, an.s1_depth / 2 * e
    # S1 body below its end plate, then the rest of the sacrum tapering posteroinferiorly
    s1_h = 28.0 * an.s1_depth / 42
    down = -_up(phi)
    pts["S1_PI"] = pts["S1_PS"] + down * s1_h + e * 4.0
    pts["S1_AI"] = pts["S1_AS"] + down * s1_h - e * 6.0
    pts["S1c"] = np.mean([pts[f"S1_{c}"] for c in CORNERS], axis=0)
    shapes.append(("poly", [pts["S1_PI"], pts["S1_AI"], pts["S1_AS"], pts["S1_PS"]], 0.30, 1.6, 0.75))
    tail = [pts["S1_PI"] + e * 2, pts["S1_AI"] - e * 2,
            pts["S1_AI"] + _dir(phi - 115) * 70, pts["S1_PI"] + _dir(phi - 100) * 75]
    shapes.append(("poly", [tail[0], tail[3], tail[2], tail[1]][::-1], 0.22, 1.2, 0.45))
    # hip axis from PT (PT = -vtilt(HA, S1m)): S1m = HA + R (-sin PT, cos PT)
    ha = -an.pelvic_radius * np.array([-math.sin(math.radians(an.PT)), math.cos(math.radians(an.PT))])
    pts["FH_1"], pts["FH_2"] = ha + an.fh_offset / 2, ha - an.fh_offset / 2
    shapes.append(("disk", ha + np.array([-10.0, 35.0]), (75.0, 95.0), 0.0, 0.12, 0.0, 0.0))  # ilium
    for k in ("FH_1", "FH_2"):
        shapes.append(("disk", pts[k], (an.fh_radius, an.fh_radius), 0.0, 0.22, 1.8, 0.55))
        neck = pts[k] + np.array([-8.0, -an.fh_radius * 0.9])
        shapes.append(("disk", neck + np.array([0.0, -60.0]), (16.0, 80.0), 8.0, 0.20, 2.0, 0.5))  # femur
    # the vertebral chain, from L5 up to C2
    low_mid, low_phi, low_depth = np.zeros(2), phi, an.s1_depth
    low_ps = pts["S1_PS"]
    for v in reversed(CHAIN):
        dv, D, H = an.disc[v], an.depth[v], an.height[v]
        phi_inf = low_phi + dv
        m_inf = low_mid + an.disc_height[v] * _up(low_phi + dv / 2)
        if v in LUMBAR:  # translation (method A) exactly st[v]: shift along the lower end plate
            e_low = _dir(low_phi)
            t0 = float((m_inf - D / 2 * _dir(phi_inf) - low_ps) @ e_low)
            m_inf = m_inf + (an.st[v] - t0) * e_low
        phi_sup = phi_inf + an.wedge[v]
        m_sup = m_inf + H * _up(phi_inf + an.wedge[v] / 2)
        ei, es = _dir(phi_inf), _dir(phi_sup)
        c = {"PI": m_inf - D / 2 * ei, "AI": m_inf + D / 2 * ei, "PS": m_sup - D / 2 * es, "AS": m_sup + D / 2 * es}
        for k, p in c.items():
            pts[f"{v}_{k}"] = p
        pts[f"{v}c"] = np.mean(list(c.values()), axis=0)
        # disc (soft tissue a little denser than its surroundings) between this body and the one below
        shapes.append(("poly", [low_ps, low_ps + low_depth * _dir(low_phi), c["AI"], c["PI"]], 0.04, 0.0, 0.0))
        shapes.append(("poly", [c["PI"], c["AI"], c["AS"], c["PS"]], 0.28, 1.4 if v in CERVICAL else 1.8, 0.75))
        # posterior elements: pedicles, lamina and spinous process pointing back (and down in the thorax)
        back = _dir(phi_inf + 180 + (25 if v in THORACIC else 8))
        pm = (c["PI"] + c["PS"]) / 2
        span = 1.4 * D if v not in CERVICAL else 1.7 * D
        shapes.append(("poly", [c["PS"] + 0.1 * (c["PI"] - c["PS"]), c["PI"] - 0.1 * (c["PI"] - c["PS"]),
                                pm + back * span - _up(phi_inf) * 0.12 * H, pm + back * span + _up(phi_inf) * 0.12 * H],
                       0.16, 1.0, 0.35))
        low_mid, low_phi, low_depth, low_ps = m_sup, phi_sup, D, c["PS"]
    # dens on C2: a peg from the superior end plate; OD its centre, DENS its tip
    phi_c2 = low_phi
    base = low_mid - 0.12 * an.depth["C2"] * _dir(phi_c2)
    n = _up(phi_c2)
    pts["OD"] = base + n * an.dens_height / 2
    pts["DENS"] = base + n * an.dens_height
    shapes.append(("disk", pts["OD"], (0.24 * an.depth["C2"], an.dens_height / 2), phi_c2, 0.28, 1.2, 0.7))
    # skull base: McGregor line at C0C2 from the C2 inferior end plate, RJD above the end plate's midpoint
    phi_m = phi_c2 - an.wedge["C2"] + an.c0c2
    em, nm = _dir(phi_m), _up(phi_m)
    q = (pts["C2_PI"] + pts["C2_AI"]) / 2 + an.rjd * nm
    pts["PNS"] = q + an.pns_anterior * em
    pts["OCC"] = q - an.occ_posterior * em
    shapes.append(("disk", q + 45 * nm + 5 * em, (100.0, 80.0), phi_m, 0.30, 6.0, 0.45))  # cranium
    palate = [pts["PNS"] - 3.5 * nm, pts["PNS"] + 45 * em - 2.5 * nm, pts["PNS"] + 45 * em + 2.5 * nm,
              pts["PNS"] + 3.5 * nm]
    shapes.append(("poly", palate, 0.45, 0.0, 0.0))
    shapes.append(("ring", pts["OCC"] + np.array([0.0, 30.0]), 30.0, 6.0, 0.6, -10.0))  # occipital curve
    shapes.append(("disk", pts["OD"] + 0.95 * an.depth["C2"] * _dir(phi_c2) + 2 * n, (4.0, 6.0), phi_c2,
                   0.3, 1.0, 0.6))  # atlas anterior arch
    return pts, shapes


# ------------------------------------------------------------------ drawing
class _Canvas:
    """An attenuation image whose pixel (row i, col j) has its centre at (a, s) = (a0 + (j+.5) cs, s0 - (i+.5) rs)."""

    def __init__(self, shape, a0, s0, rs, cs):
        self.acc = np.zeros(shape, np.float32)
        self.a0, self.s0, self.rs, self.cs = a0, s0, rs, cs
        self.aa = 0.5 * (rs + cs)  # edge softening: one pixel

    def window(self, lo: np.ndarray, hi: np.ndarray, pad: float = 2.0):
        """Row/col slices covering the (a, s) box [lo, hi] and the pixel centres' coordinates, or None."""
        rows, cols = self.acc.shape
        j0 = max(int(math.floor((lo[0] - self.a0) / self.cs - pad)), 0)
        j1 = min(int(math.ceil((hi[0] - self.a0) / self.cs + pad)), cols)
        i0 = max(int(math.floor((self.s0 - hi[1]) / self.rs - pad)), 0)
        i1 = min(int(math.ceil((self.s0 - lo[1]) / self.rs + pad)), rows)
        if i0 >= i1 or j0 >= j1:
            return None
        a = (self.a0 + (np.arange(j0, j1) + 0.5) * self.cs).astype(np.float32)
        s = (self.s0 - (np.arange(i0, i1) + 0.5) * self.rs).astype(np.float32)
        return (slice(i0, i1), slice(j0, j1)), a[None, :], s[:, None]

    def _paint(self, win, dist, value, rim, rim_value):
        cov = np.clip(dist * (1.0 / self.aa) + 0.5, 0.0, 1.0)
        if rim > 0:
            band = np.clip((rim - dist) * (1.0 / self.aa) + 0.5, 0.0, 1.0)
            cov *= value + (rim_value - value) * band
            self.acc[win] += cov
        else:
            self.acc[win] += value * cov

    def poly(self, verts, value, rim=0.0, rim_value=0.0):
        v = np.asarray(verts, float)
        nxt = np.concatenate([v[1:], v[:1]])
        if np.sum(v[:, 0] * nxt[:, 1] - nxt[:, 0] * v[:, 1]) < 0:  # clockwise: reverse
            v = v[::-1]
            nxt = np.concatenate([v[1:], v[:1]])
        got = self.window(v.min(0), v.max(0))
        if got is None:
            return
        win, a, s = got
        d = nxt - v
        ln = np.hypot(d[:, 0], d[:, 1])
        ok = ln > 0
        nx, ny = -d[ok, 1] / ln[ok], d[ok, 0] / ln[ok]  # left normals: inside is positive
        c = -(v[ok, 0] * nx + v[ok, 1] * ny)
        dist = (nx[:, None, None] * a[None] + ny[:, None, None] * s[None] + c[:, None, None]).min(axis=0)
        self._paint(win, dist, value, rim, rim_value)

    def disk(self, centre, radii, angle, value, rim=0.0, rim_value=0.0):
        ra, rb = radii
        r = max(ra, rb)
        got = self.window(np.asarray(centre) - r, np.asarray(centre) + r)
        if got is None:
            return
        win, a, s = got
        e, n = _dir(angle), _up(angle)
        u = (a - centre[0]) * e[0] + (s - centre[1]) * e[1]
        w = (a - centre[0]) * n[0] + (s - centre[1]) * n[1]
        rho = np.sqrt((u / ra) ** 2 + (w / rb) ** 2)
        self._paint(win, (1.0 - rho) * min(ra, rb), value, rim, rim_value)

    def ring(self, centre, radius, thickness, value, max_a):
        """The part of an annulus (outer ``radius``, ``thickness`` mm) where ``a < centre_a + max_a``."""
        c = np.asarray(centre, float)
        got = self.window(c - radius, c + radius)
        if got is None:
            return
        win, a, s = got
        r = np.hypot(a - c[0], s - c[1])
        dist = np.minimum(np.minimum(radius - r, r - (radius - thickness)), (c[0] + max_a) - a)
        self._paint(win, dist, value, 0.0, 0.0)


def _trunk(cv: _Canvas, pts: dict[str, np.ndarray], an: Anatomy, rng: np.random.Generator) -> None:
    """Soft tissue: a body silhouette around the spine (neck, chest with lungs, belly, pelvis and thighs)."""
    t = an.trunk
    names = [f"{v}c" for v in CHAIN] + ["S1c"]
    s_c = np.array([pts[k][1] for k in names])
    a_c = np.array([pts[k][0] for k in names])
    rows = cv.acc.shape[0]
    s = cv.s0 - (np.arange(rows) + 0.5) * cv.rs
    order = np.argsort(s_c)
    ac = np.interp(s, s_c[order], a_c[order])
    knots = [pts["FH_1"][1] - 200, pts["S1c"][1], pts["L3c"][1], pts["T12c"][1], pts["T6c"][1], pts["T1c"][1],
             pts["C5c"][1], pts["C2c"][1] + 10]
    ant = np.interp(s, knots, [t["belly_ant"] * 0.9, t["belly_ant"], t["belly_ant"], t["chest_ant"] * 1.05,
                               t["chest_ant"], t["chest_ant"] * 0.8, t["neck_ant"], t["neck_ant"]], left=0, right=0)
    post = np.interp(s, knots, [t["pelvis_post"], t["pelvis_post"], t["back"], t["back"], t["back"] * 1.1,
                                t["back"], t["neck_post"], t["neck_post"]], left=0, right=0)
    dens_ = np.interp(s, knots, [0.75, 0.7, 0.55, 0.4, 0.32, 0.45, 0.25, 0.25], left=0, right=0)
    a = (cv.a0 + (np.arange(cv.acc.shape[1]) + 0.5) * cv.cs).astype(np.float32)
    rel = a[None, :] - ac.astype(np.float32)[:, None]
    soft = 8.0  # mm of skin roll-off
    inside = np.clip((ant.astype(np.float32)[:, None] - rel) * (1 / soft), 0, 1)
    inside *= np.clip((rel + post.astype(np.float32)[:, None]) * (1 / soft), 0, 1)
    inside *= dens_.astype(np.float32)[:, None]
    cv.acc += inside
    # lungs: less attenuation in front of the thoracic spine
    lung = np.flatnonzero((s < pts["T1c"][1] + 10) & (s > pts["T11c"][1]))
    if lung.size:
        r = rel[lung]
        front = np.clip((r - 25.0) * 0.1, 0, 1) * np.clip((ant[lung, None].astype(np.float32) * 0.85 - r) * (1 / 15), 0, 1)
        cv.acc[lung] -= 0.18 * front


def _frame(protocol: str, pts: dict[str, np.ndarray], crop: str | None, rng: np.random.Generator):
    """(s_top, s_bottom, ids kept horizontally in view) of the film's field of view in mm."""
    u = rng.uniform
    ids = get_protocol(protocol).landmark_ids
    if protocol == "sagittal-whole-spine":
        top = pts["OD"][1] + u(50, 100)
        bottom = min(pts["FH_1"][1], pts["FH_2"][1]) - u(40, 80)
        if crop == "femoral_heads":
            s1_low = min(pts["S1_AS"][1], pts["S1_PS"][1])
            bottom = min(max(pts["FH_1"][1], pts["FH_2"][1]) + u(3, 15), s1_low - 5)
        elif crop == "t10":
            top = max(pts["T10_AS"][1], pts["T10_PS"][1]) + u(3, 8)
    elif protocol == "cervical-lateral":
        top = max(pts["PNS"][1], pts["OCC"][1]) + u(25, 55)
        bottom = min(pts["T1_AS"][1], pts["T1_PS"][1]) - u(20, 45)
        if crop == "c7":
            bottom = max(pts["C7_AS"][1], pts["C7_PS"][1]) + u(0.5, 1.5)
    else:
        top = max(pts["L1_AS"][1], pts["L1_PS"][1]) + u(25, 55)
        bottom = min(pts["S1c"][1], pts["FH_1"][1] + 20) - u(25, 60)
        if crop == "femoral_heads":
            bottom = max(pts["FH_1"][1], pts["FH_2"][1]) + u(3, 10)
            bottom = min(bottom, min(pts["S1_AI"][1], pts["S1_PI"][1]) - 3)
    keep = [k for k in ids if k in pts and bottom < pts[k][1] < top]
    return top, bottom, keep


@dataclass(frozen=True)
class Film:
    """Film-level settings: blur (pixels), gamma, noise (fraction of full scale), heel-effect gradient."""

    blur: float = 0.8
    gamma: float = 1.0
    noise: float = 0.02
    heel: float = 0.0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Film":
        return cls(blur=float(rng.uniform(0.4, 1.2)), gamma=float(rng.uniform(0.8, 1.25)),
                   noise=float(rng.uniform(0.01, 0.03)), heel=float(rng.uniform(-0.1, 0.1)))


def render(an: Anatomy, protocol: str, rng: np.random.Generator, *, shape: tuple[int, int] | None = None,
           facing: int = 1, crop: str | None = None, hide: tuple[str, ...] = (), aspect: float = 1.0,
           film: Film | None = None):
    """One film of an :class:`Anatomy`: ``(image uint8 (rows, cols), landmarks {ID: (x, y)}, metadata)``.

    Args:
        facing: +1 anterior toward the image right, -1 toward the left (the film is drawn facing right and
            mirrored, so the two films of one seed are exact mirror images with the same landmark names).
        crop: ``None`` or one of :data:`CROPS` for the protocol (the film's edge hides landmarks).
        hide: vertebrae (e.g. ``("C7", "T1")``) covered by a dense shoulder shadow; their landmarks are dropped.
        aspect: column spacing / row spacing (anisotropic pixels; angles stay exact in mm).
    """
    proto = get_protocol(protocol)
    if crop is not None and crop not in CROPS[protocol]:
        raise ValueError(f"crop {crop!r} is not offered for {protocol}; use one of {CROPS[protocol]}")
    if facing not in (1, -1):
        raise ValueError("facing must be +1 (anterior to the image right) or -1")
    rows, cols = shape or DEFAULT_SHAPE[protocol]
    film = film or Film.sample(rng)
    pts, shapes = skeleton(an)
    top, bottom, keep = _frame(protocol, pts, crop, rng)
    rs = (top - bottom) / rows
    cs = rs * aspect
    a_ids = [pts[k][0] for k in keep]
    lo, hi = min(a_ids), max(a_ids)
    margin = 12.0
    if (hi - lo) + 2 * margin > cols * cs:  # widen the field of view (zoom out) to keep every landmark in view
        f = ((hi - lo) + 2 * margin) / (cols * cs)
        rs, cs = rs * f, cs * f
        # a crop keeps the edge it cuts; otherwise the taller field of view stays centred
        if crop in TOP_CROPS:
            bottom = top - rows * rs
        else:
            top = bottom + rows * rs if crop else top + (rows * rs - (top - bottom)) / 2
    slack = cols * cs - (hi - lo) - 2 * margin
    a0 = lo - margin - rng.uniform(0.2, 0.8) * slack
    cv = _Canvas((rows, cols), a0, top, rs, cs)
    _trunk(cv, pts, an, rng)
    for sh in shapes:
        getattr(cv, sh[0])(*sh[1:])
    for v in hide:  # shoulders: a broad dense shadow across the vertebra (soft-edged: a stack of ellipses)
        c = pts[f"{v}c"] + np.array([10.0, 0.0])
        ra, rb = 70.0, 1.4 * (an.height[v] + an.disc_height[v])
        for k in range(4):
            cv.disk(c, (ra * (1 + 0.25 * k), rb * (1 + 0.1 * k)), 0.0, 0.7, 0.0, 0.0)
    img = 1.0 - np.exp(-cv.acc.astype(np.float32))
    img = gaussian_filter(img, film.blur, mode="nearest")
    np.clip(img, 0, 1, out=img)
    img **= np.float32(film.gamma)
    img *= (255.0 * (1.0 + film.heel * np.linspace(-1, 1, rows, dtype=np.float32)))[:, None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(255.0 * film.noise) + np.float32(0.5)
    image = np.clip(img, 0, 255).astype(np.uint8)
    hidden_ids = {k for v in hide for k in pts if k.startswith(f"{v}_") or k == f"{v}c"}
    landmarks: dict[str, tuple[float, float]] = {}
    absent: dict[str, str] = {}
    every: dict[str, tuple[float, float]] = {}
    for k, (a, s) in pts.items():
        x, y = (a - a0) / cs - 0.5, (top - s) / rs - 0.5
        every[k] = (float(cols - 1 - x if facing < 0 else x), float(y))
    for k in proto.landmark_ids:
        x, y = every[k]
        if not (-0.5 <= x <= cols - 0.5 and -0.5 <= y <= rows - 0.5):
            absent[k] = "outside the film"
        elif k in hidden_ids:
            absent[k] = "hidden by the shoulder shadow"
        else:
            landmarks[k] = (float(x), float(y))
    if facing < 0:
        image = np.ascontiguousarray(image[:, ::-1])
    meta = {
        "protocol": protocol,
        "facing": "image-right" if facing > 0 else "image-left",
        "patient_orientation": ("A" if facing > 0 else "P", "F"),
        "spacing_mm": (float(rs), float(cs)),
        "image_size": (rows, cols),
        "crop": crop, "hide": tuple(hide), "absent": absent, "points_px": every,
        "all_landmarks_px": {k: every[k] for k in proto.landmark_ids},
        "expected": expected_parameters(an),
        "world_mm": {k: (float(p[0]), float(p[1])) for k, p in pts.items()},
        "film": film,
    }
    return image, landmarks, meta


def lateral_film(protocol: str, seed: int | np.random.Generator = 0, *, pose: Pose | None = None,
                 shape: tuple[int, int] | None = None, facing: int | None = None, crop: str | None = None,
                 hide: tuple[str, ...] = (), aspect: float = 1.0, film: Film | None = None):
    """One synthetic film of ``protocol`` (``sagittal-whole-spine`` or ``cervical-lateral``; a single
    ``lumbar-dynamic`` view is allowed too): ``(image uint8, landmarks {ID: (x, y)} pixels, metadata)``.

    Deterministic from ``seed``; ``facing=None`` draws the direction. See :func:`render` for the options.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    an = sample_anatomy(rng, pose)
    f = facing if facing is not None else int(rng.choice([-1, 1]))
    return render(an, protocol, rng, shape=shape, facing=f, crop=crop, hide=hide, aspect=aspect, film=film)


def motion(an: Anatomy, irom: dict[str, float], dst: dict[str, float], rng: np.random.Generator):
    """Flexion and extension anatomies of one patient with the given IROM (deg) and ΔST (mm) per level.

    Keys of ``irom``/``dst`` are level names ``L1L2``..``L5S1``. The pelvis rotates too (PT changes, PI not).
    """
    frac = rng.uniform(0.5, 0.7)
    flex_disc, ext_disc, flex_st, ext_st = dict(an.disc), dict(an.disc), dict(an.st), dict(an.st)
    for upper, lower in LEVELS:
        lv = upper + lower
        flex_disc[upper] = an.disc[upper] - frac * irom[lv]
        ext_disc[upper] = flex_disc[upper] + irom[lv]
        flex_st[upper] = an.st[upper] + 0.5 * dst[lv]
        ext_st[upper] = flex_st[upper] - dst[lv]
    flex = replace(an, disc=flex_disc, st=flex_st, PT=an.PT - rng.uniform(2, 8))
    ext = replace(an, disc=ext_disc, st=ext_st, PT=an.PT + rng.uniform(2, 8))
    return flex, ext


def lumbar_pair(seed: int | np.random.Generator = 0, *, pose: Pose | None = None,
                irom: dict[str, float] | None = None, dst: dict[str, float] | None = None,
                shape: tuple[int, int] | None = None, facing: int | None = None, crop: str | None = None,
                aspect: float = 1.0):
    """A flexion and an extension film of one patient: ``{"flexion": (image, landmarks, meta), "extension": ...}``.

    Each view's metadata ``expected`` has its ``SA_``/``ST_``/``ST_pct_`` values; the flexion view's also has the
    pair's ``IROM_``, ``dST_`` (mm) and ``dST_pct_`` per level (definitions.md §5).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    an = sample_anatomy(rng, pose)
    irom = irom or {u + l: float(rng.uniform(5, 14)) for u, l in LEVELS}
    dst = dst or {u + l: float(rng.uniform(0.5, 3.0)) for u, l in LEVELS}
    f = facing if facing is not None else int(rng.choice([-1, 1]))
    flex, ext = motion(an, irom, dst, rng)
    out = {"flexion": render(flex, "lumbar-dynamic", rng, shape=shape, facing=f, crop=crop, aspect=aspect),
           "extension": render(ext, "lumbar-dynamic", rng, shape=shape, facing=f, crop=crop, aspect=aspect)}
    ef, ee = out["flexion"][2]["expected"], out["extension"][2]["expected"]
    pair = {}
    for upper, lower in LEVELS:
        lv = upper + lower
        pair[f"IROM_{lv}"] = ee[f"SA_{lv}"] - ef[f"SA_{lv}"]
        pair[f"dST_{lv}"] = ef[f"ST_{lv}"] - ee[f"ST_{lv}"]
        pair[f"dST_pct_{lv}"] = ef[f"ST_pct_{lv}"] - ee[f"ST_pct_{lv}"]
    for role in out:
        out[role][2]["role"] = role
        out[role][2]["pair_expected"] = pair
    return out


# ------------------------------------------------------------------ dataset folders
def write_dataset(folder: str | Path, protocol: str, n: int, seed: int = 0, *, shape: tuple[int, int] | None = None,
                  image_format: str = "png", crop_fraction: float = 0.25, hide_fraction: float = 0.0,
                  facing: int | None = None, metadata: dict | None = None) -> Path:
    """Write ``n`` films (``n`` flexion/extension pairs for ``lumbar-dynamic``) as a dataset folder.

    Written by the project's own writer (:func:`SpineAlignmentLib.io.dataset.write_labelled_image`): per film
    ``<stem>.png`` (pixels only) or ``<stem>.nrrd`` (``image_format="nrrd"``: the spacing in the header and in
    the label file, calibration ``manual:synthetic``) and ``<stem>.json``; ``patients.csv`` and, for lumbar
    pairs, ``pairs.csv``. A fraction of the films is cropped (``crop_fraction``) or has C7/T1 under a shoulder
    shadow (``hide_fraction``; whole-spine and cervical). ``metadata``, when given, receives each film's
    generator metadata by file stem (the exact parameter values, the absent landmarks: what a measurement
    compares with).
    """
    from SpineAlignmentLib.io.dataset import write_labelled_image

    fmt = image_format.lower().lstrip(".")
    if fmt not in ("png", "nrrd"):
        raise ValueError(f"image_format must be png or nrrd, got {image_format!r}")
    folder = Path(folder)
    rng = np.random.default_rng(seed)

    def save(stem, image, lms, meta, patient, role=None):
        spacing = meta["spacing_mm"] if fmt == "nrrd" else None
        write_labelled_image(folder, image, lms, protocol, name=stem, spacing_mm=spacing,
                             calibration=CALIBRATION if spacing else None, patient=patient,
                             pair=patient if role else None, role=role)
        if metadata is not None:
            metadata[stem] = meta

    for i in range(n):
        crop = CROPS[protocol][0] if rng.uniform() < crop_fraction else None
        f = facing if facing is not None else int(rng.choice([-1, 1]))
        patient = f"SYN{i:04d}"
        if protocol == "lumbar-dynamic":
            views = lumbar_pair(rng, shape=shape, facing=f, crop=crop)
            for role in ("flexion", "extension"):
                save(f"{patient}_{role[:4]}", *views[role], patient, role)
        else:
            hide = ("C7", "T1") if rng.uniform() < hide_fraction and crop is None else ()
            save(patient, *lateral_film(protocol, rng, shape=shape, facing=f, crop=crop, hide=hide), patient)
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python Testing/Python/synthetic_lateral.py OUT --protocol P [--n N] [--seed S] [--format nrrd]``."""
    import argparse

    ap = argparse.ArgumentParser(description="Write a synthetic lateral dataset folder (a test tool, not clinical data).")
    ap.add_argument("out")
    ap.add_argument("--protocol", required=True, choices=sorted(DEFAULT_SHAPE))
    ap.add_argument("--n", type=int, default=60, help="films (pairs for lumbar-dynamic)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", default="png", choices=("png", "nrrd"))
    ap.add_argument("--size", type=int, nargs=2, metavar=("ROWS", "COLS"), default=None)
    ap.add_argument("--crop-fraction", type=float, default=0.25)
    ap.add_argument("--hide-fraction", type=float, default=0.0)
    args = ap.parse_args(argv)
    folder = write_dataset(args.out, args.protocol, args.n, args.seed, shape=tuple(args.size) if args.size else None,
                           image_format=args.format, crop_fraction=args.crop_fraction, hide_fraction=args.hide_fraction)
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
