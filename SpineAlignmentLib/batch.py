"""Batch analysis: many radiographs, one result JSON + ``.mrk.json`` + overlay PNG each, resumable.

Every image is analysed by :func:`analyze_one` (also used by ``spine-align
analyze``). A :class:`BatchRunner` feeds images to an executor: in this
process (``workers=1``), a local :class:`concurrent.futures.ProcessPoolExecutor`
(``workers=N``) or an existing Dask cluster (``scheduler=ADDRESS`` or a
``distributed.Client``). Workers write each image's files as soon as they exist
(atomic renames; the result JSON last, so its presence means the image is
complete). With Dask, the input and output folders must be visible to the
workers under the same paths (a shared file system); inputs and outputs are made
absolute before they are sent, and the client checks that each result a worker
reports is where it expects it.

Progress is reported as :class:`Progress` events to a callback; :meth:`BatchRunner.cancel`
stops submitting new work, lets running items finish and returns cleanly. A bad
image is recorded in ``failures.csv`` with its reason and the rest go on.

Resume: every result JSON carries the run's :func:`batch_fingerprint` (protocol,
model name, version and the SHA-256 of each weights file, the options that change
values, the software version, and the landmark file's SHA-256 with
``landmarks_dir``). A re-run re-uses a result only when its fingerprint equals
the new one; the others are analysed again (the old JSON is kept as
``<name>.json.stale`` until the new one is written) and the run says how many and
why. Earlier failures are re-tried unless ``retry_failures=False``; ``force=True``
analyses everything again.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import enum
import hashlib
import json
import logging
import os
import stat
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from . import __version__
from .errors import LandmarkError, ModelError, OutputError, RadiographError, SpineAlignmentError
from .safefiles import check_output_dir, describe_os_error, output_stem
from .result import SCHEMA, Result, View, check_fields, load_json, parse_landmarks

log = logging.getLogger(__name__)

#: Image files a folder input contributes (DICOM files often have no extension: see ``include_extensionless``).
IMAGE_EXTENSIONS = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nrrd", ".nhdr", ".mha",
                    ".mhd", ".nii", ".nii.gz")
SUMMARY_CSV = "summary.csv"
FAILURES_CSV = "failures.csv"
FAILURE_COLUMNS = ("image", "name", "error", "reason")
STALE_SUFFIX = ".stale"


class BatchEvent(enum.Enum):
    """What a :class:`Progress` report is about."""

    STARTED = "started"  #: inputs collected; ``total`` is known
    SKIPPED = "skipped"  #: result complete with the same fingerprint (or an earlier failure not re-tried)
    SUBMITTED = "submitted"  #: handed to a worker
    DONE = "done"  #: result and sidecar files written
    FAILED = "failed"  #: recorded in failures.csv with ``message``
    CANCELLED = "cancelled"  #: cancel requested; no new work is submitted
    FINISHED = "finished"  #: summary.csv and failures.csv written; the run is over


@dataclass
class Progress:
    """One structured progress report."""

    event: BatchEvent
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    image: str | None = None
    message: str = ""
    seconds: float | None = None

    @property
    def finished_items(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.finished_items / self.total


@dataclass(frozen=True)
class BatchOptions:
    """What to do with every image (picklable: it travels to workers)."""

    protocol: str
    out_dir: str
    model: str | None = None
    spacing: tuple[float, float] | None = None
    landmarks_dir: str | None = None
    flip_tta: bool = False
    write_markups: bool = True
    write_overlay: bool = True
    write_masks: bool = False
    patient_orientation: str | None = None
    min_confidence: float | None = None
    write_dicom_sr: bool = False
    level_anchors: str | None = None  #: a level-anchor CSV (:mod:`SpineAlignmentLib.io.level_anchors`)


@dataclass(frozen=True)
class PairFilm:
    """One film of a pair (a row of a pairs manifest, :mod:`SpineAlignmentLib.pairbatch`)."""

    role: str
    image: str  #: absolute path
    listed: str  #: the image as the manifest gives it (relative to the manifest's folder): the fingerprint's
    landmarks: str | None = None  #: its landmark file (manifest column or ``landmarks_dir``), else a model finds them
    landmarks_reason: str = ""  #: why ``landmarks_dir`` has none for it
    patient_orientation: str | None = None  #: the manifest's, for a film whose file does not say


@dataclass(frozen=True)
class BatchItem:
    """One image (or one pair of films) and the file stem its outputs get (:func:`make_items`).

    ``folders`` are the parent folder names in ``name`` (when stems collide): a
    landmark folder mirroring the input tree is searched under them. A pair
    (``films``) writes one result, one markups file and one overlay per film
    (``<name>_<role>.mrk.json``, ``<name>_<role>_overlay.png``); its ``image`` is the pair's ID.
    """

    image: str
    name: str
    folders: tuple[str, ...] = ()
    landmarks: str | None = None  #: its landmark file with ``landmarks_dir`` (:func:`match_landmarks`)
    landmarks_reason: str = ""  #: why there is none
    films: tuple[PairFilm, ...] = ()
    level_anchor: Any = None  #: its row of the level-anchor file (:class:`~SpineAlignmentLib.io.level_anchors.AnchorRow`)

    def result_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"{self.name}.json"

    def markups_path(self, out_dir: str | Path, role: str = "") -> Path:
        return Path(out_dir) / f"{self.name}{'_' + role if role else ''}.mrk.json"

    def overlay_path(self, out_dir: str | Path, role: str = "") -> Path:
        return Path(out_dir) / f"{self.name}{'_' + role if role else ''}_overlay.png"

    def markups_paths(self, out_dir: str | Path) -> list[Path]:
        """The markups file of the image, or one per film of a pair."""
        return [self.markups_path(out_dir, f.role) for f in self.films] or [self.markups_path(out_dir)]

    def overlay_paths(self, out_dir: str | Path) -> list[Path]:
        """The overlay of the image, or one per film of a pair."""
        return [self.overlay_path(out_dir, f.role) for f in self.films] or [self.overlay_path(out_dir)]

    def dicom_sr_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"{self.name}_sr.dcm"

    def dicom_seg_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"{self.name}_seg.dcm"

    def masks_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"{self.name}.seg.nrrd"


@dataclass
class BatchSummary:
    """Counts of a finished (or cancelled) run and where its tables are."""

    total: int
    done: int
    failed: int
    skipped: int
    cancelled: bool
    summary_csv: Path
    failures_csv: Path
    failures: dict[str, str] = field(default_factory=dict)
    #: results found but analysed again: why (fingerprint differences, ``--force``) -> how many
    stale: dict[str, int] = field(default_factory=dict)
    #: why the batch stopped early because its output folder could not be written ("" when it did not)
    write_error: str = ""


# --------------------------------------------------------------------------------------------
# inputs


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    return any(name.endswith(ext) for ext in IMAGE_EXTENSIONS)


def collect_inputs(inputs: Iterable[str | Path], *, include_extensionless: bool = True,
                   exclude: str | Path | None = None) -> list[Path]:
    """Image files from files and folders (folders searched recursively), sorted, without duplicates.

    Folders are walked without following links to folders (a link loop cannot
    trap the walk); inside a folder, only regular files (or links to them) are
    taken and anything else (a FIFO, a device, a broken link or a link loop) is
    skipped with a log line. A file named explicitly is always taken, whatever
    it is, so that reading it reports the right reason as that image's failure.

    Args:
        inputs: files or folders.
        include_extensionless: also take files without an extension inside folders (DICOM).
        exclude: a folder whose files are never inputs (the batch's own output folder).

    Raises:
        SpineAlignmentError: if an input does not exist.
    """
    found: dict[Path, None] = {}
    skip = os.path.realpath(exclude) if exclude is not None else None
    for raw in inputs:
        p = Path(raw)
        try:
            is_dir = stat.S_ISDIR(os.stat(p).st_mode)
        except FileNotFoundError:
            if not os.path.lexists(p):
                raise SpineAlignmentError(f"{p}: no such file or folder; check the batch input path.") from None
            is_dir = False  # a broken link: its reader says so
        except OSError:
            is_dir = False  # a link loop or an unreadable path: its reader says so, as this image's failure
        if not is_dir:
            found[p] = None
            continue
        for f in _walk_files(p, include_extensionless):
            if skip is not None and (os.path.realpath(f) + os.sep).startswith(skip + os.sep):
                continue
            found[f] = None
    return list(found)


def _walk_files(folder: Path, include_extensionless: bool) -> list[Path]:
    """Regular image files below ``folder``, sorted; see :func:`collect_inputs`."""
    out = []

    def on_error(exc: OSError) -> None:
        log.warning("%s: skipped (%s)", exc.filename, describe_os_error(exc))

    for root, dirs, files in os.walk(folder, onerror=on_error):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            f = Path(root) / name
            if name.startswith(".") or not (_is_image(f) or (include_extensionless and "." not in name)):
                continue
            try:
                regular = stat.S_ISREG(os.stat(f).st_mode)
            except OSError as exc:
                log.warning("%s: skipped (%s)", f, describe_os_error(exc))
                continue
            if regular:
                out.append(f)
            else:
                log.warning("%s: skipped (not a regular file)", f)
    return sorted(out)


def _stem(p: Path) -> str:
    name = p.name
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def output_name(path: str | Path, *, folders: int = 0) -> str:
    """The output file stem of an image, shortened to the file-name limit when needed.

    Args:
        path: the image.
        folders: how many parent folder names to put in front (when two inputs share a stem).

    The one rule for output names (``analyze``, ``batch`` and the Slicer module
    use it through :func:`make_items`): ``<stem>``, or for inputs sharing a stem
    ``<folder>__<stem>`` with as many parent folders as it takes to tell them
    apart (``IM0001`` in ``p1/`` and ``p2/``: ``p1__IM0001``, ``p2__IM0001``), so
    a name stays the same when the study folder moves; cut with a stable hash by
    :func:`~SpineAlignmentLib.safefiles.output_stem` so that
    ``<name>_overlay.png.part`` fits 255 bytes.
    """
    p = Path(path)
    parts = _folders(p, folders)
    return output_stem("__".join([*parts, _stem(p)]))


def _folders(p: Path, n: int) -> tuple[str, ...]:
    names = [x for x in p.parent.parts if x not in (p.anchor, "")]
    return tuple(names[len(names) - n:]) if n > 0 else ()


def make_items(paths: Sequence[Path]) -> list[BatchItem]:
    """Give each image a unique output name by :func:`output_name` (the same inputs always get the same names).

    Inputs sharing a stem get the fewest parent folders that tell them apart; names that
    still collide (one stem with two extensions in one folder, or a file already named like
    ``p1__IM0001``) get ``-`` and 8 hex digits of the SHA-1 of the image's real path.
    """
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(_stem(p), []).append(Path(p))
    depth: dict[Path, int] = {}
    for group in groups.values():
        k = 0
        if len(group) > 1:
            deepest = max(len(_folders(p, 10**6)) for p in group)
            k = 1
            while k < deepest and len({_folders(p, k) for p in group}) < len(group):
                k += 1
        for p in group:
            depth[p] = k
    names = {p: output_name(p, folders=depth[p]) for p in depth}
    seen: dict[str, int] = {}
    for n in names.values():
        seen[n] = seen.get(n, 0) + 1
    items = []
    for p in paths:
        p = Path(p)
        name = names[p]
        if seen[name] > 1:
            digest = hashlib.sha1(os.path.realpath(p).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            name = output_stem(f"{name}-{digest}")
        items.append(BatchItem(str(p), name, _folders(p, depth[p])))
    return items


def find_landmarks_file(landmarks_dir: str | Path, name: str | BatchItem) -> Path | None:
    """``<name>.json`` (result format) or ``<name>.mrk.json`` in ``landmarks_dir``, else None.

    For a :class:`BatchItem` its output name is tried first, then its image's stem (the two
    differ when the name was made unique or shortened to the file-name limit).
    """
    names = [name.name, _stem(Path(name.image))] if isinstance(name, BatchItem) else [name]
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
            found = find_landmarks_file(root.joinpath(*item.folders), _stem(Path(item.image)))
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
               + (f" (nor {Path(*item.folders, _stem(Path(item.image)))}.json)" if item.folders else "")
               + (f", and no result JSON there names its SOP Instance UID {uid}" if uid else "")
               + (f"; {len(files)} files name this image: {', '.join(f.name for f in files[:3])}" if len(files) > 1 else ""))
        out[item.name] = (None, why)
    return out


# --------------------------------------------------------------------------------------------
# fingerprint (what a result was computed with)


def model_fingerprint(name: str | None) -> dict[str, Any] | None:
    """``{"name", "version", "weights": {file: SHA-256}}`` of a registered model (no torch needed).

    The SHA-256 values are those of the model's metadata, which loading checks against the files,
    so a result computed with other weights can never carry these values.
    """
    if name is None:
        return None
    try:
        from .models.registry import find_model, read_metadata, weights_checksums

        md = read_metadata(find_model(name))
    except Exception as exc:  # noqa: BLE001 - an unloadable model fails per image with its own reason
        log.debug("no metadata for model %s (%s)", name, exc)
        return {"name": name, "version": None, "weights": None}
    return {"name": md["name"], "version": md["version"], "weights": weights_checksums(md)}


def batch_fingerprint(options: BatchOptions) -> dict[str, Any]:
    """What every result of a batch depends on besides its image (JSON-ready, compared key by key).

    With ``landmarks_dir`` the landmarks come from files, so model and flip TTA do not matter;
    each image's landmark file adds its SHA-256 (:func:`item_fingerprint`).
    """
    from .pipeline import DEFAULT_MIN_CONFIDENCE

    manual = bool(options.landmarks_dir)
    return {
        "protocol": options.protocol,
        "software_version": __version__,
        "model": None if manual else model_fingerprint(options.model or default_model(options.protocol)),
        "flip_tta": None if manual else bool(options.flip_tta),
        "landmarks_dir": os.path.abspath(options.landmarks_dir) if manual else None,
        "spacing_mm": [float(v) for v in options.spacing] if options.spacing else None,
        "patient_orientation": options.patient_orientation,
        "min_confidence": DEFAULT_MIN_CONFIDENCE if options.min_confidence is None else float(options.min_confidence),
    }


def item_fingerprint(base: dict[str, Any], landmarks_path: Path | None) -> dict[str, Any]:
    """The batch fingerprint plus the SHA-256 of this image's landmark file (None without one)."""
    if base.get("landmarks_dir") is None:
        return dict(base)
    return {**base, "landmarks_file": landmarks_file_fingerprint(landmarks_path)}


