"""Level-anchor files: ``spine-align analyze|batch --level-anchors FILE.csv``.

One row per film, the first row naming the columns (any order, names case-insensitive):

* ``image,level,x,y``: the vertebra at ``x, y`` (original image pixels, x right, y down) is ``level``
  (``T1``; any of C1..C7, T1..T12, L1..L5, S1..S5 the film's candidates support);
* ``image,shift``: the chain's level error as the result's ``levels.alternative.shift`` gives it (0: the
  naming is confirmed as it is, as ``spine-align review`` writes a confirmation):
  ``-1`` the chain is named one level too high (its T1 is C7), ``+1`` one level too low (its T1 is T2).

A file may hold both kinds of rows (all four columns plus ``shift``; a row fills one kind). ``image``
names the film as the batch has it: its path (absolute, relative to the working folder or to the
CSV's folder), its file name, or its output name; a result JSON's ``image`` field (the file name) works.
``spine-align review`` writes this file.

A row that cannot be used (an image not in the run, an image named by two rows or matching two films,
an unknown level, numbers that are not numbers) is reported in one sentence naming the row and its
film (if any) keeps its unanchored result; a file that cannot be read as such a CSV stops the run
(:class:`~SpineAlignmentLib.errors.SpineAlignmentError`, exit 2).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import LandmarkError, SpineAlignmentError
from ..inference.anchor import LevelAnchor, level_position
from ..safefiles import read_utf8

log = logging.getLogger(__name__)

__all__ = ["AnchorRow", "read_level_anchors", "match_level_anchors", "anchor_film"]

MAX_ANCHOR_FILE_BYTES = 16 << 20
POINT_COLUMNS = ("level", "x", "y")


@dataclass(frozen=True)
class AnchorRow:
    """One row of a level-anchor file: where it is, the film it names, its anchor or why it has none."""

    where: str  #: ``"anchors.csv row 3"`` (the line number in the file)
    image: str
    anchor: LevelAnchor | None
    problem: str = ""


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _row_anchor(cell: dict[str, str], by: str) -> tuple[LevelAnchor | None, str]:
    shift = cell.get("shift", "")
    level = cell.get("level", "")
    if shift and (level or cell.get("x") or cell.get("y")):
        return None, "it gives both a shift and a level; give one of them"
    if shift:
        try:
            s = int(shift)
        except ValueError:
            return None, f"shift '{shift}' is not -1, 0 or +1"
        return LevelAnchor(by, shift=s), ""  # 0: the naming is confirmed as it is (the review page's "confirm")
    if not level:
        return None, "it gives neither a level with x, y nor a shift"
    try:
        level_position(level, ["T1"])
    except LandmarkError:
        return None, f"'{level}' is not a vertebra level (C1..C7, T1..T12, L1..L5, S1..S5)"
    x, y = _number(cell.get("x", "")), _number(cell.get("y", ""))
    if x is None or y is None:
        return None, f"x '{cell.get('x', '')}' and y '{cell.get('y', '')}' must be pixel coordinates (numbers)"
    return LevelAnchor(by, level.strip().upper(), x, y), ""


def read_level_anchors(path: str | os.PathLike) -> list[AnchorRow]:
    """The rows of a level-anchor file (blank rows skipped); rows with a problem carry it.

    Raises:
        SpineAlignmentError: the file cannot be read as a UTF-8 CSV with the column ``image`` and either
            ``level, x, y`` or ``shift`` (one sentence naming the file).
    """
    path = Path(path)
    text = read_utf8(path, MAX_ANCHOR_FILE_BYTES, SpineAlignmentError, what="level-anchor file",
                     save_as="a UTF-8 CSV file with the columns image,level,x,y or image,shift")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    by = f"file:{path.name}"
    rows: list[AnchorRow] = []
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        if "image" not in header or not ("shift" in header or all(c in header for c in POINT_COLUMNS)):
            raise SpineAlignmentError(
                f"{path}: the first row must name the columns image,level,x,y or image,shift; it has "
                f"{', '.join(repr(h) for h in header) or 'nothing'}.")
        col = {name: header.index(name) for name in ("image", "shift", *POINT_COLUMNS) if name in header}
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            cell = {name: (cells[i].strip() if i < len(cells) else "") for name, i in col.items()}
            where = f"{path.name} row {reader.line_num}"
            if not cell["image"]:
                rows.append(AnchorRow(where, "", None, "it names no image"))
                continue
            anchor, problem = _row_anchor(cell, by)
            rows.append(AnchorRow(where, cell["image"], anchor, problem))
    except csv.Error as exc:
        raise SpineAlignmentError(f"{path}: not a CSV file (line {reader.line_num}: {exc}); give a level-anchor "
                                  "file with the columns image,level,x,y or image,shift.") from None
    return rows


def _names(row_image: str, base: Path) -> set[str]:
    """The forms a row's ``image`` cell can match: its absolute path (from the working folder and from the
    CSV's folder) and, for a bare name, the name itself."""
    p = Path(row_image)
    forms = {os.path.normcase(os.path.abspath(p)), os.path.normcase(os.path.abspath(base / p))}
    if len(p.parts) == 1:
        forms.add(row_image)
    return forms


