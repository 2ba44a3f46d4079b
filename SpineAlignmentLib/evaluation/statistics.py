"""Agreement statistics between a reference (ground truth) and a measurement.

Pure functions on 1-D arrays (or a wide DataFrame for the ICC). Missing values
are ``NaN``; every paired statistic drops the pairs where either side is NaN
and reports how many pairs it used (``n``). Statistical tests and the ICC come
from maintained libraries (:mod:`scipy.stats`, :func:`pingouin.intraclass_corr`);
only descriptive arithmetic (means, quantiles, Bland–Altman bias/limits and the
AASCE SMAPE) is written here.

Sign convention: differences are ``measured - reference`` (prediction minus
truth), so a positive Bland–Altman bias means the model over-estimates.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Bland–Altman limits of agreement: bias ± this many SDs of the differences.
LOA_Z = 1.96

#: Parameter ID prefixes that denote Cobb-type angles (SMAPE and circular MAE apply).
COBB_PREFIXES = ("Cobb_", "AASCE_")

#: Columns of :func:`parameter_statistics`, in output order (machine-readable names).
PARAMETER_COLUMNS = (
    "n_truth", "n_pred", "n_pairs", "n_missing_in_pred", "n_missing_in_truth",
    "truth_mean", "truth_sd", "pred_mean", "pred_sd",
    "abs_error_mean", "abs_error_sd", "abs_error_median", "abs_error_q25", "abs_error_q75", "abs_error_iqr",
    "pearson_r", "pearson_p", "wilcoxon_p",
    "ba_bias", "ba_sd", "ba_loa_lower", "ba_loa_upper",
    "icc2_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1", "icc3_1_ci_low", "icc3_1_ci_high",
    "smape_pct", "circular_mae",
)

NAN = float("nan")


def is_cobb_parameter(parameter_id: str) -> bool:
    """True for Cobb-type angle IDs (``Cobb_*`` clinical curves, ``AASCE_*`` benchmark triple)."""
    return parameter_id.startswith(COBB_PREFIXES)


def _as_float_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        arr = arr.ravel()
    return arr


def paired(truth: Sequence[float], pred: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Drop pairs where either value is NaN.

    Args:
        truth: (N,) reference values, NaN where missing.
        pred: (N,) measured values, NaN where missing.

    Returns:
        Two (n,) arrays, n <= N, with only the complete pairs.
    """
    t = _as_float_array(truth)
    p = _as_float_array(pred)
    if t.shape != p.shape:
        raise ValueError(f"truth and pred must have the same length, got {t.shape} and {p.shape}")
    ok = np.isfinite(t) & np.isfinite(p)
    return t[ok], p[ok]


def describe(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample SD (ddof=1) of the finite values.

    Returns:
        ``{"n", "mean", "sd"}``; mean is NaN for n = 0 and sd NaN for n < 2.
    """
    v = _as_float_array(values)
    v = v[np.isfinite(v)]
    n = int(v.size)
    return {
        "n": n,
        "mean": float(np.mean(v)) if n else NAN,
        "sd": float(np.std(v, ddof=1)) if n > 1 else NAN,
    }


def absolute_error_summary(truth: Sequence[float], pred: Sequence[float]) -> dict[str, float]:
    """Absolute error ``|pred - truth|``: mean (SD, ddof=1), median, quartiles and IQR.

    Quartiles use NumPy's default (linear interpolation, the same as pandas and
    R type 7). ``iqr = q75 - q25``.
    """
    t, p = paired(truth, pred)
    err = np.abs(p - t)
    n = int(err.size)
    if n == 0:
        return {"n": 0, "mean": NAN, "sd": NAN, "median": NAN, "q25": NAN, "q75": NAN, "iqr": NAN}
    q25, q50, q75 = np.percentile(err, [25, 50, 75])
    return {
        "n": n,
        "mean": float(err.mean()),
        "sd": float(err.std(ddof=1)) if n > 1 else NAN,
        "median": float(q50),
        "q25": float(q25),
        "q75": float(q75),
        "iqr": float(q75 - q25),
    }


def pearson(truth: Sequence[float], pred: Sequence[float]) -> tuple[float, float]:
    """Pearson correlation R and its two-sided p value (:func:`scipy.stats.pearsonr`).

    Returns ``(nan, nan)`` with fewer than 3 pairs or when either side is constant
    (R is undefined then).
    """
    from scipy import stats

    t, p = paired(truth, pred)
    if t.size < 3 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return NAN, NAN
    res = stats.pearsonr(t, p)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_p(truth: Sequence[float], pred: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p value of ``pred - truth`` (:func:`scipy.stats.wilcoxon`).

    SciPy's defaults are kept (``zero_method="wilcox"``: zero differences are
    dropped; exact distribution for small samples). Returns NaN when there are no
    pairs or every difference is zero: the test is undefined then (perfect
    agreement), and a made-up p = 1 would hide that.
    """
    from scipy import stats

    t, p = paired(truth, pred)
    d = p - t
    if d.size == 0 or np.all(d == 0):
        return NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.wilcoxon(p, t)
    return float(res.pvalue)


