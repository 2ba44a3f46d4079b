"""The files of a dataset folder, read: images and landmark files found, landmark files parsed, an image's
size and calibration, the tables ``pairs.csv`` and ``patients.csv`` (:mod:`SpineAlignmentLib.io.dataset`)."""

from __future__ import annotations

import csv
import io
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import LandmarkError, SpineAlignmentError
from ..naming import IMAGE_EXTENSIONS, image_stem
from .report import Finding

PAIRS_CSV = "pairs.csv"
PATIENTS_CSV = "patients.csv"
#: Files ``batch`` writes beside its results that are not training images.
SIDECAR_SUFFIXES = ("_overlay.png", ".seg.nrrd", "_sr.dcm", "_seg.dcm")
#: Largest pairs.csv / patients.csv read (a dataset of 100,000 films is about 10 MB).
MAX_TABLE_BYTES = 32 * 1024 * 1024


def _image_stem(name: str) -> str:
    return image_stem(Path(name))


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
    from ...safefiles import describe_os_error

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
    from ...result import check_fields
    from ...safefiles import load_json_file

    if path.name.lower().endswith(".mrk.json"):
        from ...slicerio.markups_json import read_markups_json

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


@dataclass
class ImageFacts:
    size: tuple[int, int]
    spacing_mm: tuple[float, float] | None
    calibration: str
    patient_orientation: tuple[str, str] | None
    warnings: tuple[str, ...] = ()
    file_spacing_mm: tuple[float, float] | None = None  # an NRRD header's spacing (not used on its own)


def image_facts(path: Path, check_images: bool) -> ImageFacts:
    """Size, calibration and orientation of an image: decoded in full (``check_images``) or from the header.

    Raises:
        SpineAlignmentError: the file cannot be read as a radiograph.
    """
    from ...errors import RadiographError
    from ...imaging.radiograph import calibration_of_file, detect_format, read_radiograph
    from ...safefiles import MAX_IMAGE_FILE_BYTES, check_image_size, check_input_file

    if check_images:
        raster_log = logging.getLogger("SpineAlignmentLib.imaging.raster")
        level = raster_log.level
        raster_log.setLevel(logging.ERROR)  # its warnings become findings (below), not log lines
        try:
            rg = read_radiograph(path)
        finally:
            raster_log.setLevel(level)
        fs = rg.metadata.get("file_spacing_mm")
        return ImageFacts(rg.shape, rg.spacing_mm, rg.calibration, rg.patient_orientation, tuple(rg.warnings),
                           tuple(fs) if fs else None)
    check_input_file(path, RadiographError, what="image file", max_bytes=MAX_IMAGE_FILE_BYTES)
    fmt = detect_format(path)
    orientation = None
    if fmt == "dicom":
        from ...geometry.orientation import parse_patient_orientation
        from ...imaging.dicom import read_dicom_header

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
        from ...imaging.raster import pillow_size

        rows, cols = pillow_size(path, str(path))  # a decompression bomb is refused from its header
    check_image_size(str(path), rows, cols, RadiographError)
    spacing, label = calibration_of_file(path)
    return ImageFacts((rows, cols), spacing, label, orientation)


def _read_table(path: Path, columns: Sequence[str], findings: list[Finding]) -> list[dict[str, str]]:
    from ...safefiles import read_limited

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


def _protocol_ids(proto) -> tuple[set[str], set[str]]:
    return set(proto.landmark_ids), {lm.id for lm in proto.extra_landmarks}


def _valid_roles(proto) -> tuple[str, ...]:
    from ...slicerio.pairs import pair_roles

    try:
        return pair_roles(proto)
    except LandmarkError:
        return ()


def _pixels_of(lab: _Labels, image: Path, role: str | None) -> tuple[dict[str, tuple[float, float]], dict]:
    """Raw ``ID -> (x, y)`` (all IDs, known or not) and the file's other fields for this image."""
    if lab.kind == "mrk":
        from ...slicerio.geometry import ijk_to_ras_for_file, ras_to_pixels

        pts = lab.points or []
        if not pts:
            return {}, {}
        xy = ras_to_pixels(ijk_to_ras_for_file(image), np.array([p.ras for p in pts]))
        return {p.id: (float(x), float(y)) for p, (x, y) in zip(pts, xy)}, {}
    from ...result import parse_landmarks

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
