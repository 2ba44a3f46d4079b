"""The pairs batch's old place: its code is :mod:`SpineAlignmentLib.batch.pairs` (``spine-align batch --pairs``)."""

from .batch.landmarks import film_landmarks
from .batch.pairs import (MANIFEST_COLUMNS, MAX_MANIFEST_BYTES, OPTIONAL_COLUMNS, ManifestRow, analyze_pair,
                          check_two_films, pair_items, pair_names, read_manifest)
from .batch.resume import pair_fingerprint

__all__ = ["MANIFEST_COLUMNS", "MAX_MANIFEST_BYTES", "OPTIONAL_COLUMNS", "ManifestRow", "analyze_pair",
           "check_two_films", "film_landmarks", "pair_fingerprint", "pair_items", "pair_names", "read_manifest"]
