"""SpineAlignmentLib: spinal alignment measurement on radiographs.

:data:`__version__` is the software version, from its one place: the file
``VERSION`` next to this module (``pyproject.toml`` reads it for the package
metadata, and it is installed with the library into 3D Slicer, where there is
no package metadata). It is written into every result JSON, batch summary,
evaluation report and DICOM object, and shown by ``spine-align --version``.
"""

from __future__ import annotations


def _version() -> str:
    from pathlib import Path

    try:
        text = (Path(__file__).resolve().parent / "VERSION").read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if text:
        return text
    import importlib.metadata

    try:
        return importlib.metadata.version("SpineAlignmentLib")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


__version__ = _version()
