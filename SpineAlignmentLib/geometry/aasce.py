"""AASCE 2019 benchmark Cobb triple: a faithful port of the challenge's MATLAB ``angleCal``.

This reproduces the numbers of the AASCE challenge (and of ``labels/angles.csv``
of its training data) for benchmarking only. It is *not* the clinical Cobb
angle (see :mod:`SpineAlignmentLib.geometry.coronal` and definitions.md §6.2):

* it measures vertebral mid-lines (left-edge midpoint to right-edge midpoint),
  not endplates, as unsigned angles;
* angle 1 is simply the largest pairwise angle; angles 2 and 3 are found above
  and below it (or both above it) depending on an S-shape test and on where the
  major curve lies relative to the image height.

MATLAB semantics kept on purpose (definitions.md §6.3): cosines are rounded to
8 decimals (``roundn(x, -8)``) and passed to the full ``acos`` range, so angles
above 90° are possible (the widely copied Python port clips at 90°); ``max``
returns the *first* index on ties and ignores NaN; the S-shape test compares
``sum(ll*ll')`` with ``sum(abs(ll*ll'))`` including its NaN behaviour for
degenerate (vertical or horizontal) chords.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_VERTEBRAE = 17
N_POINTS = 4 * N_VERTEBRAE


@dataclass(frozen=True)
class AasceResult:
    """Output of :func:`aasce_triple`.

    Attributes:
        angles: ``(AASCE_1, AASCE_2, AASCE_3)`` in degrees.
        pairs: for each angle, the two 0-based vertebra indices (0 = T1, 16 = L5)
            whose mid-lines form it, upper first.
        is_s: result of the reference S-shape test.
        midlines: (17, 2, 2) mid-line end points ``[left_mid, right_mid]`` per
            vertebra, in the input's pixel coordinates (for drawing).
    """

    angles: tuple[float, float, float]
    pairs: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    is_s: bool
    midlines: np.ndarray


def _roundn8(x: np.ndarray) -> np.ndarray:
    # MATLAB roundn(x, -8) == round(x * 1e8) / 1e8 with ties away from zero.
    y = np.asarray(x, dtype=float) * 1e8
    return np.sign(y) * np.floor(np.abs(y) + 0.5) / 1e8


def _matlab_argmax(values: np.ndarray) -> tuple[float, int]:
    """MATLAB ``[m, i] = max(v)`` for a vector: ignores NaN, first index on ties."""
    v = np.asarray(values, dtype=float)
    if np.all(np.isnan(v)):
        return float("nan"), 0
    i = int(np.nanargmax(v))  # nanargmax returns the first occurrence
    return float(v[i]), i


def _angles_deg(vec_a: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """Unsigned angle(s) in degrees between ``vec_a`` (2,) and each row of ``vecs`` (n, 2)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mod_a = np.sqrt(np.sum(vec_a * vec_a))
        mod_b = np.sqrt(np.sum(vecs * vecs, axis=1))
        cos = _roundn8((vecs @ vec_a) / (mod_a * mod_b))
        return np.degrees(np.arccos(cos))


def _is_s(mid_p_v: np.ndarray) -> bool:
    """The reference S-shape test on the 34 endplate midpoints."""
    num = mid_p_v.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        p = mid_p_v
        ll = (p[: num - 2, 1] - p[num - 1, 1]) / (p[0, 1] - p[num - 1, 1]) - (
            p[: num - 2, 0] - p[num - 1, 0]
        ) / (p[0, 0] - p[num - 1, 0])
        outer = np.outer(ll, ll)
        a = np.sum(outer)
        b = np.sum(np.abs(outer))
    # MATLAB's ~= is true when either side is NaN.
    return bool(a != b or np.isnan(a) or np.isnan(b))


def aasce_triple(points: np.ndarray, image_height: float) -> AasceResult:
    """Compute the AASCE benchmark triple from 68 corner points.

    Args:
        points: (68, 2) array of ``(x, y)`` pixel coordinates, four corners per
            vertebra T1..L5 in the AASCE order top-left, top-right, bottom-left,
            bottom-right.
        image_height: image height H in the same pixel units (the reference
            compares the sum of two endplate-midpoint ``y`` values with H, i.e.
            their mean with H/2).

    Returns:
        :class:`AasceResult`.

    Raises:
        ValueError: if ``points`` is not (68, 2).
    """
    p2 = np.asarray(points, dtype=float)
    if p2.shape != (N_POINTS, 2):
        raise ValueError(f"AASCE triple needs (68, 2) points, got {p2.shape}")
    vnum = N_VERTEBRAE

    # Endplate midpoints (TL+TR, BL+BR): 34 points, used by the S test and the H test.
    mid_p_v = (p2[0::2] + p2[1::2]) / 2.0
    # Left-edge and right-edge midpoints per vertebra -> mid-line vectors.
    left_mid = (p2[0::4] + p2[2::4]) / 2.0
    right_mid = (p2[1::4] + p2[3::4]) / 2.0
    vec_m = right_mid - left_mid

    with np.errstate(invalid="ignore", divide="ignore"):
        mod_v = np.sqrt(np.sum(vec_m * vec_m, axis=1))
        cos = _roundn8((vec_m @ vec_m.T) / np.outer(mod_v, mod_v))
        angles = np.degrees(np.arccos(cos))

    # [maxt, pos1] = max(angles): column-wise max (first row on ties, NaN ignored);
    # [pt, pos2] = max(maxt).
    col_max = np.empty(vnum)
    pos1 = np.empty(vnum, dtype=int)
    for j in range(vnum):
        col_max[j], pos1[j] = _matlab_argmax(angles[:, j])
    pt, pos2 = _matlab_argmax(col_max)
    lower = int(pos1[pos2])

    is_s = _is_s(mid_p_v)
    if not is_s:
        mt = float(_angles_deg(vec_m[0], vec_m[pos2:pos2 + 1])[0])
        tl = float(_angles_deg(vec_m[vnum - 1], vec_m[lower:lower + 1])[0])
        pairs = ((pos2, lower), (0, pos2), (lower, vnum - 1))
    else:
        # 1-based MATLAB index k -> mid_p_v(k*2) is row 2k-1 (0-based): bottom endplate midpoint.
        if mid_p_v[2 * pos2 + 1, 1] + mid_p_v[2 * lower + 1, 1] < image_height:
            mt, i1 = _matlab_argmax(_angles_deg(vec_m[pos2], vec_m[: pos2 + 1]))
            tl, i2 = _matlab_argmax(_angles_deg(vec_m[lower], vec_m[lower:vnum]))
            pairs = ((pos2, lower), (i1, pos2), (lower, lower + i2))
        else:
            mt, i1 = _matlab_argmax(_angles_deg(vec_m[pos2], vec_m[: pos2 + 1]))
            tl, i2 = _matlab_argmax(_angles_deg(vec_m[i1], vec_m[: i1 + 1]))
            pairs = ((pos2, lower), (i1, pos2), (i2, i1))
    midlines = np.stack([left_mid, right_mid], axis=1)
    return AasceResult(
        angles=(float(pt), float(mt), float(tl)),
        pairs=tuple(tuple(int(v) for v in pr) for pr in pairs),  # type: ignore[arg-type]
        is_s=is_s,
        midlines=midlines,
    )
