"""Study 003 — cervical lateral: C2–C7, C2–C6, C0–C2, slopes, cSVA, RJD, CT, CCA (definitions.md §3)."""

from __future__ import annotations

import numpy as np

from .context import Context
from .measurement import Construct, Measurement
from .primitives import mid, offset, slope, unsigned_angle, vtilt
from .sagittal import _dist, _offset_construct, lord_between

CORNERS = ("AS", "PS", "AI", "PI")


def _centroid(ctx: Context, v: str) -> np.ndarray:
    """Vertebral centroid as the mean of the four body corners (definitions.md §1.2)."""
    return ctx.mean_mm(*(f"{v}_{c}" for c in CORNERS))


def c2c7(ctx: Context) -> Measurement:
    return lord_between(ctx, "C2C7", ("C2_PI", "C2_AI"), ("C7_PI", "C7_AI"), ("C2 inferior endplate", "C7 inferior endplate"))


def c2c6(ctx: Context) -> Measurement:
    return lord_between(ctx, "C2C6", ("C2_PI", "C2_AI"), ("C6_PI", "C6_AI"), ("C2 inferior endplate", "C6 inferior endplate"))


def c0c2(ctx: Context) -> Measurement:
    return lord_between(ctx, "C0C2", ("OCC", "PNS"), ("C2_PI", "C2_AI"), ("McGregor line", "C2 inferior endplate"))


def _slope(ctx: Context, pid: str, v: str) -> Measurement:
    p, a = ctx.line(f"{v}_PS", f"{v}_AS")
    return Measurement(pid, slope(ctx.frame, p, a), "deg", (f"{v}_AS", f"{v}_PS"), None,
                       {"convention": "+ anterior edge lower"}, [Construct("line", ctx.pxs(p, a), f"{v} superior endplate")])


def c7s(ctx: Context) -> Measurement:
    return _slope(ctx, "C7S", "C7")


def t1s(ctx: Context) -> Measurement:
    return _slope(ctx, "T1S", "T1")


def csva(ctx: Context) -> Measurement:
    c2, c7 = _centroid(ctx, "C2"), ctx.mm("C7_PS")
    cons = [Construct("point", ctx.pxs(c2), "C2 centroid"), Construct("plumb", ctx.pxs(c2), "C2 plumb line"),
            _offset_construct(ctx, c2, c7, "cSVA")]
    return _dist(ctx, "cSVA", offset(ctx.frame, c2, c7), tuple(f"C2_{c}" for c in CORNERS) + ("C7_PS",), cons,
                 convention="+ C2 anterior", c2_centre="mean of the four C2 corners")


def rjd(ctx: Context) -> Measurement:
    """Perpendicular distance from the C2 inferior-endplate midpoint to McGregor's line, + caudal."""
    occ, pns = ctx.mm("OCC"), ctx.mm("PNS")
    p = mid(ctx.mm("C2_PI"), ctx.mm("C2_AI"))
    d = pns - occ
    length = float(np.hypot(*d))
    if length == 0.0:
        raise ValueError("OCC and PNS coincide, so McGregor's line is undefined")
    d = d / length
    n = np.array([-d[1], d[0]])  # a unit normal; orient it toward the head
    if float(n @ np.asarray(ctx.frame.u_s)) < 0:
        n = -n
    value = -float((p - occ) @ n)
    foot = p + n * value
    cons = [Construct("line", ctx.pxs(occ, pns), "McGregor line"), Construct("point", ctx.pxs(p), "C2 inferior endplate midpoint"),
            Construct("line", ctx.pxs(p, foot), "RJD")]
    return _dist(ctx, "RJD", value, ("OCC", "PNS", "C2_AI", "C2_PI"), cons, convention="+ point caudal to McGregor line")


def ct(ctx: Context) -> Measurement:
    t1m = mid(ctx.mm("T1_PS"), ctx.mm("T1_AS"))
    dens = ctx.mm("DENS")
    cons = [Construct("plumb", ctx.pxs(t1m), "vertical through T1 endplate midpoint"), Construct("line", ctx.pxs(t1m, dens), "T1m-dens")]
    return Measurement("CT", vtilt(ctx.frame, t1m, dens), "deg", ("T1_AS", "T1_PS", "DENS"), None,
                       {"convention": "+ dens anterior"}, cons)


def cca(ctx: Context) -> Measurement:
    pns, occ = ctx.mm("PNS"), ctx.mm("OCC")
    c7 = _centroid(ctx, "C7")
    cons = [Construct("angle", ctx.pxs(occ, pns, c7), "CCA at PNS"), Construct("line", ctx.pxs(occ, pns), "McGregor line"),
            Construct("line", ctx.pxs(pns, c7), "PNS-C7 centroid")]
    return Measurement("CCA", unsigned_angle(pns, occ, c7), "deg", tuple(f"C7_{c}" for c in CORNERS) + ("PNS", "OCC"), None,
                       {"convention": "unsigned angle at PNS", "vertex": "PNS"}, cons)


PARAMETERS = {
    "C2C7": c2c7, "C2C6": c2c6, "C0C2": c0c2, "C7S": c7s, "T1S": t1s,
    "cSVA": csva, "RJD": rjd, "CT": ct, "CCA": cca,
}


def measure(proto, job) -> None:
    """``cervical-lateral``'s routine (its table's ``module``; ``job``: :class:`~SpineAlignmentLib.pipeline.MeasureJob`)."""
    job.measure_table(PARAMETERS)
