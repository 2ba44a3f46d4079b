"""SpineAlignmentLib: spinal alignment measurement on radiographs.

:data:`__version__` is the one place the software version comes from: the
installed package metadata (``pyproject.toml``'s ``version``), or, in a source
tree or a Slicer extension without package metadata, ``pyproject.toml`` itself.
It is written into every result JSON, batch summary and evaluation report.
"""

from __future__ import annotations


def _version() -> str:
    import importlib.metadata
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():  # a source tree: its own pyproject, not an install found elsewhere on the path
        try:
            import tomllib  # Python 3.11+

            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (ImportError, OSError, ValueError, KeyError):
            pass
    try:
        return importlib.metadata.version("SpineAlignmentLib")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


__version__ = _version()
