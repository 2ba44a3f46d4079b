"""Vertebra naming against a reference: identification rate, level shifts, end-vertebra agreement, warnings.

A coronal model can find every vertebra and still name the chain a level off
(C7..L4 or T2..S1). These figures measure that, from corner sets (T1_TL ..
L5_BR, (68, 2) arrays) or from result files:

* :func:`named_right` / :func:`level_shift`: whether each predicted vertebra's
  nearest reference vertebra carries its name, and the chain's median offset;
* :func:`identification_figures`: images with all vertebrae named right and the
  count per shift -2..+2;
* :func:`end_vertebra_agreement`: the Cobb curves' end vertebrae (what
  clinicians report as "T5-T11") against the reference's, exact and within
  one level;
* :func:`warning_figures`: precision and recall of the level warning
  (``result.levels.uncertain``) against the real naming.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["level_shift", "named_right", "identification_figures", "curve_ends", "cobb_ends",
           "end_vertebra_agreement", "warning_figures", "level_figures"]


def _nearest_reference(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(V,) index of the nearest reference vertebra centre of each predicted vertebra."""
    pc = np.asarray(pred, dtype=float).reshape(-1, 4, 2).mean(1)
    tc = np.asarray(truth, dtype=float).reshape(-1, 4, 2).mean(1)
    return np.linalg.norm(pc[:, None] - tc[None], axis=-1).argmin(1)


def level_shift(pred: np.ndarray, truth: np.ndarray) -> int:
    """Median over vertebrae of (index of the nearest reference centre - own index): 0 when the
    predicted vertebrae carry the right names, +1 / -1 when every name is one level off
    (+1: the chain sits one level too low, T2..S1; -1: one level too high, C7..L4)."""
    nearest = _nearest_reference(pred, truth)
    return int(np.median(nearest - np.arange(len(nearest))))


def named_right(pred: np.ndarray, truth: np.ndarray) -> bool:
    """True when every predicted vertebra's nearest reference vertebra is the one of its own name."""
    nearest = _nearest_reference(pred, truth)
    return bool(np.all(nearest == np.arange(len(nearest))))


