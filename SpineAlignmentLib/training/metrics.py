"""Validation metrics for coronal-spine landmarks: landmark error and the AASCE triple."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..evaluation.statistics import circular_mae, smape
from ..geometry.aasce import aasce_triple

__all__ = ["vertebra_widths", "midline_tilt_errors", "rotate_vertebrae", "landmark_metrics", "triple_sensitivity"]


def vertebra_widths(points: np.ndarray) -> np.ndarray:
    """(V,) mean of the top (TL-TR) and bottom (BL-BR) edge lengths, pixels, for (4V, 2) corners."""
    q = np.asarray(points, dtype=float).reshape(-1, 4, 2)
    return 0.5 * (np.linalg.norm(q[:, 1] - q[:, 0], axis=1) + np.linalg.norm(q[:, 3] - q[:, 2], axis=1))


def _midline_angles(points: np.ndarray) -> np.ndarray:
    """(V,) mid-line angle of each vertebra, degrees (the line the AASCE triple is built from)."""
    from ..models.refine import vertebra_frames

    return np.degrees(vertebra_frames(np.asarray(points, dtype=float).reshape(-1, 4, 2))[2])


def midline_tilt_errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(V,) signed mid-line angle error (prediction minus reference) of each vertebra, degrees in [-180, 180).

    The AASCE triple is a function of these angles alone, so their error is
    the smooth quantity behind its SMAPE (which jumps when a near-tied end
    vertebra changes).
    """
    d = _midline_angles(pred) - _midline_angles(truth)
    return (d + 180.0) % 360.0 - 180.0


def rotate_vertebrae(points: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """(4V, 2) corners with each vertebra rotated about its centroid by ``degrees[v]``."""
    q = np.asarray(points, dtype=float).reshape(-1, 4, 2)
    c = q.mean(axis=1, keepdims=True)
    a = np.radians(np.asarray(degrees, dtype=float))[:, None]
    d = q - c
    rot = np.stack([np.cos(a) * d[..., 0] - np.sin(a) * d[..., 1], np.sin(a) * d[..., 0] + np.cos(a) * d[..., 1]], -1)
    return (rot + c).reshape(-1, 2)


def triple_sensitivity(preds: Sequence[np.ndarray], image_heights: Sequence[float],
                       reference_angles: Sequence[np.ndarray], *, tilt_sd_deg: float = 0.25, repeats: int = 20,
                       seed: int = 0) -> dict:
    """How much the SMAPE of the AASCE triple moves when every predicted vertebra turns by a tiny random angle.

    The triple picks its end vertebrae by ``max``; on a few dozen images a
    near-tie that flips changes the SMAPE by tenths of a point. This measures
    that chance part: each repeat rotates every predicted vertebra about its
    centroid by N(0, ``tilt_sd_deg``) degrees and recomputes the SMAPE, so two
    models whose SMAPE differ by less than a couple of ``smape_pct_sd`` are not
    told apart by these images.

    Returns:
        dict with ``tilt_sd_deg``, ``repeats``, ``seed``, ``smape_pct_mean``,
        ``smape_pct_sd``, ``smape_pct_min``, ``smape_pct_max``.
    """
    rng = np.random.default_rng(seed)
    ref = np.array([np.asarray(r, dtype=float) for r in reference_angles])
    values = []
    for _ in range(int(repeats)):
        tri = np.array([aasce_triple(rotate_vertebrae(p, rng.normal(0.0, tilt_sd_deg, len(p) // 4)), float(h)).angles
                        for p, h in zip(preds, image_heights)])
        values.append(smape(ref, tri))
    v = np.array(values)
    return {"tilt_sd_deg": float(tilt_sd_deg), "repeats": int(repeats), "seed": int(seed),
            "smape_pct_mean": float(v.mean()), "smape_pct_sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "smape_pct_min": float(v.min()), "smape_pct_max": float(v.max())}


def landmark_metrics(
    preds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    image_heights: Sequence[float],
    reference_angles: Sequence[np.ndarray | None] | None = None,
) -> dict:
    """Landmark and AASCE-triple metrics over a set of images (original pixels).

    Args:
        preds: per image (68, 2) predicted corners.
        truths: per image (68, 2) reference corners (after label hygiene).
        image_heights: per image height in pixels (the triple's curve selection uses it).
        reference_angles: per image (3,) reference triple (e.g. the dataset's
            ``angles.csv``) or ``None``; when absent the triple of ``truths`` is used.

    Returns:
        dict with ``mean_error_px``, ``median_error_px``, ``mean_error_pct_width``,
        ``smape_pct`` and ``cmae_deg`` (against the reference angles),
        ``midline_tilt_mae_deg`` (mean absolute mid-line angle error over every vertebra,
        :func:`midline_tilt_errors`),
        ``smape_pct_vs_label_triple`` / ``cmae_deg_vs_label_triple`` (against the
        triple recomputed from the reference corners), and ``n_images``.
    """
    errs, pct, tilt = [], [], []
    pred_tri, ref_tri, lab_tri = [], [], []
    for i, (p, t, h) in enumerate(zip(preds, truths, image_heights)):
        p = np.asarray(p, dtype=float)
        t = np.asarray(t, dtype=float)
        e = np.linalg.norm(p - t, axis=1)
        errs.append(e)
        pct.append(100.0 * e / np.repeat(vertebra_widths(t), 4))
        tilt.append(np.abs(midline_tilt_errors(p, t)))
        pt = np.array(aasce_triple(p, float(h)).angles)
        lt = np.array(aasce_triple(t, float(h)).angles)
        ref = None if reference_angles is None else reference_angles[i]
        pred_tri.append(pt)
        lab_tri.append(lt)
        ref_tri.append(lt if ref is None else np.asarray(ref, dtype=float))
    e = np.concatenate(errs) if errs else np.array([np.nan])
    pred_tri, ref_tri, lab_tri = np.array(pred_tri), np.array(ref_tri), np.array(lab_tri)
    return {
        "n_images": len(errs),
        "mean_error_px": float(np.mean(e)),
        "median_error_px": float(np.median(e)),
        "mean_error_pct_width": float(np.mean(np.concatenate(pct))) if pct else float("nan"),
        "midline_tilt_mae_deg": float(np.mean(np.concatenate(tilt))) if tilt else float("nan"),
        "smape_pct": smape(ref_tri, pred_tri) if len(errs) else float("nan"),
        "cmae_deg": circular_mae(ref_tri, pred_tri) if len(errs) else float("nan"),
        "smape_pct_vs_label_triple": smape(lab_tri, pred_tri) if len(errs) else float("nan"),
        "cmae_deg_vs_label_triple": circular_mae(lab_tri, pred_tri) if len(errs) else float("nan"),
    }

