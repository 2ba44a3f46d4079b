"""Summary tables: one row per image, one column per parameter (machine names, NaN when missing)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..protocols import get_protocol
from ..result import Result

#: Leading columns of the batch summary, before one column per parameter.
SUMMARY_COLUMNS = ("image", "protocol", "model", "calibration", "spacing_row_mm", "spacing_col_mm",
                   "n_landmarks", "n_warnings", "software_version")


def summary_row(result: Result, image: str) -> dict[str, Any]:
    """A summary row: image facts and every parameter value (NaN when not computed)."""
    row: dict[str, Any] = {
        "image": image,
        "protocol": result.protocol,
        "model": (result.model or {}).get("name", "") if isinstance(result.model, dict) else "",
        "calibration": result.calibration,
        "spacing_row_mm": result.spacing_mm[0] if result.spacing_mm else math.nan,
        "spacing_col_mm": result.spacing_mm[1] if result.spacing_mm else math.nan,
        "n_landmarks": len(result.landmarks),
        "n_warnings": len(result.warnings),
        "software_version": result.software_version or "",
    }
    for pid, m in result.parameters.items():
        row[pid] = m.value
    return row


def summary_columns(protocol: str, rows: Iterable[dict[str, Any]] = ()) -> list[str]:
    """Fixed columns, the protocol's parameters in table order, then any extra computed IDs."""
    cols = list(SUMMARY_COLUMNS) + list(get_protocol(protocol).parameter_ids)
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols


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
            writer.writerow([_cell(row.get(c, math.nan)) for c in columns])
    os.replace(tmp, path)
    return path


def write_summary_csv(path: str | Path, rows: Sequence[dict[str, Any]], protocol: str) -> Path:
    """The batch summary: :data:`SUMMARY_COLUMNS` then one column per parameter."""
    return write_csv(path, rows, summary_columns(protocol, rows))
