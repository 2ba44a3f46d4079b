"""The MRML layer: a result as scene nodes, and scene nodes back to a result.

Works with the MRML classes only (``vtkMRMLScene`` and node classes, ``vtk``),
so it runs inside 3D Slicer and headless with the ``slicer-core`` wheel; it
never touches ``slicer.app`` or Qt.

One analysis in the scene is:

* a subject-hierarchy folder (the analysis);
* one ``vtkMRMLMarkupsFiducialNode`` per display group of the protocol (points
  coloured by group); control-point labels are the canonical IDs, descriptions
  come from the protocol table. Meaning never comes from a label or node name a
  user can edit: each node stores ``{control point ID: canonical ID}`` in the
  attribute :data:`ATTR_LANDMARK_IDS` (control-point IDs are not editable in
  the GUI; a ``.mrk.json`` written by this project uses the canonical IDs as
  control-point IDs, which Slicer keeps on load);
* per parameter, locked ``vtkMRMLMarkupsLineNode`` s for lines, plumb lines and
  offsets (the two lines of a Cobb-style angle), a ``vtkMRMLMarkupsAngleNode``
  where three points define the angle, and a fiducial node for derived points;
* a ``vtkMRMLTableNode`` with one row per parameter (:data:`TABLE_COLUMNS`).

:class:`SceneAnalysis` keeps the last :class:`~SpineAlignmentLib.result.Result`,
re-measures when a control point moves (observer on the point events, removed
on :meth:`SceneAnalysis.cleanup` and on scene close) and updates only the nodes
and rows of parameters whose value or construction changed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

try:
    import slicer
    import vtk
except ImportError as exc:  # pragma: no cover - exercised only without the wheel
    raise ImportError(
        "SpineAlignmentLib.slicerio.mrml needs the MRML classes: run it inside 3D Slicer or install "
        "the slicer-core wheel (pip install 'SpineAlignmentLib[slicer]')."
    ) from exc

from ..errors import LandmarkError
from ..geometry.measurement import format_value
from ..pipeline import measure
from ..protocols import Protocol, get_protocol
from ..result import Landmark, Result
from .geometry import OFF_PLANE_SLICES, ijk_to_ras_from_volume_node, pixels_to_ras, ras_to_pixels
from .markups_json import _confidence, describe_point, model_of, parse_description, write_markups_json

log = logging.getLogger(__name__)

ATTR_ANALYSIS = "SpineAlignment.analysis"  #: analysis UID shared by every node of one analysis
ATTR_ROLE = "SpineAlignment.role"  #: "landmarks", "construction" or "table"
ATTR_PROTOCOL = "SpineAlignment.protocol"
ATTR_GROUP = "SpineAlignment.group"
ATTR_PARAMETER = "SpineAlignment.parameter"
ATTR_LANDMARK_IDS = "SpineAlignment.landmarkIDs"  #: JSON {control point ID: canonical landmark ID}
ATTR_KIND = "SpineAlignment.kind"  #: construction node kind: "line", "angle" or "point"
ATTR_IMAGE = "SpineAlignment.image"  #: JSON: image, size, spacing, calibration, orientation, model, confidences
VOLUME_REFERENCE_ROLE = "SpineAlignment.volume"

#: Table columns: (machine name, VTK array type, title, description).
TABLE_COLUMNS = (
    ("id", "string", "Parameter", "canonical parameter ID (protocols.md)"),
    ("title", "string", "Title", "human-readable parameter name"),
    ("value", "double", "Value", "parameter value; NaN when it could not be computed"),
    ("unit", "string", "Unit", "deg, mm, px, ratio or %"),
    ("calibration", "string", "Calibration", "calibration label of a distance (definitions.md 7.4); empty for angles"),
    ("landmarks", "string", "Landmarks", "canonical IDs of the landmarks used, space-separated"),
    ("computed", "bit", "Computed", "true when the value was computed"),
    ("warning", "string", "Warning", "why the value is missing, or caveats for it"),
)

HIGHLIGHT_COLOR = (1.0, 1.0, 0.3)
_POINT_EVENTS = (
    "PointModifiedEvent", "PointAddedEvent", "PointRemovedEvent", "PointPositionDefinedEvent",
    "PointPositionUndefinedEvent", "PointEndInteractionEvent",
)


# --------------------------------------------------------------------------------------------
# helpers


def _param_color(proto: Protocol, landmarks: Iterable[str]) -> tuple[float, float, float]:
    for lm in landmarks:
        try:
            return proto.landmark(lm).color
        except Exception:  # noqa: BLE001 - an unknown ID just has no colour
            continue
    return (1.0, 0.8, 0.2)


def _image_info(result: Result) -> dict[str, Any]:
    return {
        "image": result.image,
        "image_size": list(result.image_size) if result.image_size else None,
        "spacing_mm": list(result.spacing_mm) if result.spacing_mm else None,
        "calibration": result.calibration,
        "patient_orientation": list(result.patient_orientation) if result.patient_orientation else None,
        "model": result.model,
        "confidence": {k: lm.confidence for k, lm in result.landmarks.items() if lm.confidence is not None},
    }


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


# --------------------------------------------------------------------------------------------
# the analysis in the scene


class SceneAnalysis:
    """One analysis (one image, one protocol) held in a MRML scene.

    Create it with :func:`create_analysis` (from a result) or
    :func:`analysis_for_node` (from existing nodes, e.g. a loaded ``.mrk.json``).

    Attributes:
        scene: the ``vtkMRMLScene``.
        volume_node: the radiograph's volume node (its IJK-to-RAS maps pixels).
        protocol: the :class:`~SpineAlignmentLib.protocols.Protocol`.
        uid: analysis UID stored in :data:`ATTR_ANALYSIS` on every node.
        folder_item: subject-hierarchy folder item ID.
        landmark_nodes: display group -> fiducial node.
        construction_nodes: parameter ID -> its line/angle/point nodes.
        table_node: the parameter table.
        segmentation_node: ``vtkMRMLSegmentationNode`` of a segmentation model's masks, or ``None``.
        result: the last measurement.
    """

    def __init__(self, scene: Any, volume_node: Any, protocol: str, uid: str, folder_item: int) -> None:
        self.scene = scene
        self.volume_node = volume_node
        self.protocol = get_protocol(protocol)
        self.uid = uid
        self.folder_item = folder_item
        self.landmark_nodes: dict[str, Any] = {}
        self.construction_nodes: dict[str, list[Any]] = {}
        self.table_node: Any = None
        self.segmentation_node: Any = None  # a segmentation model's masks (one segment per structure)
        self.result: Result = Result(protocol=self.protocol.id)
        self.info: dict[str, Any] = {}
        self.pending_landmark: str | None = None
        self.listeners: list[Callable[["SceneAnalysis", set[str]], None]] = []
        self._observations: list[tuple[Any, int]] = []
        self._updating = False
        self._highlighted: str | None = None
        #: the :class:`~.pairs.PairAnalysis` this film belongs to (a moved point re-measures both films)
        self.pair: Any = None
        #: which parameters this film draws (a pair draws each on the film its landmarks are on); None: all
        self.draws: Callable[[str], bool] | None = None
        #: the landmarks this film takes (guided placement order); None: the protocol's landmark IDs
        self.expected_landmarks: tuple[str, ...] | None = None

    def __getitem__(self, key: str) -> Any:
        """Console shorthand: ``nodes["landmarks"]`` (a landmark node; any one re-measures the whole
        analysis), ``nodes["table"]``, ``nodes["folder"]`` (subject-hierarchy item ID),
        ``nodes["constructions"]`` (parameter ID -> nodes)."""
        if key == "landmarks":
            filled = [n for n in self.landmark_nodes.values() if n.GetNumberOfControlPoints()]
            return (filled or list(self.landmark_nodes.values()) or [None])[0]
        table = {"table": self.table_node, "folder": self.folder_item, "constructions": self.construction_nodes,
                 "landmark_nodes": self.landmark_nodes}
        if key not in table:
            raise KeyError(f"{key!r}: use 'landmarks', 'landmark_nodes', 'constructions', 'table' or 'folder'")
        return table[key]

    # ---- geometry ------------------------------------------------------------------------
    @property
    def ijk_to_ras(self) -> np.ndarray:
        return ijk_to_ras_from_volume_node(self.volume_node)

    def _ras(self, points: Iterable[tuple[float, float]]) -> np.ndarray:
        return pixels_to_ras(self.ijk_to_ras, np.array(list(points), dtype=float).reshape(-1, 2))

    # ---- node creation -------------------------------------------------------------------
    def _tag(self, node: Any, role: str) -> None:
        node.SetAttribute(ATTR_ANALYSIS, self.uid)
        node.SetAttribute(ATTR_ROLE, role)
        node.SetAttribute(ATTR_PROTOCOL, self.protocol.id)
        if self.volume_node is not None:
            node.SetNodeReferenceID(VOLUME_REFERENCE_ROLE, self.volume_node.GetID())
        sh = self.scene.GetSubjectHierarchyNode()
        item = sh.GetItemByDataNode(node)
        if item:
            sh.SetItemParent(item, self.folder_item)
        else:  # headless scenes have no subject-hierarchy plugin logic creating items on add
            sh.CreateItem(self.folder_item, node)

    def landmark_node(self, group: str) -> Any:
        """The fiducial node of a display group (created on first use)."""
        node = self.landmark_nodes.get(group)
        if node is not None:
            return node
        color = dict(self.protocol.groups).get(group, (1.0, 1.0, 0.0))
        name = self.scene.GenerateUniqueName(f"{self.protocol.id} {group}")
        node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        _set_display(node, color)
        node.SetAttribute(ATTR_GROUP, group)
        node.SetAttribute(ATTR_LANDMARK_IDS, "{}")
        node.SetAttribute(ATTR_IMAGE, json.dumps(self.info))
        self._tag(node, "landmarks")
        self.landmark_nodes[group] = node
        if self._observations:
            self._observe_node(node)
        return node

    def _ids(self, node: Any) -> dict[str, str]:
        try:
            return json.loads(node.GetAttribute(ATTR_LANDMARK_IDS) or "{}")
        except ValueError:
            return {}

    def assign(self, node: Any, index: int, landmark_id: str) -> None:
        """Give control point ``index`` of ``node`` the meaning ``landmark_id`` (label and description too)."""
        spec = self.protocol.landmark(landmark_id)
        ids = self._ids(node)
        ids = {k: v for k, v in ids.items() if v != landmark_id}  # one point per landmark
        ids[node.GetNthControlPointID(index)] = landmark_id
        node.SetAttribute(ATTR_LANDMARK_IDS, json.dumps(ids))
        node.SetNthControlPointLabel(index, landmark_id)
        node.SetNthControlPointDescription(index, spec.description)

    def add_landmark(self, landmark_id: str, xy: tuple[float, float]) -> tuple[Any, int]:
        """Add (or move) one landmark at pixel ``xy``; returns its node and control-point index."""
        spec = self.protocol.landmark(landmark_id)
        node = self.landmark_node(spec.group)
        ras = self._ras([xy])[0]
        for cp_id, lm in self._ids(node).items():
            if lm == landmark_id:
                idx = node.GetControlPointIndexByID(cp_id)
                if idx >= 0:
                    node.SetNthControlPointPosition(idx, *ras)
                    return node, idx
        was = self._updating
        self._updating = True  # the caller re-measures once, not per added point
        try:
            idx = node.AddControlPoint(vtk.vtkVector3d(*ras), landmark_id)
            self.assign(node, idx, landmark_id)
        finally:
            self._updating = was
        return node, idx

    def _make_table(self) -> None:
        name = self.scene.GenerateUniqueName(f"{self.protocol.id} parameters")
        table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
        for col, kind, title, description in TABLE_COLUMNS:
            arr = {"string": vtk.vtkStringArray, "double": vtk.vtkDoubleArray, "bit": vtk.vtkBitArray}[kind]()
            arr.SetName(col)
            table.AddColumn(arr)
            table.SetColumnTitle(col, title)
            table.SetColumnDescription(col, description)
        table.SetUseColumnTitleAsColumnHeader(True)
        table.SetAttribute(ATTR_IMAGE, json.dumps(self.info))
        self._tag(table, "table")
        self.table_node = table

    # ---- reading landmarks back ----------------------------------------------------------
    def read_landmarks(self) -> tuple[dict[str, Landmark], list[str]]:
        """Landmarks currently in the scene (pixels), by canonical ID, and warnings.

        A point whose position changed since the last measurement loses its model
        confidence: a user moved it, so it is trusted.
        """
        known = set(self.protocol.landmark_ids) | {lm.id for lm in self.protocol.extra_landmarks}
        conf = dict(self.info.get("confidence") or {})
        warnings: list[str] = []
        ras_by_id: dict[str, np.ndarray] = {}
        for node in self.landmark_nodes.values():
            ids = self._ids(node)
            for i in range(node.GetNumberOfControlPoints()):
                if node.GetNthControlPointPositionStatus(i) != node.PositionDefined:
                    continue
                cp_id = node.GetNthControlPointID(i)
                lm_id = ids.get(cp_id) or (cp_id if cp_id in known else None)
                if lm_id is None and self.pending_landmark is not None:
                    # guided placement: the user just clicked the landmark we asked for
                    lm_id = self.pending_landmark
                    self.assign(node, i, lm_id)
                    ids = self._ids(node)
                    self.pending_landmark = None
                if lm_id is None:
                    warnings.append(f"Point '{node.GetNthControlPointLabel(i)}' in '{node.GetName()}' is not a "
                                    f"landmark of {self.protocol.id} and was not used.")
                    continue
                if lm_id in ras_by_id:
                    warnings.append(f"{lm_id} was placed twice; the last point is used, delete the other one.")
                pos = [0.0, 0.0, 0.0]
                node.GetNthControlPointPosition(i, pos)
                ras_by_id[lm_id] = np.array(pos)
        if not ras_by_id:
            return {}, warnings
        keys = list(ras_by_id)
        xy, k = ras_to_pixels(self.ijk_to_ras, np.array([ras_by_id[key] for key in keys]), return_k=True)
        off = [key for key, kk in zip(keys, k) if abs(kk) > OFF_PLANE_SLICES]
        if off:
            warnings.append(f"{', '.join(off)} lie off the image plane and were projected onto it.")
        old = self.result.landmarks
        out: dict[str, Landmark] = {}
        for key, (x, y) in zip(keys, xy):
            c = conf.get(key)
            prev = old.get(key)
            if c is not None and prev is not None and (abs(prev.x - x) > 1e-6 or abs(prev.y - y) > 1e-6):
                c = None  # moved by the user
                conf.pop(key, None)
            out[key] = Landmark(float(x), float(y), c)
        self.info["confidence"] = conf
        return out, warnings

    def missing_landmarks(self) -> list[str]:
        """Canonical IDs (in protocol order) that have no point yet: the guided-placement queue."""
        placed, _ = self.read_landmarks() if self.landmark_nodes else ({}, [])
        return [i for i in (self.expected_landmarks or self.protocol.landmark_ids) if i not in placed]

    # ---- measuring and updating ----------------------------------------------------------
    def measure(self) -> Result:
        """Measure the landmarks now in the scene (no scene changes)."""
        landmarks, warnings = self.read_landmarks()
        info = self.info
        spacing = info.get("spacing_mm")
        result = measure(
            landmarks, self.protocol.id,
            spacing_mm=tuple(spacing) if spacing else None,
            calibration=info.get("calibration") if spacing else None,
            image_size=tuple(info["image_size"]) if info.get("image_size") else None,
            patient_orientation=info.get("patient_orientation"),
            image=info.get("image"), model=info.get("model"), source="scene",
        )
        result.warnings[:0] = warnings
        return result

    def update(self, result: Result | None = None) -> set[str]:
        """Re-measure (or take ``result``), update what changed; returns the changed parameter IDs."""
        if self._updating:
            return set()
        self._updating = True
        try:
            new = result if result is not None else self.measure()
            old = self.result
            ids = list(dict.fromkeys([*self.protocol.parameter_ids, *old.parameters, *new.parameters]))
            changed = set()
            for pid in ids:
                a, b = old.parameters.get(pid), new.parameters.get(pid)
                if (a is None) != (b is None) or (a is not None and a.to_dict() != b.to_dict()) \
                        or old.omitted.get(pid) != new.omitted.get(pid):
                    changed.add(pid)
            self.result = new
            for pid in changed:
                self._update_constructions(pid)
            self._update_table(changed if self.table_node is not None else None)
            self._store_info()
        finally:
            self._updating = False
        if changed:
            for listener in list(self.listeners):
                listener(self, changed)
        return changed

    def _store_info(self) -> None:
        text = json.dumps(self.info)
        for node in [*self.landmark_nodes.values(), self.table_node]:
            if node is not None and node.GetAttribute(ATTR_IMAGE) != text:
                node.SetAttribute(ATTR_IMAGE, text)

    def _construct_geometry(self, con) -> tuple[str, list[tuple[float, float]]]:
        pts = [tuple(p) for p in con.points]
        if con.kind == "plumb":
            x, y = pts[0]
            size = self.info.get("image_size")
            if size:
                return "line", [(x, 0.0), (x, float(size[0] - 1))]
            return "line", [(x, y - 300.0), (x, y + 300.0)]
        if con.kind in ("line", "offset"):
            return "line", pts[:2]
        if con.kind == "angle":
            return "angle", pts[:3]
        return "point", pts

    def _update_constructions(self, pid: str) -> None:
        old_nodes = self.construction_nodes.pop(pid, [])
        m = self.result.parameters.get(pid)
        if m is not None and self.draws is not None and not self.draws(pid):
            m = None  # drawn on the other film of a pair
        if m is None:
            for node in old_nodes:
                self.scene.RemoveNode(node)
            return
        wanted = [self._construct_geometry(c) + (c.label,) for c in m.construction]
        old_kinds = [n.GetAttribute(ATTR_KIND) for n in old_nodes]
        new_kinds = [w[0] for w in wanted]
        title = f"{pid} = {format_value(m.value, m.unit)}"
        if old_kinds == new_kinds:  # same drawing, new positions: move the points, keep the nodes
            nodes = old_nodes
            for node, (kind, pts, label) in zip(nodes, wanted):
                ras = self._ras(pts)
                with_state = node.StartModify()
                for i, r in enumerate(ras):
                    node.SetNthControlPointPosition(i, *r)
                node.EndModify(with_state)
        else:
            for node in old_nodes:
                self.scene.RemoveNode(node)
            color = _param_color(self.protocol, m.landmarks)
            nodes = []
            for kind, pts, label in wanted:
                cls = {"line": "vtkMRMLMarkupsLineNode", "angle": "vtkMRMLMarkupsAngleNode",
                       "point": "vtkMRMLMarkupsFiducialNode"}[kind]
                node = self.scene.AddNewNodeByClass(cls, self.scene.GenerateUniqueName(f"{pid} {label}".strip()))
                for r in self._ras(pts):
                    node.AddControlPoint(vtk.vtkVector3d(*r), "")
                for i in range(node.GetNumberOfMeasurements()):
                    # Slicer's own length/angle is in scene space; ours follows definitions.md (signs, frame)
                    node.GetNthMeasurement(i).SetEnabled(False)
                node.SetLocked(True)
                _set_display(node, color, text_scale=2.5)
                node.SetAttribute(ATTR_PARAMETER, pid)
                node.SetAttribute(ATTR_KIND, kind)
                self._tag(node, "construction")
                nodes.append(node)
        for j, node in enumerate(nodes):
            # the value is shown once per parameter, on its first construct
            node.SetNthControlPointLabel(0, title if j == 0 else "")
        self.construction_nodes[pid] = nodes

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per parameter (protocol order, then any extra computed IDs), machine-readable values."""
        return table_rows(self.result, self.protocol)

    def _update_table(self, changed: set[str] | None) -> None:
        if self.table_node is None:
            return
        rows = self.table_rows()
        table = self.table_node.GetTable()
        ids_now = [table.GetColumnByName("id").GetValue(r) for r in range(table.GetNumberOfRows())]
        was_modifying = self.table_node.StartModify()
        if ids_now != [r["id"] for r in rows]:
            for arr_name, _, _, _ in TABLE_COLUMNS:
                table.GetColumnByName(arr_name).SetNumberOfValues(len(rows))
            table.SetNumberOfRows(len(rows))
            changed = None
        for r, row in enumerate(rows):
            if changed is not None and row["id"] not in changed:
                continue
            for col, kind, _, _ in TABLE_COLUMNS:
                arr = table.GetColumnByName(col)
                v = row[col]
                if kind == "double":
                    arr.SetValue(r, v)
                elif kind == "bit":
                    arr.SetValue(r, 1 if v else 0)
                else:
                    arr.SetValue(r, str(v))
        units = {row["unit"] for row in rows}
        self.table_node.SetColumnUnitLabel("value", units.pop() if len(units) == 1 else "see unit column")
        table.Modified()
        self.table_node.Modified()
        self.table_node.EndModify(was_modifying)

    # ---- live update ---------------------------------------------------------------------
    def _on_point_event(self, caller: Any, event: Any) -> None:
        if not self._updating:
            if self.pair is not None:
                self.pair.update()
            else:
                self.update()

    def _on_scene_closed(self, caller: Any, event: Any) -> None:
        self.cleanup()

    def _on_node_removed(self, caller: Any, event: Any) -> None:
        if self._updating:
            return
        gone = [g for g, n in self.landmark_nodes.items() if not self.scene.IsNodePresent(n)]
        for g in gone:
            self.landmark_nodes.pop(g)
        if self.table_node is not None and not self.scene.IsNodePresent(self.table_node):
            self.table_node = None
        for pid, nodes in list(self.construction_nodes.items()):
            self.construction_nodes[pid] = [n for n in nodes if self.scene.IsNodePresent(n)]
        if gone and not self.landmark_nodes:
            self.cleanup()
        elif gone:
            self.update()

    def _observe_node(self, node: Any) -> None:
        for name in _POINT_EVENTS:
            event = getattr(node, name)
            self._observations.append((node, node.AddObserver(event, self._on_point_event)))

    def observe(self) -> "SceneAnalysis":
        """Re-measure whenever a landmark point is moved, added or removed (until :meth:`cleanup`)."""
        if self._observations:
            return self
        for node in self.landmark_nodes.values():
            self._observe_node(node)
        self._observations.append((self.scene, self.scene.AddObserver(self.scene.EndCloseEvent, self._on_scene_closed)))
        self._observations.append((self.scene, self.scene.AddObserver(self.scene.NodeRemovedEvent, self._on_node_removed)))
        _LIVE[self.uid] = self
        return self

    @property
    def observing(self) -> bool:
        return bool(self._observations)

    def cleanup(self) -> None:
        """Remove every observer this analysis added (nodes stay in the scene)."""
        for obj, tag in self._observations:
            obj.RemoveObserver(tag)
        self._observations.clear()
        _LIVE.pop(self.uid, None)

    def remove_nodes(self) -> None:
        """Remove the analysis from the scene (nodes and folder) and its observers."""
        self.cleanup()
        self._updating = True
        for node in [*self.landmark_nodes.values(), *(n for ns in self.construction_nodes.values() for n in ns),
                     self.table_node]:
            if node is not None and self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)
        sh = self.scene.GetSubjectHierarchyNode()
        if self.folder_item:
            sh.RemoveItem(self.folder_item, False, False)
        self._updating = False

    # ---- display -------------------------------------------------------------------------
    def highlight(self, parameter_id: str | None) -> None:
        """Highlight a parameter's landmarks and lines (None: back to group colours)."""
        m = self.result.parameters.get(parameter_id) if parameter_id else None
        if m is not None:
            used = set(m.landmarks)
        elif parameter_id in self.protocol.parameter_ids:  # not computed: show what it would need
            used = set(self.protocol.parameter(parameter_id).landmarks)
        else:
            used = set()
        for group, node in self.landmark_nodes.items():
            disp = node.GetDisplayNode()
            color = dict(self.protocol.groups).get(group, (1.0, 1.0, 0.0))
            ids = self._ids(node)
            for i in range(node.GetNumberOfControlPoints()):
                node.SetNthControlPointSelected(i, not used or ids.get(node.GetNthControlPointID(i)) in used)
            if disp is not None:
                disp.SetSelectedColor(*(HIGHLIGHT_COLOR if used else color))
                disp.SetColor(*color)
        for pid, nodes in self.construction_nodes.items():
            p = self.result.parameters.get(pid)
            base = _param_color(self.protocol, p.landmarks if p else ())
            for node in nodes:
                disp = node.GetDisplayNode()
                if disp is not None:
                    c = HIGHLIGHT_COLOR if pid == parameter_id else base
                    disp.SetSelectedColor(*c)
                    disp.SetColor(*c)
                    disp.SetOpacity(1.0 if (parameter_id is None or pid == parameter_id) else 0.35)
        self._highlighted = parameter_id

    # ---- export --------------------------------------------------------------------------
    def export_csv(self, path: str | Path) -> Path:
        """Write the parameter table as CSV (machine names in the header, NaN for missing values)."""
        return write_table_csv(path, self.table_rows())

    def write_markups_json(self, path: str | Path, *, coordinate_system: str = "LPS") -> Path:
        """Write this analysis's landmarks as one ``.mrk.json`` (canonical IDs as control-point IDs)."""
        landmarks, _ = self.read_landmarks()
        return write_markups_json(path, landmarks, self.ijk_to_ras, protocol=self.protocol.id,
                                  coordinate_system=coordinate_system, model=self.info.get("model"))


