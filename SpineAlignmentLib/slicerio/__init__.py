"""Slicer interchange: pixel <-> RAS geometry, ``.mrk.json`` files and the MRML scene layer.

:mod:`.geometry` and :mod:`.markups_json` are plain Python (NumPy, SimpleITK) and
work without Slicer. :mod:`.mrml` (with :mod:`.analysis`, :mod:`.nodes`,
:mod:`.table`, :mod:`.live`, :mod:`.pairs`) needs the MRML classes (inside 3D
Slicer, or the ``slicer-core`` wheel of the ``slicer`` extra) and is only imported
on request. :mod:`.logic` is the Slicer module's logic.

The names below are imported on first use, so that the module can import
:mod:`.logic` at load time with the standard library only (NumPy comes with the
first measurement).
"""

__all__ = [
    "ijk_to_ras_for_file",
    "ijk_to_ras_from_volume_node",
    "pixels_to_ras",
    "ras_to_pixels",
    "read_markups_json",
    "write_markups_json",
]


def __getattr__(name):
    if name in ("ijk_to_ras_for_file", "ijk_to_ras_from_volume_node", "pixels_to_ras", "ras_to_pixels"):
        from . import geometry

        return getattr(geometry, name)
    if name in ("read_markups_json", "write_markups_json"):
        from . import markups_json

        return getattr(markups_json, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
