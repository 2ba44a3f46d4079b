"""Scene nodes of an analysis: the attributes that carry meaning, display, volumes, masks, Slicer's markups writer.

Works with the MRML classes only (inside 3D Slicer, or headless with the ``slicer-core`` wheel).
Meaning never comes from a label or node name a user can edit: it is stored in the node
attributes named here (see :mod:`.mrml`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import LandmarkError
from ..protocols import Protocol
from .geometry import pixels_to_ras
from .markups_json import describe_point
from .mrml_classes import slicer, vtk

ATTR_ANALYSIS = "SpineAlignment.analysis"  #: analysis UID shared by every node of one analysis
ATTR_ROLE = "SpineAlignment.role"  #: "landmarks", "construction" or "table"
ATTR_PROTOCOL = "SpineAlignment.protocol"
ATTR_GROUP = "SpineAlignment.group"
ATTR_PARAMETER = "SpineAlignment.parameter"
ATTR_LANDMARK_IDS = "SpineAlignment.landmarkIDs"  #: JSON {control point ID: canonical landmark ID}
ATTR_KIND = "SpineAlignment.kind"  #: construction node kind: "line", "angle" or "point"
ATTR_IMAGE = "SpineAlignment.image"  #: JSON: image, size, spacing, calibration, orientation, model, confidences
VOLUME_REFERENCE_ROLE = "SpineAlignment.volume"

HIGHLIGHT_COLOR = (1.0, 1.0, 0.3)


def _param_color(proto: Protocol, landmarks: Iterable[str]) -> tuple[float, float, float]:
    for lm in landmarks:
        try:
            return proto.landmark(lm).color
        except Exception:  # noqa: BLE001 - an unknown ID just has no colour
            continue
    return (1.0, 0.8, 0.2)


def _set_display(node: Any, color: tuple[float, float, float], *, text_scale: float = 2.0) -> None:
    node.CreateDefaultDisplayNodes()
    disp = node.GetDisplayNode()
    if disp is None:
        return
    disp.SetColor(*color)
    disp.SetSelectedColor(*color)
    disp.SetTextScale(text_scale)
    disp.SetGlyphScale(1.5)
    disp.SetPropertiesLabelVisibility(False)


def volume_image_size(volume_node: Any) -> tuple[int, int] | None:
    """``(rows, cols)`` of a single-slice volume node, or None without image data."""
    data = volume_node.GetImageData() if volume_node is not None else None
    if data is None:
        return None
    dims = data.GetDimensions()
    return int(dims[1]), int(dims[0])


def volume_pixels(volume_node: Any) -> np.ndarray:
    """The first slice of a scalar volume as a ``(rows, cols)`` array (row = j, column = i)."""
    from vtk.util.numpy_support import vtk_to_numpy

    data = volume_node.GetImageData()
    if data is None:
        raise LandmarkError(f"Volume '{volume_node.GetName()}' has no image data; load the radiograph again.")
    dims = data.GetDimensions()
    scalars = vtk_to_numpy(data.GetPointData().GetScalars())
    comps = data.GetNumberOfScalarComponents()
    arr = scalars.reshape(dims[2], dims[1], dims[0], comps)[0]
    return arr[..., 0] if comps == 1 else arr.mean(axis=-1)


def write_markups_json_from_scene(scene: Any, analysis: Any, path: str | Path) -> Path:
    """Write the analysis's landmarks with Slicer's own writer (``vtkMRMLMarkupsJsonStorageNode``).

    One fiducial node with every landmark is written; the control-point IDs are
    then set to the canonical IDs (Slicer keeps a file's IDs on load), so the
    file carries its meaning without relying on labels.
    """
    path = Path(path)
    landmarks, _ = analysis.read_landmarks()
    ras = pixels_to_ras(analysis.ijk_to_ras, np.array([(lm.x, lm.y) for lm in landmarks.values()]).reshape(-1, 2))
    temp = slicer.vtkMRMLMarkupsFiducialNode()
    temp.SetName(f"{analysis.protocol.id} landmarks")
    for (key, lm), r in zip(landmarks.items(), ras):
        i = temp.AddControlPoint(vtk.vtkVector3d(*r), key)
        temp.SetNthControlPointDescription(i, describe_point(analysis.protocol.landmark(key).description,
                                                             lm.confidence, (lm.x, lm.y), analysis.info.get("model")))
    scene.AddNode(temp)
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    tmp = path.with_name(path.name + ".part.mrk.json")
    try:
        storage.SetFileName(str(tmp))
        if not storage.WriteData(temp):
            raise OSError(f"Slicer's markups writer could not write {path}")
        data = json.loads(tmp.read_text(encoding="utf-8"))
        for cp, key in zip(data["markups"][0]["controlPoints"], landmarks):
            cp["id"] = key
        tmp.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        scene.RemoveNode(temp)
        scene.RemoveNode(storage)
        if tmp.exists():
            tmp.unlink()
    return path


def make_volume_node(scene: Any, pixels: np.ndarray, ijk_to_ras: Any, name: str = "radiograph") -> Any:
    """A single-slice scalar volume from a ``(rows, cols)`` array (tests, batch, synthetic data)."""
    from vtk.util.numpy_support import numpy_to_vtk

    arr = np.ascontiguousarray(np.asarray(pixels, dtype=np.float32))
    image = vtk.vtkImageData()
    image.SetDimensions(arr.shape[1], arr.shape[0], 1)
    scalars = numpy_to_vtk(arr.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    vm = vtk.vtkMatrix4x4()
    m = np.asarray(ijk_to_ras, dtype=float)
    for r in range(4):
        for c in range(4):
            vm.SetElement(r, c, m[r, c])
    node.SetIJKToRASMatrix(vm)
    node.SetAndObserveImageData(image)
    return node


def _register_segmentation_converters() -> None:
    """Conversion rules that Slicer's Segmentations module registers at start-up (needed headless too)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    have = {rule.GetName() for rule in factory.GetConverterRules()}  # a tuple of rules in the Python wrapping
    for cls in ("vtkBinaryLabelmapToClosedSurfaceConversionRule", "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        rule_cls = getattr(slicer, cls, None)
        if rule_cls is not None:
            rule = rule_cls()
            if rule.GetName() not in have:
                factory.RegisterConverterRule(rule)


def add_segmentation(scene: Any, volume_node: Any, labels: np.ndarray, segments, name: str | None = None) -> Any:
    """A ``vtkMRMLSegmentationNode`` from a label map on the volume's pixel grid.

    One segment per protocol segment present in ``labels`` (ID, name and colour from the protocol
    table, label value kept), geometry from the volume's IJK-to-RAS so it overlays the film.

    Args:
        scene: the MRML scene.
        volume_node: the radiograph's volume node.
        labels: (rows, cols) label map (0 background, then the segments' ``value``).
        segments: the protocol's :class:`~SpineAlignmentLib.protocols.SegmentSpec` list.
        name: node name (default: the volume's name + " masks").
    """
    from vtk.util.numpy_support import numpy_to_vtk

    _register_segmentation_converters()
    lab = np.ascontiguousarray(np.asarray(labels, dtype=np.uint8))
    rows, cols = lab.shape
    image = vtk.vtkImageData()
    image.SetDimensions(cols, rows, 1)
    image.GetPointData().SetScalars(numpy_to_vtk(lab.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__spinealign_masks__")
    vm = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(vm)
    labelmap.SetIJKToRASMatrix(vm)
    labelmap.SetAndObserveImageData(image)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                   scene.GenerateUniqueName(name or f"{volume_node.GetName()} masks"))
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    try:
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node)
    finally:
        scene.RemoveNode(labelmap)
    seg = node.GetSegmentation()
    by_value = {s.value: s for s in segments}
    for i in range(seg.GetNumberOfSegments()):
        sid = seg.GetNthSegmentID(i)
        segment = seg.GetSegment(sid)
        spec = by_value.get(segment.GetLabelValue())
        if spec is not None:
            segment.SetName(spec.name)
            segment.SetColor(*spec.color)
            segment.SetTag("SpineAlignment.segment", spec.id)
    return node


def segmentation_to_labels(node: Any, volume_node: Any) -> np.ndarray:
    """(rows, cols) uint8 label map of a segmentation node on the volume's grid (segments' label values)."""
    from vtk.util.numpy_support import vtk_to_numpy

    out = node.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__spinealign_export__")
    try:
        slicer.vtkSlicerSegmentationsModuleLogic.ExportAllSegmentsToLabelmapNode(node, out, 0)
        image = out.GetImageData()
        cols, rows, _ = image.GetDimensions()
        return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, cols).astype(np.uint8)
    finally:
        node.GetScene().RemoveNode(out)
