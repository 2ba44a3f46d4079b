"""One training-dataset format for every protocol: images with one landmark file each (docs/dataset-format.md).

A dataset is a folder, searched recursively, of radiographs (DICOM, with or
without an extension, PNG, JPEG, TIFF, NRRD) with one landmark file beside each
image, in a format the project already writes:

* ``<stem>.json``: a result / landmark JSON (protocols.md, ``spinealignment.result/1``)
  as ``analyze``, ``batch`` and :func:`write_labelled_image` write it. Its
  ``image`` field may name the image when the stems differ; a pair result's
  ``views.<role>.image`` names each film of a pair.
* ``<stem>.mrk.json``: Slicer markups with canonical control-point IDs (as the
  module and ``batch`` write them); positions are mapped to image pixels with
  the geometry Slicer gives the image file (:mod:`..slicerio.geometry`).

Optional tables: ``pairs.csv`` (``pair,role,image``; roles from the protocol's
``image_roles``, or ``coronal``/``lateral`` for a coronal film with its lateral)
and ``patients.csv`` (``image,patient``; images of one patient stay on one side
of a training split; default: each image is its own patient).

:func:`read_dataset` reads and checks it: it never raises for a problem of one
file (each is a :class:`Finding` naming the file) and raises
:class:`DatasetError` only when the folder itself cannot be read.
:func:`write_labelled_image` adds one film to such a folder.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import LandmarkError, SpineAlignmentError
from ..geometry.levels import level_name, spine_level

__all__ = [
    "DatasetError", "LabelledImage", "Finding", "DatasetReport", "read_dataset", "write_labelled_image",
    "spine_level", "PAIRS_CSV", "PATIENTS_CSV",
]

log = logging.getLogger(__name__)

PAIRS_CSV = "pairs.csv"
PATIENTS_CSV = "patients.csv"
#: Files ``batch`` writes beside its results that are not training images.
SIDECAR_SUFFIXES = ("_overlay.png", ".seg.nrrd", "_sr.dcm", "_seg.dcm")
#: An image with fewer landmarks than this cannot teach anything: error.
MIN_LANDMARKS = 3
#: Fewer than this fraction of the expected landmarks present: warning.
MOST_MISSING_FRACTION = 0.5
#: More than this fraction of a file's IDs unknown to the protocol: the file belongs to another protocol (error).
WRONG_PROTOCOL_FRACTION = 0.5
#: Two label files of one image agree when every common landmark is within this many pixels.
AGREE_PX = 0.5
#: A pixel spacing outside this range (mm) is implausible for a radiograph (warning).
PLAUSIBLE_SPACING_MM = (0.02, 1.0)
#: Largest pairs.csv / patients.csv read (a dataset of 100,000 films is about 10 MB).
MAX_TABLE_BYTES = 32 * 1024 * 1024


class DatasetError(SpineAlignmentError):
    """The dataset folder itself cannot be used (missing, not a folder, unreadable)."""


@dataclass(frozen=True)
class LabelledImage:
    """One usable training film.

    Attributes:
        image: the image file.
        labels: its landmark file (``.json`` or ``.mrk.json``).
        landmarks: canonical ID -> ``(x, y)`` in original-image pixels (x right, y down, integer values at
            pixel centres); only the landmarks present and on the image, never invented.
        image_size: ``(rows, cols)``.
        spacing_mm: ``(row, col)`` mm per pixel, or None (pixels only).
        calibration: calibration label (definitions.md §7.4).
        patient_orientation: e.g. ``("A", "F")``, or None when unknown.
        patient: grouping key for patient-held-out splits.
        pair, role: the pair (``pairs.csv``) and this film's role in it, or None.
    """

    image: Path
    labels: Path
    landmarks: dict[str, tuple[float, float]]
    image_size: tuple[int, int]
    spacing_mm: tuple[float, float] | None
    calibration: str
    patient_orientation: tuple[str, str] | None
    patient: str
    pair: str | None = None
    role: str | None = None


@dataclass
class Finding:
    """One problem with one file.

    Attributes:
        path: the file (image, landmark file or table).
        severity: ``"error"`` (the image is not usable) or ``"warning"``.
        check: machine name of the check (``unknown_ids``, ``duplicate_ids``, ``outside_image``,
            ``level_order``, ``facing``, ``spacing``, ``wrong_protocol``, ``missing_landmarks``,
            ``no_labels``, ``orphan_labels``, ``unreadable_image``, ``unreadable_labels``,
            ``level_never_labelled``, ...).
        message: one sentence naming the file and what to do.
    """

    path: Path
    severity: str
    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "severity": self.severity, "check": self.check, "message": self.message}


@dataclass
class DatasetReport:
    """What :func:`read_dataset` found.

    Attributes:
        protocol: protocol ID checked against.
        folder: the dataset folder.
        items: the usable films (no error finding), sorted by path.
        findings: every problem, per file.
        summary: counts: ``images``, ``usable_images``, ``landmarks_present`` (per ID, usable films),
            ``facing``, ``calibration``, ``findings_by_check``, ``errors``, ``warnings``, ``patients``, ``pairs``.
        images: one row per image found (usable or not): image, labels, usable, landmark count, facing,
            spacing, calibration.
    """

    protocol: str
    folder: Path
    items: list[LabelledImage]
    findings: list[Finding]
    summary: dict
    images: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "folder": str(self.folder),
            "summary": self.summary,
            "images": self.images,
            "findings": [f.to_dict() for f in self.findings],
        }

    def format_text(self) -> str:
        """Per-file findings, then the summary, as lines a user reads."""
        lines = [f"Dataset {self.folder} (protocol {self.protocol})"]
        by_path: dict[str, list[Finding]] = {}
        for f in self.findings:
            by_path.setdefault(str(f.path), []).append(f)
        for path in sorted(by_path):
            lines.append(f"{path}:")
            for f in by_path[path]:
                lines.append(f"  {f.severity}: [{f.check}] {f.message}")
        s = self.summary
        lines.append(f"Images: {s['images']}, usable: {s['usable_images']}, errors: {s['errors']}, "
                     f"warnings: {s['warnings']}, patients: {s['patients']}, pairs: {s['pairs']}")
        if s["facing"]:
            lines.append("Facing: " + ", ".join(f"{k} {v}" for k, v in s["facing"].items()))
        if s["calibration"]:
            lines.append("Calibration: " + ", ".join(f"{k} {v}" for k, v in s["calibration"].items()))
        if s["landmarks_present"]:
            lines.append("Landmarks present (usable images):")
            width = max(len(k) for k in s["landmarks_present"])
            for k, v in s["landmarks_present"].items():
                lines.append(f"  {k:<{width}} {v}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# spine levels (protocol-agnostic: from the ID)

_SUPERIOR = ("_AS", "_PS", "_TL", "_TR")
_INFERIOR = ("_AI", "_PI", "_BL", "_BR")


def _endplate(landmark_id: str) -> int:
    """+1 superior corner, -1 inferior corner, 0 anything else (a centre)."""
    if landmark_id.endswith(_SUPERIOR):
        return 1
    if landmark_id.endswith(_INFERIOR):
        return -1
    return 0


def order_problems(landmarks: Mapping[str, tuple[float, float]], u_sup: tuple[float, float]) -> list[str]:
    """Descriptions of implausible order along the spine (empty when plausible).

    A vertebra whose landmarks' centroid lies below (along ``u_sup``, the image direction of the patient's
    head) the centroid of a vertebra further down the spine, and a vertebra whose superior corners lie below
    its inferior ones, are reported.
    """
    up = np.asarray(u_sup, dtype=float)
    levels: dict[int, list[str]] = {}
    for k in landmarks:
        lv = spine_level(k)
        if lv is not None:
            levels.setdefault(lv, []).append(k)
    height = {k: float(np.dot(landmarks[k], up)) for ids in levels.values() for k in ids}
    out: list[str] = []
    ordered = sorted(levels)
    centre = {lv: float(np.mean([height[k] for k in levels[lv]])) for lv in ordered}
    for a, b in zip(ordered, ordered[1:]):
        if centre[a] <= centre[b]:
            out.append(f"{level_name(levels[a][0])} lies below {level_name(levels[b][0])}")
    for lv in ordered:
        sup = [height[k] for k in levels[lv] if _endplate(k) > 0]
        inf = [height[k] for k in levels[lv] if _endplate(k) < 0]
        if sup and inf and np.mean(sup) <= np.mean(inf):
            out.append(f"the superior corners of {level_name(levels[lv][0])} lie below its inferior corners")
    return out


# --------------------------------------------------------------------------------------------
# discovery


def _image_stem(name: str) -> str:
    from ..batch import _stem

    return _stem(Path(name))


def _label_stem(name: str) -> str | None:
    low = name.lower()
    if low.endswith(".mrk.json"):
        return name[: -len(".mrk.json")]
    if low.endswith(".json"):
        return name[: -len(".json")]
    return None


def _has_dicom_preamble(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _walk(folder: Path, findings: list[Finding]) -> tuple[list[Path], list[Path], list[Path]]:
    """(image candidates, extension-less files, label files) below ``folder``, sorted; links to folders not followed."""
    from ..batch import IMAGE_EXTENSIONS
    from ..safefiles import describe_os_error

    images, bare, labels = [], [], []

    def on_error(exc: OSError) -> None:
        findings.append(Finding(Path(exc.filename or folder), "warning", "unreadable_folder",
                                f"{exc.filename}: skipped ({describe_os_error(exc)}); fix its permissions to include it."))

    for root, dirs, files in os.walk(folder, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            low = name.lower()
            if name.startswith(".") or low.endswith(".part") or ".part." in low:
                continue
            p = Path(root) / name
            try:
                regular = stat.S_ISREG(os.stat(p).st_mode)
            except OSError as exc:
                findings.append(Finding(p, "warning", "unreadable_file",
                                        f"{p}: skipped ({describe_os_error(exc)}); fix or remove it."))
                continue
            if not regular:
                findings.append(Finding(p, "warning", "unreadable_file",
                                        f"{p}: skipped (not a regular file); remove it from the dataset."))
                continue
            if _label_stem(name) is not None:
                labels.append(p)
            elif low.endswith(SIDECAR_SUFFIXES):
                continue
            elif any(low.endswith(ext) for ext in IMAGE_EXTENSIONS):
                images.append(p)
            elif "." not in name:
                bare.append(p)
    return images, bare, labels


def _reject_duplicates_hook(dups: list[str]):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                dups.append(k)
            out[k] = v
        return out
    return hook


@dataclass
class _Labels:
    """A landmark file read once: its raw points and fields (or why it cannot be read)."""

    path: Path
    kind: str  # "json" or "mrk"
    data: dict | None = None  # JSON fields (json kind)
    points: list | None = None  # MarkupsPoint list (mrk kind)
    duplicates: list[str] = field(default_factory=list)
    error: str | None = None

    def named_images(self) -> list[tuple[str, str | None]]:
        """``(image file name, view role or None)`` this JSON names."""
        if self.data is None:
            return []
        out = []
        if isinstance(self.data.get("image"), str):
            out.append((Path(self.data["image"]).name, None))
        for role, view in (self.data.get("views") or {}).items():
            if isinstance(view, dict) and isinstance(view.get("image"), str):
                out.append((Path(view["image"]).name, role))
        return out


def _read_labels(path: Path) -> _Labels:
    from ..result import check_fields
    from ..safefiles import load_json_file

    if path.name.lower().endswith(".mrk.json"):
        from ..slicerio.markups_json import read_markups_json

        lab = _Labels(path, "mrk")
        try:
            lab.points = [p for p in read_markups_json(path) if p.defined]
        except LandmarkError as exc:
            lab.error = str(exc)
            return lab
        seen: set[str] = set()
        for p in lab.points:
            if p.id in seen:
                lab.duplicates.append(p.id)
            seen.add(p.id)
        return lab
    lab = _Labels(path, "json")
    try:
        data = load_json_file(path, LandmarkError, what="landmark JSON file",
                              object_pairs_hook=_reject_duplicates_hook(lab.duplicates))
        if isinstance(data, dict):
            check_fields(data, str(path), protocol_given=True)  # --protocol names it; a file may omit it
        if not isinstance(data, dict) or not ("landmarks" in data or "views" in data):
            raise LandmarkError(f"{path}: is not a landmark file (no 'landmarks' object); give a result JSON "
                                "(docs/protocols.md) or remove it from the dataset")
        lab.data = data
    except LandmarkError as exc:
        lab.error = str(exc).rstrip(".")
    return lab


# --------------------------------------------------------------------------------------------
# images


@dataclass
class _ImageFacts:
    size: tuple[int, int]
    spacing_mm: tuple[float, float] | None
    calibration: str
    patient_orientation: tuple[str, str] | None
    warnings: tuple[str, ...] = ()
    file_spacing_mm: tuple[float, float] | None = None  # an NRRD header's spacing (not used on its own)


def _image_facts(path: Path, check_images: bool) -> _ImageFacts:
    """Size, calibration and orientation of an image: decoded in full (``check_images``) or from the header.

    Raises:
        SpineAlignmentError: the file cannot be read as a radiograph.
    """
    from ..errors import RadiographError
    from ..imaging.radiograph import calibration_of_file, detect_format, read_radiograph
    from ..safefiles import MAX_IMAGE_FILE_BYTES, check_image_size, check_input_file

    if check_images:
        raster_log = logging.getLogger("SpineAlignmentLib.imaging.raster")
        level = raster_log.level
        raster_log.setLevel(logging.ERROR)  # its warnings become findings (below), not log lines
        try:
            rg = read_radiograph(path)
        finally:
            raster_log.setLevel(level)
        fs = rg.metadata.get("file_spacing_mm")
        return _ImageFacts(rg.shape, rg.spacing_mm, rg.calibration, rg.patient_orientation, tuple(rg.warnings),
                           tuple(fs) if fs else None)
    check_input_file(path, RadiographError, what="image file", max_bytes=MAX_IMAGE_FILE_BYTES)
    fmt = detect_format(path)
    orientation = None
    if fmt == "dicom":
        from ..geometry.orientation import parse_patient_orientation
        from ..imaging.dicom import read_dicom_header

        ds = read_dicom_header(path)
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError):
            raise RadiographError(f"{path}: the DICOM file has no Rows/Columns; it holds no image.") from None
        try:
            orientation = parse_patient_orientation(ds.get("PatientOrientation"))
        except SpineAlignmentError:
            orientation = None
    elif fmt in ("nrrd", "itk"):
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise RadiographError(f"{path}: cannot be read as an image header; the file may be damaged.") from None
        size = reader.GetSize()
        cols, rows = int(size[0]), int(size[1]) if len(size) > 1 else 1
    else:
        from ..imaging.raster import pillow_size

        rows, cols = pillow_size(path, str(path))  # a decompression bomb is refused from its header
    check_image_size(str(path), rows, cols, RadiographError)
    spacing, label = calibration_of_file(path)
    return _ImageFacts((rows, cols), spacing, label, orientation)


# --------------------------------------------------------------------------------------------
# tables


def _read_table(path: Path, columns: Sequence[str], findings: list[Finding]) -> list[dict[str, str]]:
    from ..safefiles import read_limited

    try:
        text = read_limited(path, MAX_TABLE_BYTES, SpineAlignmentError, what="CSV table").decode("utf-8-sig")
    except (SpineAlignmentError, UnicodeDecodeError) as exc:
        findings.append(Finding(path, "warning", "unreadable_table", f"{str(exc).rstrip('.')}; the table was ignored."))
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as exc:  # e.g. a cell longer than the csv module's field limit (131,072 characters)
        findings.append(Finding(path, "warning", "unreadable_table",
                                f"{path}: not a CSV table (line {reader.line_num}: {exc}); the table was ignored, "
                                "fix it."))
        return []
    header = set(rows[0]) if rows else set(reader.fieldnames or ())
    missing = [c for c in columns if c not in header]
    if missing:
        findings.append(Finding(path, "warning", "unreadable_table",
                                f"{path}: has no column {', '.join(missing)} (needs {','.join(columns)}); "
                                "the table was ignored, fix its header."))
        return []
    return [{c: (r.get(c) or "").strip() for c in columns} for r in rows]


def _table_key(folder: Path, image: Path) -> str:
    return image.relative_to(folder).as_posix()


def _resolve_table_image(value: str, by_key: Mapping[str, Path], by_name: Mapping[str, list[Path]]) -> Path | None:
    value = value.replace("\\", "/").strip()
    if value in by_key:
        return by_key[value]
    same = by_name.get(Path(value).name, [])
    return same[0] if len(same) == 1 else None


def _upsert_table(path: Path, columns: Sequence[str], key: str, row: Mapping[str, str]) -> None:
    """Replace the row whose ``key`` column equals ``row[key]`` (or append it); atomic rewrite."""
    rows: list[dict[str, str]] = []
    if path.exists():
        rows = _read_table(path, columns, [])
    rows = [r for r in rows if r[key] != row[key]] + [{c: str(row.get(c, "")) for c in columns}]
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# reading a dataset


def _protocol_ids(proto) -> tuple[set[str], set[str]]:
    return set(proto.landmark_ids), {lm.id for lm in proto.extra_landmarks}


def _valid_roles(proto) -> tuple[str, ...]:
    from ..slicerio.pairs import pair_roles

    try:
        return pair_roles(proto)
    except LandmarkError:
        return ()


def _pixels_of(lab: _Labels, image: Path, role: str | None) -> tuple[dict[str, tuple[float, float]], dict]:
    """Raw ``ID -> (x, y)`` (all IDs, known or not) and the file's other fields for this image."""
    if lab.kind == "mrk":
        from ..slicerio.geometry import ijk_to_ras_for_file, ras_to_pixels

        pts = lab.points or []
        if not pts:
            return {}, {}
        xy = ras_to_pixels(ijk_to_ras_for_file(image), np.array([p.ras for p in pts]))
        return {p.id: (float(x), float(y)) for p, (x, y) in zip(pts, xy)}, {}
    from ..result import parse_landmarks

    data = lab.data or {}
    src = data
    if role is not None or (not data.get("landmarks") and data.get("views")):
        views = data.get("views") or {}
        name = image.name
        src = next((v for r, v in views.items() if isinstance(v, dict)
                    and (r == role or Path(str(v.get("image") or "")).name == name)), {})
    raw = parse_landmarks(src.get("landmarks") or {}, source=str(lab.path))
    extra = {k: src.get(k) if k in src else data.get(k) for k in ("image_size", "spacing_mm", "calibration",
                                                                    "patient_orientation")}
    extra["protocol"] = data.get("protocol")
    return {k: (v.x, v.y) for k, v in raw.items()}, extra


