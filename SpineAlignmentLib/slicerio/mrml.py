"""The MRML layer: a result as scene nodes, and scene nodes back to a result.

Works with the MRML classes only (``vtkMRMLScene`` and node classes, ``vtk``),
so it runs inside 3D Slicer and headless with the ``slicer-core`` wheel; it
never touches ``slicer.app`` or Qt.

This module holds the entry points that create, adopt, re-measure and compare
analyses. Each concern lives in its own module, re-exported here (the console
and the tests use ``mrml.<name>``): :mod:`.analysis` (:class:`SceneAnalysis`,
one analysis in the scene), :mod:`.nodes` (node attributes, display, volumes,
masks, Slicer's markups writer), :mod:`.table` (the parameter table),
:mod:`.live` (observers and redrawing on a moved point) and :mod:`.pairs` (two
films as one measurement).
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from ..errors import LandmarkError
from ..pipeline import measure
from ..result import Result
from .analysis import SceneAnalysis
from .live import _LIVE
from .markups_json import _confidence, model_of, parse_description
from .nodes import (
    ATTR_ANALYSIS, ATTR_GROUP, ATTR_IMAGE, ATTR_KIND, ATTR_LANDMARK_IDS, ATTR_PARAMETER, ATTR_PROTOCOL, ATTR_ROLE,
    HIGHLIGHT_COLOR, VOLUME_REFERENCE_ROLE, add_segmentation, make_volume_node, segmentation_to_labels,
    volume_image_size, volume_pixels, write_markups_json_from_scene,
)
from .table import TABLE_COLUMNS, rows_to_table_node, table_rows, write_table_csv

__all__ = [
    "ATTR_ANALYSIS", "ATTR_GROUP", "ATTR_IMAGE", "ATTR_KIND", "ATTR_LANDMARK_IDS", "ATTR_PARAMETER", "ATTR_PROTOCOL",
    "ATTR_ROLE", "HIGHLIGHT_COLOR", "TABLE_COLUMNS", "VOLUME_REFERENCE_ROLE", "SceneAnalysis", "add_segmentation",
    "analysis_for_node", "compare_markups", "create_analysis", "create_empty_analysis", "make_volume_node",
    "measure_from_markups", "rows_to_table_node", "segmentation_to_labels", "table_rows", "volume_image_size",
    "volume_pixels", "write_markups_json_from_scene", "write_table_csv",
]


def _image_info(result: Result) -> dict[str, Any]:
    return {
        "image": result.image,
        "image_size": list(result.image_size) if result.image_size else None,
        "spacing_mm": list(result.spacing_mm) if result.spacing_mm else None,
        "calibration": result.calibration,
        "patient_orientation": list(result.patient_orientation) if result.patient_orientation else None,
        "model": result.model,
        "confidence": {k: lm.confidence for k, lm in result.landmarks.items() if lm.confidence is not None},
        "levels": result.levels,
    }


def _new_analysis(scene: Any, volume_node: Any, protocol: str, name: str | None) -> SceneAnalysis:
    sh = scene.GetSubjectHierarchyNode()
    base = name or (f"{volume_node.GetName()} {protocol}" if volume_node is not None else protocol)
    folder = sh.CreateFolderItem(sh.GetSceneItemID(), base)
    uid = uuid.uuid4().hex
    sh.SetItemAttribute(folder, ATTR_ANALYSIS, uid)
    sh.SetItemAttribute(folder, ATTR_PROTOCOL, protocol)
    return SceneAnalysis(scene, volume_node, protocol, uid, folder)


def create_analysis(scene: Any, volume_node: Any, result: Result, *, name: str | None = None,
                    observe: bool = False) -> SceneAnalysis:
    """Put a result into the scene: landmarks, constructions, parameter table, one folder.

    Args:
        scene: the ``vtkMRMLScene`` (``slicer.mrmlScene`` in Slicer).
        volume_node: the radiograph's scalar volume node; its IJK-to-RAS places the points.
        result: the measured result (landmarks in original-image pixels).
        name: folder name (default: volume name and protocol).
        observe: start live re-measuring at once.
    """
    analysis = _new_analysis(scene, volume_node, result.protocol, name)
    analysis.info = _image_info(result)
    analysis.chain = getattr(result, "chain", None)
    if analysis.info["image_size"] is None and volume_node is not None:
        size = volume_image_size(volume_node)
        analysis.info["image_size"] = list(size) if size else None
    analysis._updating = True
    try:
        for group, _ in analysis.protocol.groups:  # every group node exists, so manual placement has a target
            analysis.landmark_node(group)
        for key, lm in result.landmarks.items():
            analysis.add_landmark(key, (lm.x, lm.y))
        analysis._make_table()
    finally:
        analysis._updating = False
    if getattr(result, "segmentation", None) is not None and volume_node is not None:
        analysis.segmentation_node = add_segmentation(scene, volume_node, result.segmentation.array,
                                                      result.segmentation.segments)
        analysis._tag(analysis.segmentation_node, "segmentation")
    analysis.result = Result(protocol=result.protocol)  # empty, so update() draws every parameter
    analysis.update(result)
    if observe:
        analysis.observe()
    return analysis


def create_empty_analysis(scene: Any, volume_node: Any, protocol: str, *, spacing_mm=None, calibration=None,
                          patient_orientation=None, image: str | None = None, name: str | None = None,
                          observe: bool = True) -> SceneAnalysis:
    """An analysis without landmarks, for manual / guided placement."""
    size = volume_image_size(volume_node)
    result = measure({}, protocol, spacing_mm=spacing_mm, calibration=calibration, image_size=size,
                     patient_orientation=patient_orientation, image=image)
    return create_analysis(scene, volume_node, result, name=name, observe=observe)


def analysis_for_node(markups_node: Any, protocol: str | None = None, volume_node: Any = None) -> SceneAnalysis:
    """The analysis a landmark node belongs to, rebuilt from the scene (or adopted into a new one).

    A fiducial node that is not yet part of an analysis (e.g. a ``.mrk.json``
    loaded by the user, whose control-point IDs are canonical IDs) gets a folder
    and a table of its own.

    Raises:
        LandmarkError: if neither the node nor the arguments give a protocol or volume.
    """
    uid = markups_node.GetAttribute(ATTR_ANALYSIS)
    if uid and uid in _LIVE:
        return _LIVE[uid]
    scene = markups_node.GetScene()
    if scene is None:
        raise LandmarkError(f"Markups node '{markups_node.GetName()}' is not in a scene.")
    protocol = protocol or markups_node.GetAttribute(ATTR_PROTOCOL)
    if not protocol:
        raise LandmarkError(f"Markups node '{markups_node.GetName()}' has no protocol; pass protocol=... .")
    volume_node = volume_node or markups_node.GetNodeReference(VOLUME_REFERENCE_ROLE)
    if volume_node is None:
        raise LandmarkError(f"Markups node '{markups_node.GetName()}' is not linked to a volume; pass volume_node=... .")
    try:
        info = json.loads(markups_node.GetAttribute(ATTR_IMAGE) or "{}")
    except ValueError:
        info = {}
    sh = scene.GetSubjectHierarchyNode()
    if uid:
        analysis = SceneAnalysis(scene, volume_node, protocol, uid, 0)
        nodes = scene.GetNodes()
        for i in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(i)
            if node.GetAttribute(ATTR_ANALYSIS) != uid:
                continue
            role = node.GetAttribute(ATTR_ROLE)
            if role == "landmarks":
                analysis.landmark_nodes[node.GetAttribute(ATTR_GROUP) or node.GetID()] = node
            elif role == "construction":
                analysis.construction_nodes.setdefault(node.GetAttribute(ATTR_PARAMETER), []).append(node)
            elif role == "table":
                analysis.table_node = node
        item = sh.GetItemByDataNode(markups_node)
        analysis.folder_item = sh.GetItemParent(item) if item else 0
    else:
        analysis = _new_analysis(scene, volume_node, protocol, None)
        group = "landmarks"
        markups_node.SetAttribute(ATTR_GROUP, group)
        if markups_node.GetAttribute(ATTR_LANDMARK_IDS) is None:
            markups_node.SetAttribute(ATTR_LANDMARK_IDS, "{}")
        analysis._tag(markups_node, "landmarks")
        analysis.landmark_nodes[group] = markups_node
    if not info.get("image_size"):
        size = volume_image_size(volume_node)
        info["image_size"] = list(size) if size else None
    analysis.info = info
    if not uid:
        _adopt_provenance(analysis, markups_node)
    if analysis.table_node is None:
        analysis._make_table()
    # what the scene shows now is the previous state; measuring it fills self.result
    landmarks, _ = analysis.read_landmarks()
    analysis.result = Result(protocol=analysis.protocol.id, landmarks=landmarks)
    return analysis


def _adopt_provenance(analysis: SceneAnalysis, node: Any) -> None:
    """Confidences and model of a loaded ``.mrk.json`` node, from its control-point descriptions.

    Slicer drops node attributes but keeps descriptions: a point the model did not trust, still where
    the model put it, stays untrusted (see :mod:`.markups_json`).
    """
    landmarks, _ = analysis.read_landmarks()
    tags = {}
    ids = analysis._ids(node)
    for i in range(node.GetNumberOfControlPoints()):
        cp_id = node.GetNthControlPointID(i)
        tags[ids.get(cp_id, cp_id)] = parse_description(node.GetNthControlPointDescription(i))[1]
    conf = {key: c for key, lm in landmarks.items() if (c := _confidence(tags.get(key), lm.x, lm.y)) is not None}
    if conf:
        analysis.info["confidence"] = conf
    model = model_of(tags.values())
    if model and not analysis.info.get("model"):
        analysis.info["model"] = model


def measure_from_markups(markups_node: Any, protocol: str | None = None, volume_node: Any = None, *,
                         observe: bool = True) -> Result:
    """Re-measure from (edited) control points and update the analysis's lines, angles and table.

    Args:
        markups_node: any landmark fiducial node of the analysis (or a loaded ``.mrk.json`` node).
        protocol: protocol ID; default: the node's :data:`ATTR_PROTOCOL`.
        volume_node: the radiograph; default: the node's volume reference.
        observe: keep re-measuring as its points are dragged, added or removed (a loaded or
            hand-made node becomes as live as one the module created), until the scene closes.

    Returns:
        The new :class:`~SpineAlignmentLib.result.Result`.
    """
    analysis = analysis_for_node(markups_node, protocol, volume_node)
    if analysis.pair is not None:  # one film of a pair: both films are measured together
        analysis.pair.update()
        return analysis.pair.result
    if observe:
        analysis.observe()
    analysis.update()
    return analysis.result


def compare_markups(reference_node: Any, other_node: Any, protocol: str | None = None, volume_node: Any = None,
                    *, tables: bool = True) -> dict[str, Any]:
    """Compare two landmark sets of one image (model vs. corrected points, or two raters).

    Args:
        reference_node: a landmark fiducial node of the reference analysis (the "truth").
        other_node: a landmark fiducial node of the analysis compared with it.
        protocol, volume_node: as in :func:`analysis_for_node` (taken from the reference when None).
        tables: also add two table nodes (landmark errors, parameter differences) to the scene.

    Returns:
        ``{"landmarks": rows of evaluation.compare_landmark_sets (px, and mm with the
        reference's spacing and calibration label), "parameters": rows with id, unit,
        reference, other, difference (other − reference; NaN where either is missing),
        "tables": {"landmarks": node, "parameters": node}}``.
    """
    from ..evaluation.landmarks import LANDMARK_COLUMNS, compare_landmark_sets

    ref = analysis_for_node(reference_node, protocol, volume_node)
    other = analysis_for_node(other_node, protocol or ref.protocol.id, volume_node or ref.volume_node)
    a, b = ref.measure(), other.measure()
    spacing = ref.info.get("spacing_mm")
    rows = compare_landmark_sets(a.landmarks, b.landmarks, spacing_mm=tuple(spacing) if spacing else None,
                                 calibration=ref.info.get("calibration") if spacing else None,
                                 order=ref.protocol.landmark_ids)
    ids = list(ref.protocol.parameter_ids) + [p for p in list(a.parameters) + list(b.parameters)
                                              if p not in ref.protocol.parameter_ids]
    params = []
    for pid in dict.fromkeys(ids):
        ma, mb = a.parameters.get(pid), b.parameters.get(pid)
        if ma is None and mb is None:
            continue
        va = ma.value if ma else math.nan
        vb = mb.value if mb else math.nan
        params.append({"id": pid, "unit": (ma or mb).unit, "reference": va, "other": vb, "difference": vb - va,
                       "calibration": (ma or mb).calibration or ""})
    out: dict[str, Any] = {"landmarks": rows, "parameters": params, "tables": {}}
    if tables:
        scene = ref.scene
        out["tables"]["landmarks"] = rows_to_table_node(scene, "SpineAlignment comparison: landmarks", rows, LANDMARK_COLUMNS)
        out["tables"]["parameters"] = rows_to_table_node(
            scene, "SpineAlignment comparison: parameters", params,
            ("id", "unit", "reference", "other", "difference", "calibration"))
    return out