def identification_figures(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict:
    """How many images have all vertebrae named right, and the level shift of the others.

    Returns:
        dict with ``n_images``, ``all_named_right`` (count), ``all_named_right_pct``,
        ``shift_counts`` (``"-2"``..``"+2"``: images by :func:`level_shift`, clipped to +-2) and
        ``misnamed_without_shift`` (images with shift 0 whose names are still not all right).
    """
    right = np.array([named_right(p, t) for p, t in zip(preds, truths)], dtype=bool)
    shifts = np.clip(np.array([level_shift(p, t) for p, t in zip(preds, truths)], dtype=int), -2, 2)
    n = len(right)
    return {"n_images": n, "all_named_right": int(right.sum()),
            "all_named_right_pct": float(100.0 * right.mean()) if n else float("nan"),
            "shift_counts": {f"{k:+d}" if k else "0": int((shifts == k).sum()) for k in range(-2, 3)},
            "misnamed_without_shift": int(((shifts == 0) & ~right).sum())}


def curve_ends(result: Mapping) -> dict[str, tuple[str, str]]:
    """``{"Cobb_MT": ("T5", "T11"), ...}``: the end vertebrae of each Cobb curve of a result dict."""
    out = {}
    for pid, m in (result.get("parameters") or {}).items():
        detail = (m or {}).get("detail") or {}
        if pid.startswith("Cobb_") and "upper_end" in detail and "lower_end" in detail:
            out[pid] = (str(detail["upper_end"]), str(detail["lower_end"]))
    return out


def cobb_ends(points: np.ndarray, image_height: float) -> dict[str, tuple[str, str]]:
    """:func:`curve_ends` of the Cobb curves the pipeline finds on (68, 2) T1..L5 corners (empty when
    the pipeline refuses them, e.g. two corners on one point)."""
    from ..errors import SpineAlignmentError
    from ..geometry.coronal import VERTEBRAE
    from ..pipeline import measure

    ids = [f"{v}_{c}" for v in VERTEBRAE for c in ("TL", "TR", "BL", "BR")]
    try:
        res = measure(dict(zip(ids, (tuple(map(float, p)) for p in np.asarray(points).reshape(-1, 2)))),
                      "coronal-spine", image_size=(int(image_height), 1))
    except SpineAlignmentError:
        return {}
    return curve_ends(res.to_dict(construction=False))


def end_vertebra_agreement(pred_ends: Sequence[Mapping[str, tuple[str, str]]],
                           truth_ends: Sequence[Mapping[str, tuple[str, str]]]) -> dict:
    """Agreement of the Cobb curves' end vertebrae with the reference's.

    Each reference curve (named by apex region: ``Cobb_PT``, ``Cobb_MT``, ``Cobb_TLL``) is compared with
    the predicted curve of the same region: ``exact`` when both end vertebrae carry the same names,
    ``within_one`` when each is at most one level away; a curve the prediction does not report agrees in
    neither.

    Returns:
        dict with ``n_curves``, ``exact``, ``within_one`` (counts), ``exact_pct`` and ``within_one_pct``.
    """
    from ..geometry.coronal import VERTEBRAE

    level = {v: i for i, v in enumerate(VERTEBRAE)}
    n = exact = near = 0
    for cp, ct in zip(pred_ends, truth_ends):
        for name, ref in ct.items():
            n += 1
            got = cp.get(name)
            if got is None or any(v not in level for v in (*got, *ref)):
                continue
            d = max(abs(level[g] - level[r]) for g, r in zip(got, ref))
            exact += d == 0
            near += d <= 1
    return {"n_curves": n, "exact": exact, "within_one": near,
            "exact_pct": float(100.0 * exact / n) if n else float("nan"),
            "within_one_pct": float(100.0 * near / n) if n else float("nan")}


def warning_figures(warned: Sequence[bool], right: Sequence[bool], shifts: Sequence[int]) -> dict:
    """Precision and recall of a level warning against the real naming.

    Args:
        warned: per image, whether the level warning fired.
        right: per image, whether all vertebrae are named right (:func:`named_right`).
        shifts: per image, :func:`level_shift`.

    Returns:
        dict with the counts and ``recall_shifted_pct`` (warned among images with a non-zero shift),
        ``recall_misnamed_pct`` (warned among images not all named right), ``false_alarm_pct``
        (warned among images all named right) and ``precision_pct`` (not all named right among the
        warned images); NaN where a denominator is empty.
    """
    w, r, s = np.asarray(warned, bool), np.asarray(right, bool), np.asarray(shifts, int)

    def pct(num, den) -> float:
        return float(100.0 * num / den) if den else float("nan")

    return {"n_images": int(len(w)), "n_warned": int(w.sum()), "n_shifted": int((s != 0).sum()),
            "n_misnamed": int((~r).sum()), "n_named_right": int(r.sum()),
            "recall_shifted_pct": pct((w & (s != 0)).sum(), (s != 0).sum()),
            "recall_misnamed_pct": pct((w & ~r).sum(), (~r).sum()),
            "false_alarm_pct": pct((w & r).sum(), r.sum()),
            "precision_pct": pct((w & ~r).sum(), w.sum())}


def level_figures(truths: Sequence[Mapping], preds: Sequence[Mapping]) -> dict:
    """Naming figures of paired result dicts (``spine-align evaluate``): every pair whose truth and prediction
    both hold the 68 T1..L5 corners. Empty dict when no pair does (another protocol).

    Returns:
        :func:`identification_figures` plus ``end_vertebrae`` (:func:`end_vertebra_agreement` of the
        results' own Cobb curves) and, when the predictions carry a level confidence (``levels``),
        ``warning`` (:func:`warning_figures`).
    """
    from ..geometry.coronal import VERTEBRAE

    ids = [f"{v}_{c}" for v in VERTEBRAE for c in ("TL", "TR", "BL", "BR")]

    def corners(res: Mapping) -> np.ndarray | None:
        lms = res.get("landmarks") or {}
        if not all(i in lms for i in ids):
            return None
        return np.array([[float(lms[i]["x"]), float(lms[i]["y"])] if isinstance(lms[i], Mapping)
                         else [float(lms[i][0]), float(lms[i][1])] for i in ids])

    pairs = [(corners(p), corners(t), p, t) for t, p in zip(truths, preds)]
    pairs = [x for x in pairs if x[0] is not None and x[1] is not None]
    if not pairs:
        return {}
    pp, tt = [x[0] for x in pairs], [x[1] for x in pairs]
    out = identification_figures(pp, tt)
    out["end_vertebrae"] = end_vertebra_agreement([curve_ends(x[2]) for x in pairs], [curve_ends(x[3]) for x in pairs])
    with_levels = [x for x in pairs if isinstance(x[2].get("levels"), Mapping)]
    if with_levels:
        out["warning"] = warning_figures([bool(x[2]["levels"].get("uncertain")) for x in with_levels],
                                         [named_right(x[0], x[1]) for x in with_levels],
                                         [level_shift(x[0], x[1]) for x in with_levels])
    return out


def _pct(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.0f} %"


def identification_text(m: Mapping) -> str:
    """One sentence part on :func:`identification_figures`."""
    sc = m["shift_counts"]
    return (f"all 17 named right in {m['all_named_right']} of {m['n_images']} ({_pct(m['all_named_right_pct'])}); "
            f"level shift -2/-1/0/+1/+2: {sc['-2']}/{sc['-1']}/{sc['0']}/{sc['+1']}/{sc['+2']}"
            + (f" ({m['misnamed_without_shift']} with shift 0 still misnamed in part)" if m["misnamed_without_shift"] else ""))


def end_vertebrae_text(e: Mapping) -> str:
    """One sentence part on :func:`end_vertebra_agreement`."""
    return (f"Cobb end vertebrae of {e['n_curves']} reference curves: both ends exact {_pct(e['exact_pct'])}, "
            f"within one level {_pct(e['within_one_pct'])}")


def warning_text(w: Mapping) -> str:
    """One sentence part on :func:`warning_figures`."""
    return (f"the level warning fires on {_pct(w['recall_shifted_pct'])} of the {w['n_shifted']} shifted images "
            f"({_pct(w['recall_misnamed_pct'])} of the {w['n_misnamed']} not all named right) and on "
            f"{_pct(w['false_alarm_pct'])} of the {w['n_named_right']} named right; precision "
            f"{_pct(w['precision_pct'])} ({w['n_warned']} warned)")


def level_lines(m: Mapping) -> list[str]:
    """The sentences of :func:`level_figures` (``spine-align evaluate`` prints them and puts them in its report)."""
    if not m:
        return []
    lines = [f"vertebra levels: {identification_text(m)}"]
    if "end_vertebrae" in m:
        lines.append(end_vertebrae_text(m["end_vertebrae"]))
    if "warning" in m:
        lines.append(warning_text(m["warning"]))
    return lines
