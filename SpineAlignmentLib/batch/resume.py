"""Resume: what a result was computed with (its fingerprint) and whether a result on disk can be re-used.

Every result JSON carries the run's :func:`batch_fingerprint` (protocol, model name, version and the
SHA-256 of each weights file, the options that change values, the software version, and the landmark
file's SHA-256 with ``landmarks_dir``); :func:`result_state` re-uses a result only when its fingerprint
equals the new one. A result about to be computed again is kept as ``<name>.json.stale``
(:func:`set_aside`) until the new one is written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..io.naming import BatchItem
from ..result import SCHEMA
from .options import BatchOptions

log = logging.getLogger(__name__)

STALE_SUFFIX = ".stale"


def default_model(protocol: str) -> str | None:
    """The first registered model for a protocol, or None (manual protocols, or no registry)."""
    try:
        from ..models.registry import list_models

        models = list_models(protocol)
    except Exception as exc:  # noqa: BLE001 - no registry / no torch means "no model"
        log.debug("no model registry (%s)", exc)
        return None
    if not models:
        return None
    return Path(models[0]["folder"]).name  # list_models is in search order: user folders first


def model_fingerprint(name: str | None) -> dict[str, Any] | None:
    """``{"name", "version", "weights": {file: SHA-256}}`` of a registered model (no torch needed).

    The SHA-256 values are those of the model's metadata, which loading checks against the files,
    so a result computed with other weights can never carry these values.
    """
    if name is None:
        return None
    try:
        from ..models.registry import find_model, read_metadata, weights_checksums

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
    from ..pipeline import DEFAULT_MIN_CONFIDENCE

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
    from ..models.registry import sha256_file

    try:
        digest = sha256_file(landmarks_path)
    except OSError:
        digest = None
    return {"name": Path(landmarks_path).name, "sha256": digest}


def fingerprint_of(base: dict[str, Any], item: BatchItem) -> dict[str, Any]:
    if item.films:
        return pair_fingerprint(base, item)
    fp = item_fingerprint(base, Path(item.landmarks) if item.landmarks else None)
    if item.level_anchor is not None:  # a film whose anchor row changed is measured again, the others re-used
        row = item.level_anchor
        fp["level_anchor"] = row.anchor.to_dict() if row.anchor is not None else {"problem": row.problem}
    return fp


def pair_fingerprint(base: dict[str, Any], item: BatchItem) -> dict[str, Any]:
    """The batch fingerprint plus, per film, the image as the manifest lists it and its landmark file's
    SHA-256; model and flip TTA only matter when a model finds some film's landmarks."""
    fp = {**base, "films": {f.role: {"image": f.listed, "landmarks_file": landmarks_file_fingerprint(f.landmarks),
                                     "patient_orientation": f.patient_orientation} for f in item.films}}
    if all(f.landmarks for f in item.films):
        fp["model"], fp["flip_tta"] = None, None
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


def _sr_refused(item: BatchItem) -> bool:
    """Whether a film of ``item`` has a header no DICOM SR can carry (so its result is complete without one)."""
    from ..io.dicom_sr import check_source

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


def set_aside(item: BatchItem, opts: BatchOptions) -> None:
    """Rename a result about to be re-computed to ``<name>.json.stale``: it no longer counts as a result
    (nothing reads it as one), but it is not lost if the new analysis fails."""
    p = item.result_path(opts.out_dir)
    if p.is_file():
        os.replace(p, p.with_name(p.name + STALE_SUFFIX))


def drop_stale(item: BatchItem, opts: BatchOptions) -> None:
    p = item.result_path(opts.out_dir)
    p.with_name(p.name + STALE_SUFFIX).unlink(missing_ok=True)
