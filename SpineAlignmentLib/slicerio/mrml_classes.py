"""The MRML classes (``slicer``, ``vtk``), with one clear message where they are missing.

Every MRML module of :mod:`SpineAlignmentLib.slicerio` imports them from here: inside 3D
Slicer they are Slicer's own, headless they come from the ``slicer-core`` wheel.
"""

try:
    import slicer
    import vtk
except ImportError as exc:  # pragma: no cover - exercised only without the wheel
    raise ImportError(
        "SpineAlignmentLib.slicerio.mrml needs the MRML classes: run it inside 3D Slicer or install "
        "the slicer-core wheel (pip install 'SpineAlignmentLib[slicer]')."
    ) from exc

__all__ = ["slicer", "vtk"]