def landmarks_file_fingerprint(landmarks_path: str | Path | None) -> dict[str, Any] | None:
    """``{"name", "sha256"}`` of a landmark file (``sha256`` None when unreadable), or None without one."""
    if landmarks_path is None:
        return None
    from .models.registry import sha256_file

    try:
        digest = sha256_file(landmarks_path)
    except OSError:
        digest = None
    return {"name": Path(landmarks_path).name, "sha256": digest}


def _fingerprint_of(base: dict[str, Any], item: BatchItem) -> dict[str, Any]:
    if item.films:
        from .pairbatch import pair_fingerprint

        return pair_fingerprint(base, item)
    fp = item_fingerprint(base, Path(item.landmarks) if item.landmarks else None)
    if item.level_anchor is not None:  # a film whose anchor row changed is measured again, the others re-used
        row = item.level_anchor
        fp["level_anchor"] = row.anchor.to_dict() if row.anchor is not None else {"problem": row.problem}
    return fp


def fingerprint_difference(old: Any, new: dict[str, Any]) -> str:
    """Why a stored fingerprint does not match, in words ('' when it does)."""
    if not isinstance(old, dict):
        return "no fingerprint (written by an older version)"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    parts = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) or isinstance(b, dict):
            parts.append(f"{k} changed")
        else:
            parts.append(f"{k} {a!r} -> {b!r}")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# one image