def read_dataset(folder: str | os.PathLike, protocol: str, *, check_images: bool = True) -> DatasetReport:
    """Read and check a dataset folder for ``protocol``.

    Args:
        folder: the dataset folder (searched recursively; hidden folders skipped).
        protocol: protocol ID whose landmarks the files should hold.
        check_images: decode every image in full (finds corrupt pixel data); False reads headers only
            (faster, for a trainer that decodes the films anyway).

    Returns:
        A :class:`DatasetReport`; ``items`` holds the usable films (labelled, no error).

    Raises:
        DatasetError: the folder is missing, not a folder or unreadable.
        ProtocolError: unknown protocol.
    """
    from ..pipeline import outside_image
    from ..protocols import get_protocol
    from ..result import Landmark
    from ..safefiles import describe_os_error

    proto = get_protocol(protocol)
    root = Path(folder)
    try:
        st = os.stat(root)
    except OSError as exc:
        raise DatasetError(f"{root}: the dataset folder {describe_os_error(exc)}; check the path.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DatasetError(f"{root}: is not a folder; give the dataset folder (images with landmark files).")
    try:
        os.listdir(root)
    except OSError as exc:
        raise DatasetError(f"{root}: the dataset folder cannot be read ({describe_os_error(exc)}); "
                           "check its permissions.") from None

    findings: list[Finding] = []
    images, bare, label_files = _walk(root, findings)
    labels = {p: _read_labels(p) for p in label_files}
    by_stem: dict[tuple[Path, str], list[Path]] = {}
    for p in label_files:
        by_stem.setdefault((p.parent, _label_stem(p.name)), []).append(p)
    named: dict[tuple[Path, str], list[tuple[Path, str | None]]] = {}
    for p, lab in labels.items():
        for name, role in lab.named_images():
            named.setdefault((p.parent, name), []).append((p, role))
    # extension-less files are images when they are DICOM or have a landmark file
    for p in bare:
        if _has_dicom_preamble(p) or (p.parent, p.name) in by_stem or (p.parent, p.name) in named:
            images.append(p)
    images = sorted(images)
    # overlays of batch runs are not films
    images = [p for p in images if not (p.name.lower().endswith("_overlay.png"))]

    by_key = {_table_key(root, p): p for p in images}
    by_name: dict[str, list[Path]] = {}
    for p in images:
        by_name.setdefault(p.name, []).append(p)
    patients: dict[Path, str] = {}
    if (root / PATIENTS_CSV).is_file():
        for row in _read_table(root / PATIENTS_CSV, ("image", "patient"), findings):
            img = _resolve_table_image(row["image"], by_key, by_name)
            if img is None:
                findings.append(Finding(root / PATIENTS_CSV, "warning", "table_image",
                                        f"{root / PATIENTS_CSV}: image '{row['image']}' is not in the dataset; "
                                        "fix or remove the row."))
            elif row["patient"]:
                patients[img] = row["patient"]
    roles = _valid_roles(proto)
    pairs: dict[Path, tuple[str, str]] = {}
    if (root / PAIRS_CSV).is_file():
        for row in _read_table(root / PAIRS_CSV, ("pair", "role", "image"), findings):
            img = _resolve_table_image(row["image"], by_key, by_name)
            if img is None:
                findings.append(Finding(root / PAIRS_CSV, "warning", "table_image",
                                        f"{root / PAIRS_CSV}: image '{row['image']}' is not in the dataset; "
                                        "fix or remove the row."))
            elif row["role"] not in roles:
                findings.append(Finding(root / PAIRS_CSV, "warning", "pair_role",
                                        f"{root / PAIRS_CSV}: role '{row['role']}' of {row['image']} is not one of "
                                        f"{', '.join(roles) or '(none: ' + protocol + ' measures one film)'}; "
                                        "fix the row."))
            else:
                pairs[img] = (row["pair"], row["role"])

    used: set[Path] = set()
    items: list[LabelledImage] = []
    rows: list[dict] = []
    known, extra_ids = _protocol_ids(proto)
    all_known = known | extra_ids
    for img in images:
        errors_before = sum(f.severity == "error" for f in findings)
        pair, role = pairs.get(img, (None, None))
        row: dict[str, Any] = {"image": str(img), "labels": None, "usable": False, "landmarks": 0,
                               "facing": None, "spacing_mm": None, "calibration": None, "patient": None,
                               "pair": pair, "role": role}
        rows.append(row)

        def add(severity: str, check: str, message: str, path: Path = img) -> None:
            findings.append(Finding(path, severity, check, message))

        stem = _image_stem(img.name)
        candidates = [(p, None) for p in by_stem.get((img.parent, stem), [])]
        candidates += [c for c in named.get((img.parent, img.name), []) if c[0] not in {p for p, _ in candidates}]
        if stem != img.name:  # extension-less DICOM "IM1" has stem "IM1" already
            candidates += [(p, None) for p in by_stem.get((img.parent, img.name), [])
                           if p not in {q for q, _ in candidates}]
        for p, _ in candidates:
            used.add(p)
        readable = [(p, r) for p, r in candidates if labels[p].error is None]
        for p, _ in candidates:
            if labels[p].error is not None:
                add("error" if not readable else "warning", "unreadable_labels",
                    f"{labels[p].error}; fix the file or remove it." if not readable else
                    f"{labels[p].error}; another landmark file of {img.name} was used, fix or remove this one.", p)
        if not candidates:
            add("warning", "no_labels", f"{img}: has no landmark file ({stem}.json or {stem}.mrk.json beside it); "
                "annotate it (Slicer: Export for training) or move it out of the dataset.")
            continue
        if not readable:
            continue
        try:
            facts = _image_facts(img, check_images)
        except SpineAlignmentError as exc:
            add("error", "unreadable_image", f"{str(exc).rstrip('.')}; replace or remove this image.")
            continue
        except (OSError, ValueError, RuntimeError, MemoryError) as exc:
            add("error", "unreadable_image", f"{img}: cannot be read as an image ({type(exc).__name__}); "
                "replace or remove it.")
            continue
        # several label files: the newest wins (a Slicer correction saved after a batch run)
        readable.sort(key=lambda c: os.stat(c[0]).st_mtime_ns, reverse=True)
        chosen, view_role = readable[0]
        role = role or view_role
        row["role"] = role
        try:
            raw, extra = _pixels_of(labels[chosen], img, view_role)
            for other, other_role in readable[1:]:
                alt, _ = _pixels_of(labels[other], img, other_role)
                common = set(raw) & set(alt)
                if set(raw) != set(alt) or any(math.dist(raw[k], alt[k]) > AGREE_PX for k in common):
                    add("warning", "several_label_files",
                        f"{img}: {chosen.name} and {other.name} give different landmarks; the newer, {chosen.name}, "
                        "was used: delete the one that is wrong.")
        except LandmarkError as exc:
            add("error", "unreadable_labels", f"{str(exc).rstrip('.')}; fix the file.", chosen)
            continue
        row["labels"] = str(chosen)
        lab = labels[chosen]
        if extra.get("protocol") not in (None, protocol):
            add("error", "wrong_protocol", f"{chosen}: holds landmarks of protocol '{extra['protocol']}', not "
                f"'{protocol}'; check --protocol or move the film to a '{extra['protocol']}' dataset.", chosen)
            continue
        if lab.duplicates:
            dup = sorted(set(lab.duplicates))
            add("warning", "duplicate_ids", f"{chosen}: landmark {', '.join(dup)} appears more than once and was left "
                "out (which point is right cannot be told); delete the extra point.", chosen)
            raw = {k: v for k, v in raw.items() if k not in dup}
        unknown = [k for k in raw if k not in all_known]
        if raw and len(unknown) > WRONG_PROTOCOL_FRACTION * len(raw):
            add("error", "wrong_protocol", f"{chosen}: {len(unknown)} of {len(raw)} landmark IDs "
                f"({', '.join(unknown[:4])}{', ...' if len(unknown) > 4 else ''}) are not landmarks of '{protocol}'; "
                "these labels are for another protocol: check --protocol.", chosen)
            continue
        if unknown:
            add("warning", "unknown_ids", f"{chosen}: {', '.join(unknown[:6])}{', ...' if len(unknown) > 6 else ''} "
                f"{'is not a landmark' if len(unknown) == 1 else 'are not landmarks'} of '{protocol}' and "
                f"{'was' if len(unknown) == 1 else 'were'} left out; rename to canonical IDs "
                "(spine-align protocols).", chosen)
            raw = {k: v for k, v in raw.items() if k not in unknown}
        # calibration: the image's own first, else the landmark file's (as analyze/batch do)
        from ..batch import _landmark_file_calibration

        class _Shape:  # what _landmark_file_calibration reads of a radiograph
            shape = facts.size
            spacing_mm = facts.spacing_mm
            calibration = facts.calibration

        try:
            spacing, label, cal_warnings = _landmark_file_calibration(extra, chosen, _Shape, img)
        except SpineAlignmentError as exc:
            add("error", "image_size", f"{str(exc).rstrip('.')}.", chosen)
            continue
        label = label or "pixels-only"
        fs = facts.file_spacing_mm
        for w in facts.warnings:
            if fs is not None and "header gives spacing" in w:
                if spacing is None or any(abs(a - b) > 1e-6 for a, b in zip(spacing, fs)):
                    add("warning", "spacing", f"{img}: the file header gives spacing {fs[0]:g} x {fs[1]:g} mm "
                        "(row x col), which is not used on its own (it may be the detector-plane spacing); give "
                        "spacing_mm and calibration in the landmark JSON if it is the patient-plane spacing.")
                continue
            add("warning", "image", w)
        for w in cal_warnings:
            add("warning", "spacing", f"{img}: {w}")
        if spacing is not None and not all(PLAUSIBLE_SPACING_MM[0] <= s <= PLAUSIBLE_SPACING_MM[1] for s in spacing):
            add("warning", "spacing", f"{img}: spacing {spacing[0]:g} x {spacing[1]:g} mm ({label}) is outside the "
                f"{PLAUSIBLE_SPACING_MM[0]:g}-{PLAUSIBLE_SPACING_MM[1]:g} mm of radiographs; check the calibration.")
        orientation = facts.patient_orientation
        if orientation is None and extra.get("patient_orientation") is not None:
            from ..geometry.orientation import parse_patient_orientation

            try:
                orientation = parse_patient_orientation(extra["patient_orientation"])
            except SpineAlignmentError as exc:
                add("warning", "orientation", f"{str(exc).rstrip('.')}; it was ignored.", chosen)
        row.update(spacing_mm=list(spacing) if spacing else None, calibration=label)
        outside = outside_image({k: Landmark(*v) for k, v in raw.items()}, facts.size)
        if outside:
            add("warning", "outside_image", f"{chosen}: {', '.join(outside[:6])}{', ...' if len(outside) > 6 else ''} "
                f"lie{'s' if len(outside) == 1 else ''} outside the {facts.size[0]} x {facts.size[1]} image and "
                f"{'was' if len(outside) == 1 else 'were'} left out; check that the labels belong to this version of the film "
                "(not resized or cropped).",
                chosen)
            raw = {k: v for k, v in raw.items() if k not in outside}
        expected = extra_ids if role == "lateral" and extra_ids else known
        present = [k for k in raw if k in expected]
        row["landmarks"] = len(raw)
        if len(raw) < MIN_LANDMARKS:
            add("error", "missing_landmarks", f"{chosen}: only {len(raw)} usable landmark"
                f"{'' if len(raw) == 1 else 's'} (at least {MIN_LANDMARKS} are needed); place more or remove the film.",
                chosen)
            continue
        if len(present) < MOST_MISSING_FRACTION * len(expected):
            add("warning", "missing_landmarks", f"{chosen}: only {len(present)} of the {len(expected)} landmarks of "
                f"'{protocol}' are present; training ignores the missing ones, but check that none was forgotten.",
                chosen)
        # plausibility: order along the spine, in the image direction of the head
        from ..geometry.frame import coronal_frame, lateral_frame

        lateral = proto.view == "lateral" or role == "lateral"
        facing = None
        if lateral:
            try:
                info, fw = lateral_frame({k: np.asarray(v) for k, v in raw.items()}, orientation)
                facing = info.facing
                u_sup = info.frame.u_s
                for w in fw:
                    add("warning", "facing", f"{chosen}: {w}", chosen)
            except SpineAlignmentError as exc:
                add("warning", "facing", f"{chosen}: {str(exc).rstrip('.')}.", chosen)
                u_sup = coronal_frame(orientation).frame.u_s
            row["facing"] = facing or "unknown"
        else:
            u_sup = coronal_frame(orientation).frame.u_s
        problems = order_problems(raw, u_sup)
        if problems:
            add("error", "level_order", f"{chosen}: implausible order along the spine ({'; '.join(problems[:3])}); "
                "check the level names of these landmarks.", chosen)
            continue
        hygiene = _four_corner_hygiene(raw, proto, chosen)
        if hygiene:
            add("warning", "label_hygiene", hygiene, chosen)
        if sum(f.severity == "error" for f in findings) > errors_before:
            continue
        patient = patients.get(img) or _table_key(root, img)
        row.update(usable=True, patient=patient)
        items.append(LabelledImage(img, chosen, dict(raw), facts.size, spacing, label, orientation, patient,
                                   pair, role))

    for p in label_files:
        if p not in used:
            lab = labels[p]
            if lab.error is not None:
                findings.append(Finding(p, "warning", "unreadable_labels",
                                        f"{lab.error}; it matches no image either, so fix or remove it."))
            else:
                findings.append(Finding(p, "warning", "orphan_labels",
                                        f"{p}: no image {_label_stem(p.name)}.* beside it (nor one named by its "
                                        "'image' field); add the image or remove the file."))
    if items:
        from ..models.level_family import never_labelled

        never = never_labelled([it.landmarks for it in items], proto.landmark_ids)
        if never:
            findings.append(Finding(root, "warning", "level_never_labelled",
                                    f"{root}: no usable film labels level{'s' if len(never) > 1 else ''} "
                                    f"{', '.join(never)}; a level-sequence model (spine-align train --trainer levels) "
                                    "cannot learn to name it, so label it on some films."))
    summary = _summary(proto, images, items, findings, pairs, rows)
    return DatasetReport(protocol, root, items, findings, summary, rows)


def _four_corner_hygiene(raw: Mapping[str, tuple[float, float]], proto, path: Path) -> str | None:
    """The label-hygiene findings (geometry/label_checks.py) for a complete four-corner chain, as one sentence."""
    ids = proto.landmark_ids
    if not ids or len(ids) % 4 or not all(i.rsplit("_", 1)[-1] in ("TL", "TR", "BL", "BR") for i in ids) \
            or not all(i in raw for i in ids):
        return None
    from ..geometry.label_checks import check_labels

    names = [ids[i].rsplit("_", 1)[0] for i in range(0, len(ids), 4)]
    res = check_labels(np.array([raw[i] for i in ids]), path.name, vertebra_names=names)
    if not res.findings:
        return None
    details = "; ".join(f.detail for f in res.findings[:3])
    return f"{path}: label hygiene: {details}; check these corners."


def _summary(proto, images: Sequence[Path], items: Sequence[LabelledImage], findings: Sequence[Finding],
             pairs: Mapping[Path, tuple[str, str]], rows: Sequence[dict]) -> dict:
    ids = list(proto.landmark_ids) + [lm.id for lm in proto.extra_landmarks]
    present = {k: 0 for k in ids}
    facing: dict[str, int] = {}
    calibration: dict[str, int] = {}
    by_check: dict[str, int] = {}
    for it in items:
        for k in it.landmarks:
            present[k] = present.get(k, 0) + 1
        calibration[it.calibration] = calibration.get(it.calibration, 0) + 1
    for row in rows:
        if row["usable"] and row["facing"]:
            facing[row["facing"]] = facing.get(row["facing"], 0) + 1
    for f in findings:
        by_check[f.check] = by_check.get(f.check, 0) + 1
    return {
        "images": len(images),
        "usable_images": len(items),
        "errors": sum(f.severity == "error" for f in findings),
        "warnings": sum(f.severity == "warning" for f in findings),
        "patients": len({it.patient for it in items}),
        "pairs": len({p for p, _ in pairs.values()}),
        "landmarks_present": present if items else {},
        "facing": facing,
        "calibration": dict(sorted(calibration.items())),
        "findings_by_check": dict(sorted(by_check.items())),
    }


# --------------------------------------------------------------------------------------------
# writing


def _write_array(path_stem: Path, pixels: np.ndarray, spacing_mm: tuple[float, float] | None) -> Path:
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise LandmarkError(f"{path_stem.name}: the image array has shape {arr.shape}; give one 2-D grayscale film.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    as_png = spacing_mm is None and (arr.dtype in (np.uint8, np.uint16) or (
        np.issubdtype(arr.dtype, np.integer) and arr.size and arr.min() >= 0 and arr.max() <= 65535))
    if as_png:
        from PIL import Image

        out = path_stem.with_name(path_stem.name + ".png")
        arr = arr if arr.dtype in (np.uint8, np.uint16) else arr.astype(np.uint16)
        tmp = out.with_name(out.name + ".part")
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
        os.replace(tmp, out)
        return out
    import SimpleITK as sitk

    out = path_stem.with_name(path_stem.name + ".nrrd")
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    if spacing_mm is not None:
        img.SetSpacing((float(spacing_mm[1]), float(spacing_mm[0])))  # ITK order: x (column), y (row)
    tmp = out.with_name(out.name + ".part.nrrd")
    sitk.WriteImage(img, str(tmp), True)
    os.replace(tmp, out)
    return out


