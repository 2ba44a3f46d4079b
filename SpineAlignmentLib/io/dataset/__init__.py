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

The package: :mod:`.report` (the report and its limits), :mod:`.files` (the folder's files read),
:mod:`.write` (:func:`write_labelled_image`); the checks and :func:`read_dataset` are here.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import LandmarkError, SpineAlignmentError
from ...geometry.levels import level_name, spine_level
from .files import (PAIRS_CSV, PATIENTS_CSV, _has_dicom_preamble, _image_stem, _label_stem, _pixels_of,
                    _protocol_ids, _read_labels, _read_table, _resolve_table_image, _table_key, _valid_roles, _walk,
                    image_facts)
from .report import (AGREE_PX, MIN_LANDMARKS, MOST_MISSING_FRACTION, PLAUSIBLE_SPACING_MM, WRONG_PROTOCOL_FRACTION,
                     DatasetError, DatasetReport, Finding, LabelledImage)
from .write import write_labelled_image

__all__ = [
    "DatasetError", "LabelledImage", "Finding", "DatasetReport", "read_dataset", "write_labelled_image",
    "spine_level", "PAIRS_CSV", "PATIENTS_CSV",
]


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
    from ...pipeline import outside_image
    from ...protocols import get_protocol
    from ...result import Landmark
    from ...safefiles import describe_os_error

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
            facts = image_facts(img, check_images)
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
        from ...batch.landmarks import landmark_file_calibration

        class _Shape:  # what landmark_file_calibration reads of a radiograph
            shape = facts.size
            spacing_mm = facts.spacing_mm
            calibration = facts.calibration

        try:
            spacing, label, cal_warnings = landmark_file_calibration(extra, chosen, _Shape, img)
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
            from ...geometry.orientation import parse_patient_orientation

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
        from ...geometry.frame import coronal_frame, lateral_frame

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
        from ...models.level_family import never_labelled

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
    from ...geometry.label_checks import check_labels

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
