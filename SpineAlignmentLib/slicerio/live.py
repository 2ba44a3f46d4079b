"""Live measurement: a moved point re-measures its analysis, and only what changed is redrawn.

:class:`LiveMeasurement` is the part of :class:`~.mrml.SceneAnalysis` that keeps the scene in step
with the landmarks: observers on the point events (removed on :meth:`~LiveMeasurement.cleanup` and
on scene close), re-measuring, and updating the construction nodes and table rows of the parameters
whose value or construction changed. It works on the attributes :class:`~.mrml.SceneAnalysis`
defines (``scene``, ``protocol``, ``result``, ``info``, ``landmark_nodes``, ``construction_nodes``,
``table_node``, ``pair``, ``draws``, ``listeners``) and its ``measure``, ``table_rows``, ``_ras``,
``_tag`` methods.
"""

from __future__ import annotations

import json
from typing import Any

from ..geometry.measurement import format_value
from ..result import Result
from .mrml_classes import vtk
from .nodes import ATTR_IMAGE, ATTR_KIND, ATTR_PARAMETER, _param_color, _set_display
from .table import fill_table_node

_POINT_EVENTS = (
    "PointModifiedEvent", "PointAddedEvent", "PointRemovedEvent", "PointPositionDefinedEvent",
    "PointPositionUndefinedEvent", "PointEndInteractionEvent",
)

#: Analyses with live observers, by UID (so measure_from_markups finds the one the GUI watches).
_LIVE: dict[str, Any] = {}


class LiveMeasurement:
    """Re-measuring and redrawing on point events (mixed into :class:`~.mrml.SceneAnalysis`)."""

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

    def _update_table(self, changed: set[str] | None) -> None:
        if self.table_node is not None:
            fill_table_node(self.table_node, self.table_rows(), changed)

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

    def observe(self) -> "LiveMeasurement":
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
