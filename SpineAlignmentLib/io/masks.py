"""Label maps as Slicer segmentation files (``<image>.seg.nrrd``), on exactly the input image's pixel grid.

The file is a single-slice 3-D NRRD (LPS header geometry) whose voxel grid is
the radiograph's: same size, and the IJK-to-RAS matrix that Slicer gives the
input file when it loads it (:func:`SpineAlignmentLib.slicerio.geometry.ijk_to_ras_for_file`),
so it overlays the film and the ``.mrk.json`` landmarks exactly. Values: 0
background, then each segment's ``value`` from the protocol table. The header
carries Slicer's segmentation fields (``Segment<N>_ID``, ``_Name``, ``_Color``,
``_LabelValue``, ``_Layer``, ``_Extent``), so Slicer loads it as a segmentation
node with one named, coloured segment per structure; any NRRD reader sees a
plain label map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_segmentation_nrrd", "read_segmentation_nrrd"]


def _lps_geometry(ijk_to_ras: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    from ..slicerio.geometry import LPS_TO_RAS

    ijk_to_lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=float)
    m = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    spacing[spacing == 0] = 1.0
    direction = m / spacing
    return list(ijk_to_lps[:3, 3]), list(spacing), list(direction.ravel())


def write_segmentation_nrrd(path: str | Path, labels: np.ndarray, segments, ijk_to_ras: Any) -> Path:
    """Write ``labels`` ((rows, cols) uint8) as a Slicer ``.seg.nrrd`` (atomically).

    Args:
        path: output file (``.seg.nrrd``).
        labels: label map on the film's own grid.
        segments: the protocol's :class:`~SpineAlignmentLib.protocols.SegmentSpec` list.
        ijk_to_ras: the film's 4x4 IJK-to-RAS matrix.

    Returns:
        The path written.
    """
    import SimpleITK as sitk

    path = Path(path)
    lab = np.ascontiguousarray(np.asarray(labels, dtype=np.uint8)[None])  # (1, rows, cols): k, j, i
    img = sitk.GetImageFromArray(lab)
    origin, spacing, direction = _lps_geometry(ijk_to_ras)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    rows, cols = lab.shape[1:]
    extent = f"0 {cols - 1} 0 {rows - 1} 0 0"
    img.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    img.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    img.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for n, seg in enumerate(segments):
        img.SetMetaData(f"Segment{n}_ID", seg.id)
        img.SetMetaData(f"Segment{n}_Name", seg.name)
        img.SetMetaData(f"Segment{n}_Color", " ".join(f"{c:g}" for c in seg.color))
        img.SetMetaData(f"Segment{n}_LabelValue", str(int(seg.value)))
        img.SetMetaData(f"Segment{n}_Layer", "0")
        img.SetMetaData(f"Segment{n}_Extent", extent)
    tmp = path.with_name(path.name + ".part")
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("NrrdImageIO")  # the .part name says nothing about the format
    writer.SetFileName(str(tmp))
    writer.UseCompressionOn()
    writer.Execute(img)
    tmp.replace(path)
    return path


def read_segmentation_nrrd(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """``(labels (rows, cols) uint8, IJK-to-RAS 4x4, {label value: segment ID})`` of a ``.seg.nrrd``."""
    import SimpleITK as sitk

    from ..slicerio.geometry import ijk_to_ras_from_geometry

    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim == 3:
        arr = arr[0]
    names = {}
    n = 0
    while img.HasMetaDataKey(f"Segment{n}_ID"):
        names[int(img.GetMetaData(f"Segment{n}_LabelValue"))] = img.GetMetaData(f"Segment{n}_ID")
        n += 1
    return arr.astype(np.uint8), ijk_to_ras_from_geometry(img.GetOrigin(), img.GetSpacing(), img.GetDirection()), names