def default_model(protocol: str) -> str | None:
    """The first registered model for a protocol, or None (manual protocols, or no registry)."""
    try:
        from .models.registry import list_models

        models = list_models(protocol)
    except Exception as exc:  # noqa: BLE001 - no registry / no torch means "no model"
        log.debug("no model registry (%s)", exc)
        return None
    if not models:
        return None
    return Path(models[0]["folder"]).name  # list_models is in search order: user folders first


def read_landmarks_file(path: str | Path, protocol: str, image_path: str | Path | None = None) -> tuple[dict, dict]:
    """Landmarks (pixels) from a result-format JSON or a ``.mrk.json``; also the file's other fields.

    A ``.mrk.json`` is mapped back to pixels with the geometry Slicer gives ``image_path``; the
    model's confidences and name come back from the control-point descriptions (untrusted stays untrusted).
    """
    path = Path(path)
    if path.name.lower().endswith(".mrk.json"):
        from .slicerio.geometry import ijk_to_ras_for_file
        from .slicerio.markups_json import markups_landmarks

        landmarks, model = markups_landmarks(path, ijk_to_ras_for_file(image_path), protocol)
        return landmarks, {"model": model}
    data = load_json(path)
    check_fields(data, str(path), protocol_given=True)
    if not isinstance(data, dict) or "landmarks" not in data:
        raise LandmarkError(f"{path}: no 'landmarks' object; give a landmark JSON file (protocols.md result format).")
    if data.get("protocol") not in (None, protocol):
        raise LandmarkError(f"{path}: landmarks are for protocol '{data['protocol']}', not '{protocol}'.")
    return data["landmarks"], data


