"""The frame every export shares: the model folder a finished run becomes.

Each kind of model has its own export, which knows its networks and what to measure (the coronal vertebra
network, :mod:`.export`; own-data landmark models, :mod:`.export_generic`; the segmentation model,
:mod:`.export_segmentation`; ``spine-align export`` picks the one a run needs). All of them open, write and finish
their folder here, the same way:

* :func:`open_folder`: a folder that holds another model is refused in one sentence; a re-export reads what the
  folder held before;
* :func:`changelog`: a re-export keeps the earlier versions' changelog lines;
* :func:`write_metadata`: ``metadata.json`` is checked against the schema before it is written;
* :func:`finish_folder`: the speed figures measured on exactly these weights are kept
  (``benchmark_inference.py --record``), the metadata is written, the card is written from it alone
  (:func:`~.card.write_card`), and the folder is loaded as users will load it (SHA-256 of every weights file).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SpineAlignmentError
from .card import write_card

__all__ = ["open_folder", "changelog", "write_metadata", "finish_folder"]


def open_folder(out: Path, name: str) -> dict:
    """Create the model folder ``out`` for model ``name``; the metadata it already holds (``{}`` for a new folder).

    Raises:
        SpineAlignmentError: ``out`` holds another model, or a ``metadata.json`` that is not JSON.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metadata.json"
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise SpineAlignmentError(f"{path} is not readable JSON; choose another --out or delete that folder.") from None
    if old.get("name") not in (None, name):
        raise SpineAlignmentError(f"{out} already holds model '{old.get('name')}'; choose another --out.")
    return old


def changelog(old: dict, version: str, line: str | None, first: str) -> dict:
    """The changelog of this export: the earlier versions' lines kept, this version's ``line`` (or the line it
    already had, or ``first`` for a new version)."""
    log = dict(old.get("changelog", {}))
    log[version] = line or log.get(version) or first
    return log


def write_metadata(md: dict, out: Path) -> None:
    """Check ``md`` against the metadata schema, then write ``out/metadata.json``.

    Raises:
        ModelError: the metadata breaks the schema (an exporter's bug: nothing is written).
    """
    from ..models.registry import validate_metadata

    validate_metadata(md, str(Path(out) / "metadata.json"))
    (Path(out) / "metadata.json").write_text(json.dumps(md, indent=1))


def finish_folder(md: dict, out: Path, old: dict) -> dict:
    """Write the finished folder: speed figures of the same weights kept from ``old``, the metadata, the card;
    then load it as users will. Returns ``md``."""
    from ..models.registry import load_model, weights_checksums

    bench = old.get("benchmark")
    if bench and bench.get("weights_sha256") == weights_checksums(md):
        md["benchmark"] = bench
    write_metadata(md, out)
    write_card(md, out)
    load_model(md["name"], folder=Path(out))
    return md
