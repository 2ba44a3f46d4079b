"""DICOM outputs of an analysis in the scene: the TID 1500 SR (and the SEG of its masks) for Slicer's "Write DICOM SR".

The module's button and ``logic.writeDicomReport(...)`` both call :func:`write_dicom_report`; the
widget only asks :func:`dicom_report_problem` whether (and why not) the button can be used. A film
counts as DICOM when its volume node carries Slicer's ``DICOM.instanceUIDs`` attribute and the
caller's resolver (in Slicer: the DICOM database's ``fileForInstance``) finds its file, or when the
volume's storage file is itself a DICOM file. The report is made from the values now in the scene
(after any drag) and references the film(s) by their SOP Instance UIDs.

Works with the MRML classes only (inside Slicer and headless with ``slicer-core``); finding a volume's
file needs neither pydicom nor highdicom (the module asks it for the calibration label too).
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import RadiographError, SpineAlignmentError
from ..result import Result
from ..safefiles import check_output_dir, output_stem

__all__ = ["DICOM_UIDS_ATTRIBUTE", "dicom_report_problem", "dicom_source_file", "volume_source_file",
           "write_dicom_report"]

#: Attribute Slicer's DICOM module sets on a volume it loaded: the SOP Instance UIDs of its files.
DICOM_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"

FileForInstance = Callable[[str], "str | None"]


def volume_source_file(volume_node: Any, file_for_instance: FileForInstance | None = None) -> str | None:
    """The file a volume was loaded from: its DICOM instance (Slicer's ``DICOM.instanceUIDs`` attribute,
    resolved by ``file_for_instance``), else its storage node's file; None when neither exists.

    Args:
        volume_node: the film's scalar volume node.
        file_for_instance: SOP Instance UID -> file path (Slicer: ``slicer.dicomDatabase.fileForInstance``).
    """
    if volume_node is None:
        return None
    uids = (volume_node.GetAttribute(DICOM_UIDS_ATTRIBUTE) or "").split()
    if uids and file_for_instance is not None:
        path = file_for_instance(uids[0])
        if path and os.path.isfile(path):
            return str(path)
    storage = volume_node.GetStorageNode()
    name = storage.GetFileName() if storage is not None else None
    return str(name) if name and os.path.isfile(name) else None


def dicom_source_file(volume_node: Any, file_for_instance: FileForInstance | None = None) -> str | None:
    """The DICOM file a volume was loaded from (:func:`volume_source_file`, if it is DICOM), or None."""
    path = volume_source_file(volume_node, file_for_instance)
    if path is None:
        return None
    st = os.stat(path)
    return path if _is_dicom(path, st.st_mtime_ns, st.st_size) else None


@functools.lru_cache(maxsize=64)
def _is_dicom(path: str, mtime_ns: int, size: int) -> bool:
    """Whether a file is a DICOM image an SR can reference (header read once per file version: the widget
    asks on every re-measure)."""
    from ..io.dicom_sr import read_source_dataset

    try:
        read_source_dataset(path)
    except SpineAlignmentError:
        return False
    return True


def _films(analysis: Any) -> dict[str, Any]:
    """Role -> film analysis ("" for a single film); a pair's first film holds the top-level result."""
    if getattr(analysis, "pair", None) is not None:
        return dict(analysis.pair.analyses)
    return {"": analysis}


def _current(analysis: Any) -> Result:
    pair = getattr(analysis, "pair", None)
    return pair.result if pair is not None else analysis.result


def dicom_report_problem(analysis: Any, file_for_instance: FileForInstance | None = None) -> str:
    """Why no DICOM SR can be written for ``analysis`` now, in one sentence ('' when it can).

    Args:
        analysis: the :class:`~.mrml.SceneAnalysis` shown (a pair's film analysis stands for the pair), or None.
        file_for_instance: as in :func:`dicom_source_file`.
    """
    if analysis is None:
        return "Run Apply first: there is no result to write."
    if not _current(analysis).parameters:
        return "No parameter is computed yet: place (or correct) the landmarks first."
    for role, film in _films(analysis).items():
        if role and role not in _referenced_roles(analysis):
            continue
        if dicom_source_file(film.volume_node, file_for_instance) is None:
            which = f"the {role} film" if role else "the input volume"
            return (f"A DICOM SR references its film by UID, and {which} was not loaded from DICOM (load the film "
                    "through the DICOM module).")
    return ""


def _referenced_roles(analysis: Any) -> tuple[str, ...]:
    """The films the report references: both of a flexion/extension pair, the coronal film of a paired lateral."""
    pair = getattr(analysis, "pair", None)
    if pair is None:
        return ("",)
    return pair.roles if pair.protocol.image_roles else pair.roles[:1]


def write_dicom_report(analysis: Any, out_dir: str | Path, *, file_for_instance: FileForInstance | None = None,
                       name: str | None = None) -> dict[str, Path]:
    """Write the analysis's current values as a DICOM SR (TID 1500), and its masks as a DICOM SEG.

    Args:
        analysis: a film's :class:`~.mrml.SceneAnalysis` (for a pair, either film's: the pair is written).
        out_dir: folder for ``<name>_sr.dcm`` (and ``<name>_seg.dcm`` when the analysis has a segmentation).
        file_for_instance: as in :func:`dicom_source_file`.
        name: output file stem (default: the first film's DICOM file stem).

    Returns:
        ``{"sr": path}`` and, with masks, ``"seg": path``.

    Raises:
        SpineAlignmentError: :func:`dicom_report_problem` says why, or a DICOM file that is not the film shown.
    """
    from ..imaging.dicom import REFERENCE_UIDS
    from ..io.dicom_seg import write_segmentation
    from ..io.dicom_sr import read_source_dataset, write_measurement_report
    from .mrml import segmentation_to_labels, volume_image_size

    problem = dicom_report_problem(analysis, file_for_instance)
    if problem:
        raise SpineAlignmentError(problem)
    films = _films(analysis)
    sources = {}
    for role in _referenced_roles(analysis):
        film = films[role]
        path = dicom_source_file(film.volume_node, file_for_instance)
        ds = read_source_dataset(path)
        size = volume_image_size(film.volume_node)
        if size is not None and (int(ds.Rows), int(ds.Columns)) != tuple(size):
            raise RadiographError(f"{path}: is {ds.Rows} x {ds.Columns} pixels but the volume shown is "
                                  f"{size[0]} x {size[1]}; the SR must reference the film the points were placed on.")
        sources[role] = (path, ds)
    result = copy.copy(_current(analysis))
    uids = {role: {key: str(ds[tag].value) for key, tag in REFERENCE_UIDS.items()} for role, (_, ds) in sources.items()}
    if result.views:  # each film's UIDs: the report references each landmark on its own film
        result.views = {role: copy.copy(v) for role, v in result.views.items()}
        for role, v in result.views.items():
            v.dicom = uids.get(role)
    else:
        result.dicom = uids[next(iter(uids))]
    out = check_output_dir(out_dir)
    first_path, first_ds = next(iter(sources.values()))
    stem = name or output_stem(Path(first_path).name.rsplit(".dcm", 1)[0] or "film")
    written = {"sr": write_measurement_report(
        result, {r: ds for r, (_, ds) in sources.items()} if result.views else first_ds, out / f"{stem}_sr.dcm")}
    first = films[next(iter(films))]
    seg_node = getattr(first, "segmentation_node", None)
    if seg_node is not None:
        labels = segmentation_to_labels(seg_node, first.volume_node)
        written["seg"] = write_segmentation(labels, first_ds, out / f"{stem}_seg.dcm", protocol=result.protocol,
                                            model=result.model)
    return written
