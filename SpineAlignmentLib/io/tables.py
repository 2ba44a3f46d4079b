"""Summary tables: one row per image; per parameter its value, unit and calibration (machine names, NaN when missing).

A distance is in ``mm`` or, without a spacing, ``px``, so one column can hold
both: every parameter ``P`` therefore has ``P`` (the value), ``P_unit`` (``deg``,
``mm``, ``px``, ``ratio``, ``%``; empty when not computed) and ``P_calibration``
(the calibration label of a ``mm`` value, definitions.md §7.4; empty otherwise).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..protocols import get_protocol
from ..inference.levels import levels_may_be
from ..result import Result

#: Leading columns of the batch summary, before one column per parameter.
SUMMARY_COLUMNS = ("image", "protocol", "model", "calibration", "spacing_row_mm", "spacing_col_mm",
                   "n_landmarks", "n_warnings", "software_version", "level_confidence", "levels_may_be")
#: Column suffixes of a parameter's unit and calibration label.
UNIT_SUFFIX, CALIBRATION_SUFFIX = "_unit", "_calibration"


def summary_row(result: Result, image: str) -> dict[str, Any]:
    """A summary row: image facts and every parameter value (NaN when not computed).

    For a pair (``image`` is the pair's ID) ``n_landmarks`` counts every film's landmarks; a
    flexion/extension pair's calibration is its films' labels (one when they agree, else
    ``role: label`` each) and its spacing NaN unless both films share it.
    """
    films = list(result.views.values()) or [result]
    labels = dict.fromkeys(f.calibration for f in films)
    spacings = {tuple(f.spacing_mm) if f.spacing_mm else None for f in films}
    spacing = spacings.pop() if len(spacings) == 1 else None
    row: dict[str, Any] = {
        "image": image,
        "protocol": result.protocol,
        "model": (result.model or {}).get("name", "") if isinstance(result.model, dict) else "",
        "calibration": next(iter(labels)) if len(labels) == 1 else "; ".join(
            f"{role}: {v.calibration}" for role, v in result.views.items()),
        "spacing_row_mm": spacing[0] if spacing else math.nan,
        "spacing_col_mm": spacing[1] if spacing else math.nan,
        "n_landmarks": sum(len(f.landmarks) for f in films)
        + (len(result.paired_lateral.landmarks) if result.paired_lateral is not None else 0),
        "n_warnings": len(result.warnings),
        "software_version": result.software_version or "",
        # a model's vertebra chain: how likely it is named at the right level, and the alternative when uncertain
        "level_confidence": float(result.levels["confidence"]) if result.levels else math.nan,
        "levels_may_be": levels_may_be(result.levels),
    }
    for pid, m in result.parameters.items():
        row[pid] = m.value
        row[f"{pid}{UNIT_SUFFIX}"] = m.unit
        row[f"{pid}{CALIBRATION_SUFFIX}"] = (m.calibration or result.calibration) if m.unit == "mm" else ""
    return row


def summary_columns(protocol: str, rows: Iterable[dict[str, Any]] = ()) -> list[str]:
    """Fixed columns, then per parameter (protocol table order, then extra computed IDs) value, unit, calibration."""
    pids = list(get_protocol(protocol).parameter_ids)
    fixed = set(SUMMARY_COLUMNS)
    for row in rows:
        pids.extend(k for k in row if k not in fixed and k not in pids
                    and not k.endswith((UNIT_SUFFIX, CALIBRATION_SUFFIX)))
    return list(SUMMARY_COLUMNS) + [c for pid in pids for c in (pid, f"{pid}{UNIT_SUFFIX}", f"{pid}{CALIBRATION_SUFFIX}")]


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else repr(float(v))  # numpy scalars would print as np.float64(...)
    return v


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write rows with the csv module, atomically; missing cells of numeric columns are ``NaN``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c, "" if c.endswith((UNIT_SUFFIX, CALIBRATION_SUFFIX)) else math.nan))
                             for c in columns])
    os.replace(tmp, path)
    return path


def write_summary_csv(path: str | Path, rows: Sequence[dict[str, Any]], protocol: str) -> Path:
    """The batch summary: :data:`SUMMARY_COLUMNS` then one column per parameter."""
    return write_csv(path, rows, summary_columns(protocol, rows))
