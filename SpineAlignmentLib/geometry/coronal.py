"""Coronal spine: clinical Cobb curves by apex (definitions.md §6.2) and the AASCE triple wrapper (§6.3).

Endplate inclination ``ψ`` is measured on the vector from the patient-right end
to the patient-left end, + when the left end is higher; a curve between
vertebrae i (upper) and j (lower) has the signed angle
``C(i, j) = ψ_sup(i) − ψ_inf(j)``. The major curve maximises |C|; minor curves
are searched above and below with the opposite sign, recursively, sharing the
transitional end vertebra. Each curve is named by its apex (Lenke/SRS bands).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .aasce import aasce_triple
from .context import Context
from .measurement import Construct, Measurement
from .sagittal import lord_between

VERTEBRAE = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])
CORNERS = ("TL", "TR", "BL", "BR")
#: Curves smaller than this are reported as absent (configurable per call).
DEFAULT_MIN_CURVE_DEG = 5.0
#: Apex bands on the level scale (vertebra k = k, disc below k = k + 0.5; T1 = 0).
#: PT: apex T3–T5 (and above); MT: T6 to the T11–T12 disc; TLL: T12 to L4 (and below).
APEX_BANDS = (("Cobb_PT", -1.0, 4.5), ("Cobb_MT", 4.5, 11.0), ("Cobb_TLL", 11.0, 99.0))


def corner_ids(v: str) -> tuple[str, str, str, str]:
    return tuple(f"{v}_{c}" for c in CORNERS)  # type: ignore[return-value]


def level_label(level: float) -> str:
    """Human name of a level: a vertebra (``T9``) or a disc (``T11-T12``)."""
    k = int(math.floor(level))
    if level == k:
        return VERTEBRAE[k]
    return f"{VERTEBRAE[k]}-{VERTEBRAE[k + 1]}"


@dataclass(frozen=True)
class Curve:
    """One coronal curve between an upper and a lower end vertebra (indices into VERTEBRAE)."""

    upper: int
    lower: int
    signed: float  # C(i, j), degrees
    apex: float  # level scale
    convex_left: bool  # toward the patient's left in the frame used

    @property
    def magnitude(self) -> float:
        return abs(self.signed)


def _inclination(ctx: Context, a: str, b: str) -> float:
    """ψ of the endplate through landmarks a and b: right end → left end, + left end higher."""
    p, q = ctx.line(a, b)
    dl, ds = ctx.frame.comp(q - p)
    if dl < 0:
        dl, ds = -dl, -ds
    return math.degrees(math.atan2(ds, dl))


def _levels(ctx: Context) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    sup = np.array([_inclination(ctx, f"{v}_TL", f"{v}_TR") for v in VERTEBRAE])
    inf = np.array([_inclination(ctx, f"{v}_BL", f"{v}_BR") for v in VERTEBRAE])
    centres = [ctx.mean_mm(*corner_ids(v)) for v in VERTEBRAE]
    return sup, inf, centres


def _apex(ctx: Context, centres: list[np.ndarray], i: int, j: int) -> tuple[float, bool]:
    """Apex level between end vertebrae i and j and whether it bulges to the patient's left."""
    a, b = centres[i], centres[j]
    chord = b - a
    norm = float(np.hypot(*chord))
    candidates: list[tuple[float, np.ndarray]] = []
    for k in range(i, j + 1):
        candidates.append((float(k), centres[k]))
        if k < j:
            v, w = VERTEBRAE[k], VERTEBRAE[k + 1]
            disc = (ctx.mean_mm(f"{v}_BL", f"{v}_BR") + ctx.mean_mm(f"{w}_TL", f"{w}_TR")) / 2.0
            candidates.append((k + 0.5, disc))
    best_level, best_dist, best_vec = float(i), -1.0, np.zeros(2)
    for level, p in candidates:
        rel = p - a
        along = float(rel @ chord) / norm
        perp = rel - chord / norm * along
        dist = float(np.hypot(*perp))
        if dist > best_dist + 1e-12:
            best_level, best_dist, best_vec = level, dist, perp
    dl, _ = ctx.frame.comp(best_vec)
    return best_level, dl > 0