def analyze_one(
    path: str | Path,
    protocol: str,
    out_dir: str | Path | None,
    *,
    model: str | None = None,
    spacing: Sequence[float] | None = None,
    landmarks_path: str | Path | None = None,
    flip_tta: bool = False,
    write_markups: bool = True,
    write_overlay: bool = True,
    patient_orientation: str | None = None,
    name: str | None = None,
    min_confidence: float | None = None,
    fingerprint: dict[str, Any] | None = None,
    write_dicom_sr: bool = False,
    min_curve_deg: float | None = None,
    write_masks: bool = False,
    level_anchor: Any = None,
    sr_only_for_dicom: bool = False,
) -> Result:
    """Analyse one radiograph and write its files.

    Landmarks come from ``landmarks_path`` when given (re-measured; works for
    every protocol), else from ``model`` (or the protocol's default model).

    Args:
        path: the radiograph (DICOM, PNG, JPEG, TIFF, NRRD...).
        protocol: protocol ID.
        out_dir: folder for ``<name>.json``, ``<name>.mrk.json`` and ``<name>_overlay.png``; None writes nothing.
        model: registered model name.
        spacing: ``(row, col)`` mm per pixel override (label ``manual:user``).
        landmarks_path: landmark JSON (result format) or ``.mrk.json`` of this image.
        flip_tta: average the prediction with the mirrored image's.
        write_markups: write the Slicer markups file.
        write_overlay: write the overlay PNG.
        write_dicom_sr: write ``<name>_sr.dcm``, a DICOM SR (TID 1500) referencing the film (DICOM input only).
        write_masks: write ``<name>.seg.nrrd`` when the model segments (label map on the input's grid).
        sr_only_for_dicom: with ``write_dicom_sr``, a non-DICOM film gets its other outputs and a warning that no
            SR can reference it (a batch over a mixed folder) instead of being refused.
        patient_orientation: e.g. ``"L,F"`` when the file does not say.
        name: output file stem (default: the image's stem).
        min_confidence: landmarks below this confidence are not trusted (default: the pipeline's).
        min_curve_deg: smallest coronal curve reported (default: the pipeline's).
        fingerprint: stored in the result JSON (:func:`batch_fingerprint`); resume compares it.
        level_anchor: the film's row of a level-anchor file
            (:class:`~SpineAlignmentLib.io.level_anchors.AnchorRow`): the model's chain is re-named by it.

    Returns:
        The :class:`~SpineAlignmentLib.result.Result` (also written as JSON, last).

    Raises:
        SpineAlignmentError: unreadable image or landmarks, or no landmark source.
    """
    from .pipeline import measure

    path = Path(path)
    extra_kw = {k: v for k, v in (("min_confidence", min_confidence), ("min_curve_deg", min_curve_deg))
                if v is not None}
    radiograph = read_film(path, spacing=spacing, patient_orientation=patient_orientation,
                           dicom=write_dicom_sr and not sr_only_for_dicom)
    no_sr = write_dicom_sr and radiograph.metadata.get("format") != "dicom"
    source_problems = dicom_source_problems([path], [radiograph]) if write_dicom_sr and not no_sr else []
    write_dicom_sr = write_dicom_sr and not no_sr and not source_problems  # said before inference; the rest still comes
    film = film_landmarks(path, radiograph, protocol, model=model, landmarks_path=landmarks_path, flip_tta=flip_tta)
    if level_anchor is not None:
        from .io.level_anchors import anchor_film

        film = anchor_film(film, level_anchor)
    view = film.view
    result = measure(
        view.landmarks, protocol, spacing_mm=view.spacing_mm,
        calibration=view.calibration if view.spacing_mm else None, image_size=view.image_size,
        patient_orientation=view.patient_orientation, image=view.image, model=film.model, source=film.source,
        **extra_kw,
    )
    result.warnings[:0] = film.warnings + source_problems
    if no_sr:
        result.warnings.append(f"{not_dicom(path.name)}; its other outputs are written.")
    result.dicom, result.levels, result.segmentation = view.dicom, film.levels, film.segmentation
    result.fingerprint = fingerprint
    if out_dir is not None:
        item = BatchItem(str(path), name or output_name(path))
        write_or_stop(item, out_dir, path.name, lambda: _write_outputs(
            item, Path(out_dir), result, radiograph, protocol, write_markups, write_overlay, write_dicom_sr,
            write_masks))
    return result


def write_or_stop(item: BatchItem, out_dir: str | Path, what: str, write: Callable[[], None]) -> None:
    """Run ``write`` (an item's output files); a file-system failure removes its ``.part`` files and
    becomes one :class:`~SpineAlignmentLib.errors.OutputError` (the batch stops, finished results stay)."""
    try:
        write()
    except OSError as exc:
        remove_part_files(item, out_dir)
        raise OutputError(
            f"{out_dir}: cannot write the results of {what} ({describe_os_error(exc)}); free space or fix "
            "the folder's permissions, then run again (finished results are kept)."
        ) from None
    except BaseException:  # any other failure while writing (a refusal, a bug, Ctrl-C) leaves no .part behind
        remove_part_files(item, out_dir)
        raise


def read_film(path: str | Path, *, spacing: Sequence[float] | None = None, patient_orientation: str | None = None,
              dicom: bool = False) -> Any:
    """Read one film for a batch; with ``dicom`` (DICOM outputs asked for) refuse a non-DICOM film before any work."""
    from .imaging import read_radiograph

    path = Path(path)
    radiograph = read_radiograph(path, spacing=tuple(spacing) if spacing else None,
                                 patient_orientation=patient_orientation)
    if dicom and radiograph.metadata.get("format") != "dicom":
        # said before any work is done, not after the model ran
        raise RadiographError(f"{not_dicom(path)}; leave out --dicom-sr for PNG/JPEG/TIFF/NRRD input.")
    return radiograph


def not_dicom(path: str | Path) -> str:
    """The sentence (without its end) for a film that no DICOM SR can reference."""
    return f"{path}: is not a DICOM file, so no DICOM SR can reference it"


