"""One analysis in the MRML scene: :class:`SceneAnalysis`.

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

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..pipeline import measure
from ..protocols import get_protocol
from ..result import Landmark, Result
from .geometry import OFF_PLANE_SLICES, ijk_to_ras_from_volume_node, pixels_to_ras, ras_to_pixels
from .live import LiveMeasurement
from .markups_json import write_markups_json
from .mrml_classes import vtk
from .nodes import (
    ATTR_ANALYSIS, ATTR_GROUP, ATTR_IMAGE, ATTR_LANDMARK_IDS, ATTR_PROTOCOL, ATTR_ROLE, HIGHLIGHT_COLOR,
    VOLUME_REFERENCE_ROLE, _param_color, _set_display,
)
from .table import new_table_node, table_rows, write_table_csv

__all__ = ["SceneAnalysis"]


class SceneAnalysis(LiveMeasurement):
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
        #: a model's first pass (:class:`~SpineAlignmentLib.inference.anchor.ChainState`) for a level anchor
        self.chain: Any = None

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
        table = new_table_node(self.scene, self.scene.GenerateUniqueName(f"{self.protocol.id} parameters"))
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
        result.levels = info.get("levels")  # the chain's naming stays with the film when points move
        return result

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per parameter (protocol order, then any extra computed IDs), machine-readable values."""
        return table_rows(self.result, self.protocol)
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
