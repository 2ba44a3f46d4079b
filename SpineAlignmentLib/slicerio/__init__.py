"""Slicer interchange: pixel <-> RAS geometry, ``.mrk.json`` files and the MRML scene layer.

:mod:`.geometry` and :mod:`.markups_json` are plain Python (NumPy, SimpleITK) and
work without Slicer. :mod:`.mrml` needs the MRML classes (inside 3D Slicer, or
the ``slicer-core`` wheel of the ``slicer`` extra) and is only imported on request.
"""

from .geometry import ijk_to_ras_for_file, ijk_to_ras_from_volume_node, pixels_to_ras, ras_to_pixels
from .markups_json import read_markups_json, write_markups_json

__all__ = [
    "ijk_to_ras_for_file",
    "ijk_to_ras_from_volume_node",
    "pixels_to_ras",
    "ras_to_pixels",
    "read_markups_json",
    "write_markups_json",
]
