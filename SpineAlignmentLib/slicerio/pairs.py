"""Two films of one measurement in one scene: lumbar flexion + extension, or a coronal film + its paired lateral.

Each film keeps its own :class:`~.mrml.SceneAnalysis`: its landmark nodes live on its own volume, so
its pixels map through its own IJK-to-RAS. A :class:`PairAnalysis` measures both films together
(:func:`SpineAlignmentLib.pairs.measure_pair`, the one the batch uses too). A moved point on either film re-measures the pair. Each parameter is drawn on the film
its landmarks are on, and one table (on the first film's analysis) lists every value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import LandmarkError
from ..pairs import PAIRED_LATERAL_ROLES, film_landmark_ids, film_of, measure_pair, pair_roles
from ..protocols import get_protocol
from ..result import Landmark, Result, View
from .mrml import SceneAnalysis, _new_analysis, analysis_for_node, volume_image_size

__all__ = ["PAIRED_LATERAL_ROLES", "PairAnalysis", "pair_roles", "create_pair_analysis", "pair_from_markups"]


class PairAnalysis:
    """Two :class:`~.mrml.SceneAnalysis` objects measured as one.

    Attributes:
        protocol: the :class:`~SpineAlignmentLib.protocols.Protocol`.
        analyses: role -> the film's analysis (landmark and construction nodes on that film).
        result: the last combined :class:`~SpineAlignmentLib.result.Result`.
        table_node: the one parameter table (held by the first role's analysis).
    """

    def __init__(self, analyses: Mapping[str, SceneAnalysis], protocol: str) -> None:
        self.protocol = get_protocol(protocol)
        self.roles = pair_roles(self.protocol)
        if set(analyses) != set(self.roles):
            raise LandmarkError(f"{self.protocol.id} pairs the films {' and '.join(self.roles)}; "
                                f"got {', '.join(analyses) or 'none'}.")
        self.analyses = {role: analyses[role] for role in self.roles}
        self.result = Result(protocol=self.protocol.id)
        second = self.analyses[self.roles[1]]
        if second.table_node is not None:  # one table for the pair
            second.scene.RemoveNode(second.table_node)
            second.table_node = None
        for role, a in self.analyses.items():
            a.pair = self
            a.draws = lambda pid, role=role: self.film_of(pid) == role
            a.expected_landmarks = self.landmarks_of(role)

    def landmarks_of(self, role: str) -> tuple[str, ...]:
        """The landmark IDs placed on a film (:func:`SpineAlignmentLib.pairs.film_landmark_ids`)."""
        return film_landmark_ids(self.protocol, role)

    @property
    def table_node(self) -> Any:
        return self.analyses[self.roles[0]].table_node

    def film_of(self, parameter_id: str) -> str | None:
        """The role whose film a parameter is drawn on; None for a difference between the films (IROM, dST)."""
        return film_of(self.protocol, parameter_id)

    def _view(self, role: str) -> tuple[View, list[str]]:
        a = self.analyses[role]
        landmarks, warnings = a.read_landmarks()
        info = a.info
        spacing = info.get("spacing_mm")
        size = info.get("image_size") or volume_image_size(a.volume_node)
        view = View(landmarks=landmarks, image=info.get("image"),
                    image_size=tuple(size) if size else None, spacing_mm=tuple(spacing) if spacing else None,
                    calibration=info.get("calibration") or "pixels-only" if spacing else "pixels-only",
                    patient_orientation=info.get("patient_orientation"))
        return view, [f"{role}: {w}" for w in warnings]

    def measure(self) -> Result:
        """Measure both films' landmarks now in the scene as one result (no scene changes)."""
        first, second = self.roles
        (v1, w1), (v2, w2) = self._view(first), self._view(second)
        result = measure_pair(self.protocol, {first: v1, second: v2},
                              model=self.analyses[first].info.get("model"), source="scene")
        result.warnings[:0] = w1 + w2
        return result

    def update(self) -> set[str]:
        """Re-measure the pair, redraw each film's parameters and the one table; returns the changed IDs."""
        self.result = self.measure()
        changed: set[str] = set()
        for a in self.analyses.values():
            changed |= a.update(self.result)
        return changed

    def observe(self) -> "PairAnalysis":
        """Re-measure the pair whenever a point on either film moves (until :meth:`cleanup`)."""
        for a in self.analyses.values():
            a.observe()
        return self

    def cleanup(self) -> None:
        for a in self.analyses.values():
            a.cleanup()
            a.pair = None
            a.draws = None
            a.expected_landmarks = None


def create_pair_analysis(
    scene: Any,
    volumes: Mapping[str, Any],
    protocol: str,
    *,
    films: Mapping[str, Mapping[str, Any]] | None = None,
    landmarks: Mapping[str, Mapping[str, Landmark | tuple[float, float]]] | None = None,
    observe: bool = True,
) -> PairAnalysis:
    """Two films in the scene as one analysis, with optional landmarks already placed.

    Args:
        scene: the ``vtkMRMLScene``.
        volumes: role -> volume node (roles from :func:`pair_roles`).
        protocol: ``lumbar-dynamic`` or ``coronal-spine``.
        films: role -> ``{"spacing_mm", "calibration", "patient_orientation", "image", "model"}``
            of that film (calibration as read from its file; absent: pixels only).
        landmarks: role -> landmark ID -> pixel ``(x, y)`` (or :class:`Landmark`) on that film.
        observe: start live re-measuring at once.
    """
    proto = get_protocol(protocol)
    roles = pair_roles(proto)
    if set(volumes) != set(roles):
        raise LandmarkError(f"{proto.id} pairs the films {' and '.join(roles)}; got {', '.join(volumes) or 'none'}.")
    analyses = {}
    for role in roles:
        volume = volumes[role]
        a = _new_analysis(scene, volume, proto.id, f"{volume.GetName()} {proto.id} ({role})")
        info = dict((films or {}).get(role) or {})
        size = volume_image_size(volume)
        a.info = {"image": info.get("image"), "image_size": list(size) if size else None,
                  "spacing_mm": list(info["spacing_mm"]) if info.get("spacing_mm") else None,
                  "calibration": info.get("calibration") if info.get("spacing_mm") else "pixels-only",
                  "patient_orientation": info.get("patient_orientation"), "model": info.get("model")}
        for key, xy in ((landmarks or {}).get(role) or {}).items():
            point = (xy.x, xy.y) if isinstance(xy, Landmark) else tuple(xy)
            a.add_landmark(key, point)
            if isinstance(xy, Landmark) and xy.confidence is not None:  # a model's point keeps its confidence
                a.info.setdefault("confidence", {})[key] = xy.confidence
        if role == roles[0]:
            a._make_table()
        analyses[role] = a
    pair = PairAnalysis(analyses, proto.id)
    pair.update()
    if observe:
        pair.observe()
    return pair


def pair_from_markups(nodes: Mapping[str, Any], protocol: str, volumes: Mapping[str, Any] | None = None, *,
                      observe: bool = True) -> PairAnalysis:
    """Measure two films' landmark nodes (e.g. two loaded ``.mrk.json`` files) as one pair, live.

    Args:
        nodes: role -> a landmark fiducial node on that film.
        protocol: ``lumbar-dynamic`` or ``coronal-spine``.
        volumes: role -> volume node; default: each node's volume reference.
    """
    analyses = {role: analysis_for_node(node, protocol, (volumes or {}).get(role)) for role, node in nodes.items()}
    pair = PairAnalysis(analyses, protocol)
    pair.update()
    if observe:
        pair.observe()
    return pair
