"""Study 001 — whole-spine lateral: the 18 sagittal parameters (definitions.md §2).

Each function takes a :class:`~.context.Context` whose landmarks are present and
trusted (the pipeline checks the protocol table first) and returns a
:class:`~.measurement.Measurement`.
"""

from __future__ import annotations

import math

import numpy as np

from .context import Context
from .measurement import Construct, Measurement
from .primitives import kyph, lord, mid, offset, phi, slope, vtilt, wrap180

#: |SFD| below this many mm makes the Barrey ratio unstable (definitions.md §2.3).
BARREY_MIN_SFD_MM = 5.0


def _angle(pid: str, value: float, lms: tuple[str, ...], cons: list[Construct], **detail) -> Measurement:
    return Measurement(pid, float(value), "deg", lms, None, dict(detail), cons)


def _dist(ctx: Context, pid: str, value: float, lms: tuple[str, ...], cons: list[Construct], **detail) -> Measurement:
    return Measurement(pid, float(value), ctx.distance_unit, lms, ctx.calibration, dict(detail), cons)


def endplate(ctx: Context, post: str, ant: str, label: str) -> tuple[float, Construct]:
    """Inclination (posterior→anterior) of an endplate and its drawing."""
    p, a = ctx.line(post, ant)
    return phi(ctx.frame, p, a), Construct("line", ctx.pxs(p, a), label)


def lord_between(ctx: Context, pid: str, upper: tuple[str, str], lower: tuple[str, str], labels=("upper endplate", "lower endplate"), kyphosis=False) -> Measurement:
    """Cobb-style angle between two endplates given as (posterior, anterior) IDs."""
    pu, cu = endplate(ctx, *upper, labels[0])
    pl, cl = endplate(ctx, *lower, labels[1])
    value = kyph(pu, pl) if kyphosis else lord(pu, pl)
    return _angle(pid, value, upper + lower, [cu, cl], convention="kyphosis +" if kyphosis else "lordosis +")


