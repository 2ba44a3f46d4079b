"""An independent implementation of definitions.md for cross-checks.

Written with complex numbers in the anatomical plane (z = a + i·s), with the
facing direction given rather than inferred, so it shares no code or
formulation with SpineAlignmentLib.geometry.
"""

from __future__ import annotations

import numpy as np


def _deg(z: complex) -> float:
    return float(np.degrees(np.angle(z)))


def _wrap(a: float) -> float:
    return (a + 180.0) % 360.0 - 180.0 if (a + 180.0) % 360.0 != 0 else 180.0


class Plane:
    """Pixels -> complex anatomical coordinates (mm), given facing (+1: anterior = +x) and spacing."""

    def __init__(self, points: dict[str, tuple[float, float]], facing: int, spacing=(1.0, 1.0)):
        r, c = spacing
        self.z = {k: complex(facing * x * c, -y * r) for k, (x, y) in points.items()}

    def __getitem__(self, k: str) -> complex:
        return self.z[k]

    def mean(self, *ks: str) -> complex:
        return sum(self.z[k] for k in ks) / len(ks)


def incl(post: complex, ant: complex) -> float:
    return _deg(ant - post)


def vt(o: complex, t: complex) -> float:
    return _deg(1j * np.conj(t - o))


def sagittal(p: Plane) -> dict[str, float]:
    s1m, ha = (p["S1_AS"] + p["S1_PS"]) / 2, (p["FH_1"] + p["FH_2"]) / 2
    SS = -incl(p["S1_PS"], p["S1_AS"])
    PT = -vt(ha, s1m)
    sup = lambda v: incl(p[f"{v}_PS"], p[f"{v}_AS"])  # noqa: E731
    inf = lambda v: incl(p[f"{v}_PI"], p[f"{v}_AI"])  # noqa: E731
    sacral = incl(p["S1_PS"], p["S1_AS"])
    sfd = (ha - p["S1_PS"]).real
    return {
        "PI": _wrap(_deg((ha - s1m) / ((p["S1_AS"] - p["S1_PS"]) * -1j))),
        "SS": SS, "PT": PT,
        "LL": _wrap(sup("L1") - sacral),
        "SVA": (p["C7c"] - p["S1_PS"]).real,
        "CL": _wrap(inf("C2") - inf("C7")),
        "T1S": -sup("T1"),
        "cSVA": (p["C2c"] - p["C7_PS"]).real,
        "GTK": -_wrap(sup("T1") - inf("T12")),
        "PTK": -_wrap(sup("T1") - inf("T5")),
        "MTK": -_wrap(sup("T5") - inf("T12")),
        "L4SL": _wrap(sup("L4") - sacral),
        "LPA": PT + vt(ha, p["L1c"]),
        "SSA": SS + 90 - vt(s1m, p["C7c"]),
        "GT": PT + vt(s1m, p["C7c"]),
        "TPA": PT + vt(ha, p["T1c"]),
        "Barrey": (p["C7c"] - p["S1_PS"]).real / sfd,
        "OD_HA": vt(ha, p["OD"]),
    }


def cervical(p: Plane) -> dict[str, float]:
    inf = lambda v: incl(p[f"{v}_PI"], p[f"{v}_AI"])  # noqa: E731
    c2c = p.mean(*(f"C2_{c}" for c in ("AS", "PS", "AI", "PI")))
    c7c = p.mean(*(f"C7_{c}" for c in ("AS", "PS", "AI", "PI")))
    mcg = p["PNS"] - p["OCC"]
    c2m = (p["C2_PI"] + p["C2_AI"]) / 2
    # signed distance below the line: imaginary part of the point in the line's own frame
    rel = (c2m - p["OCC"]) / (mcg / abs(mcg))
    t1m = (p["T1_PS"] + p["T1_AS"]) / 2
    ang = abs(_deg((p["OCC"] - p["PNS"]) / (c7c - p["PNS"])))
    return {
        "C2C7": _wrap(inf("C2") - inf("C7")),
        "C2C6": _wrap(inf("C2") - inf("C6")),
        "C0C2": _wrap(incl(p["OCC"], p["PNS"]) - inf("C2")),
        "C7S": -incl(p["C7_PS"], p["C7_AS"]),
        "T1S": -incl(p["T1_PS"], p["T1_AS"]),
        "cSVA": (c2c - p["C7_PS"]).real,
        "RJD": -rel.imag if mcg.real > 0 else rel.imag,
        "CT": vt(t1m, p["DENS"]),
        "CCA": ang,
    }