#: Analyses with live observers, by UID (so measure_from_markups finds the one the GUI watches).
_LIVE: dict[str, SceneAnalysis] = {}


def table_rows(result: Result, protocol: Protocol | None = None) -> list[dict[str, Any]]:
    """Rows of the parameter table for a result (one per parameter; NaN and ``computed=False`` if missing)."""
    proto = protocol or get_protocol(result.protocol)
    ids = list(dict.fromkeys([*proto.parameter_ids, *result.parameters]))
    rows = []
    for pid in ids:
        m = result.parameters.get(pid)
        try:
            spec = proto.parameter(pid)
            title, unit, lms = spec.title, spec.unit, spec.landmarks
        except Exception:  # noqa: BLE001 - computed extras (e.g. per-image lumbar IDs) are not in the table
            title, unit, lms = pid, m.unit if m else "", m.landmarks if m else ()
        if m is not None:
            unit, lms = m.unit, m.landmarks
        rows.append({
            "id": pid,
            "title": title,
            "value": float(m.value) if m is not None else math.nan,
            "unit": unit,
            "calibration": (m.calibration or "") if m is not None else "",
            "landmarks": " ".join(lms),
            "computed": m is not None,
            "warning": "; ".join(m.warnings) if m is not None else result.omitted.get(pid, "not computed"),
        })
    if result.levels:
        # a model's vertebra chain: how likely it is named at the right level (not a parameter, one row below them)
        from ..inference.levels import level_warning

        rows.append({"id": "level_confidence", "title": "Vertebra level confidence (all 17 named right)",
                     "value": float(result.levels["confidence"]), "unit": "probability", "calibration": "",
                     "landmarks": "", "computed": True, "warning": level_warning(result.levels) or ""})
    return rows


def write_table_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write table rows with the csv module (atomic; ``NaN`` for missing values, ``True``/``False`` booleans)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    names = [c[0] for c in TABLE_COLUMNS]
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            out = dict(row)
            out["value"] = "NaN" if math.isnan(row["value"]) else repr(float(row["value"]))
            writer.writerow(out)
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# entry points


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


def write_markups_json_from_scene(scene: Any, analysis: SceneAnalysis, path: str | Path) -> Path:
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


def rows_to_table_node(scene: Any, name: str, rows: list[dict[str, Any]], columns: Sequence[str]) -> Any:
    """A new ``vtkMRMLTableNode`` with one typed column per key (float -> double, else string; NaN kept)."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    for col in columns:
        numeric = all(isinstance(r.get(col), (int, float)) and not isinstance(r.get(col), bool) for r in rows if r.get(col) is not None)
        arr = vtk.vtkDoubleArray() if numeric and rows else vtk.vtkStringArray()
        arr.SetName(col)
        arr.SetNumberOfValues(len(rows))
        for i, r in enumerate(rows):
            v = r.get(col)
            arr.SetValue(i, (math.nan if v is None else float(v)) if numeric else ("" if v is None else str(v)))
        table.AddColumn(arr)
    node.Modified()
    return node


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
