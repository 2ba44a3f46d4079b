"""Validation metrics for coronal-spine landmarks: landmark error and the AASCE triple."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..evaluation.statistics import circular_mae, smape
from ..geometry.aasce import aasce_triple

__all__ = ["vertebra_widths", "landmark_metrics"]


def vertebra_widths(points: np.ndarray) -> np.ndarray:
    """(V,) mean of the top (TL-TR) and bottom (BL-BR) edge lengths, pixels, for (4V, 2) corners."""
    q = np.asarray(points, dtype=float).reshape(-1, 4, 2)
    return 0.5 * (np.linalg.norm(q[:, 1] - q[:, 0], axis=1) + np.linalg.norm(q[:, 3] - q[:, 2], axis=1))


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
        ``smape_pct_vs_label_triple`` / ``cmae_deg_vs_label_triple`` (against the
        triple recomputed from the reference corners), and ``n_images``.
    """
    errs, pct = [], []
    pred_tri, ref_tri, lab_tri = [], [], []
    for i, (p, t, h) in enumerate(zip(preds, truths, image_heights)):
        p = np.asarray(p, dtype=float)
        t = np.asarray(t, dtype=float)
        e = np.linalg.norm(p - t, axis=1)
        errs.append(e)
        pct.append(100.0 * e / np.repeat(vertebra_widths(t), 4))
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
        "smape_pct": smape(ref_tri, pred_tri) if len(errs) else float("nan"),
        "cmae_deg": circular_mae(ref_tri, pred_tri) if len(errs) else float("nan"),
        "smape_pct_vs_label_triple": smape(lab_tri, pred_tri) if len(errs) else float("nan"),
        "cmae_deg_vs_label_triple": circular_mae(lab_tri, pred_tri) if len(errs) else float("nan"),
    }
