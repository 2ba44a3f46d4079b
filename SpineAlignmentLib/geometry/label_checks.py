"""Geometric checks of four-corner vertebra labels (TL, TR, BL, BR per vertebra).

Pure NumPy, shared by everything that holds a chain of corners: label hygiene
before training (:mod:`SpineAlignmentLib.training.hygiene`), the dataset check
(:mod:`SpineAlignmentLib.io.dataset`) and the plausibility warnings of a
prediction (:mod:`SpineAlignmentLib.inference.predict`). It lives in geometry,
below all three, so none of them reaches up into another.

:func:`check_labels` finds known label errors with explicit geometric checks
and either fixes them (when the fix is unambiguous: re-sorting corners or
vertebrae) or marks the image excluded, always with a reason that names the
file.

Checks, per image (``points`` (4V, 2), corners TL, TR, BL, BR per vertebra):

* ``non_finite`` / ``outside_image``: a coordinate that is NaN/inf or more than
  a few pixels outside the image -> exclude.
* ``vertebra_order``: vertebra centroids not strictly increasing in ``y``
  (top to bottom) -> fix by sorting the vertebrae by centroid ``y``.
* ``corner_order``: in the local frame of the spine (axial axis = direction
  between the neighbouring vertebra centroids, lateral axis = its normal
  pointing to image right), ``TL`` not left of ``TR``, ``BL`` not left of
  ``BR``, ``TL`` not above ``BL`` or ``TR`` not above ``BR``. Using the local
  frame keeps strongly tilted vertebrae of a scoliotic spine from being
  flagged (a 40 deg tilt puts ``TR`` above ``TL`` in raw ``y``). -> fix by
  re-assigning the four corners from their local-frame positions.
* ``misplaced_point``: a corner farther from its vertebra centroid than
  ``misplaced_factor`` times that vertebra's median corner distance, a corner
  farther than ``parallelogram_factor`` vertebra widths from where the other
  three corners put it (``TL ~ TR + BL - BR``; vertebral bodies are close to
  parallelograms, wedging gives ~0.2-0.5 widths on this data), or a
  vertebra whose height, width or spacing to its neighbours is a robust
  outlier against the neighbouring vertebrae -> exclude (which corner is right
  cannot be decided from geometry alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Finding", "HygieneResult", "check_labels"]

TL, TR, BL, BR = 0, 1, 2, 3


@dataclass
class Finding:
    """One label problem.

    Attributes:
        file: image file name.
        check: check ID (``corner_order``, ``vertebra_order``, ``misplaced_point``,
            ``non_finite``, ``outside_image``, ``shape``).
        vertebra: vertebra index (0 = first, e.g. T1) or ``None`` for the whole image.
        detail: human-readable description.
        action: ``fixed`` or ``excluded``.
    """

    file: str
    check: str
    vertebra: int | None
    detail: str
    action: str


@dataclass
class HygieneResult:
    """Outcome for one image: the (possibly fixed) points and what was found."""

    points: np.ndarray
    findings: list[Finding] = field(default_factory=list)

    @property
    def excluded(self) -> bool:
        return any(f.action == "excluded" for f in self.findings)

    @property
    def fixed(self) -> bool:
        return any(f.action == "fixed" for f in self.findings) and not self.excluded


def _centroids(p: np.ndarray) -> np.ndarray:
    return p.reshape(-1, 4, 2).mean(axis=1)


def _frames(cent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit axial (down the spine) and lateral (towards image right) vectors per vertebra."""
    n = len(cent)
    axial = np.empty_like(cent)
    for v in range(n):
        a, b = max(v - 1, 0), min(v + 1, n - 1)
        d = cent[b] - cent[a]
        norm = np.hypot(*d)
        axial[v] = d / norm if norm > 1e-9 else (0.0, 1.0)
        if axial[v, 1] < 0:  # keep pointing down the image
            axial[v] = -axial[v]
    lateral = np.stack([axial[:, 1], -axial[:, 0]], axis=1)
    return axial, lateral


