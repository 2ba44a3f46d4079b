"""Pixel <-> RAS conversion: the one place where landmark pixels meet Slicer's patient space.

A radiograph in Slicer is a single-slice scalar volume. A landmark at pixel
``(x, y)`` (x = column, y = row, sub-pixel, integer values at pixel centres, the
convention of VTK/ITK continuous indices and of ``protocols.md``) is the
continuous voxel index ``IJK = (x, y, 0)``; its scene position is
``IJKToRAS @ (x, y, 0, 1)``. Both directions use the same 4x4 matrix, so a
round trip is exact up to floating point for any origin, spacing and direction.

The matrix of a volume node comes from ``GetIJKToRASMatrix``; for a file that is
not loaded (the batch ``.mrk.json``) it is built from the image header exactly as
Slicer's ITK-based readers do (LPS header geometry turned into RAS), so the
points land on the image when the same file is loaded into Slicer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: LPS <-> RAS: flip the first two axes (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _as_matrix(ijk_to_ras: Any) -> np.ndarray:
    m = np.asarray(ijk_to_ras, dtype=float)
    if m.shape != (4, 4):
        raise ValueError(f"IJK-to-RAS must be a 4x4 matrix, got shape {m.shape}")
    return m


def pixels_to_ras(ijk_to_ras: Any, xy: Any) -> np.ndarray:
    """Pixel coordinates to RAS positions.

    Args:
        ijk_to_ras: 4x4 matrix (array-like) of the volume.
        xy: ``(N, 2)`` pixel coordinates ``(x = column, y = row)``.

    Returns:
        ``(N, 3)`` RAS positions in mm (scene units).
    """
    m = _as_matrix(ijk_to_ras)
    pts = np.asarray(xy, dtype=float).reshape(-1, 2)
    ijk1 = np.column_stack([pts, np.zeros(len(pts)), np.ones(len(pts))])
    return (ijk1 @ m.T)[:, :3]


#: A point more than this many slices (k) from the film's plane was not placed on that film.
OFF_PLANE_SLICES = 0.5


def ras_to_pixels(ijk_to_ras: Any, ras: Any, *, return_k: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """RAS positions to pixel coordinates (inverse of :func:`pixels_to_ras`).

    Args:
        ijk_to_ras: 4x4 matrix of the volume.
        ras: ``(N, 3)`` RAS positions.
        return_k: also return the slice index ``k`` of each point (0 on the image
            plane; a point dragged in a 3-D view may leave it).

    Returns:
        ``(N, 2)`` pixel coordinates ``(x, y)``, and ``(N,)`` k when asked.
    """
    m = _as_matrix(ijk_to_ras)
    pts = np.asarray(ras, dtype=float).reshape(-1, 3)
    ras1 = np.column_stack([pts, np.ones(len(pts))])
    ijk = ras1 @ np.linalg.inv(m).T
    return (ijk[:, :2], ijk[:, 2]) if return_k else ijk[:, :2]


def ijk_to_ras_from_volume_node(volume_node: Any) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a ``vtkMRMLVolumeNode`` (duck-typed, no Slicer import)."""
    import vtk  # only reached with a volume node, i.e. where VTK exists

    vm = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(vm)
    return np.array([[vm.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras_from_geometry(origin_lps: Any, spacing: Any, direction_lps: Any) -> np.ndarray:
    """IJK-to-RAS from ITK-style (LPS) geometry of a 2-D or 3-D image.

    Args:
        origin_lps: 2 or 3 numbers (mm).
        spacing: 2 or 3 numbers (mm per voxel, i then j [then k]).
        direction_lps: 2x2 or 3x3 direction cosines (columns are the axes), flattened or not.
    """
    origin = np.zeros(3)
    sp = np.ones(3)
    direction = np.eye(3)
    o = np.asarray(origin_lps, dtype=float).ravel()
    s = np.asarray(spacing, dtype=float).ravel()
    n = len(s)
    d = np.asarray(direction_lps, dtype=float).reshape(n, n)
    origin[:n], sp[:n], direction[:n, :n] = o, s, d
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * sp  # scales column c (axis c) by its spacing
    ijk_to_lps[:3, 3] = origin
    return LPS_TO_RAS @ ijk_to_lps


def ijk_to_ras_for_file(path: str | Path | None) -> np.ndarray:
    """IJK-to-RAS that Slicer gives this image file when it loads it (via its ITK readers).

    Falls back to Slicer's default for a plain 2-D image (origin 0, spacing 1,
    LPS identity) when the header cannot be read; that is what Slicer uses for
    PNG/JPEG files without physical metadata anyway.
    """
    default = LPS_TO_RAS.copy()
    if path is None:
        return default
    try:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return ijk_to_ras_from_geometry(reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection())
    except Exception as exc:  # noqa: BLE001 - any reader failure means "use Slicer's default"
        log.debug("no header geometry for %s (%s); using origin 0, spacing 1", path, exc)
        return default
