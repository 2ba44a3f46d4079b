"""The parameter table: its columns, its rows from a result, the table node, CSV.

Machine names are separate from titles, missing values are NaN with ``computed`` false, and the CSV
is written with the :mod:`csv` module (definitions of the columns in :data:`TABLE_COLUMNS`).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Sequence

from ..protocols import Protocol, get_protocol
from ..result import Result
from .mrml_classes import vtk

#: Table columns: (machine name, VTK array type, title, description).
TABLE_COLUMNS = (
    ("id", "string", "Parameter", "canonical parameter ID (protocols.md)"),
    ("title", "string", "Title", "human-readable parameter name"),
    ("value", "double", "Value", "parameter value; NaN when it could not be computed"),
    ("unit", "string", "Unit", "deg, mm, px, ratio or %"),
    ("calibration", "string", "Calibration", "calibration label of a distance (definitions.md 7.4); empty for angles"),
    ("landmarks", "string", "Landmarks", "canonical IDs of the landmarks used, space-separated"),
    ("computed", "bit", "Computed", "true when the value was computed"),
    ("warning", "string", "Warning", "why the value is missing, or caveats for it"),
)


def new_table_node(scene: Any, name: str) -> Any:
    """An empty ``vtkMRMLTableNode`` with the typed columns, titles and descriptions of :data:`TABLE_COLUMNS`."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for col, kind, title, description in TABLE_COLUMNS:
        arr = {"string": vtk.vtkStringArray, "double": vtk.vtkDoubleArray, "bit": vtk.vtkBitArray}[kind]()
        arr.SetName(col)
        table.AddColumn(arr)
        table.SetColumnTitle(col, title)
        table.SetColumnDescription(col, description)
    table.SetUseColumnTitleAsColumnHeader(True)
    return table


def fill_table_node(table_node: Any, rows: list[dict[str, Any]], changed: set[str] | None) -> None:
    """Write ``rows`` into the table node; only the rows of ``changed`` parameter IDs unless the rows differ (None: all)."""
    table = table_node.GetTable()
    ids_now = [table.GetColumnByName("id").GetValue(r) for r in range(table.GetNumberOfRows())]
    was_modifying = table_node.StartModify()
    if ids_now != [r["id"] for r in rows]:
        for arr_name, _, _, _ in TABLE_COLUMNS:
            table.GetColumnByName(arr_name).SetNumberOfValues(len(rows))
        table.SetNumberOfRows(len(rows))
        changed = None
    for r, row in enumerate(rows):
        if changed is not None and row["id"] not in changed:
            continue
        for col, kind, _, _ in TABLE_COLUMNS:
            arr = table.GetColumnByName(col)
            v = row[col]
            if kind == "double":
                arr.SetValue(r, v)
            elif kind == "bit":
                arr.SetValue(r, 1 if v else 0)
            else:
                arr.SetValue(r, str(v))
    units = {row["unit"] for row in rows}
    table_node.SetColumnUnitLabel("value", units.pop() if len(units) == 1 else "see unit column")
    table.Modified()
    table_node.Modified()
    table_node.EndModify(was_modifying)


def table_rows(result: Result, protocol: Protocol | None = None) -> list[dict[str, Any]]:
    """Rows of the parameter table for a result (one per parameter; NaN and ``computed=False`` if missing)."""
    proto = protocol or get_protocol(result.protocol)
    ids = list(dict.fromkeys([*proto.parameter_ids, *result.parameters]))
    rows = []
    for pid in ids:
        m = result.parameters.get(pid)
        try:
            spec = proto.parameter(pid)
            title, unit, lms = spec.title, spec.unit, spec.landmarks
        except Exception:  # noqa: BLE001 - computed extras (e.g. per-image lumbar IDs) are not in the table
            title, unit, lms = pid, m.unit if m else "", m.landmarks if m else ()
        if m is not None:
            unit, lms = m.unit, m.landmarks
        rows.append({
            "id": pid,
            "title": title,
            "value": float(m.value) if m is not None else math.nan,
            "unit": unit,
            "calibration": (m.calibration or "") if m is not None else "",
            "landmarks": " ".join(lms),
            "computed": m is not None,
            "warning": "; ".join(m.warnings) if m is not None else result.omitted.get(pid, "not computed"),
        })
    if result.levels:
        # a model's vertebra chain: how likely it is named at the right level (not a parameter, one row below them)
        from ..inference.levels import level_warning

        rows.append({"id": "level_confidence", "title": "Vertebra level confidence (all 17 named right)",
                     "value": float(result.levels["confidence"]), "unit": "probability", "calibration": "",
                     "landmarks": "", "computed": True, "warning": level_warning(result.levels) or ""})
    return rows


def write_table_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write table rows with the csv module (atomic; ``NaN`` for missing values, ``True``/``False`` booleans)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    names = [c[0] for c in TABLE_COLUMNS]
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in rows:
            out = dict(row)
            out["value"] = "NaN" if math.isnan(row["value"]) else repr(float(row["value"]))
            writer.writerow(out)
    os.replace(tmp, path)
    return path


def rows_to_table_node(scene: Any, name: str, rows: list[dict[str, Any]], columns: Sequence[str]) -> Any:
    """A new ``vtkMRMLTableNode`` with one typed column per key (float -> double, else string; NaN kept)."""
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    for col in columns:
        numeric = all(isinstance(r.get(col), (int, float)) and not isinstance(r.get(col), bool) for r in rows if r.get(col) is not None)
        arr = vtk.vtkDoubleArray() if numeric and rows else vtk.vtkStringArray()
        arr.SetName(col)
        arr.SetNumberOfValues(len(rows))
        for i, r in enumerate(rows):
            v = r.get(col)
            arr.SetValue(i, (math.nan if v is None else float(v)) if numeric else ("" if v is None else str(v)))
        table.AddColumn(arr)
    node.Modified()
    return node