def bland_altman(truth: Sequence[float], pred: Sequence[float], z: float = LOA_Z) -> dict[str, float]:
    """Bland–Altman bias and limits of agreement of ``pred - truth``.

    ``bias = mean(d)``, ``sd = SD(d, ddof=1)``, limits ``bias ± z * sd`` with
    ``z = 1.96`` (95 %), where ``d = pred - truth`` over complete pairs.

    Returns:
        ``{"n", "bias", "sd", "loa_lower", "loa_upper"}`` (units of the parameter).
    """
    t, p = paired(truth, pred)
    d = p - t
    n = int(d.size)
    bias = float(d.mean()) if n else NAN
    sd = float(d.std(ddof=1)) if n > 1 else NAN
    return {"n": n, "bias": bias, "sd": sd, "loa_lower": bias - z * sd, "loa_upper": bias + z * sd}


# pingouin renamed the ICC types in 0.7 (ICC2 -> ICC(A,1), ICC3 -> ICC(C,1)); accept both.
_ICC_TYPES = {
    "icc2_1": ("ICC(A,1)", "ICC2"),
    "icc3_1": ("ICC(C,1)", "ICC3"),
}


def icc(table) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) with 95 % CI among the columns of a wide table.

    Uses :func:`pingouin.intraclass_corr` (Shrout & Fleiss / McGraw & Wong):
    ICC(2,1) = two-way random effects, absolute agreement, single measurement;
    ICC(3,1) = two-way mixed effects, consistency, single measurement. Rows with
    any NaN are dropped first (the ICC needs a complete targets × raters table).

    Args:
        table: pandas DataFrame, one row per image (target), one column per
            rater/source, values of one parameter.

    Returns:
        ``{"n", "k", "icc2_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1", ...}``;
        NaN where undefined (fewer than 3 complete rows, fewer than 2 columns,
        or zero variance). For perfect agreement the ICC is 1 by definition;
        pingouin's CI may then be NaN because its F statistic is infinite.
    """
    import pandas as pd
    import pingouin as pg

    out: dict[str, float] = {"n": 0, "k": int(table.shape[1])}
    for key in _ICC_TYPES:
        out.update({key: NAN, f"{key}_ci_low": NAN, f"{key}_ci_high": NAN})
    wide = table.apply(pd.to_numeric, errors="coerce").dropna(axis=0, how="any")
    out["n"] = int(len(wide))
    if wide.shape[0] < 3 or wide.shape[1] < 2:
        return out
    values = wide.to_numpy(dtype=float)
    if np.ptp(values) == 0:
        return out  # every rating identical: between-target variance is zero, ICC undefined
    long = wide.reset_index(drop=True).rename_axis("target").reset_index().melt(
        id_vars="target", var_name="rater", value_name="rating")
    with warnings.catch_warnings():
        # Perfect agreement divides by a zero residual mean square inside pingouin.
        warnings.simplefilter("ignore", RuntimeWarning)
        # pingouin's own deprecation notices about pandas are not the user's business.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pingouin")
        warnings.filterwarnings("ignore", category=FutureWarning, module="pingouin")
        res = pg.intraclass_corr(data=long, targets="target", raters="rater", ratings="rating",
                                 nan_policy="omit")
    res = res.set_index("Type")
    for key, names in _ICC_TYPES.items():
        name = next((n for n in names if n in res.index), None)
        if name is None:  # pragma: no cover - an unknown pingouin naming scheme
            log.warning("pingouin.intraclass_corr returned no %s row; got %s", names, list(res.index))
            continue
        value = float(res.loc[name, "ICC"])
        ci = res.loc[name, "CI95"] if "CI95" in res.columns else res.loc[name, "CI95%"]
        lo, hi = (float(ci[0]), float(ci[1])) if ci is not None else (NAN, NAN)
        out[key] = value
        out[f"{key}_ci_low"] = lo
        out[f"{key}_ci_high"] = hi
    return out


def smape(truth: np.ndarray, pred: np.ndarray, *, count_missing: bool = False) -> float:
    """AASCE-challenge SMAPE in percent, over the angles of each image.

    Formula (per image ``i`` over its ``j`` angles, then averaged over images)::

        SMAPE = 100 * mean_i( sum_j |pred_ij - truth_ij| / sum_j (|pred_ij| + |truth_ij|) )

    For the non-negative AASCE angles ``|a| + |b| = a + b``, so this is exactly
    the challenge's ``100 * mean(sum|a-b| / sum(a+b))``; the absolute values only
    keep it bounded (0–100 %) for signed clinical angles. Angles missing (NaN) on
    either side are left out of that image's sums; an image with no complete
    angle is skipped; an image whose denominator is 0 (all angles 0 on both
    sides) contributes 0 (perfect agreement).

    Args:
        truth: (N, J) or (N,) reference angles in degrees (J = 3 for the triple).
        pred: same shape, measured angles in degrees.
        count_missing: count an angle the truth has and the prediction lacks (a film the model
            refused or that has no result) as a failure, a predicted 0 that contributes
            ``|truth| / |truth|`` (100 %), instead of leaving it out.

    Returns:
        SMAPE in percent; NaN when no image has a complete pair.
    """
    t = np.asarray(truth, dtype=float)
    p = np.asarray(pred, dtype=float)
    if count_missing:
        p = np.where(np.isfinite(t) & ~np.isfinite(p), 0.0, p)
    if t.ndim == 1:
        t, p = t[:, None], p[:, None]
    if t.shape != p.shape:
        raise ValueError(f"truth and pred must have the same shape, got {t.shape} and {p.shape}")
    ok = np.isfinite(t) & np.isfinite(p)
    num = np.where(ok, np.abs(p - t), 0.0).sum(axis=1)
    den = np.where(ok, np.abs(p) + np.abs(t), 0.0).sum(axis=1)
    has = ok.any(axis=1)
    if not has.any():
        return NAN
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(100.0 * ratio[has].mean())


def circular_abs_diff(truth: np.ndarray, pred: np.ndarray, period: float = 180.0) -> np.ndarray:
    """Shortest distance between angles on a circle of the given period (degrees).

    ``d = |((pred - truth + period/2) mod period) - period/2|``, in ``[0, period/2]``.
    A Cobb angle is the angle between two *lines*, which are the same after a
    180° turn, hence the default period of 180°.
    """
    t = np.asarray(truth, dtype=float)
    p = np.asarray(pred, dtype=float)
    half = period / 2.0
    return np.abs(np.mod(p - t + half, period) - half)


def circular_mae(truth: np.ndarray, pred: np.ndarray, period: float = 180.0, *, count_missing: bool = False) -> float:
    """Circular mean absolute error (CMAE, degrees), as reported for Cobb-angle benchmarks.

    ``CMAE = mean over all complete (image, angle) pairs of circular_abs_diff``
    (:func:`circular_abs_diff`, period 180°). It equals the plain MAE whenever
    no error exceeds 90°, which is the case for any sensible Cobb estimate;
    it differs only for wrapped line directions.

    Args:
        truth: (N, J) or (N,) reference angles in degrees.
        pred: same shape, measured angles.
        count_missing: an angle the truth has and the prediction lacks counts as a failure, the
            largest error there is (``period / 2``), instead of being left out.

    Returns:
        CMAE in degrees; NaN when there is no complete pair.
    """
    t = np.asarray(truth, dtype=float).ravel()
    p = np.asarray(pred, dtype=float).ravel()
    if count_missing:
        p = np.where(np.isfinite(t) & ~np.isfinite(p), t + period / 2.0, p)
    ok = np.isfinite(t) & np.isfinite(p)
    if not ok.any():
        return NAN
    return float(circular_abs_diff(t[ok], p[ok], period).mean())


def parameter_statistics(truth: Sequence[float], pred: Sequence[float], parameter_id: str = "") -> dict[str, float]:
    """Every per-parameter statistic of study 001's Table 1, plus Bland–Altman and ICC.

    Args:
        truth: (N,) ground-truth values over the matched images, NaN where absent.
        pred: (N,) predicted values for the same images, NaN where absent.
        parameter_id: when it is a Cobb-type ID (:func:`is_cobb_parameter`),
            ``smape_pct`` and ``circular_mae`` are filled, else NaN.

    Returns:
        A dict with exactly the keys of :data:`PARAMETER_COLUMNS`.
    """
    import pandas as pd

    t = _as_float_array(truth)
    p = _as_float_array(pred)
    tt, pp = paired(t, p)
    out: dict[str, float] = {
        "n_truth": int(np.isfinite(t).sum()),
        "n_pred": int(np.isfinite(p).sum()),
        "n_pairs": int(tt.size),
        "n_missing_in_pred": int((np.isfinite(t) & ~np.isfinite(p)).sum()),
        "n_missing_in_truth": int((~np.isfinite(t) & np.isfinite(p)).sum()),
    }
    # Ground-truth description over every image that has a truth value (as in Table 1).
    d = describe(t)
    out["truth_mean"], out["truth_sd"] = d["mean"], d["sd"]
    d = describe(p)
    out["pred_mean"], out["pred_sd"] = d["mean"], d["sd"]
    e = absolute_error_summary(t, p)
    out.update({"abs_error_mean": e["mean"], "abs_error_sd": e["sd"], "abs_error_median": e["median"],
                "abs_error_q25": e["q25"], "abs_error_q75": e["q75"], "abs_error_iqr": e["iqr"]})
    out["pearson_r"], out["pearson_p"] = pearson(t, p)
    out["wilcoxon_p"] = wilcoxon_p(t, p)
    ba = bland_altman(t, p)
    out.update({"ba_bias": ba["bias"], "ba_sd": ba["sd"], "ba_loa_lower": ba["loa_lower"],
                "ba_loa_upper": ba["loa_upper"]})
    ic = icc(pd.DataFrame({"truth": t, "pred": p}))
    for key in ("icc2_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1", "icc3_1_ci_low", "icc3_1_ci_high"):
        out[key] = ic[key]
    if is_cobb_parameter(parameter_id):
        out["smape_pct"] = smape(t, p)
        out["circular_mae"] = circular_mae(t, p)
    else:
        out["smape_pct"] = NAN
        out["circular_mae"] = NAN
    return {k: out[k] for k in PARAMETER_COLUMNS}


def format_p(p: float, threshold: float = 0.05) -> str:
    """Format a p value as in study 001's Table 1: ``< 0.001*``, ``0.029*``, ``0.587``."""
    if p is None or not math.isfinite(p):
        return "–"
    text = "< 0.001" if p < 0.001 else f"{p:.3f}"
    return text + ("*" if p < threshold else "")