def _s1m_ha(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    return mid(ctx.mm("S1_AS"), ctx.mm("S1_PS")), mid(ctx.mm("FH_1"), ctx.mm("FH_2"))


def _pelvis_constructs(ctx: Context, s1m: np.ndarray, ha: np.ndarray) -> list[Construct]:
    return [
        Construct("line", ctx.pxs(ctx.mm("S1_PS"), ctx.mm("S1_AS")), "sacral plate"),
        Construct("point", ctx.pxs(s1m), "S1m"),
        Construct("point", ctx.pxs(ha), "HA"),
        Construct("line", ctx.pxs(ha, s1m), "HA-S1m"),
    ]


def pelvic_tilt_value(ctx: Context) -> float:
    s1m, ha = _s1m_ha(ctx)
    return -vtilt(ctx.frame, ha, s1m)


def sacral_slope_value(ctx: Context) -> float:
    return slope(ctx.frame, *ctx.line("S1_PS", "S1_AS"))


def pi(ctx: Context) -> Measurement:
    """Pelvic incidence, computed directly as the signed angle from the caudal
    normal of the sacral plate to S1m→HA (equal to PT + SS, a tested identity)."""
    s1m, ha = _s1m_ha(ctx)
    s1p, s1a = ctx.line("S1_PS", "S1_AS")
    da, ds = ctx.frame.comp(s1a - s1p)
    normal = (ds, -da)  # the perpendicular pointing caudally for a posterior→anterior plate
    va, vs = ctx.frame.comp(ha - s1m)
    value = wrap180(math.degrees(math.atan2(vs, va)) - math.degrees(math.atan2(normal[1], normal[0])))
    return _angle("PI", value, ("S1_AS", "S1_PS", "FH_1", "FH_2"), _pelvis_constructs(ctx, s1m, ha))


def ss(ctx: Context) -> Measurement:
    return _angle("SS", sacral_slope_value(ctx), ("S1_AS", "S1_PS"),
                  [Construct("line", ctx.pxs(ctx.mm("S1_PS"), ctx.mm("S1_AS")), "sacral plate")],
                  convention="+ anterior edge lower")


def pt(ctx: Context) -> Measurement:
    s1m, ha = _s1m_ha(ctx)
    cons = _pelvis_constructs(ctx, s1m, ha) + [Construct("plumb", ctx.pxs(ha), "vertical through HA")]
    return _angle("PT", pelvic_tilt_value(ctx), ("S1_AS", "S1_PS", "FH_1", "FH_2"), cons,
                  convention="+ hip axis anterior to S1m")


def ll(ctx: Context) -> Measurement:
    return lord_between(ctx, "LL", ("L1_PS", "L1_AS"), ("S1_PS", "S1_AS"), ("L1 superior endplate", "sacral plate"))


def sva(ctx: Context) -> Measurement:
    c7, s1 = ctx.mm("C7c"), ctx.mm("S1_PS")
    value = offset(ctx.frame, c7, s1)
    cons = [Construct("plumb", ctx.pxs(c7), "C7 plumb line"), _offset_construct(ctx, c7, s1, "SVA")]
    return _dist(ctx, "SVA", value, ("C7c", "S1_PS"), cons, convention="+ C7 plumb line anterior")


def _offset_construct(ctx: Context, upper: np.ndarray, ref: np.ndarray, label: str) -> Construct:
    """Segment from ``ref`` to the foot of ``upper``'s plumb line at ``ref``'s height."""
    u_a = np.asarray(ctx.frame.u_a)
    foot = ref + u_a * float((upper - ref) @ u_a)
    return Construct("offset", ctx.pxs(ref, foot), label)


def cl(ctx: Context) -> Measurement:
    return lord_between(ctx, "CL", ("C2_PI", "C2_AI"), ("C7_PI", "C7_AI"), ("C2 inferior endplate", "C7 inferior endplate"))


def t1s(ctx: Context) -> Measurement:
    p, a = ctx.line("T1_PS", "T1_AS")
    return _angle("T1S", slope(ctx.frame, p, a), ("T1_AS", "T1_PS"),
                  [Construct("line", ctx.pxs(p, a), "T1 superior endplate")], convention="+ anterior edge lower")


def csva(ctx: Context) -> Measurement:
    c2, c7 = ctx.mm("C2c"), ctx.mm("C7_PS")
    cons = [Construct("plumb", ctx.pxs(c2), "C2 plumb line"), _offset_construct(ctx, c2, c7, "cSVA")]
    return _dist(ctx, "cSVA", offset(ctx.frame, c2, c7), ("C2c", "C7_PS"), cons, convention="+ C2 anterior")


def gtk(ctx: Context) -> Measurement:
    return lord_between(ctx, "GTK", ("T1_PS", "T1_AS"), ("T12_PI", "T12_AI"), ("T1 superior endplate", "T12 inferior endplate"), kyphosis=True)


def ptk(ctx: Context) -> Measurement:
    return lord_between(ctx, "PTK", ("T1_PS", "T1_AS"), ("T5_PI", "T5_AI"), ("T1 superior endplate", "T5 inferior endplate"), kyphosis=True)


def mtk(ctx: Context) -> Measurement:
    return lord_between(ctx, "MTK", ("T5_PS", "T5_AS"), ("T12_PI", "T12_AI"), ("T5 superior endplate", "T12 inferior endplate"), kyphosis=True)


def l4sl(ctx: Context) -> Measurement:
    return lord_between(ctx, "L4SL", ("L4_PS", "L4_AS"), ("S1_PS", "S1_AS"), ("L4 superior endplate", "sacral plate"))


def _pelvic_angle(ctx: Context, pid: str, centre: str) -> Measurement:
    """TPA / LPA: at HA, from HA→S1m to HA→centre; = PT + vtilt(HA, centre)."""
    s1m, ha = _s1m_ha(ctx)
    c = ctx.mm(centre)
    value = pelvic_tilt_value(ctx) + vtilt(ctx.frame, ha, c)
    cons = [Construct("angle", ctx.pxs(c, ha, s1m), f"{pid} at HA"),
            Construct("line", ctx.pxs(ha, c), f"HA-{centre}"), Construct("line", ctx.pxs(ha, s1m), "HA-S1m")]
    return _angle(pid, value, (centre, "FH_1", "FH_2", "S1_AS", "S1_PS"), cons, convention=f"+ {centre} anterior")


def lpa(ctx: Context) -> Measurement:
    return _pelvic_angle(ctx, "LPA", "L1c")


def tpa(ctx: Context) -> Measurement:
    return _pelvic_angle(ctx, "TPA", "T1c")


def ssa(ctx: Context) -> Measurement:
    s1m = mid(ctx.mm("S1_AS"), ctx.mm("S1_PS"))
    c7 = ctx.mm("C7c")
    value = sacral_slope_value(ctx) + 90.0 - vtilt(ctx.frame, s1m, c7)
    cons = [Construct("angle", ctx.pxs(c7, s1m, ctx.mm("S1_AS")), "SSA at S1m"),
            Construct("line", ctx.pxs(s1m, c7), "S1m-C7c"),
            Construct("line", ctx.pxs(ctx.mm("S1_PS"), ctx.mm("S1_AS")), "sacral plate")]
    return _angle("SSA", value, ("C7c", "S1_AS", "S1_PS"), cons, convention="obtuse angle toward the anterior sacral plate")


def gt(ctx: Context) -> Measurement:
    s1m, ha = _s1m_ha(ctx)
    c7 = ctx.mm("C7c")
    value = pelvic_tilt_value(ctx) + vtilt(ctx.frame, s1m, c7)
    cons = [Construct("angle", ctx.pxs(c7, s1m, ha), "GT at S1m"),
            Construct("line", ctx.pxs(s1m, c7), "S1m-C7c"), Construct("line", ctx.pxs(s1m, ha), "S1m-HA")]
    return _angle("GT", value, ("C7c", "S1_AS", "S1_PS", "FH_1", "FH_2"), cons,
                  convention="+ trunk anterior and/or pelvis retroverted")


def barrey(ctx: Context) -> Measurement:
    ha = mid(ctx.mm("FH_1"), ctx.mm("FH_2"))
    c7, s1 = ctx.mm("C7c"), ctx.mm("S1_PS")
    sva_v = offset(ctx.frame, c7, s1)
    sfd = offset(ctx.frame, ha, s1)
    if sfd == 0.0:
        raise ValueError("the hip axis is exactly above S1_PS (sacro-femoral distance 0), so the ratio is undefined")
    warnings = []
    if abs(sfd) < BARREY_MIN_SFD_MM:
        # Without spacing the same number is applied in pixels; the unit is stated in the message.
        warnings.append(f"Barrey index unstable: sacro-femoral distance is only {sfd:.1f} {ctx.distance_unit} "
                        f"(< {BARREY_MIN_SFD_MM:g}).")
    cons = [Construct("plumb", ctx.pxs(c7), "C7 plumb line"), Construct("plumb", ctx.pxs(ha), "HA vertical"),
            _offset_construct(ctx, c7, s1, "SVA"), _offset_construct(ctx, ha, s1, "SFD")]
    m = Measurement("Barrey", sva_v / sfd, "ratio", ("C7c", "S1_PS", "FH_1", "FH_2"), None,
                    {"SVA": round(sva_v, 4), "SFD": round(sfd, 4), "distance_unit": ctx.distance_unit}, cons, warnings)
    return m


def od_ha(ctx: Context) -> Measurement:
    ha = mid(ctx.mm("FH_1"), ctx.mm("FH_2"))
    od = ctx.mm("OD")
    cons = [Construct("plumb", ctx.pxs(ha), "vertical through HA"), Construct("line", ctx.pxs(ha, od), "HA-OD")]
    return _angle("OD_HA", vtilt(ctx.frame, ha, od), ("OD", "FH_1", "FH_2"), cons,
                  convention="+ odontoid anterior to HA", upper_point="dens centre (OD)")


PARAMETERS = {
    "PI": pi, "SS": ss, "PT": pt, "LL": ll, "SVA": sva, "CL": cl, "T1S": t1s, "cSVA": csva,
    "GTK": gtk, "PTK": ptk, "MTK": mtk, "L4SL": l4sl, "LPA": lpa, "SSA": ssa, "GT": gt,
    "TPA": tpa, "Barrey": barrey, "OD_HA": od_ha,
}


def measure(proto, job) -> None:
    """``sagittal-whole-spine``'s routine (its table's ``module``; ``job``: :class:`~SpineAlignmentLib.pipeline.MeasureJob`)."""
    job.measure_table(PARAMETERS)
