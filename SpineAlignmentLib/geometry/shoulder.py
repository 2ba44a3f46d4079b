"""Study 000 — coronal shoulder balance: CA, CTAD, CHD, RSH_bony, RSH (definitions.md §4).

Sides are the patient's (``_L``, ``_R`` in the landmark IDs); + means the left
side is higher. Heights use the superior component in mm.
"""

from __future__ import annotations

import math

import numpy as np

from .context import Context
from .measurement import Construct, Measurement
from .primitives import height


def _line_angle(ctx: Context, left: np.ndarray, right: np.ndarray) -> float:
    """atan2(s(left) − s(right), |l(left) − l(right)|) in degrees."""
    dl, ds = ctx.frame.comp(left - right)
    return math.degrees(math.atan2(ds, abs(dl)))


def ca(ctx: Context) -> Measurement:
    lft, rgt = ctx.mm("Clav_top_L"), ctx.mm("Clav_top_R")
    return Measurement("CA", _line_angle(ctx, lft, rgt), "deg", ("Clav_top_L", "Clav_top_R"), None,
                       {"convention": "+ left side higher"}, [Construct("line", ctx.pxs(rgt, lft), "clavicle tops")])


def _tilt(ctx: Context, side: str) -> tuple[float, Construct]:
    med, lat = ctx.mm(f"Clav_med_{side}"), ctx.mm(f"Clav_lat_{side}")
    dl, ds = ctx.frame.comp(lat - med)
    return math.degrees(math.atan2(ds, abs(dl))), Construct("line", ctx.pxs(med, lat), f"clavicle {side}")


def ctad(ctx: Context) -> Measurement:
    tl, cl = _tilt(ctx, "L")
    tr, cr = _tilt(ctx, "R")
    return Measurement("CTAD", tl - tr, "deg", ("Clav_med_L", "Clav_lat_L", "Clav_med_R", "Clav_lat_R"), None,
                       {"tilt_L": round(tl, 4), "tilt_R": round(tr, 4), "convention": "tilt + when the lateral end is higher"},
                       [cl, cr])


def _height_difference(ctx: Context, pid: str, left_id: str, right_id: str, label: str) -> Measurement:
    lft, rgt = ctx.mm(left_id), ctx.mm(right_id)
    value = height(ctx.frame, lft, rgt)
    u_s = np.asarray(ctx.frame.u_s)
    foot = rgt + u_s * value  # right point raised to the left point's height
    cons = [Construct("line", ctx.pxs(rgt, foot), label), Construct("point", ctx.pxs(lft), left_id),
            Construct("point", ctx.pxs(rgt), right_id)]
    return Measurement(pid, value, ctx.distance_unit, (left_id, right_id), ctx.calibration,
                       {"convention": "+ left side higher"}, cons)


def chd(ctx: Context) -> Measurement:
    return _height_difference(ctx, "CHD", "Cor_top_L", "Cor_top_R", "coracoid height difference")


def rsh_bony(ctx: Context) -> Measurement:
    m = _height_difference(ctx, "RSH_bony", "Clav_lat_L", "Clav_lat_R", "lateral clavicle height difference")
    m.detail["surrogate"] = "lateral clavicle ends (no soft-tissue points)"
    return m


def rsh(ctx: Context) -> Measurement:
    return _height_difference(ctx, "RSH", "ST_L", "ST_R", "soft-tissue shoulder height difference")


PARAMETERS = {"CA": ca, "CTAD": ctad, "CHD": chd, "RSH_bony": rsh_bony, "RSH": rsh}


def side_warnings(ctx: Context) -> list[str]:
    """When the patient's side is known, check the _L points lie on the patient's left."""
    if not ctx.frame_info.side_known:
        return []
    out = []
    for stem in ("Clav_top", "Clav_med", "Clav_lat", "Cor_top", "ST"):
        a, b = f"{stem}_L", f"{stem}_R"
        if ctx.has(a, b):
            dl, _ = ctx.frame.comp(ctx.mm(a) - ctx.mm(b))
            if dl < 0:
                out.append(f"{a} lies to the patient's right of {b}: left/right labels look swapped; check Patient Orientation or the labels.")
    return out


def measure(proto, job) -> None:
    """The protocol's measuring routine (its table's ``"module"``): every parameter of the table on the one film;
    RSH only when a soft-tissue point was placed; then the left/right label check.

    ``job`` is the pipeline's :class:`~SpineAlignmentLib.pipeline.MeasureJob` (result to fill, options, shared steps).
    """
    ctx = job.film_context()
    if ctx is None:
        return
    soft_tissue = bool({"ST_L", "ST_R"} & set(job.result.landmarks))
    for spec in proto.parameters:
        if spec.id == "RSH" and not soft_tissue:
            job.result.omitted["RSH"] = "no soft-tissue points ST_L/ST_R (RSH_bony is the bony surrogate)"
            continue
        job.run(spec.id, spec.landmarks, ctx, PARAMETERS[spec.id])
    job.result.warnings.extend(side_warnings(ctx))
