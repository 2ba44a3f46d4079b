"""Where a film's landmarks come from: a landmark file matched in ``landmarks_dir`` and read, or a model.

:func:`match_landmarks` finds each item's file (its output name, a tree mirroring the inputs, the DICOM
SOP Instance UID or the ``image`` field of a result JSON); :func:`film_landmarks` is the one place a
batch gets a film's landmarks, for a single film and for each film of a pair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import LandmarkError, ModelError, SpineAlignmentError
from ..io.naming import BatchItem, image_stem
from ..result import View, check_fields, load_json, parse_landmarks
from .resume import default_model

log = logging.getLogger(__name__)


def find_landmarks_file(landmarks_dir: str | Path, name: str | BatchItem) -> Path | None:
    """``<name>.json`` (result format) or ``<name>.mrk.json`` in ``landmarks_dir``, else None.

    For a :class:`BatchItem` its output name is tried first, then its image's stem (the two
    differ when the name was made unique or shortened to the file-name limit).
    """
    names = [name.name, image_stem(Path(name.image))] if isinstance(name, BatchItem) else [name]
    for stem in dict.fromkeys(names):
        for suffix in (".json", ".mrk.json"):
            p = Path(landmarks_dir) / f"{stem}{suffix}"
            try:
                if p.is_file():
                    return p
            except OSError:  # a name over the file system's limit cannot exist
                continue
    return None


def _sop_instance_uid(image: str | Path) -> str | None:
    """The SOP Instance UID of a DICOM file (header only), else None."""
    try:
        import pydicom

        ds = pydicom.dcmread(str(image), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        uid = ds.get("SOPInstanceUID")
    except Exception:  # noqa: BLE001 - not DICOM (or unreadable: its reader reports that as the image's failure)
        return None
    return str(uid) if uid else None


def match_landmarks(items: Sequence[BatchItem], landmarks_dir: str | Path) -> dict[str, tuple[Path | None, str]]:
    """The landmark file of each item (by output name), or None with the reason.

    Tried in order: ``<name>.json`` / ``<name>.mrk.json`` (the output-name rule of
    :func:`make_items`, so an earlier batch's output folder works); the same under the
    item's parent folders (a landmark tree mirroring the input tree, ``p1/IM0001.json``);
    then result-format JSON files anywhere below ``landmarks_dir`` whose
    ``dicom.sop_instance_uid`` is the image's SOP Instance UID, or whose ``image``
    (a path or file name) names this image and no other input. A key that two files
    claim is ambiguous and matches nothing.
    """
    root = Path(landmarks_dir)
    out: dict[str, tuple[Path | None, str]] = {}
    left = []
    for item in items:
        found = find_landmarks_file(root, item)  # its output name, then its stem (a shortened name differs)
        if found is None and item.folders:
            found = find_landmarks_file(root.joinpath(*item.folders), image_stem(Path(item.image)))
        if found is not None:
            out[item.name] = (found, "")
        else:
            left.append(item)
    if not left:
        return out
    by_uid: dict[str, list[Path]] = {}
    by_image: dict[str, list[Path]] = {}
    for f in sorted(root.rglob("*.json")):
        if f.name.lower().endswith(".mrk.json") or not f.is_file():
            continue
        try:
            data = load_json(f)
        except SpineAlignmentError:
            continue
        uid = (data.get("dicom") or {}).get("sop_instance_uid") if isinstance(data.get("dicom"), dict) else None
        if uid:
            by_uid.setdefault(str(uid), []).append(f)
        if isinstance(data.get("image"), str) and data["image"].strip():
            by_image.setdefault(Path(data["image"].strip()).as_posix(), []).append(f)

    def names_image(field: str, image: str) -> bool:
        return Path(image).as_posix() == field or Path(image).as_posix().endswith("/" + field)

    for item in left:
        uid = _sop_instance_uid(item.image) if by_uid else None
        if uid and len(by_uid.get(uid, [])) == 1:
            out[item.name] = (by_uid[uid][0], "")
            continue
        claims = [(field, files) for field, files in by_image.items() if names_image(field, item.image)]
        claims = [(field, files) for field, files in claims
                  if sum(names_image(field, other.image) for other in items) == 1]
        files = sorted({f for _, fs in claims for f in fs})
        if len(files) == 1:
            out[item.name] = (files[0], "")
            continue
        why = (f"no landmark file {item.name}.json or {item.name}.mrk.json in {root}"
               + (f" (nor {Path(*item.folders, image_stem(Path(item.image)))}.json)" if item.folders else "")
               + (f", and no result JSON there names its SOP Instance UID {uid}" if uid else "")
               + (f"; {len(files)} files name this image: {', '.join(f.name for f in files[:3])}" if len(files) > 1 else ""))
        out[item.name] = (None, why)
    return out


def read_landmarks_file(path: str | Path, protocol: str, image_path: str | Path | None = None) -> tuple[dict, dict]:
    """Landmarks (pixels) from a result-format JSON or a ``.mrk.json``; also the file's other fields.

    A ``.mrk.json`` is mapped back to pixels with the geometry Slicer gives ``image_path``; the
    model's confidences and name come back from the control-point descriptions (untrusted stays untrusted).
    """
    path = Path(path)
    if path.name.lower().endswith(".mrk.json"):
        from ..slicerio.geometry import ijk_to_ras_for_file
        from ..slicerio.markups_json import markups_landmarks

        landmarks, model = markups_landmarks(path, ijk_to_ras_for_file(image_path), protocol)
        return landmarks, {"model": model}
    data = load_json(path)
    check_fields(data, str(path), protocol_given=True)
    if not isinstance(data, dict) or "landmarks" not in data:
        raise LandmarkError(f"{path}: no 'landmarks' object; give a landmark JSON file (protocols.md result format).")
    if data.get("protocol") not in (None, protocol):
        raise LandmarkError(f"{path}: landmarks are for protocol '{data['protocol']}', not '{protocol}'.")
    return data["landmarks"], data


@dataclass
class FilmLandmarks:
    """One film's landmarks and where they came from (:func:`film_landmarks`).

    ``view`` holds the landmarks (original pixels), the film's name, size, spacing and calibration
    label, orientation and DICOM UIDs; ``source`` names the landmark file or the film (model).
    """

    view: View
    model: dict | None
    warnings: list[str]
    source: str
    levels: dict | None = None
    segmentation: Any = None
    chain: Any = None  #: the model's first pass, for a level anchor (:class:`~SpineAlignmentLib.inference.anchor.ChainState`)


def film_landmarks(path: str | Path, radiograph: Any, protocol: str, *, model: str | None = None,
                   landmarks_path: str | Path | None = None, flip_tta: bool = False) -> FilmLandmarks:
    """A film's landmarks: re-read from ``landmarks_path`` when given, else found by ``model`` (or the
    protocol's default model) with :func:`~SpineAlignmentLib.pipeline.detect`.

    The one place a batch gets a film's landmarks, for a single film (:func:`analyze_one`) and for
    each film of a pair (:mod:`SpineAlignmentLib.batch.pairs`).

    Raises:
        LandmarkError: an unusable landmark file. ModelError: no landmark file and no (usable) model.
    """
    from ..geometry.orientation import parse_patient_orientation
    from ..pipeline import detect, source_uids

    path = Path(path)
    size = tuple(int(v) for v in radiograph.shape[:2])
    read_warnings = list(getattr(radiograph, "warnings", []) or [])
    if landmarks_path is not None:
        raw, extra = read_landmarks_file(landmarks_path, protocol, path)
        landmarks = parse_landmarks(raw, source=str(landmarks_path))
        spacing_mm, label, notes = landmark_file_calibration(extra, landmarks_path, radiograph, path)
        orientation = parse_patient_orientation(radiograph.patient_orientation or extra.get("patient_orientation"))
        view = View(landmarks, path.name, size, spacing_mm, (label or "manual:user") if spacing_mm else "pixels-only",
                    orientation, source_uids(radiograph))
        return FilmLandmarks(view, extra.get("model"), read_warnings + notes, str(landmarks_path))
    if model is None and default_model(protocol) is None:
        from ..models.registry import model_problems

        problems = model_problems(protocol)
        if problems:  # a broken model folder is reported as such, not as "no model"
            raise ModelError(problems[0])
        raise ModelError(
            f"{path.name}: protocol '{protocol}' has no model yet; give landmark files with --landmarks-dir "
            "(<image stem>.json or .mrk.json per image) or place the landmarks in Slicer."
        )
    found = detect(radiograph, protocol, model=model, flip_tta=flip_tta)
    view = View(found.landmarks, path.name, size, radiograph.spacing_mm, radiograph.calibration,
                radiograph.patient_orientation, source_uids(radiograph))
    return FilmLandmarks(view, found.model, read_warnings + found.warnings, path.name, found.levels,
                         found.segmentation, found.chain)


def landmark_file_calibration(extra: dict, landmarks_path: str | Path, radiograph: Any,
                                image_path: Path) -> tuple[tuple[float, float] | None, str | None, list[str]]:
    """Spacing and label for landmarks from a file: the image's own (or ``--spacing``) first, else the file's.

    The file's ``spacing_mm`` is used when the image has none, labelled with the file's ``calibration``
    or ``manual:file``; a file ``image_size`` other than the image's is refused (its pixel coordinates
    belong to another version of the film).
    """
    from ..pipeline import validate_spacing
    from ..result import validate_image_size

    size = tuple(int(v) for v in radiograph.shape[:2])
    file_size = validate_image_size(extra.get("image_size"), str(landmarks_path))
    if file_size is not None and file_size != size:
        raise LandmarkError(
            f"{landmarks_path}: image_size {list(file_size)} is not the size of {image_path.name} "
            f"({size[0]} x {size[1]}); these landmarks were placed on another version of the film (resized or "
            "cropped): give landmarks placed on this image.")
    file_spacing = validate_spacing(extra.get("spacing_mm"), str(landmarks_path))
    spacing, label = radiograph.spacing_mm, radiograph.calibration
    if file_spacing is None:
        return spacing, label, []
    if spacing is None:
        file_label = extra.get("calibration")
        return file_spacing, file_label if file_label and file_label != "pixels-only" else "manual:file", []
    if any(abs(a - b) > 1e-6 for a, b in zip(spacing, file_spacing)):
        return spacing, label, [
            f"The landmark file gives spacing {list(file_spacing)} mm but the image's is {list(spacing)} mm "
            f"({label}); the image's was used."]
    return spacing, label, []
