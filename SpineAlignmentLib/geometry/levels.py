"""Spine levels: the order of the vertebrae, their names in landmark IDs, and where a chain's neighbours lie.

Protocol-agnostic: a level is read from a canonical landmark ID (``C2_AI``,
``T5c``, ``L3_TL``, ``S1_PS``), so every protocol table works without a list of
its own. A four-corner vertebra chain (``T1_TL`` ... ``L5_BR``) is named by the
protocol table (:func:`vertebra_chain`); the levels beyond its ends (C7 above
T1, S1 below L5) come from :func:`adjacent_level` on the typical spine.

Level positions beyond a labelled chain are extrapolated along the spine
(:func:`level_rows`): a cervical level is taken as :data:`CERVICAL_SPACING` x
the centre distance of the chain's first two vertebrae, the sacrum as
:data:`SACRUM_LEVELS` x the distance of its last two below the last one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["FOUR_CORNERS", "CERVICAL_SPACING", "SACRUM_LEVELS", "spine_level", "level_name", "adjacent_level",
           "vertebra_chain", "level_rows"]

#: the corner suffixes of a four-corner vertebra, in landmark order (image left/right, top/bottom)
FOUR_CORNERS = ("TL", "TR", "BL", "BR")
#: centre distance of the cervical vertebrae relative to the T1-T2 distance (C7..C4 are smaller than T1)
CERVICAL_SPACING = 0.8
#: how far below the L5 centre the sacrum ends, in L4-L5 centre distances
SACRUM_LEVELS = 4.0

_LEVEL_RE = re.compile(r"^([CTLS])(\d{1,2})(?:_|c$)")
#: Index of the first vertebra of each region, and its number of vertebrae (L6 and T13 occur).
_REGIONS = {"C": (0, 7), "T": (7, 13), "L": (20, 6), "S": (26, 5)}
#: the typical spine (what a neighbour of a chain's end is called): 7 cervical, 12 thoracic, 5 lumbar, 5 sacral
SPINE_LEVELS = tuple(f"{region}{n}" for region, count in (("C", 7), ("T", 12), ("L", 5), ("S", 5))
                 for n in range(1, count + 1))


def spine_level(landmark_id: str) -> int | None:
    """Position of the landmark's vertebra from the head down (C1 = 0 ... S1), or None (``OD``, ``FH_1``, ...).

    Read from canonical IDs such as ``C2_AI``, ``T5c``, ``L3_TL``, ``S1_PS``, so every protocol's table works.
    """
    m = _LEVEL_RE.match(landmark_id)
    if m is None:
        return None
    base, count = _REGIONS[m.group(1)]
    n = int(m.group(2))
    return base + n - 1 if 1 <= n <= count else None


def level_name(landmark_id: str) -> str:
    """The vertebra a level landmark belongs to (``T5`` for ``T5_AS`` and ``T5c``); see :func:`spine_level`."""
    m = _LEVEL_RE.match(landmark_id)
    if m is None:
        raise ValueError(f"{landmark_id!r} names no spine level")
    return m.group(1) + m.group(2)


def adjacent_level(name: str, step: int) -> str | None:
    """The vertebra ``step`` levels below ``name`` on a typical spine (negative: above); None past C1 or S5.

    ``adjacent_level("T1", -1) == "C7"``, ``adjacent_level("L5", 1) == "S1"``.
    """
    if name not in SPINE_LEVELS:
        return None
    k = SPINE_LEVELS.index(name) + step
    return SPINE_LEVELS[k] if 0 <= k < len(SPINE_LEVELS) else None


def vertebra_chain(landmark_ids: Sequence[str]) -> tuple[str, ...]:
    """The vertebrae of a four-corner chain (``("T1", ..., "L5")`` for ``T1_TL`` ... ``L5_BR``), in table order;
    ``()`` when the IDs are not groups of :data:`FOUR_CORNERS` of named spine levels (no vertebra chain)."""
    ids = list(landmark_ids)
    if not ids or len(ids) % 4:
        return ()
    names = []
    for i in range(0, len(ids), 4):
        group = [k.rpartition("_") for k in ids[i:i + 4]]
        name = group[0][0]
        if tuple(c for _, _, c in group) != FOUR_CORNERS or any(n != name for n, _, _ in group) \
                or spine_level(ids[i]) is None:
            return ()
        names.append(name)
    return tuple(names)


def level_rows(points: np.ndarray) -> dict[str, float]:
    """Row (y, original pixels) of the framing limits for (4 n, 2) corners of a chain of n >= 3 vertebrae
    (T1..L5 for the coronal spine), top to bottom.

    Keys: ``C4`` (centre of the 4th level above the first vertebra, extrapolated), ``T1`` (first vertebra's
    centre), ``T3`` (third), ``L4`` (second last), ``L5`` (last) and ``below_sacrum`` (the sacrum's lower end,
    extrapolated).
    """
    c = np.asarray(points, dtype=float).reshape(-1, 4, 2).mean(axis=1)[:, 1]
    top, bottom = c[1] - c[0], c[-1] - c[-2]
    return {"C4": float(c[0] - 4 * CERVICAL_SPACING * top), "T1": float(c[0]), "T3": float(c[2]),
            "L4": float(c[-2]), "L5": float(c[-1]), "below_sacrum": float(c[-1] + SACRUM_LEVELS * bottom)}