def _best_curve(sup: np.ndarray, inf: np.ndarray, lo: int, hi: int, sign: float) -> tuple[int, int, float] | None:
    """Pair (i < j) within [lo, hi] maximising |C| with sign(C) == sign (0 = any)."""
    best = None
    for i in range(lo, hi + 1):
        for j in range(i + 1, hi + 1):
            c = sup[i] - inf[j]
            if sign and c * sign <= 0:
                continue
            if best is None or abs(c) > abs(best[2]):
                best = (i, j, c)
    return best


def find_curves(ctx: Context) -> list[Curve]:
    """All curves of the spine, major first, then minors outward (all magnitudes, no threshold)."""
    sup, inf, centres = _levels(ctx)
    n = len(VERTEBRAE)
    major = _best_curve(sup, inf, 0, n - 1, 0.0)
    if major is None:
        return []

    def make(i: int, j: int, c: float) -> Curve:
        apex, left = _apex(ctx, centres, i, j)
        return Curve(i, j, c, apex, left)

    curves = [make(*major)]
    # above: alternate signs going up
    i, sign = major[0], -math.copysign(1.0, major[2])
    while i > 0:
        found = _best_curve(sup, inf, 0, i, sign)
        if found is None:
            break
        curves.append(make(*found))
        i, sign = found[0], -sign
    j, sign = major[1], -math.copysign(1.0, major[2])
    while j < n - 1:
        found = _best_curve(sup, inf, j, n - 1, sign)
        if found is None:
            break
        curves.append(make(*found))
        j, sign = found[1], -sign
    return curves


def cobb_curves(ctx: Context, min_curve_deg: float | None = None) -> tuple[dict[str, Measurement], list[str]]:
    """Clinical Cobb curves named by apex.

    Returns:
        (measurements by ID, warnings).
    """
    threshold = DEFAULT_MIN_CURVE_DEG if min_curve_deg is None else float(min_curve_deg)
    side_known = ctx.frame_info.side_known
    out: dict[str, Measurement] = {}
    warnings: list[str] = []
    for curve in sorted(find_curves(ctx), key=lambda c: -c.magnitude):
        if curve.magnitude < threshold:
            continue
        name = next(n for n, lo, hi in APEX_BANDS if lo <= curve.apex < hi)
        uv, lv = VERTEBRAE[curve.upper], VERTEBRAE[curve.lower]
        if name in out:
            warnings.append(f"A second curve with its apex in the {name} band ({uv}-{lv}, {curve.magnitude:.1f}°) "
                            f"is smaller than {out[name].detail['upper_end']}-{out[name].detail['lower_end']} and is not reported.")
            continue
        # the image side of the convexity, independent of the patient's side
        image_right = (ctx.frame.u_a[0] > 0) == curve.convex_left
        convex = ("left" if curve.convex_left else "right") if side_known else "unknown"
        top = (ctx.mm(f"{uv}_TL"), ctx.mm(f"{uv}_TR"))
        bottom = (ctx.mm(f"{lv}_BL"), ctx.mm(f"{lv}_BR"))
        cons = [Construct("line", ctx.pxs(*top), f"{uv} superior endplate"),
                Construct("line", ctx.pxs(*bottom), f"{lv} inferior endplate")]
        out[name] = Measurement(
            name, curve.magnitude, "deg",
            (f"{uv}_TL", f"{uv}_TR", f"{lv}_BL", f"{lv}_BR"), None,
            {"upper_end": uv, "lower_end": lv, "apex": level_label(curve.apex), "convex": convex,
             "convex_image_side": "image-right" if image_right else "image-left",
             "signed": round(float(curve.signed), 4), "major": not out},
            cons)
    return out, warnings


def absent_curves(present: dict[str, Measurement], threshold: float) -> dict[str, str]:
    """Reasons for the Cobb curves not in ``present``."""
    return {name: f"no curve of at least {threshold:g}° has its apex in this region"
            for name, _, _ in APEX_BANDS if name not in present}


