"""Batch over pairs of films: ``spine-align batch --pairs MANIFEST.csv``.

A pairs manifest is a CSV file (UTF-8, one header row) with one row per film::

    pair,role,image,landmarks,patient_orientation
    P001,flexion,P001/flexion.dcm,,
    P001,extension,P001/extension.dcm,,
    S007,coronal,S007/ap.png,S007/ap.json,"L,F"
    S007,lateral,S007/lateral.png,S007/lateral-landmarks.json,"A,F"

* ``pair``: the pair's ID (its output files are named after it);
* ``role``: which film it is; the protocol's table gives the roles (``lumbar-dynamic``:
  ``flexion`` and ``extension`` from its ``image_roles``; ``coronal-spine``: ``coronal`` and its
  paired ``lateral``, whose landmarks are the table's ``paired_lateral_landmarks``);
* ``image``: the film; ``landmarks`` (optional column, may be empty): its landmark file (result-format
  JSON or ``.mrk.json``); ``patient_orientation`` (optional, may be empty): the film's DICOM Patient
  Orientation when its file does not say (``--patient-orientation`` is used for films without one; the
  films of a pair often face different ways). Relative paths are read from the manifest's folder.

A film's landmarks come from its ``landmarks`` cell, else from ``--landmarks-dir`` (matched like a
single film's, :func:`SpineAlignmentLib.batch.landmarks.match_landmarks`), else from the protocol's model
(:func:`SpineAlignmentLib.batch.landmarks.film_landmarks`, the function a single-film batch uses). A paired
lateral's landmarks always come from a file: no model places them.

Each pair gives one result JSON (``<pair>.json``: ``views`` for a flexion/extension pair, the coronal
film's result with ``paired_lateral`` for a coronal pair), a ``.mrk.json`` and an overlay per film
(``<pair>_<role>.mrk.json``, ``<pair>_<role>_overlay.png``), with ``--dicom-sr`` one
``<pair>_sr.dcm``, and one row of ``summary.csv``. Everything else (resume by fingerprint, stale
results, ``failures.csv``, workers, cancel) is the single-film batch's
(:class:`SpineAlignmentLib.batch.BatchRunner`). A manifest row that makes no pair (an unknown role, a
missing film or landmark file, a pair with one film, a film given twice) is named in ``failures.csv``
and the other pairs go on; a manifest that cannot be read stops the batch before any work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import LandmarkError, ManifestError, SpineAlignmentError
from ..geometry.orientation import parse_patient_orientation
from ..io.naming import BatchItem, PairFilm, image_stem, make_items
from ..pairs import film_landmark_ids, film_result, measure_pair, pair_roles
from ..protocols import get_protocol
from ..result import Result
from ..safefiles import output_stem, read_utf8
from .analysis import dicom_source_problems, read_film
from .landmarks import film_landmarks, find_landmarks_file, match_landmarks
from .options import BatchOptions
from .outputs import write_or_stop

#: Columns a pairs manifest must have, and the optional one.
MANIFEST_COLUMNS = ("pair", "role", "image")
OPTIONAL_COLUMNS = ("landmarks", "patient_orientation")
#: Largest manifest accepted (a row is about 100 bytes: 160,000 films).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ManifestRow:
    """One film of a pairs manifest, as written (cells stripped) with its line number."""

    line: int
    pair: str
    role: str
    image: str
    landmarks: str = ""
    patient_orientation: str = ""


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """The rows of a pairs manifest (blank rows skipped).

    Raises:
        ManifestError: the file cannot be read as a UTF-8 CSV with the columns pair, role, image.
    """
    path = Path(path)
    text = read_utf8(path, MAX_MANIFEST_BYTES, ManifestError, what="pairs manifest", save_as="a UTF-8 CSV file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        missing = [c for c in MANIFEST_COLUMNS if c not in header]
        if missing:
            raise ManifestError(
                f"{path}: the first row must name the columns {', '.join(MANIFEST_COLUMNS)} (and optionally "
                f"{', '.join(OPTIONAL_COLUMNS)}); it has {', '.join(repr(h) for h in header) or 'nothing'}.")
        col = {name: header.index(name) for name in (*MANIFEST_COLUMNS, *OPTIONAL_COLUMNS) if name in header}
        rows = []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            cell = {name: (cells[i].strip() if i < len(cells) else "") for name, i in col.items()}
            rows.append(ManifestRow(reader.line_num, cell["pair"], cell["role"], cell["image"],
                                    cell.get("landmarks", ""), cell.get("patient_orientation", "")))
    except csv.Error as exc:
        raise ManifestError(f"{path}: not a CSV file (line {reader.line_num}: {exc}); give a pairs manifest "
                            "with the columns pair, role, image.") from None
    if not rows:
        raise ManifestError(f"{path}: lists no films; add one row pair,role,image per film.")
    return rows


def _safe_name(pair: str) -> str:
    """A file stem from a pair ID: letters, digits, ``.``, ``-`` and ``_`` kept, anything else ``_``."""
    return re.sub(r"[^\w.-]+", "_", pair).lstrip(".") or "pair"


def pair_names(pairs: list[str], roles: tuple[str, str]) -> dict[str, str]:
    """Output stems of pair IDs: :func:`_safe_name`, fitted to the file-name limit with the longest
    per-film suffix; IDs that still collide get ``-`` and 8 hex digits of the ID's SHA-1."""
    reserve = len(f"_{max(roles, key=len)}_overlay.png.part")
    names = {p: output_stem(_safe_name(p), reserve=reserve) for p in pairs}
    seen: dict[str, int] = {}
    for n in names.values():
        seen[n] = seen.get(n, 0) + 1
    for p, n in names.items():
        if seen[n] > 1:
            names[p] = output_stem(f"{n}-{hashlib.sha1(p.encode('utf-8')).hexdigest()[:8]}", reserve=reserve)
    return names