def dicom_source_problems(paths: Sequence[str | Path], radiographs: Sequence[Any]) -> list[str]:
    """One sentence (also logged) per DICOM film whose header a DICOM SR/SEG cannot carry
    (:func:`~SpineAlignmentLib.io.dicom_sr.check_source`); checked after the film is read, before inference."""
    from .io.dicom_sr import check_source

    problems = [check_source(p) for p, rg in zip(paths, radiographs) if rg.metadata.get("format") == "dicom"]
    for problem in filter(None, problems):
        log.warning("%s", problem)
    return [p for p in problems if p]


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
    each film of a pair (:mod:`SpineAlignmentLib.pairbatch`).

    Raises:
        LandmarkError: an unusable landmark file. ModelError: no landmark file and no (usable) model.
    """
    from .geometry.orientation import parse_patient_orientation
    from .pipeline import detect, source_uids

    path = Path(path)
    size = tuple(int(v) for v in radiograph.shape[:2])
    read_warnings = list(getattr(radiograph, "warnings", []) or [])
    if landmarks_path is not None:
        raw, extra = read_landmarks_file(landmarks_path, protocol, path)
        landmarks = parse_landmarks(raw, source=str(landmarks_path))
        spacing_mm, label, notes = _landmark_file_calibration(extra, landmarks_path, radiograph, path)
        orientation = parse_patient_orientation(radiograph.patient_orientation or extra.get("patient_orientation"))
        view = View(landmarks, path.name, size, spacing_mm, (label or "manual:user") if spacing_mm else "pixels-only",
                    orientation, source_uids(radiograph))
        return FilmLandmarks(view, extra.get("model"), read_warnings + notes, str(landmarks_path))
    if model is None and default_model(protocol) is None:
        from .models.registry import model_problems

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


def _write_outputs(item: BatchItem, out: Path, result: Result, radiograph: Any, protocol: str, write_markups: bool,
                   write_overlay: bool, write_dicom_sr: bool = False, write_masks: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if write_masks and result.segmentation is not None:
        from .io.masks import write_segmentation_nrrd
        from .slicerio.geometry import ijk_to_ras_for_file

        seg = result.segmentation
        write_segmentation_nrrd(item.masks_path(out), seg.array, seg.segments, ijk_to_ras_for_file(item.image))
        result.masks = {"file": item.masks_path(out).name, "labels": {str(s.value): s.id for s in seg.segments},
                        "sides": seg.sides_from}
    if write_markups:
        from .slicerio.geometry import ijk_to_ras_for_file
        from .slicerio.markups_json import write_markups_json

        write_markups_json(item.markups_path(out), result.landmarks, ijk_to_ras_for_file(item.image),
                           protocol=protocol, model=result.model)
    if write_overlay:
        from .io.overlay import render_overlay

        render_overlay(radiograph.pixels, result, item.overlay_path(out))
    if write_dicom_sr:
        from .io.dicom_sr import read_source_dataset, write_measurement_report

        source = read_source_dataset(item.image)
        if result.segmentation is not None:  # a segmentation model's masks as a DICOM SEG beside the SR
            from .io.dicom_seg import write_segmentation

            write_segmentation(result.segmentation.array, source, item.dicom_seg_path(out), protocol=protocol,
                               model=result.model)
            result.masks = {**(result.masks or {}), "dicom_seg": item.dicom_seg_path(out).name,
                            "labels": {str(s.value): s.id for s in result.segmentation.segments}}
        write_measurement_report(result, source, item.dicom_sr_path(out))
    result.write_json(item.result_path(out))  # last: its presence marks the image complete


def remove_part_files(item: BatchItem, out_dir: str | Path) -> None:
    """Remove the half-written ``.part`` files an interrupted write of ``item`` left behind."""
    for p in (*item.markups_paths(out_dir), *item.overlay_paths(out_dir), item.dicom_sr_path(out_dir),
              item.dicom_seg_path(out_dir), item.masks_path(out_dir), item.result_path(out_dir)):
        try:
            p.with_name(p.name + ".part").unlink(missing_ok=True)
        except OSError as exc:
            log.debug("cannot remove %s.part (%s)", p, exc)


def _landmark_file_calibration(extra: dict, landmarks_path: str | Path, radiograph: Any,
                                image_path: Path) -> tuple[tuple[float, float] | None, str | None, list[str]]:
    """Spacing and label for landmarks from a file: the image's own (or ``--spacing``) first, else the file's.

    The file's ``spacing_mm`` is used when the image has none, labelled with the file's ``calibration``
    or ``manual:file``; a file ``image_size`` other than the image's is refused (its pixel coordinates
    belong to another version of the film).
    """
    from .pipeline import validate_spacing
    from .result import validate_image_size

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


def _error_name(exc: BaseException) -> str:
    """The public class name of an error (a private subclass reports its public parent)."""
    for cls in type(exc).__mro__:
        if not cls.__name__.startswith("_"):
            return cls.__name__
    return type(exc).__name__


def _task(item: BatchItem, options: BatchOptions, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Worker entry point: never raises for a bad image, returns a status record instead.

    ``item`` and ``options`` hold absolute paths (see :meth:`BatchRunner.run`); the record
    names the result file written, which the client checks.
    """
    t0 = time.perf_counter()
    if _WORKER_CANCEL is not None and _WORKER_CANCEL.is_set():
        # queued in the pool before the batch was cancelled: never start (nor write) after a cancel
        return {"status": "cancelled", "item": item, "seconds": 0.0}
    landmarks_path = None
    try:
        if item.films:
            from .pairbatch import analyze_pair

            result = analyze_pair(item, options, fingerprint)
        else:
            if options.landmarks_dir:
                if item.landmarks is None:
                    raise LandmarkError(f"{item.image}: {item.landmarks_reason or 'no landmark file'}.")
                landmarks_path = Path(item.landmarks)
            result = analyze_one(
                item.image, options.protocol, options.out_dir, model=options.model, spacing=options.spacing,
                landmarks_path=landmarks_path, flip_tta=options.flip_tta, write_markups=options.write_markups,
                write_overlay=options.write_overlay, patient_orientation=options.patient_orientation,
                name=item.name, min_confidence=options.min_confidence, fingerprint=fingerprint,
                write_dicom_sr=options.write_dicom_sr, write_masks=options.write_masks, sr_only_for_dicom=True,
                level_anchor=item.level_anchor,
            )
    except OutputError as exc:  # the output folder, not the image: the runner stops the batch
        return {"status": "write_error", "item": item, "error": "OutputError", "reason": str(exc),
                "seconds": time.perf_counter() - t0}
    except SpineAlignmentError as exc:
        return {"status": "failed", "item": item, "error": _error_name(exc), "reason": str(exc),
                "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - one unexpected failure must not stop the batch
        log.debug("unexpected failure on %s\n%s", item.image, traceback.format_exc())
        return {"status": "failed", "item": item, "error": type(exc).__name__,
                "reason": f"unexpected error: {exc}", "seconds": time.perf_counter() - t0}
    return {"status": "done", "item": item, "seconds": time.perf_counter() - t0,
            "warnings": len(result.warnings), "result_path": str(item.result_path(options.out_dir)),
            "cwd": os.getcwd()}


# --------------------------------------------------------------------------------------------
# resume state


def _sr_refused(item: BatchItem) -> bool:
    """Whether a film of ``item`` has a header no DICOM SR can carry (so its result is complete without one)."""
    from .io.dicom_sr import check_source

    return any(check_source(f.image) for f in item.films) if item.films else bool(check_source(item.image))


def result_state(item: BatchItem, options: BatchOptions, fingerprint: dict[str, Any] | None = None) -> tuple[str, str]:
    """``("complete", "")``, ``("absent", why)`` or ``("stale", why)`` for the item's result.

    Complete: the result JSON is valid for this protocol, its requested sidecars exist and,
    when ``fingerprint`` is given, its stored fingerprint equals it.
    """
    p = item.result_path(options.out_dir)
    if not p.is_file():
        return "absent", "no result"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "absent", "unreadable result"
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("protocol") != options.protocol:
        return "stale", "result of another protocol or format"
    if fingerprint is not None:
        why = fingerprint_difference(data.get("fingerprint"), fingerprint)
        if why:
            return "stale", why
    if options.write_markups and not all(p.is_file() for p in item.markups_paths(options.out_dir)):
        return "absent", "no .mrk.json"
    if options.write_overlay and not all(p.is_file() for p in item.overlay_paths(options.out_dir)):
        return "absent", "no overlay"
    if options.write_dicom_sr and data.get("dicom") and not item.dicom_sr_path(options.out_dir).is_file() \
            and not _sr_refused(item):
        return "absent", "no DICOM SR"  # a non-DICOM film of a mixed folder has no SR (and no "dicom" UIDs)
    if options.write_dicom_sr and (data.get("masks") or {}).get("dicom_seg") \
            and not item.dicom_seg_path(options.out_dir).is_file():
        return "absent", "no DICOM SEG"
    if options.write_masks and (data.get("masks") or {}).get("file") and not item.masks_path(options.out_dir).is_file():
        return "absent", "no mask file"
    return "complete", ""


def result_is_complete(item: BatchItem, options: BatchOptions, fingerprint: dict[str, Any] | None = None) -> bool:
    """True when :func:`result_state` says ``complete``."""
    return result_state(item, options, fingerprint)[0] == "complete"


def read_failures(path: Path) -> dict[str, dict[str, str]]:
    """Earlier failures by output name."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["name"]: row for row in csv.DictReader(fh) if row.get("name")}


def write_failures(path: Path, failures: dict[str, dict[str, str]]) -> Path:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FAILURE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for name in sorted(failures):
            writer.writerow(failures[name])
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------------------------
# executors


#: Set in worker processes of a local pool (:func:`_worker_init`): the batch's cancel flag.
_WORKER_CANCEL: Any = None


def _worker_init(parent_pid: int, cancel: Any) -> None:
    """Make a pool worker die with the batch process and ignore the terminal's Ctrl-C.

    The parent handles Ctrl-C (cancel, then abort) and tells the workers through
    ``cancel``. If the parent dies (killed, crashed), the worker must not go on
    analysing and writing: on Linux the kernel kills it (``PR_SET_PDEATHSIG``);
    elsewhere, and as a second guard, a watchdog thread ends it within a
    second of noticing it has been re-parented.
    """
    global _WORKER_CANCEL
    import signal

    _WORKER_CANCEL = cancel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "getppid"):
        _set_parent_death_signal()
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(1)

        def watchdog() -> None:
            while True:
                time.sleep(WORKER_HEARTBEAT_S)
                if os.getppid() != parent_pid:
                    os._exit(1)

        threading.Thread(target=watchdog, name="spinealign-parent-watchdog", daemon=True).start()


#: How often a pool worker checks that its parent batch process is still alive (seconds).
WORKER_HEARTBEAT_S = 1.0


def _set_parent_death_signal() -> None:
    """Linux: SIGKILL this process when its parent dies (no-op elsewhere)."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError) as exc:  # the watchdog still guards
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable (%s)", exc)


class _InlineExecutor:
    """Runs each task at submission, in this process (workers=1; also what the GUI thread uses)."""

    def submit(self, fn, *args):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future like a pool would
            fut.set_exception(exc)
        return fut

    def shutdown(self) -> None:
        pass


def _wait_first(pending: set, dask: bool) -> tuple[set, set]:
    if dask:
        from distributed import wait

        res = wait(list(pending), return_when="FIRST_COMPLETED")
        return set(res.done), set(res.not_done)
    done, not_done = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
    return set(done), set(not_done)


class BatchRunner:
    """Run a batch with progress events, cancel and resume.

    Args:
        inputs: image files and/or folders.
        options: :class:`BatchOptions`.
        workers: local processes (1 = in this process).
        scheduler: Dask scheduler address (``tcp://host:8786``) or a ``distributed.Client``.
        callback: called with each :class:`Progress` (in the calling thread).
        retry_failures: re-try images listed in an earlier ``failures.csv``.
        force: analyse every image again, whatever results and failures exist.
        pairs: a pairs manifest (:mod:`SpineAlignmentLib.pairbatch`) instead of ``inputs``: one result per
            pair of films (lumbar flexion + extension, a coronal film + its paired lateral).
    """

    def __init__(self, inputs: Iterable[str | Path], options: BatchOptions, *, workers: int = 1,
                 scheduler: Any = None, callback: Callable[[Progress], None] | None = None,
                 retry_failures: bool = True, force: bool = False, pairs: str | Path | None = None) -> None:
        self.inputs = list(inputs)
        self.pairs = pairs
        self.options = options
        self.workers = max(1, int(workers))
        self.scheduler = scheduler
        self.callback = callback
        self.retry_failures = retry_failures
        self.force = force
        self._cancel = threading.Event()
        self._worker_cancel: Any = None  # the pool workers' copy of the cancel flag (workers > 1)

    def cancel(self) -> None:
        """Stop submitting new images; running ones finish and are written, queued ones never start."""
        self._cancel.set()
        if self._worker_cancel is not None:
            self._worker_cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _abort_workers(self, executor: Any) -> None:
        """Kill the local pool's worker processes so that nothing is written after an abort."""
        if self._worker_cancel is not None:
            self._worker_cancel.set()
        # ProcessPoolExecutor has no public kill; its process table is the only handle on the workers
        for proc in list((getattr(executor, "_processes", None) or {}).values()):
            try:
                proc.kill()
            except (OSError, ValueError, AttributeError):
                pass

    def _emit(self, progress: Progress) -> None:
        if self.callback is not None:
            try:
                self.callback(progress)
            except Exception:  # noqa: BLE001 - a broken progress display must not lose results
                log.exception("progress callback failed")

    def _executor(self) -> tuple[Any, bool, Callable[[], None]]:
        if self.scheduler is not None:
            try:
                from distributed import Client
            except ImportError as exc:
                raise SpineAlignmentError(
                    f"--scheduler needs dask.distributed ({exc}); install the 'batch' extra.") from None
            if isinstance(self.scheduler, Client):
                return self.scheduler, True, lambda: None
            client = Client(self.scheduler)
            return client, True, client.close
        if self.workers > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            self._worker_cancel = ctx.Event()
            pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_worker_init,
                                          initargs=(os.getpid(), self._worker_cancel))
            return pool, False, lambda: pool.shutdown(wait=True, cancel_futures=True)
        return _InlineExecutor(), False, lambda: None

    def run(self) -> BatchSummary:
        """Process every image whose result is not complete with this run's fingerprint; returns the counts."""
        # absolute paths before anything goes to a worker: a Dask worker has its own working directory
        opts = replace(self.options, out_dir=os.path.abspath(self.options.out_dir),
                       landmarks_dir=os.path.abspath(self.options.landmarks_dir) if self.options.landmarks_dir else None)
        out = Path(opts.out_dir)
        check_output_dir(out, OutputError)  # before any work: an unwritable folder fails now, not after inference
        bad_rows: dict[str, dict[str, str]] = {}  # pairs manifest rows that make no pair: failures from the start
        if self.pairs is not None:
            from .pairbatch import pair_items

            if self.inputs:
                raise SpineAlignmentError("give either image files/folders or --pairs MANIFEST, not both.")
            items, bad_rows = pair_items(self.pairs, opts)  # each film's landmark file matched there
        else:
            items = make_items([Path(os.path.abspath(p)) for p in collect_inputs(self.inputs, exclude=out)])
            if not items:
                raise SpineAlignmentError(
                    f"{', '.join(str(p) for p in self.inputs)}: no image found (DICOM, PNG, JPEG, TIFF, NRRD); "
                    "give the folder that holds the films, or the files themselves.")
        failures_path = out / FAILURES_CSV
        old_failures = {} if self.force else read_failures(failures_path)
        failures: dict[str, dict[str, str]] = {}
        total = len(items) + len(bad_rows)
        counts = {"done": 0, "failed": 0, "skipped": 0}
        if opts.landmarks_dir and self.pairs is None:  # matched once, so workers and the fingerprint use one file
            matched = match_landmarks(items, opts.landmarks_dir)
            items = [replace(i, landmarks=str(matched[i.name][0]) if matched[i.name][0] else None,
                             landmarks_reason=matched[i.name][1]) for i in items]
        if opts.level_anchors:
            items = _with_level_anchors(items, opts.level_anchors, self.pairs is not None)
        base = batch_fingerprint(opts)
        fingerprints = {item.name: _fingerprint_of(base, item) for item in items}
        stale: dict[str, int] = {}

        def progress(event: BatchEvent, image: str | None = None, message: str = "", seconds=None) -> None:
            self._emit(Progress(event, total, counts["done"], counts["failed"], counts["skipped"], image, message,
                                seconds))

        todo: list[BatchItem] = []
        skipped: list[tuple[BatchItem, str]] = []
        for item in items:
            state, why = result_state(item, opts, fingerprints[item.name])
            if state == "complete" and self.force:
                state, why = "stale", "--force"
            if state == "complete":
                skipped.append((item, "result exists with the same fingerprint"))
            elif item.name in old_failures and not self.retry_failures:
                failures[item.name] = old_failures[item.name]
                skipped.append((item, f"failed before: {old_failures[item.name].get('reason', '')}"))
            else:
                if state == "stale":
                    stale[why] = stale.get(why, 0) + 1
                todo.append(item)
        n_stale = sum(stale.values())
        message = (f"{total} {'pairs' if self.pairs is not None else 'images'}, output in {out}: "
                   f"{len(skipped)} results re-used, {len(todo)} to analyse"
                   + (f", {len(bad_rows)} not pairs (failures.csv says why)" if bad_rows else ""))
        if n_stale:
            message += f" ({n_stale} of them had a result made differently: " + "; ".join(
                f"{n} {why}" for why, n in sorted(stale.items(), key=lambda kv: -kv[1])) + ")"
        progress(BatchEvent.STARTED, message=message)  # said once: the progress line (and the summary JSON)
        for item, why in skipped:
            counts["skipped"] += 1
            progress(BatchEvent.SKIPPED, item.image, why)
        for name, row in bad_rows.items():
            counts["failed"] += 1
            failures[name] = row
            progress(BatchEvent.FAILED, row["image"], row["reason"])

        executor, is_dask, close = self._executor()
        in_flight_limit = self.workers * 2 if self.scheduler is None else 10**6
        if is_dask:  # enough to keep every Dask worker thread busy, not the whole list at once
            try:
                in_flight_limit = max(2, 2 * sum(executor.nthreads().values()))
            except Exception:  # noqa: BLE001
                in_flight_limit = 16
        pending: dict[Any, BatchItem] = {}
        ran: set[str] = set()
        write_error = ""
        queue = list(reversed(todo))
        try:
            while queue or pending:
                while queue and len(pending) < in_flight_limit and not self.cancelled and not write_error:
                    item = queue.pop()
                    _set_aside(item, opts)
                    fp = fingerprints[item.name]
                    fut = executor.submit(_task, item, opts, fp) if not is_dask else executor.submit(
                        _task, item, opts, fp, pure=False, key=f"spinealign-{item.name}-{time.time_ns()}")
                    pending[fut] = item
                    progress(BatchEvent.SUBMITTED, item.image)
                if (self.cancelled or write_error) and queue:
                    progress(BatchEvent.CANCELLED, message=f"{len(queue)} images not started"
                                                           + (f": {write_error}" if write_error else ""))
                    queue.clear()
                if not pending:
                    break
                done, _ = _wait_first(set(pending), is_dask)
                for fut in done:
                    item = pending.pop(fut)
                    ran.add(item.name)
                    try:
                        record = fut.result()
                    except BaseException as exc:  # noqa: BLE001 - a crashed worker is a failure of this item
                        record = {"status": "failed", "item": item, "error": type(exc).__name__,
                                  "reason": f"worker crashed: {exc}", "seconds": None}
                    if record["status"] == "cancelled":
                        continue
                    if record["status"] == "write_error":
                        # the folder, not the image: stop here (every later image would fail the same way);
                        # the image is not a failure, so a re-run analyses it again
                        write_error = write_error or record["reason"]
                        progress(BatchEvent.FAILED, item.image, record["reason"], record.get("seconds"))
                        continue
                    if record["status"] == "done":
                        record = _check_written(record, item, opts, fingerprints[item.name])
                    if record["status"] == "done":
                        counts["done"] += 1
                        failures.pop(item.name, None)
                        _drop_stale(item, opts)
                        progress(BatchEvent.DONE, item.image, seconds=record.get("seconds"))
                    else:
                        counts["failed"] += 1
                        failures[item.name] = {"image": item.image, "name": item.name, "error": record["error"],
                                               "reason": record["reason"]}
                        progress(BatchEvent.FAILED, item.image, record["reason"], record.get("seconds"))
        except BaseException:
            self._abort_workers(executor)  # aborted (a second Ctrl-C, an error here): workers stop now
            raise
        finally:
            close()
        # earlier failures stay listed unless the image ran again (or is complete) in this run
        complete = {i.name for i in items if i.name not in ran and result_is_complete(i, opts, fingerprints[i.name])}
        for name, row in old_failures.items():
            if name not in ran and name not in complete:
                failures.setdefault(name, row)
        # the tables: each one that can be written is (a full disk may still take a small file)
        for write_table in (lambda: self._write_summary(items, opts, fingerprints), lambda: write_failures(failures_path, failures)):
            try:
                write_table()
            except OSError as exc:
                write_error = write_error or (
                    f"{out}: cannot write {Path(exc.filename or SUMMARY_CSV).name} ({describe_os_error(exc)}); "
                    "free space or fix the folder's permissions, then run again (finished results are kept).")
        summary_path = out / SUMMARY_CSV
        if write_error:
            for item in items:
                remove_part_files(item, out)
            for table in (SUMMARY_CSV, FAILURES_CSV):
                (out / f"{table}.part").unlink(missing_ok=True)
        progress(BatchEvent.FINISHED, message=f"{counts['done']} done, {counts['failed']} failed, "
                                              f"{counts['skipped']} skipped")
        return BatchSummary(total, counts["done"], counts["failed"], counts["skipped"], self.cancelled,
                            summary_path, failures_path, {k: v["reason"] for k, v in failures.items()}, stale,
                            write_error=write_error)

    def _write_summary(self, items: Sequence[BatchItem], opts: BatchOptions,
                       fingerprints: dict[str, dict[str, Any]]) -> Path:
        """summary.csv over every result of this batch complete with this run's fingerprint (also earlier runs')."""
        from .io.tables import summary_row, write_summary_csv

        rows = []
        for item in items:
            if not result_is_complete(item, opts, fingerprints[item.name]):
                continue
            try:
                res = Result.read_json(item.result_path(opts.out_dir))
            except SpineAlignmentError as exc:
                log.warning("%s: %s", item.image, exc)
                continue
            rows.append(summary_row(res, item.image))
        return write_summary_csv(Path(opts.out_dir) / SUMMARY_CSV, rows, opts.protocol)


