"""Landmark channel order helpers (read from the protocol table, never hard-coded twice)."""

from __future__ import annotations

from typing import Sequence

__all__ = ["protocol_landmark_ids", "flip_permutation"]

# Image-side suffix pairs that trade places when the image is mirrored left-right.
_SWAPS = {"TL": "TR", "TR": "TL", "BL": "BR", "BR": "BL", "L": "R", "R": "L"}


def protocol_landmark_ids(protocol_id: str) -> tuple[str, ...]:
    """Canonical landmark IDs of a protocol, in channel order."""
    from ..protocols import get_protocol

    return tuple(get_protocol(protocol_id).landmark_ids)


def flip_permutation(ids: Sequence[str], pairs: Sequence[tuple[str, str]] | None = None) -> list[int]:
    """Channel permutation that maps landmarks of a mirrored image back to their names.

    After a horizontal flip, the point that was ``T5_TL`` is where ``T5_TR`` is
    expected, so channel ``k`` of the flipped prediction belongs to
    ``ids[perm[k]]``. Only image-side suffixes (``TL``/``TR``, ``BL``/``BR``)
    swap: an AP film mirrored is still an AP film of the same vertebrae.

    Args:
        ids: landmark IDs in channel order, e.g. ``("T1_TL", "T1_TR", ...)``.
        pairs: the protocol table's ``flip_pairs`` (:attr:`Protocol.flip_pairs`): when given, exactly these
            swap and the suffixes are not read (``FH_1``/``FH_2`` are two femoral heads, not a left and a right).

    Returns:
        ``perm`` with ``perm[k]`` = index of the swapped partner of ``ids[k]``
        (itself when it has none). It is an involution.
    """
    index = {name: i for i, name in enumerate(ids)}
    if pairs is not None:
        partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
        return [index.get(partner.get(name, name), index[name]) for name in ids]
    perm = []
    for name in ids:
        stem, _, suffix = name.rpartition("_")
        partner = f"{stem}_{_SWAPS[suffix]}" if stem and suffix in _SWAPS else name
        perm.append(index.get(partner, index[name]))
    return perm
