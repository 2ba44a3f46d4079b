"""Per-landmark localisation errors between two landmark sets of one image.

NumPy only (no pandas), so the Slicer module can call
:func:`compare_landmark_sets` to compare two markups sets of the same image.

Definitions (study 001, Methods, eqs. 5–6):

* error ``ξ_i = ||pred_i - truth_i||_2`` in pixels of the original image, and
  in mm when a spacing is given, applied per axis: ``dx`` (columns) times the
  column spacing, ``dy`` (rows) times the row spacing;
* normalised error ``ξ̃_i = ξ_i / min_{k≠i} ||truth_i - truth_k||_2``: the error
  in units of the distance from truth landmark ``i`` to its nearest other truth
  landmark (dimensionless; both distances in mm when calibrated, else in px);
* success detection rate (SDR) at ``t`` mm: the fraction of landmarks with a mm
  error ``<= t``; only defined when a spacing is known.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

#: Thresholds (mm) of the success detection rate.
SDR_THRESHOLDS_MM = (2.0, 2.5, 3.0, 4.0)

#: Keys of each row returned by :func:`compare_landmark_sets`, in order.
LANDMARK_COLUMNS = (
    "landmark", "status", "truth_x", "truth_y", "pred_x", "pred_y", "dx_px", "dy_px",
    "error_px", "error_mm", "nn_distance_px", "nn_distance_mm", "normalised_error", "calibration",
)

NAN = float("nan")


def sdr_column(threshold_mm: float) -> str:
    """Machine-readable column name of an SDR threshold: ``sdr_2mm``, ``sdr_2_5mm``."""
    text = f"{threshold_mm:g}".replace(".", "_")
    return f"sdr_{text}mm"


def euclidean_errors(truth: np.ndarray, pred: np.ndarray, spacing_mm: Sequence[float] | None = None) -> np.ndarray:
    """Euclidean distance per landmark.

    Args:
        truth: (M, 2) x, y in px (NaN where missing).
        pred: (M, 2) x, y in px.
        spacing_mm: ``(row, col)`` mm per pixel; None for pixel distances.

    Returns:
        (M,) distances, px when ``spacing_mm`` is None, else mm; NaN where either
        point is missing.
    """
    t = np.asarray(truth, dtype=float).reshape(-1, 2)
    p = np.asarray(pred, dtype=float).reshape(-1, 2)
    d = p - t
    if spacing_mm is not None:
        row, col = _check_spacing(spacing_mm)
        d = d * np.array([col, row])  # x runs along columns, y along rows
    return np.hypot(d[:, 0], d[:, 1])


def nearest_neighbour_distances(points: np.ndarray, spacing_mm: Sequence[float] | None = None) -> np.ndarray:
    """Distance from each landmark to its nearest *other* landmark of the same set.

    Args:
        points: (M, 2) x, y in px; rows with NaN are ignored as neighbours and
            get NaN themselves.
        spacing_mm: ``(row, col)`` mm per pixel, or None for px.

    Returns:
        (M,) distances (px, or mm with a spacing); NaN for a missing point or
        when no other point exists. A coincident duplicate gives 0.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if spacing_mm is not None:
        row, col = _check_spacing(spacing_mm)
        pts = pts * np.array([col, row])
    diff = pts[:, None, :] - pts[None, :, :]
    dist = np.hypot(diff[..., 0], diff[..., 1])
    np.fill_diagonal(dist, np.inf)
    dist[~np.isfinite(dist)] = np.inf
    nn = dist.min(axis=1) if len(pts) else np.zeros(0)
    nn[~np.isfinite(nn)] = np.nan
    return nn


def normalised_errors(truth: np.ndarray, pred: np.ndarray, spacing_mm: Sequence[float] | None = None) -> np.ndarray:
    """Study 001 eq. 6: error divided by the nearest-neighbour distance in the truth.

    Returns:
        (M,) dimensionless; NaN where the error or the distance is missing, or the
        nearest neighbour coincides (distance 0).
    """
    err = euclidean_errors(truth, pred, spacing_mm)
    nn = nearest_neighbour_distances(truth, spacing_mm)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = err / nn
    out[~(nn > 0)] = np.nan
    return out


def success_detection_rate(errors_mm: Iterable[float],
                           thresholds_mm: Sequence[float] = SDR_THRESHOLDS_MM) -> dict[float, float]:
    """Fraction (0–1) of landmarks whose error is at most each threshold.

    Args:
        errors_mm: errors in mm; NaN entries (missing predictions) are left out.
        thresholds_mm: thresholds in mm.

    Returns:
        ``{threshold: rate}``; rates are NaN when there is no finite error.
    """
    e = np.asarray(list(errors_mm), dtype=float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {float(t): NAN for t in thresholds_mm}
    return {float(t): float(np.mean(e <= t)) for t in thresholds_mm}


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float]:
    from ..errors import CalibrationError

    try:
        row, col = (float(v) for v in spacing_mm)
    except (TypeError, ValueError):
        raise CalibrationError(
            f"spacing_mm {spacing_mm!r} is not a (row, col) pair of numbers; pass two mm-per-pixel values or None."
        ) from None
    if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
        raise CalibrationError(
            f"spacing_mm {spacing_mm!r} must be two positive finite mm-per-pixel values; fix or omit it."
        )
    return row, col