def _with_level_anchors(items: list[BatchItem], path: str, pairs: bool) -> list[BatchItem]:
    """The items with their rows of the level-anchor file; a row that names no film of the run is logged.

    Raises:
        SpineAlignmentError: an unreadable or malformed file, or a pairs run (anchors name single films).
    """
    from .io.level_anchors import match_level_anchors, read_level_anchors

    if pairs:
        raise SpineAlignmentError(f"{path}: level anchors name single films; leave out --level-anchors with --pairs.")
    matched, problems = match_level_anchors(read_level_anchors(path), items, Path(path).parent)
    for text in problems:
        log.warning("%s", text)
    return [replace(i, level_anchor=matched[i.name]) if i.name in matched else i for i in items]


def _set_aside(item: BatchItem, opts: BatchOptions) -> None:
    """Rename a result about to be re-computed to ``<name>.json.stale``: it no longer counts as a result
    (nothing reads it as one), but it is not lost if the new analysis fails."""
    p = item.result_path(opts.out_dir)
    if p.is_file():
        os.replace(p, p.with_name(p.name + STALE_SUFFIX))


def _drop_stale(item: BatchItem, opts: BatchOptions) -> None:
    p = item.result_path(opts.out_dir)
    p.with_name(p.name + STALE_SUFFIX).unlink(missing_ok=True)


def _check_written(record: dict[str, Any], item: BatchItem, opts: BatchOptions,
                   fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A worker's "done" stands only if its result is where this process expects it, with this run's fingerprint."""
    expected = item.result_path(opts.out_dir)
    state, why = result_state(item, opts, fingerprint)
    if state == "complete":
        return record
    where = record.get("result_path")
    reason = (f"the worker reported {Path(item.image).name} done, but its result is not at {expected} "
              f"({why}; the worker wrote {where} with working directory {record.get('cwd')}); the input and "
              "output folders must be visible to every worker under the same absolute paths")
    log.error("%s", reason)
    return {**record, "status": "failed", "error": "OutputMissing", "reason": reason}


def run_batch(inputs: Iterable[str | Path], options: BatchOptions, **kwargs: Any) -> BatchSummary:
    """Convenience wrapper: ``BatchRunner(inputs, options, **kwargs).run()``."""
    return BatchRunner(inputs, options, **kwargs).run()


def progress_dict(p: Progress) -> dict[str, Any]:
    """JSON-ready form of a progress event (for logs and JSON Lines output)."""
    d = asdict(p)
    d["event"] = p.event.value
    return d