def match_level_anchors(rows: Sequence[AnchorRow], items: Sequence[Any], base: str | os.PathLike
                        ) -> tuple[dict[str, AnchorRow], list[str]]:
    """The anchor row of each film (by its output name), and one sentence per row that anchors no film.

    ``items`` are :class:`~SpineAlignmentLib.io.naming.BatchItem` (``image`` path, ``name`` output stem); a row
    names a film by its path, its file name or its output name; ``base`` is the CSV's folder.
    """
    keys: dict[str, list[str]] = {}
    for item in items:
        p = Path(item.image)
        for k in {os.path.normcase(os.path.abspath(p)), p.name, item.name}:
            keys.setdefault(k, []).append(item.name)
    matched: dict[str, AnchorRow] = {}
    claimed: dict[str, str] = {}
    problems: list[str] = []
    for row in rows:
        films = sorted({n for form in _names(row.image, Path(base)) for n in keys.get(form, [])})
        if not films:
            what = f"image '{row.image}'" if row.image else "no image"
            problems.append(f"Level anchor {row.where} not used: {what} is not one of the films of this run; "
                            "give the film's path or file name as the run names it.")
        elif len(films) > 1:
            problems.append(f"Level anchor {row.where} not used: '{row.image}' matches {len(films)} films "
                            f"({', '.join(films[:3])}); give the film's path.")
        elif films[0] in claimed:
            problems.append(f"Level anchor {row.where} not used: {row.image} already has the anchor of "
                            f"{claimed[films[0]]}; keep one row per film.")
            matched.pop(films[0], None)  # two anchors for one film: neither is used (its result stays unanchored)
        else:
            claimed[films[0]] = row.where
            matched[films[0]] = row
    return matched, problems


def anchor_film(film: Any, row: AnchorRow):
    """A batch film's landmarks (:class:`~SpineAlignmentLib.batch.landmarks.FilmLandmarks`) re-named by its anchor row.

    A row that cannot be applied (its problem, a film without a model chain, an anchor outside the film or
    on no vertebra, a chain pushed past the film) leaves the film as it was, with one warning naming the row.
    """
    from dataclasses import replace

    from ..inference.anchor import apply_level_anchor

    state = getattr(film, "chain", None)
    problem = row.problem
    if not problem and state is None:
        problem = "this film's landmarks did not come from a vertebra-centres model, so it has no chain to re-name"
    if not problem:
        try:
            anchored = apply_level_anchor(state, row.anchor)
        except LandmarkError as exc:
            problem = str(exc).rstrip(".")
    if problem:
        text = f"Level anchor {row.where} not used: {problem}; the levels are the model's own."
        log.warning("%s: %s", film.source, text)
        return replace(film, warnings=[*film.warnings, text])
    kept = [w for w in film.warnings if w not in state.detection_warnings]
    view = replace(film.view, landmarks=anchored.landmarks)
    return replace(film, view=view, warnings=kept + anchored.warnings, levels=anchored.levels, chain=anchored.state)