def _xy(value) -> tuple[float, float]:
    """Accept (x, y), [x, y], {"x":, "y":} or an object with .x/.y (result.Landmark)."""
    if value is None:
        return NAN, NAN
    if isinstance(value, Mapping):
        x, y = value.get("x"), value.get("y")
    elif hasattr(value, "x") and hasattr(value, "y"):
        x, y = value.x, value.y
    else:
        x, y = value[0], value[1]
    try:
        return float(x), float(y)
    except (TypeError, ValueError):
        return NAN, NAN


def compare_landmark_sets(
    truth: Mapping[str, object],
    pred: Mapping[str, object],
    spacing_mm: Sequence[float] | None = None,
    calibration: str | None = None,
    order: Sequence[str] | None = None,
) -> list[dict]:
    """Compare two landmark sets of one image, landmark by landmark.

    Args:
        truth: landmark ID -> position in px: ``(x, y)``, ``{"x": .., "y": ..}``
            or an object with ``.x`` and ``.y``.
        pred: the same for the set being compared (model or second rater).
        spacing_mm: ``(row, col)`` mm per pixel of this image (the truth's), or
            None: then the mm columns are NaN.
        calibration: calibration label (definitions.md §7.4) copied into every
            row; defaults to ``"pixels-only"`` without a spacing.
        order: landmark IDs in output order (e.g. the protocol's canonical
            order); defaults to the truth's order, then IDs only in ``pred``.

    Returns:
        One dict per landmark with the keys of :data:`LANDMARK_COLUMNS`.
        ``status`` is ``"ok"``, ``"missing_in_pred"`` or ``"missing_in_truth"``;
        errors are NaN unless both points exist. ``nn_distance_*`` and
        ``normalised_error`` use the nearest other landmark of ``truth``.
    """
    if spacing_mm is not None:
        spacing_mm = _check_spacing(spacing_mm)
    if calibration is None:
        calibration = "pixels-only" if spacing_mm is None else "unspecified"
    ids = list(order) if order is not None else list(truth) + [k for k in pred if k not in truth]
    tp = np.array([_xy(truth.get(k)) for k in ids], dtype=float).reshape(-1, 2)
    pp = np.array([_xy(pred.get(k)) for k in ids], dtype=float).reshape(-1, 2)
    # Nearest neighbours are searched among all truth landmarks, including any not listed in `order`.
    all_truth_ids = list(dict.fromkeys(ids + list(truth)))
    all_tp = np.array([_xy(truth.get(k)) for k in all_truth_ids], dtype=float).reshape(-1, 2)
    nn_px_all = nearest_neighbour_distances(all_tp)
    nn_mm_all = nearest_neighbour_distances(all_tp, spacing_mm) if spacing_mm is not None else None
    index = {k: i for i, k in enumerate(all_truth_ids)}

    err_px = euclidean_errors(tp, pp)
    err_mm = euclidean_errors(tp, pp, spacing_mm) if spacing_mm is not None else np.full(len(ids), np.nan)
    rows = []
    for i, k in enumerate(ids):
        t_ok = bool(np.all(np.isfinite(tp[i])))
        p_ok = bool(np.all(np.isfinite(pp[i])))
        status = "ok" if t_ok and p_ok else ("missing_in_pred" if t_ok else "missing_in_truth")
        nn_px = float(nn_px_all[index[k]])
        nn_mm = float(nn_mm_all[index[k]]) if nn_mm_all is not None else NAN
        err = float(err_mm[i]) if spacing_mm is not None else float(err_px[i])
        nn = nn_mm if spacing_mm is not None else nn_px
        norm = err / nn if (math.isfinite(err) and math.isfinite(nn) and nn > 0) else NAN
        rows.append({
            "landmark": k,
            "status": status,
            "truth_x": float(tp[i, 0]), "truth_y": float(tp[i, 1]),
            "pred_x": float(pp[i, 0]), "pred_y": float(pp[i, 1]),
            "dx_px": float(pp[i, 0] - tp[i, 0]), "dy_px": float(pp[i, 1] - tp[i, 1]),
            "error_px": float(err_px[i]),
            "error_mm": float(err_mm[i]),
            "nn_distance_px": nn_px,
            "nn_distance_mm": nn_mm,
            "normalised_error": norm,
            "calibration": calibration,
        })
    return rows


def letter_values(values: Iterable[float], k: int | None = None) -> list[tuple[float, float, float]]:
    """Letter values (Hofmann, Wickham & Kafadar 2017) of a sample, for boxen plots.

    Depth ``i = 1..k`` gives the box between the ``2^-(i+1)`` and
    ``1 - 2^-(i+1)`` quantiles: i = 1 is the IQR (0.25–0.75), i = 2 the
    0.125–0.875 box, i = 3 the 0.0625–0.9375 box (study 001, Fig. 6).

    Args:
        values: sample (NaN ignored).
        k: number of boxes; default Tukey's rule ``floor(log2 n) - 3`` (at least 1),
            the same default as seaborn's ``k_depth="tukey"``.

    Returns:
        ``[(lower_quantile_level, lower_value, upper_value), ...]`` from the widest
        box (IQR) outwards; empty for an empty sample.
    """
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    if k is None:
        k = max(1, int(np.floor(np.log2(v.size))) - 3)
    out = []
    for i in range(1, k + 1):
        q = 2.0 ** -(i + 1)
        lo, hi = np.quantile(v, [q, 1 - q])
        out.append((q, float(lo), float(hi)))
    return out