def _resolve(base: Path, cell: str) -> Path:
    return Path(os.path.abspath(base / cell))


def pair_items(manifest: str | Path, options: BatchOptions) -> tuple[list[BatchItem], dict[str, dict[str, str]]]:
    """The batch items of a pairs manifest, and the failures rows of the pairs it cannot make.

    Returns:
        ``(items, bad)``: one :class:`~SpineAlignmentLib.io.naming.BatchItem` per complete pair (its films'
        landmark files found), and output name -> ``failures.csv`` row naming the manifest line(s).

    Raises:
        ManifestError: the manifest cannot be read. LandmarkError: the protocol measures one film.
    """
    manifest = Path(manifest)
    roles = pair_roles(options.protocol)
    rows = read_manifest(manifest)
    base = manifest.parent
    where = manifest.name
    by_pair: dict[str, list[ManifestRow]] = {}
    bad: dict[str, dict[str, str]] = {}

    def fail(name: str, lines: list[int], reason: str) -> None:
        bad[name] = {"image": f"{where} line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}",
                     "name": name, "error": "ManifestError", "reason": f"{where}: {reason}"}

    for row in rows:
        if not row.pair:
            fail(f"{_safe_name(manifest.stem)}-line{row.line}", [row.line],
                 f"line {row.line} has no pair ID; give each film the ID of its pair in the 'pair' column.")
        else:
            by_pair.setdefault(row.pair, []).append(row)
    names = pair_names(list(by_pair), roles)
    complete: dict[str, dict[str, ManifestRow]] = {}
    for pair, pair_rows in by_pair.items():
        problems: list[str] = []
        films: dict[str, ManifestRow] = {}
        for row in pair_rows:
            if row.role not in roles:
                problems.append(f"line {row.line}: role '{row.role}' is not a film of {options.protocol}; "
                                f"use {roles[0]} or {roles[1]}")
            elif row.role in films:
                problems.append(f"lines {films[row.role].line} and {row.line} both give the {row.role} film of "
                                f"pair {pair}; keep one")
            else:
                films[row.role] = row
            if not row.image:
                problems.append(f"line {row.line} gives no image")
            elif not os.path.lexists(_resolve(base, row.image)):
                problems.append(f"line {row.line}: image {row.image} not found (relative paths are read from "
                                f"{base})")
            if row.landmarks and not os.path.lexists(_resolve(base, row.landmarks)):
                problems.append(f"line {row.line}: landmark file {row.landmarks} not found (relative paths are "
                                f"read from {base})")
            if row.patient_orientation:
                try:
                    parse_patient_orientation(row.patient_orientation)
                except SpineAlignmentError as exc:
                    problems.append(f"line {row.line}: {exc}".rstrip("."))
        absent = [r for r in roles if r not in films]
        if absent and not problems:
            have = ", ".join(f"{r.role} film (line {r.line})" for r in films.values())
            problems.append(f"pair {pair} has only its {have}; add a row for its {' and '.join(absent)} film")
        if problems:
            fail(names[pair], [r.line for r in pair_rows], "; ".join(problems) + ".")
        else:
            complete[pair] = films
    matched = _match_landmarks_dir(options.landmarks_dir, base, rows, names) if options.landmarks_dir else {}
    items = []
    for pair, films in complete.items():
        pair_films = []
        for role in roles:
            row = films[role]
            image = str(_resolve(base, row.image))
            found, why = (_resolve(base, row.landmarks), "") if row.landmarks else matched.get((pair, role), (None, ""))
            pair_films.append(PairFilm(role, image, row.image, str(found) if found else None, why,
                                       row.patient_orientation or None))
        items.append(BatchItem(pair, names[pair], films=tuple(pair_films)))
    return items, bad