def aasce(ctx: Context) -> dict[str, Measurement]:
    """The AASCE benchmark triple as three measurements (needs ``ctx.image_size``)."""
    if ctx.image_size is None:
        raise ValueError("the AASCE triple needs image_size (rows, cols): its curve selection depends on the image height")
    ids = [i for v in VERTEBRAE for i in corner_ids(v)]
    for v in VERTEBRAE:  # a degenerate endplate gives a mid-line from one corner, not an angle
        tl, tr, bl, br = corner_ids(v)
        ctx.line(tl, tr)
        ctx.line(bl, br)
    points = np.array([ctx.mm(i) for i in ids])
    height = ctx.image_size[0] * ctx.scale[1]
    res = aasce_triple(points, height)
    out = {}
    for k, (angle, (a, b)) in enumerate(zip(res.angles, res.pairs), start=1):
        va, vb = VERTEBRAE[a], VERTEBRAE[b]
        cons = [Construct("line", ctx.pxs(*res.midlines[a]), f"{va} mid-line"),
                Construct("line", ctx.pxs(*res.midlines[b]), f"{vb} mid-line")]
        out[f"AASCE_{k}"] = Measurement(
            f"AASCE_{k}", angle, "deg", corner_ids(va) + corner_ids(vb), None,
            {"vertebrae": [va, vb], "s_shape": res.is_s, "semantics": "AASCE 2019 reference (MATLAB angleCal), benchmark only"},
            cons)
    return out


#: Parameters of the whole T1–L5 corner set (all 68 corners needed).
CURVE_PARAMETERS = ("Cobb_PT", "Cobb_MT", "Cobb_TLL")
AASCE_PARAMETERS = ("AASCE_1", "AASCE_2", "AASCE_3")

#: Parameters measured on the paired lateral film (study 004): T4–T12 kyphosis and L1–L5 lordosis.
PAIRED_LATERAL = {
    "TK_T4_T12": lambda c: lord_between(c, "TK_T4_T12", ("T4_PS", "T4_AS"), ("T12_PI", "T12_AI"),
                                        ("T4 superior endplate", "T12 inferior endplate"), kyphosis=True),
    "LL_L1_L5": lambda c: lord_between(c, "LL_L1_L5", ("L1_PS", "L1_AS"), ("L5_PI", "L5_AI"),
                                       ("L1 superior endplate", "L5 inferior endplate")),
}


def measure(proto, job) -> None:
    """The protocol's measuring routine (its table's ``"module"``): Cobb curves and the AASCE triple on the AP film,
    then the paired lateral film's parameters when that film's landmarks are given.

    ``job`` is the pipeline's :class:`~SpineAlignmentLib.pipeline.MeasureJob` (result to fill, options, shared steps).
    """
    ctx = job.film_context()
    if ctx is None:
        return
    result, warnings = job.result, job.result.warnings
    missing = [i for i in proto.landmark_ids if i not in ctx.points_px]
    threshold = DEFAULT_MIN_CURVE_DEG if job.min_curve_deg is None else float(job.min_curve_deg)
    if missing:
        reason = job.missing_reason(missing)
        for pid in CURVE_PARAMETERS + AASCE_PARAMETERS:
            result.omitted[pid] = f"needs all 17 vertebrae T1-L5; {reason}"
        warnings.append(f"Cobb curves and AASCE triple left out: they need all 68 corners; {reason}.")
    else:
        try:
            curves, w = cobb_curves(ctx, threshold)
        except ValueError as exc:  # a degenerate endplate: no curve can be trusted
            curves, w = {}, [f"Cobb curves left out: {exc}."]
            for pid in CURVE_PARAMETERS:
                result.omitted[pid] = str(exc)
        else:
            result.omitted.update(absent_curves(curves, threshold))
        result.parameters.update(curves)
        warnings.extend(w)
        if not ctx.frame_info.side_known and curves:
            warnings.append("Convexity side is reported as 'unknown' (and by image side): the patient's left/right "
                            "is not known; give Patient Orientation (e.g. 'L,F').")
        try:
            result.parameters.update(aasce(ctx))
        except ValueError as exc:
            for pid in AASCE_PARAMETERS:
                result.omitted[pid] = str(exc)
            warnings.append(f"AASCE triple left out: {exc}.")
    paired = {p.id: p for p in proto.parameters if "paired_lateral" in p.flags}
    lat_ctx = job.paired_lateral_context(list(paired))
    if lat_ctx is None:
        return
    for pid, spec in paired.items():
        job.run(pid, spec.landmarks, lat_ctx, PAIRED_LATERAL[pid])
        if pid in result.parameters:
            result.parameters[pid].detail["image"] = "paired lateral"
