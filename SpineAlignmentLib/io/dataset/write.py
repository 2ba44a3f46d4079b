"""Adding a film and its landmarks to a dataset folder (:func:`write_labelled_image`)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import LandmarkError
from .files import (PAIRS_CSV, PATIENTS_CSV, _image_stem, _protocol_ids, _read_table, _valid_roles,
                    image_facts)


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
    from ... import __version__
    from ...errors import RadiographError
    from ...geometry.orientation import parse_patient_orientation
    from ...pipeline import validate_spacing
    from ...protocols import get_protocol
    from ...result import Landmark, Result, parse_landmarks
    from ...safefiles import MAX_IMAGE_FILE_BYTES, check_input_file, check_output_dir, output_stem

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
        size = image_facts(dest, check_images=False).size
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