def _local(p: np.ndarray, cent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, 4) axial and lateral coordinates of each corner relative to its centroid."""
    axial, lateral = _frames(cent)
    rel = p.reshape(-1, 4, 2) - cent[:, None, :]
    return np.einsum("vkc,vc->vk", rel, axial), np.einsum("vkc,vc->vk", rel, lateral)


def _corner_order_ok(a: np.ndarray, l: np.ndarray) -> bool:
    return bool(l[TL] < l[TR] and l[BL] < l[BR] and a[TL] < a[BL] and a[TR] < a[BR])


def _reassign(corners: np.ndarray, a: np.ndarray, l: np.ndarray) -> np.ndarray:
    """Corners re-sorted to TL, TR, BL, BR from their local-frame coordinates."""
    order = np.argsort(a, kind="stable")
    top, bottom = order[:2], order[2:]
    top = top[np.argsort(l[top], kind="stable")]
    bottom = bottom[np.argsort(l[bottom], kind="stable")]
    return corners[[top[0], top[1], bottom[0], bottom[1]]]


def _robust_outliers(values: np.ndarray, window: int, low: float, high: float) -> list[int]:
    """Indices whose value / median of its neighbours (excluding itself) is outside [low, high]."""
    out = []
    n = len(values)
    for i in range(n):
        nb = [values[j] for j in range(max(0, i - window), min(n, i + window + 1)) if j != i]
        med = float(np.median(nb))
        if med <= 0:
            continue
        r = values[i] / med
        if r < low or r > high:
            out.append(i)
    return out


def check_labels(
    points: np.ndarray,
    file: str,
    image_shape: tuple[int, int] | None = None,
    *,
    misplaced_factor: float = 2.0,
    parallelogram_factor: float = 0.8,
    size_ratio: tuple[float, float] = (0.4, 2.5),
    spacing_ratio: tuple[float, float] = (0.3, 3.0),
    vertebra_names: Sequence[str] | None = None,
) -> HygieneResult:
    """Check (and where unambiguous, fix) one image's corner labels.

    Args:
        points: (4V, 2) ``(x, y)`` pixel coordinates, corners TL, TR, BL, BR per
            vertebra, vertebrae top to bottom.
        file: image file name, used in every finding.
        image_shape: (rows, cols) to check that points lie on the image.
        misplaced_factor: a corner farther than this times the vertebra's
            median corner-to-centroid distance is misplaced.
        parallelogram_factor: a corner farther than this many (median) vertebra
            widths from the parallelogram completion of the other three is misplaced.
        size_ratio: allowed range of a vertebra's height or width relative to
            the median of its two neighbours on each side.
        spacing_ratio: allowed range of a centroid-to-centroid gap relative to
            the median of the neighbouring gaps.
        vertebra_names: names for messages (default ``V0``, ``V1``...).

    Returns:
        :class:`HygieneResult` with the fixed points and the findings.
    """
    p = np.array(points, dtype=np.float64)
    res = HygieneResult(points=p)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] % 4 or p.shape[0] < 8:
        res.findings.append(Finding(file, "shape", None, f"label array has shape {p.shape}, expected (4V, 2)", "excluded"))
        return res
    nv = p.shape[0] // 4
    names = list(vertebra_names) if vertebra_names is not None else [f"V{i}" for i in range(nv)]
    if not np.isfinite(p).all():
        res.findings.append(Finding(file, "non_finite", None, "label contains NaN or infinite coordinates", "excluded"))
        return res
    if image_shape is not None:
        rows, cols = image_shape
        tol = 5.0
        bad = np.where((p[:, 0] < -tol) | (p[:, 0] > cols - 1 + tol) | (p[:, 1] < -tol) | (p[:, 1] > rows - 1 + tol))[0]
        if len(bad):
            res.findings.append(Finding(file, "outside_image", int(bad[0]) // 4,
                                        f"{len(bad)} point(s) outside the {rows}x{cols} image, first is point {int(bad[0])}",
                                        "excluded"))
            return res

    # 1. vertebra order (top to bottom)
    cent = _centroids(p)
    dy = np.diff(cent[:, 1])
    if np.any(dy <= 0):
        order = np.argsort(cent[:, 1], kind="stable")
        bad = [int(i) for i in np.where(dy <= 0)[0]]
        desc = ", ".join(f"{names[i]}/{names[i + 1]}" for i in bad)
        p = p.reshape(nv, 4, 2)[order].reshape(-1, 2)
        res.findings.append(Finding(file, "vertebra_order", bad[0],
                                    f"vertebra centroids not top-to-bottom at {desc}; re-sorted vertebrae by centroid y",
                                    "fixed"))
        cent = _centroids(p)

    # 2. corner order within each vertebra, in the local spine frame
    a, l = _local(p, cent)
    fixed = []
    q = p.reshape(nv, 4, 2).copy()
    for v in range(nv):
        if not _corner_order_ok(a[v], l[v]):
            q[v] = _reassign(q[v], a[v], l[v])
            fixed.append(v)
    if fixed:
        p = q.reshape(-1, 2)
        for v in fixed:
            res.findings.append(Finding(file, "corner_order", v,
                                        f"corners of {names[v]} swapped (TL/TR left-right or top/bottom order); re-sorted in the local spine frame",
                                        "fixed"))
        cent = _centroids(p)
        a, l = _local(p, cent)
        still = [v for v in range(nv) if not _corner_order_ok(a[v], l[v])]
        for v in still:
            res.findings.append(Finding(file, "corner_order", v,
                                        f"corners of {names[v]} cannot be put in TL, TR, BL, BR order", "excluded"))

    # 3. misplaced points and robust size / spacing outliers
    q = p.reshape(nv, 4, 2)
    dist = np.hypot(*(q - cent[:, None, :]).transpose(2, 0, 1))  # (V, 4)
    for v in range(nv):
        med = float(np.median(dist[v]))
        for k in range(4):
            if med > 0 and dist[v, k] > misplaced_factor * med:
                res.findings.append(Finding(file, "misplaced_point", v,
                                            f"corner {('TL', 'TR', 'BL', 'BR')[k]} of {names[v]} is {dist[v, k]:.0f} px from its centroid "
                                            f"(median corner distance {med:.0f} px)", "excluded"))
    med_width = float(np.median(0.5 * (np.hypot(*(q[:, TR] - q[:, TL]).T) + np.hypot(*(q[:, BR] - q[:, BL]).T))))
    completion = np.stack([q[:, TR] + q[:, BL] - q[:, BR], q[:, TL] + q[:, BR] - q[:, BL],
                           q[:, TL] + q[:, BR] - q[:, TR], q[:, TR] + q[:, BL] - q[:, TL]], axis=1)
    dev = np.hypot(*(q - completion).transpose(2, 0, 1))  # (V, 4)
    for v in range(nv):
        k = int(np.argmax(dev[v]))
        if med_width > 0 and dev[v, k] > parallelogram_factor * med_width:
            res.findings.append(Finding(file, "misplaced_point", v,
                                        f"corner {('TL', 'TR', 'BL', 'BR')[k]} of {names[v]} is {dev[v, k]:.0f} px from where "
                                        f"the other three corners put it (vertebra width {med_width:.0f} px)", "excluded"))
    height = 0.5 * (np.hypot(*(q[:, BL] - q[:, TL]).T) + np.hypot(*(q[:, BR] - q[:, TR]).T))
    width = 0.5 * (np.hypot(*(q[:, TR] - q[:, TL]).T) + np.hypot(*(q[:, BR] - q[:, BL]).T))
    for label, vals in (("height", height), ("width", width)):
        for v in _robust_outliers(vals, 2, *size_ratio):
            res.findings.append(Finding(file, "misplaced_point", v,
                                        f"{names[v]} {label} {vals[v]:.0f} px is an outlier against its neighbours", "excluded"))
    gaps = np.hypot(*np.diff(cent, axis=0).T)
    for g in _robust_outliers(gaps, 2, *spacing_ratio):
        res.findings.append(Finding(file, "misplaced_point", g,
                                    f"gap {names[g]}-{names[g + 1]} of {gaps[g]:.0f} px is an outlier against the neighbouring gaps",
                                    "excluded"))
    res.points = p
    return res