def _match_landmarks_dir(landmarks_dir: str, base: Path, rows: list[ManifestRow],
                         names: dict[str, str]) -> dict[tuple[str, str], tuple[Path | None, str]]:
    """(pair, role) -> the film's landmark file in ``landmarks_dir`` (or None and why), tried in order:
    ``<pair>_<role>.json`` / ``.mrk.json`` (an earlier pairs batch's output folder), the manifest's path
    with the landmark suffix (a tree mirroring the manifest's), then the single-film rule
    (:func:`~SpineAlignmentLib.batch.landmarks.match_landmarks`) over every film the manifest lists."""
    root = Path(landmarks_dir)
    films = [r for r in rows if r.pair and r.image and not r.landmarks]
    items = make_items(list(dict.fromkeys(_resolve(base, r.image) for r in films)))
    by_image = {i.image: i for i in items}
    single = match_landmarks(items, root)
    out: dict[tuple[str, str], tuple[Path | None, str]] = {}
    for r in films:
        listed = Path(r.image)
        found = (find_landmarks_file(root, f"{names[r.pair]}_{r.role}")
                 or (None if listed.is_absolute() or ".." in listed.parts
                     else find_landmarks_file(root / listed.parent, image_stem(listed))))
        out[(r.pair, r.role)] = (found, "") if found else single[by_image[str(_resolve(base, r.image))].name]
    return out


def check_two_films(item: BatchItem) -> None:
    """Refuse a pair whose two films are one film: the same file, or two files with the same bytes (a pair of
    one film measures no motion: IROM 0 at every level, with no word of why).

    Raises:
        ManifestError: the same film (or landmark file) is given for both roles.
        SpineAlignmentError: a film that is not a readable regular file (checked without opening it).
    """
    from ..errors import RadiographError
    from ..models.registry import sha256_file
    from ..safefiles import check_input_file

    first, second = item.films
    sizes = [check_input_file(f.image, RadiographError, what="image file").st_size for f in (first, second)]
    roles = f"the {first.role} and {second.role} films"
    if os.path.samefile(first.image, second.image):
        why = f"{roles} are one file ({first.listed})"
    elif sizes[0] == sizes[1] and sha256_file(Path(first.image)) == sha256_file(Path(second.image)):
        why = f"{roles} are one film ({first.listed} and {second.listed} have the same bytes)"
    elif first.landmarks and second.landmarks and os.path.samefile(first.landmarks, second.landmarks):
        why = f"{roles} share one landmark file ({Path(first.landmarks).name})"
    else:
        return
    raise ManifestError(f"pair {item.image}: {why}; a pair of one film measures no motion, so give each role its own "
                        "film and landmark file.")