def write_labelled_image(folder: str | os.PathLike, image: Any, landmarks: Mapping[str, Any], protocol: str, *,
                         name: str, spacing_mm: Sequence[float] | None = None, calibration: str | None = None,
                         patient: str | None = None, pair: str | None = None, role: str | None = None,
                         patient_orientation: Any = None) -> Path:
    """Add one film and its landmarks to a dataset folder (creating it); return the landmark file.

    Args:
        folder: the dataset folder.
        image: an image file (copied as ``<name><its extension>``) or a 2-D array (written as
            ``<name>.png``; as ``<name>.nrrd`` when ``spacing_mm`` is given, so the spacing stays in the file,
            or when the values do not fit 16-bit PNG).
        landmarks: canonical ID -> ``(x, y)`` (or a :class:`~SpineAlignmentLib.result.Landmark`) in original
            pixels; only those placed.
        protocol: protocol ID; every ID must be one of its landmarks.
        name: file stem of the image and of ``<name>.json``. Writing the same name again replaces both.
        spacing_mm: ``(row, col)`` mm per pixel, kept in the label file (and an NRRD image).
        calibration: its label (default ``manual:user`` with a spacing, else ``pixels-only``).
        patient: grouping key, written to ``patients.csv``.
        pair, role: written to ``pairs.csv`` (role one of the protocol's image roles).
        patient_orientation: e.g. ``"A,F"``, kept in the label file.

    Raises:
        LandmarkError: unknown landmark IDs, a bad name or role, or an unusable image array.
        SpineAlignmentError: the image file cannot be read or the folder cannot be written.
    """
    from .. import __version__
    from ..errors import RadiographError
    from ..geometry.orientation import parse_patient_orientation
    from ..pipeline import validate_spacing
    from ..protocols import get_protocol
    from ..result import Landmark, Result, parse_landmarks
    from ..safefiles import MAX_IMAGE_FILE_BYTES, check_input_file, check_output_dir, output_stem

    proto = get_protocol(protocol)
    if not name or name != Path(name).name or name.startswith(".") or output_stem(name) != name:
        raise LandmarkError(f"'{name}' cannot be a dataset file name; give a plain file stem without folders.")
    known, extra_ids = _protocol_ids(proto)
    unknown = [k for k in landmarks if k not in known | extra_ids]
    if unknown:
        raise LandmarkError(f"{', '.join(unknown[:6])} {'is not a landmark' if len(unknown) == 1 else 'are not landmarks'}"
                            f" of '{protocol}'; use canonical IDs (spine-align protocols).")
    roles = _valid_roles(proto)
    if pair is not None and role not in roles:
        raise LandmarkError(f"role {role!r} of pair '{pair}' is not one of {', '.join(roles) or '(none)'} for '{protocol}'.")
    spacing = validate_spacing(spacing_mm, "spacing_mm")
    orientation = parse_patient_orientation(patient_orientation)
    root = check_output_dir(folder)
    if isinstance(image, (str, os.PathLike)):
        src = Path(image)
        check_input_file(src, RadiographError, what="image file", max_bytes=MAX_IMAGE_FILE_BYTES)
        stem = _image_stem(src.name)
        ext = src.name[len(stem):] or ".dcm"
        dest = root / f"{name}{ext}"
        if not (dest.exists() and os.path.samefile(src, dest)):
            tmp = dest.with_name(dest.name + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        size = _image_facts(dest, check_images=False).size
    else:
        arr = np.asarray(image)
        dest = _write_array(root / name, arr, spacing)
        size = (int(arr.shape[0]), int(arr.shape[1]))
    # (x, y), {"x":, "y":} or Landmark; a non-finite or absurd coordinate is refused (leave the landmark out)
    points = parse_landmarks({k: v if isinstance(v, Landmark) else dict(v) if isinstance(v, Mapping) else tuple(v)
                              for k, v in landmarks.items()}, source=f"landmarks of '{name}'")
    order = {k: i for i, k in enumerate(list(proto.landmark_ids) + [lm.id for lm in proto.extra_landmarks])}
    result = Result(protocol=protocol, landmarks=dict(sorted(points.items(), key=lambda kv: order[kv[0]])),
                    image=dest.name, image_size=size, spacing_mm=spacing,
                    calibration=calibration or ("manual:user" if spacing else "pixels-only"),
                    patient_orientation=orientation, software_version=__version__)
    labels = result.write_json(root / f"{name}.json")
    key = dest.name
    if patient is not None:
        _upsert_table(root / PATIENTS_CSV, ("image", "patient"), "image", {"image": key, "patient": patient})
    if pair is not None:
        _upsert_table(root / PAIRS_CSV, ("pair", "role", "image"), "image", {"pair": pair, "role": role, "image": key})
    return labels
