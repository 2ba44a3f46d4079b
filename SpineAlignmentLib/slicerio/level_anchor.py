"""A level anchor on an analysis in the scene: *this vertebra is T1*, or *the levels are one off*.

:func:`set_level_anchor` re-names the model's vertebra chain of a :class:`~.mrml.SceneAnalysis`
(:func:`~SpineAlignmentLib.pipeline.reanchor`: from the first pass's own candidates, no network re-run),
moves the control points so that each label sits on its new vertebra, and updates the constructions
and the parameter table (the ``level_confidence`` row then says the levels were confirmed). The Slicer
module's *T1 is here* and *Levels up/down* buttons and ``logic.setLevelAnchor`` call it. Works on the
MRML classes only (headless with ``slicer-core``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import LandmarkError
from ..inference.anchor import LevelAnchor
from ..result import Result
from .geometry import ras_to_pixels

__all__ = ["set_level_anchor"]


def set_level_anchor(analysis: Any, *, level: str | None = None, xy: Sequence[float] | None = None,
                     ras: Sequence[float] | None = None, shift: int | None = None, by: str = "slicer") -> Result:
    """Re-name the analysis's vertebra chain by one fact and update its nodes.

    Args:
        analysis: a :class:`~SpineAlignmentLib.slicerio.mrml.SceneAnalysis` made from a model's result.
        level: the name of the vertebra at the point (``"T1"``), with ``xy`` (image pixels) or ``ras``.
        shift: instead of a point, the chain's level error: -1 it is named one level too high (its T1 is
            C7: every name moves one vertebra down), +1 one level too low (names move one vertebra up).
        by: who set it (``levels.anchor.by``).

    Returns:
        The new :class:`~SpineAlignmentLib.result.Result` (also ``analysis.result``).

    Raises:
        LandmarkError: no model chain in this analysis, or an anchor that cannot be used (why, in one sentence).
    """
    from ..pipeline import reanchor

    if shift is not None:
        anchor = LevelAnchor(by, shift=int(shift))
    else:
        if level is None or (xy is None and ras is None):
            raise LandmarkError("give a level with a point (xy in image pixels or ras), or a shift of -1 or +1.")
        if xy is None:
            xy = ras_to_pixels(analysis.ijk_to_ras, np.asarray(ras, dtype=float).reshape(1, 3))[0]
        anchor = LevelAnchor(by, str(level), float(xy[0]), float(xy[1]))
    if analysis.chain is None:
        raise LandmarkError(f"{analysis.info.get('image') or 'this analysis'}: its vertebra levels cannot be anchored: "
                            "its landmarks did not come from a vertebra-centres model in this session (analyse the "
                            "film again with the model).")
    base = analysis.measure()
    base.chain = analysis.chain
    new = reanchor(base, anchor)
    was = analysis._updating
    analysis._updating = True  # one re-measure for all moved points, not one per point
    try:
        for key, lm in new.landmarks.items():
            analysis.add_landmark(key, (lm.x, lm.y))
    finally:
        analysis._updating = was
    analysis.chain = new.chain
    analysis.info["confidence"] = {k: lm.confidence for k, lm in new.landmarks.items() if lm.confidence is not None}
    analysis.info["levels"] = new.levels
    analysis.update(new)
    analysis._update_table(None)  # the level row changed even when no parameter did
    analysis._store_info()
    return new