def analyze_pair(item: BatchItem, options: BatchOptions, fingerprint: dict[str, Any] | None = None) -> Result:
    """Measure one pair of films and write its files (the result JSON last).

    Raises:
        SpineAlignmentError: a film or landmark file that cannot be used (names the film), or
            :class:`~SpineAlignmentLib.errors.OutputError` when the output folder cannot be written.
    """
    proto = get_protocol(options.protocol)
    roles = pair_roles(proto)
    check_two_films(item)
    films, radiographs, warnings = {}, {}, []
    for f in item.films:
        if f.landmarks is None and options.landmarks_dir:
            raise LandmarkError(f"{f.image}: {f.landmarks_reason or 'no landmark file'}.")
        ids = film_landmark_ids(proto, f.role)
        if f.landmarks is None and not proto.image_roles and f.role == roles[1]:
            raise LandmarkError(f"{f.image}: the paired lateral's landmarks ({', '.join(ids)}) come from a landmark "
                                "file; give it in the manifest's landmarks column or in --landmarks-dir.")
        radiographs[f.role] = read_film(f.image, spacing=options.spacing, dicom=options.write_dicom_sr,
                                        patient_orientation=f.patient_orientation or options.patient_orientation)
    source_problems = (dicom_source_problems([f.image for f in item.films], [radiographs[f.role] for f in item.films])
                       if options.write_dicom_sr else [])
    if source_problems:  # said before inference; the pair's other outputs still come
        options = replace(options, write_dicom_sr=False)
    warnings.extend(source_problems)
    for f in item.films:
        ids = film_landmark_ids(proto, f.role)
        film = film_landmarks(f.image, radiographs[f.role], proto.id, model=options.model, flip_tta=options.flip_tta,
                              landmarks_path=f.landmarks)
        foreign = sorted(set(film.view.landmarks) - set(ids))
        if foreign:
            raise LandmarkError(f"{film.source}: {', '.join(foreign[:4])} are not landmarks of the {f.role} film of "
                                f"{proto.id} (it takes {', '.join(ids[:4])}...); give this film's landmark file.")
        films[f.role] = film
        warnings.extend(f"{f.role}: {w}" for w in film.warnings)
    model = next((films[r].model for r in roles if films[r].model), None)  # the model that found some film's points
    result = measure_pair(proto, {r: films[r].view for r in roles}, model=model,
                          min_confidence=options.min_confidence, source=f"pair {item.image}")
    result.warnings[:0] = warnings
    result.fingerprint = fingerprint
    write_or_stop(item, options.out_dir, f"the pair {item.image}",
                  lambda: _write_pair_outputs(item, Path(options.out_dir), result, radiographs, films, options))
    return result


def _write_pair_outputs(item: BatchItem, out: Path, result: Result, radiographs: dict[str, Any],
                        films: dict[str, Any], options: BatchOptions) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in item.films:
        shown = film_result(result, f.role)
        if options.write_markups:
            from ..slicerio.geometry import ijk_to_ras_for_file
            from ..slicerio.markups_json import write_markups_json

            write_markups_json(item.markups_path(out, f.role), shown.landmarks, ijk_to_ras_for_file(f.image),
                               protocol=options.protocol, model=films[f.role].model)
        if options.write_overlay:
            from ..io.overlay import render_overlay

            render_overlay(radiographs[f.role].pixels, shown, item.overlay_path(out, f.role))
    if options.write_dicom_sr:
        from ..io.dicom_sr import read_source_dataset, write_measurement_report

        # a flexion/extension pair references both films; a coronal pair its coronal film (the paired
        # lateral's landmarks are listed in the report as text)
        sources = ({f.role: read_source_dataset(f.image) for f in item.films} if result.views
                   else read_source_dataset(item.films[0].image))
        write_measurement_report(result, sources, item.dicom_sr_path(out))
    result.write_json(item.result_path(out))  # last: its presence marks the pair complete
