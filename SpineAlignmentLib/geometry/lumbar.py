"""Study 002 — lumbar flexion/extension: per-level IROM and sagittal translation (definitions.md §5).

Per image and level (U upper, L lower vertebra):

* segmental angle ``SA = lord(U inferior endplate, L superior endplate)`` (+ lordosis);
* translation, method A: ``ST = (U_PI − L_PS) · e_L`` with ``e_L`` the unit vector
  L_PS→L_AS (+ = upper vertebra anterior), and ``ST_pct = 100·ST / |L_AS − L_PS|``.

Per pair: ``IROM = SA_ext − SA_flex``, ``dST = ST_flex − ST_ext``, ``dST_pct = ST_pct_flex − ST_pct_ext``.
"""

from __future__ import annotations

import numpy as np

from .context import Context
from .measurement import Construct, Measurement
from .primitives import lord, phi

LEVELS = (("L1", "L2"), ("L2", "L3"), ("L3", "L4"), ("L4", "L5"), ("L5", "S1"))
ROLES = ("flexion", "extension")


def level_name(upper: str, lower: str) -> str:
    return f"{upper}{lower}"


def level_landmarks(upper: str, lower: str) -> tuple[str, ...]:
    return (f"{upper}_AI", f"{upper}_PI", f"{lower}_AS", f"{lower}_PS")


def segment(ctx: Context, upper: str, lower: str) -> tuple[float, float, float, list[Construct]]:
    """Segmental angle (deg), translation (distance unit) and translation (% depth) of one level."""
    u_pi, u_ai = ctx.line(f"{upper}_PI", f"{upper}_AI")
    l_ps, l_as = ctx.line(f"{lower}_PS", f"{lower}_AS")
    theta = lord(phi(ctx.frame, u_pi, u_ai), phi(ctx.frame, l_ps, l_as))
    depth = float(np.hypot(*(l_as - l_ps)))
    if depth == 0.0:
        raise ValueError(f"{lower}_AS and {lower}_PS coincide, so the {lower} endplate is undefined")
    e_l = (l_as - l_ps) / depth
    t = float((u_pi - l_ps) @ e_l)
    foot = l_ps + e_l * t
    cons = [Construct("line", ctx.pxs(u_pi, u_ai), f"{upper} inferior endplate"),
            Construct("line", ctx.pxs(l_ps, l_as), f"{lower} superior endplate"),
            Construct("offset", ctx.pxs(l_ps, foot), f"{upper}-{lower} translation")]
    return theta, t, 100.0 * t / depth, cons


def per_image(ctx: Context, upper: str, lower: str, suffix: str = "") -> list[Measurement]:
    """The static parameters SA_, ST_ and ST_pct_ of one level on one image."""
    lv = level_name(upper, lower)
    lms = level_landmarks(upper, lower)
    theta, t, tp, cons = segment(ctx, upper, lower)
    return [
        Measurement(f"SA_{lv}{suffix}", theta, "deg", lms, None, {"convention": "lordosis +"}, cons[:2]),
        Measurement(f"ST_{lv}{suffix}", t, ctx.distance_unit, lms, ctx.calibration,
                    {"method": "A (posterior corners, along the lower endplate)", "convention": "+ upper vertebra anterior"}, cons),
        Measurement(f"ST_pct_{lv}{suffix}", tp, "%", lms, None,
                    {"method": "A", "denominator": "lower endplate depth"}, cons[1:]),
    ]


def pair(flex: Context, ext: Context, upper: str, lower: str) -> tuple[list[Measurement], list[str]]:
    """IROM, dST and dST_pct of one level from a flexion and an extension context."""
    lv = level_name(upper, lower)
    lms = level_landmarks(upper, lower)
    th_f, t_f, tp_f, _ = segment(flex, upper, lower)
    th_e, t_e, tp_e, _ = segment(ext, upper, lower)
    out = [
        Measurement(f"IROM_{lv}", th_e - th_f, "deg", lms, None,
                    {"SA_flexion": round(th_f, 4), "SA_extension": round(th_e, 4),
                     "convention": "+ extension more lordotic; negative = paradoxical motion"}),
        Measurement(f"dST_pct_{lv}", tp_f - tp_e, "%", lms, None,
                    {"ST_pct_flexion": round(tp_f, 4), "ST_pct_extension": round(tp_e, 4), "method": "A"}),
    ]
    warnings: list[str] = []
    if (flex.spacing_mm is None) != (ext.spacing_mm is None):
        warnings.append(f"dST_{lv} left out: only one of the two images has a pixel spacing, so their "
                        "translations are in different units; give both images' spacing.")
    else:
        unit = flex.distance_unit
        label = flex.calibration if flex.calibration == ext.calibration else f"flexion {flex.calibration}; extension {ext.calibration}"
        out.insert(1, Measurement(f"dST_{lv}", t_f - t_e, unit, lms, label,
                                  {"ST_flexion": round(t_f, 4), "ST_extension": round(t_e, 4), "method": "A",
                                   "convention": "+ more anterior in flexion"}))
    return out, warnings


def measure(proto, job) -> None:
    """The protocol's measuring routine (its table's ``"module"``): per film and level SA/ST/ST_pct, and the
    flexion–extension differences when both films are given.

    ``job`` is the pipeline's :class:`~SpineAlignmentLib.pipeline.MeasureJob` (result to fill, options, shared steps).
    """
    result, warnings = job.result, job.result.warnings
    contexts: dict[str, Context] = {}
    films = job.films()
    for role, view in films.items():
        w: list[str] = []
        ctx = job.view_context(role, view, w)
        if ctx is not None:
            contexts[role] = ctx
            result.frame[role or "image"] = ctx.frame_info.facing
        warnings.extend(f"{role}: {x}" if role else x for x in w)
    if job.views:
        result.views = dict(job.views)
        result.landmarks = {}
    flex, ext = ROLES
    for upper, lower in LEVELS:
        lv = level_name(upper, lower)
        needed = level_landmarks(upper, lower)
        for role, ctx in contexts.items():
            suffix = f"_{role}" if role else ""
            missing = [m for m in needed if m not in ctx.points_px]
            if missing:
                for kind in ("SA", "ST", "ST_pct"):
                    result.omitted[f"{kind}_{lv}{suffix}"] = f"missing or not trusted: {', '.join(missing)}"
                continue
            try:
                for m in per_image(ctx, upper, lower, suffix):
                    result.parameters[m.id] = m
            except ValueError as exc:
                result.omitted[f"SA_{lv}{suffix}"] = str(exc)
        pair_ids = (f"IROM_{lv}", f"dST_{lv}", f"dST_pct_{lv}")
        if flex in contexts and ext in contexts:
            missing = [f"{r}:{m}" for r in ROLES for m in needed if m not in contexts[r].points_px]
            if missing:
                for pid in pair_ids:
                    result.omitted[pid] = f"missing or not trusted: {', '.join(missing)}"
                warnings.append(f"{lv} range of motion left out: missing or not trusted {', '.join(missing)}.")
                continue
            try:
                ms, w = pair(contexts[flex], contexts[ext], upper, lower)
            except ValueError as exc:
                for pid in pair_ids:
                    result.omitted[pid] = str(exc)
                continue
            warnings.extend(w)
            for m in ms:
                result.parameters[m.id] = m
            if f"dST_{lv}" not in result.parameters:
                result.omitted[f"dST_{lv}"] = "the two images do not share a distance unit"
        else:
            for pid in pair_ids:
                result.omitted[pid] = "needs both a flexion and an extension image (views)"
