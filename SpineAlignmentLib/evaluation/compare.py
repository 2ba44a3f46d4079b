"""Match result files by image name and compute every evaluation table.

Result files are read as plain dicts (format: protocols.md "Result file"); a
file with landmarks but no parameters is measured with the pipeline first.

Every film of the ground truth counts: one the prediction lacks (no result file,
or the model refused it, or left a parameter out) is counted as missing for each
parameter, and the Cobb-set figures are reported both over the films used and
with the missing ones counted as failures.

Matching key: the basename of the result's ``image`` field without its
extension, falling back to the JSON file stem when ``image`` is absent. An
"extension" is only stripped when it contains a letter, so a DICOM
SOPInstanceUID such as ``1.2.840.113619.2.55`` is kept whole.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..safefiles import load_json_file
from ..errors import SpineAlignmentError
from ..result import SCHEMA as RESULT_SCHEMA
from . import landmarks as lm
from . import statistics as st
from .levels import level_figures
from .report import EvaluationReport, table1 as make_table1  # EvaluationReport re-exported: compare_results returns it

log = logging.getLogger(__name__)

TRUTH = "truth"
MODEL = "model"

#: Columns of the Cobb-set table: over the films used, and with missing predictions counted as failures
#: (SMAPE 100 % for a missing angle, circular MAE 90 deg).
COBB_COLUMNS = ["set", "parameters", "n_images", "n_images_complete", "n_missing", "smape_pct", "circular_mae",
                "smape_pct_missing_as_failure", "circular_mae_missing_as_failure"]

#: Sets of Cobb-type parameters whose SMAPE is computed per image over the set.
COBB_SETS = {
    "AASCE": ("AASCE_1", "AASCE_2", "AASCE_3"),
    "Cobb": ("Cobb_PT", "Cobb_MT", "Cobb_TLL"),
}


class EvaluationError(SpineAlignmentError):
    """Evaluation input that cannot be used (empty folder, nothing matched)."""


@dataclass
class LoadedSet:
    """Result dicts of one folder, keyed by image name, plus what could not be read."""

    results: dict[str, dict] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: files that are not results (``.mrk.json``, other JSON with its own schema), with why
    ignored: list[tuple[str, str]] = field(default_factory=list)
    #: files with landmarks but no ``parameters``, measured here (:func:`~SpineAlignmentLib.pipeline.measure_dict`)
    recomputed: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- loading

_EXT = re.compile(r"\.[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*$")
_COMPRESSION = (".gz", ".bz2", ".xz", ".zip")


def strip_extension(name: str) -> str:
    """Basename without its extension; ``.nii.gz``-style pairs lose both parts.

    Only a suffix containing a letter counts as an extension, so DICOM UIDs
    (``1.2.840.10008.1``) stay whole.
    """
    base = re.split(r"[\\/]", name.strip())[-1]
    m = _EXT.search(base)
    if m is None or m.start() == 0:
        return base
    stripped = base[:m.start()]
    if m.group(0).lower() in _COMPRESSION:
        m2 = _EXT.search(stripped)
        if m2 is not None and m2.start() > 0:
            stripped = stripped[:m2.start()]
    return stripped


def image_key(result: Mapping, fallback: str | None = None) -> str | None:
    """Matching key of a result: ``image`` basename without extension, else ``fallback``."""
    image = result.get("image") if isinstance(result, Mapping) else None
    if isinstance(image, str) and image.strip():
        return strip_extension(image)
    return fallback


def load_results(directory: str | Path, label: str = "") -> LoadedSet:
    """Read every ``*.json`` below ``directory`` (recursively) as a result dict.

    A file that is not valid JSON, not an object, or has neither ``landmarks``
    nor ``parameters`` is recorded in ``failed`` with the reason, not raised: one
    bad file must not stop an evaluation. A second file with the same image key
    is also recorded as failed. Files that are not results (Slicer ``.mrk.json``
    markups beside a batch's results, JSON with another ``schema``) are listed in
    ``ignored``. A file with landmarks but no ``parameters`` (the usual form of a
    ground truth) is measured with the pipeline and listed in ``recomputed``.

    Raises:
        EvaluationError: ``directory`` does not exist or is not a folder.
    """
    root = Path(directory)
    if not root.is_dir():
        raise EvaluationError(f"{label or 'result'} folder {str(root)!r} does not exist or is not a folder; "
                              "pass the folder that holds the result JSON files.")
    out = LoadedSet()
    for path in sorted(root.rglob("*.json")):
        rel = str(path.relative_to(root))
        if path.name.lower().endswith(".mrk.json"):
            out.ignored.append((rel, "Slicer markups (.mrk.json), not a result"))
            continue
        try:
            data = load_json_file(path, EvaluationError, what="result JSON file")
        except EvaluationError as exc:
            out.failed.append((rel, f"not readable as JSON: {str(exc).removeprefix(f'{path}: ')}"))
            continue
        if not isinstance(data, dict):
            out.failed.append((rel, f"top level is a JSON {type(data).__name__}, not an object"))
            continue
        if not isinstance(data.get("landmarks", {}), dict) or not isinstance(data.get("parameters", {}), dict):
            out.failed.append((rel, "'landmarks' or 'parameters' is not a JSON object"))
            continue
        if "landmarks" not in data and "parameters" not in data:
            schema = data.get("schema") or data.get("@schema")
            if isinstance(schema, str) and schema != RESULT_SCHEMA:
                out.ignored.append((rel, f"schema {schema[:80]!r}, not a result"))
            else:
                out.failed.append((rel, "has neither 'landmarks' nor 'parameters'"))
            continue
        if "parameters" not in data and data.get("landmarks"):
            try:
                data = _recompute(data, path)
            except SpineAlignmentError as exc:
                out.failed.append((rel, f"its landmarks cannot be measured: {str(exc).removeprefix(f'{path}: ')}"))
                continue
            out.recomputed.append(rel)
        key = image_key(data, fallback=strip_extension(path.stem))
        if key in out.results:
            out.failed.append((rel, f"duplicate image name {key!r}, already given by {out.files[key]}"))
            continue
        out.results[key] = data
        out.files[key] = rel
    return out


def _recompute(data: dict, path: Path) -> dict:
    """The file's result with the parameters its landmarks give (same image key: ``image`` as in the file)."""
    from ..pipeline import measure_dict

    result = measure_dict(data, source=str(path))
    out = result.to_dict(construction=False)
    out["image"] = data.get("image")
    out["recomputed_from_landmarks"] = True
    return out


def _as_mapping(results: Sequence[dict] | Mapping[str, dict], label: str) -> dict[str, dict]:
    if isinstance(results, Mapping):
        return dict(results)
    out: dict[str, dict] = {}
    for i, r in enumerate(results):
        key = image_key(r)
        if key is None:
            raise EvaluationError(f"{label} result #{i} has no 'image' field; give it one or pass a dict "
                                  "{image name: result}.")
        if key in out:
            raise EvaluationError(f"{label} results contain image {key!r} twice; keep one result per image.")
        out[key] = r
    return out


# --------------------------------------------------------------------------- values

def _param_value(result: Mapping | None, pid: str) -> float:
    if result is None:
        return math.nan
    entry = (result.get("parameters") or {}).get(pid)
    value = entry.get("value") if isinstance(entry, Mapping) else entry
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _param_unit(results: Sequence[Mapping], pid: str) -> str:
    for r in results:
        entry = (r.get("parameters") or {}).get(pid)
        if isinstance(entry, Mapping) and entry.get("unit"):
            return str(entry["unit"])
    return ""


def _spacing(result: Mapping) -> tuple[float, float] | None:
    sp = result.get("spacing_mm")
    if sp is None:
        return None
    try:
        row, col = float(sp[0]), float(sp[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
        return None
    return row, col


def _canonical_order(results: Sequence[Mapping], key: str) -> list[str]:
    """Protocol order of IDs when the protocol is known, else first-seen order."""
    seen: dict[str, None] = {}
    for r in results:
        for k in (r.get(key) or {}):
            seen.setdefault(k, None)
    ids = list(seen)
    protocols = {r.get("protocol") for r in results if r.get("protocol")}
    if len(protocols) == 1:
        try:
            from ..protocols import get_protocol

            proto = get_protocol(protocols.pop())
            canon = list(proto.landmark_ids) if key == "landmarks" else [p.id for p in proto.parameters]
            ids = [i for i in canon if i in seen] + [i for i in ids if i not in canon]
        except Exception as exc:  # protocols module absent or unknown ID: first-seen order is fine
            log.debug("no canonical order for %s: %s", key, exc)
    return ids


# --------------------------------------------------------------------------- main entry

def compare_results(
    truth: Sequence[dict] | Mapping[str, dict],
    pred: Sequence[dict] | Mapping[str, dict],
    raters: Mapping[str, Sequence[dict] | Mapping[str, dict]] | None = None,
    *,
    failed: Sequence[tuple[str, str]] = (),
    parameters: Sequence[str] | None = None,
) -> EvaluationReport:
    """Compare predictions (and optional raters) with the ground truth.

    Args:
        truth: ground-truth result dicts (protocols.md "Result file"), as a list
            (keyed by :func:`image_key`) or a mapping ``{image name: result}``.
        pred: model result dicts, same forms.
        raters: optional ``{rater name: results}``; used for the ICC among all
            sources (rater images are matched to the truth's image names).
        failed: ``(file, reason)`` pairs of files that could not be read, carried
            into the counts.
        parameters: parameter IDs to evaluate; default every ID present in any
            truth or prediction, in protocol order when known.

    Returns:
        An :class:`EvaluationReport` (nothing written; call ``.write(dir)``).

    Raises:
        EvaluationError: no image is present in both truth and prediction.
    """
    import pandas as pd

    t_map = _as_mapping(truth, "truth")
    p_map = _as_mapping(pred, "prediction")
    r_maps = {name: _as_mapping(res, f"rater {name!r}") for name, res in (raters or {}).items()}
    for name in r_maps:
        if name in (TRUTH, MODEL):
            raise EvaluationError(f"rater name {name!r} is reserved; choose another name for --rater.")

    matched = sorted(set(t_map) & set(p_map))
    only_truth = sorted(set(t_map) - set(p_map))
    evaluated = sorted(set(t_map))  # every truth film: one without a prediction counts as missing
    only_pred = sorted(set(p_map) - set(t_map))
    counts = {
        "truth_files": len(t_map), "pred_files": len(p_map),
        "matched": len(matched), "missing_in_pred": len(only_truth), "missing_in_truth": len(only_pred),
        "failed": len(failed),
        "missing_in_pred_images": only_truth, "missing_in_truth_images": only_pred,
        "failed_files": [list(f) for f in failed],
        "raters": {name: {"files": len(m), "matched": len(set(m) & set(matched))} for name, m in r_maps.items()},
    }
    if not matched:
        raise EvaluationError(
            f"no image name is present in both truth ({len(t_map)} results) and prediction ({len(p_map)}); "
            "check that both folders hold results of the same images (matched by the 'image' field's "
            "basename without extension, else the JSON file name).")
    differ = [k for k in matched if t_map[k].get("protocol") and p_map[k].get("protocol")
              and t_map[k]["protocol"] != p_map[k]["protocol"]]
    if differ:  # measured against another protocol's landmarks, every parameter would count as 100 % wrong
        k = differ[0]
        raise EvaluationError(
            f"truth and prediction of {len(differ)} film(s) are for different protocols (e.g. {k}: truth "
            f"'{t_map[k]['protocol']}', prediction '{p_map[k]['protocol']}'); compare results of one protocol.")
    notes: list[str] = []
    if only_truth:
        notes.append(f"{len(only_truth)} ground-truth film(s) have no prediction file (refused or not run); they "
                     "count as missing for every parameter and as failures in the 'missing counted as failures' "
                     "figures.")
    truths = [t_map[k] for k in matched]
    preds = [p_map[k] for k in matched]
    sources = [TRUTH, MODEL] + list(r_maps)
    by_source = {TRUTH: t_map, MODEL: p_map, **r_maps}

    # ---- parameters
    pids = list(parameters) if parameters is not None else _canonical_order(truths + preds, "parameters")
    rows = []
    values: dict[str, dict[str, np.ndarray]] = {}
    for pid in pids:
        vals = {s: np.array([_param_value(by_source[s].get(k), pid) for k in evaluated]) for s in sources}
        values[pid] = vals
        row = {"parameter": pid, "unit": _param_unit(truths + preds, pid)}
        row.update(st.parameter_statistics(vals[TRUTH], vals[MODEL], pid))
        rows.append(row)
    param_df = pd.DataFrame(rows, columns=["parameter", "unit", *st.PARAMETER_COLUMNS])
    missing = param_df.loc[param_df["n_missing_in_pred"] > 0, ["parameter", "n_missing_in_pred"]]
    for _, r in missing.iterrows():
        notes.append(f"{r['parameter']}: {int(r['n_missing_in_pred'])} film(s) with a ground truth have no predicted "
                     "value (no prediction file, or left out by the model); they are left out of its paired "
                     "statistics (n_pairs) and counted in n_missing_in_pred.")

    # ---- ICC among sources
    icc_rows = []
    for pid in pids:
        vals = values[pid]
        pairs = [(a, b) for i, a in enumerate(sources) for b in sources[i + 1:]]
        groups = [(f"{a}-{b}", [a, b]) for a, b in pairs]
        if len(sources) >= 3:
            groups.append(("all", list(sources)))
        for name, group in groups:
            res = st.icc(pd.DataFrame({s: vals[s] for s in group}))
            icc_rows.append({"parameter": pid, "comparison": name, "sources": ";".join(group), **res})
    icc_df = pd.DataFrame(icc_rows, columns=["parameter", "comparison", "sources", "n", "k",
                                             "icc2_1", "icc2_1_ci_low", "icc2_1_ci_high",
                                             "icc3_1", "icc3_1_ci_low", "icc3_1_ci_high"])

    # ---- Cobb sets (SMAPE over the triple per image)
    cobb_rows = []
    for set_name, ids in COBB_SETS.items():
        present = [i for i in ids if i in values]
        if not present:
            continue
        t = np.column_stack([values[i][TRUTH] for i in present])
        p = np.column_stack([values[i][MODEL] for i in present])
        complete = np.isfinite(t) & np.isfinite(p)
        lacking = (np.isfinite(t) & ~np.isfinite(p)).any(axis=1)  # a truth angle without its prediction
        cobb_rows.append({
            "set": set_name, "parameters": ";".join(present),
            "n_images": int(complete.any(axis=1).sum()),
            "n_images_complete": int(complete.all(axis=1).sum()),
            "n_missing": int(lacking.sum()),
            "smape_pct": st.smape(t, p), "circular_mae": st.circular_mae(t, p),
            "smape_pct_missing_as_failure": st.smape(t, p, count_missing=True),
            "circular_mae_missing_as_failure": st.circular_mae(t, p, count_missing=True),
        })
    cobb_df = pd.DataFrame(cobb_rows, columns=COBB_COLUMNS)

    # ---- landmarks
    lm_long, lm_summary, lm_notes = _landmark_tables(matched, t_map, p_map)
    notes.extend(lm_notes)

    provenance = _provenance(p_map)
    return EvaluationReport(
        provenance=provenance,
        parameters=param_df, table1=make_table1(param_df), landmarks=lm_summary, landmark_errors=lm_long,
        icc=icc_df, cobb=cobb_df, counts=counts, sources=sources, notes=notes,
        images=list(evaluated), values=values, levels=level_figures(truths, preds),
    )


def _provenance(p_map: Mapping[str, dict]) -> dict:
    import datetime

    from .. import __version__

    models, versions = set(), set()
    for r in p_map.values():
        m = r.get("model")
        if isinstance(m, Mapping) and m.get("name"):
            models.add(f"{m['name']} {m.get('version') or '(no version)'}")
        elif not r.get("recomputed_from_landmarks"):
            models.add("none (landmarks from a file)")
        if r.get("software_version"):
            versions.add(str(r["software_version"]))
    return {
        "software_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "models": sorted(models) or ["not stated in the prediction files"],
        "prediction_software_versions": sorted(versions) or ["not stated in the prediction files"],
    }


def _landmark_tables(matched: Sequence[str], t_map: Mapping[str, dict], p_map: Mapping[str, dict]):
    import pandas as pd

    notes: list[str] = []
    truths = [t_map[k] for k in matched]
    order = _canonical_order(truths + [p_map[k] for k in matched], "landmarks")
    long_rows = []
    n_cal = 0
    for key in matched:
        t, p = t_map[key], p_map[key]
        t_lm, p_lm = t.get("landmarks") or {}, p.get("landmarks") or {}
        if not t_lm and not p_lm:
            continue
        t_sp, p_sp = _spacing(t), _spacing(p)
        # mm only when both files are calibrated; the truth's spacing and label are used.
        spacing = t_sp if (t_sp is not None and p_sp is not None) else None
        label = str(t.get("calibration") or ("pixels-only" if spacing is None else "unspecified"))
        if spacing is None:
            label = "pixels-only" if t_sp is None else f"pixels-only (prediction uncalibrated; truth {label})"
        else:
            n_cal += 1
        ids = [i for i in order if i in t_lm or i in p_lm]
        for row in lm.compare_landmark_sets(t_lm, p_lm, spacing_mm=spacing, calibration=label, order=ids):
            long_rows.append({"image": key, **row})
    long_df = pd.DataFrame(long_rows, columns=["image", *lm.LANDMARK_COLUMNS])
    if long_df.empty:
        notes.append("No landmarks in the matched results: no landmark statistics.")
        return long_df, pd.DataFrame(), notes
    n_img = long_df["image"].nunique()
    if n_cal == 0:
        notes.append("No matched image has a mm spacing in both truth and prediction: landmark errors are in "
                     "pixels only and the success detection rate (SDR, mm thresholds) is not computed.")
    elif n_cal < n_img:
        notes.append(f"Only {n_cal} of {n_img} images with landmarks have a mm spacing in both files; mm errors "
                     "and SDR use those images only.")

    def summarise(name: str, g) -> dict:
        ok = g[g["status"] == "ok"]
        row = {"landmark": name, "n": int(len(ok)),
               "n_missing_in_pred": int((g["status"] == "missing_in_pred").sum()),
               "n_missing_in_truth": int((g["status"] == "missing_in_truth").sum())}
        for col, unit in (("error_px", "px"), ("error_mm", "mm")):
            e = ok[col].to_numpy(dtype=float)
            e = e[np.isfinite(e)]
            row[f"n_{unit}"] = int(e.size)
            row[f"error_{unit}_mean"] = float(e.mean()) if e.size else math.nan
            row[f"error_{unit}_sd"] = float(e.std(ddof=1)) if e.size > 1 else math.nan
            q = np.percentile(e, [25, 50, 75]) if e.size else [math.nan] * 3
            row[f"error_{unit}_median"], row[f"error_{unit}_q25"], row[f"error_{unit}_q75"] = map(float, (q[1], q[0], q[2]))
        ne = ok["normalised_error"].to_numpy(dtype=float)
        ne = ne[np.isfinite(ne)]
        row["normalised_error_mean"] = float(ne.mean()) if ne.size else math.nan
        row["normalised_error_median"] = float(np.median(ne)) if ne.size else math.nan
        row["normalised_error_gt1"] = int((ne >= 1).sum())  # could have reached the neighbour
        sdr = lm.success_detection_rate(ok["error_mm"].to_numpy(dtype=float))
        for thr, rate in sdr.items():
            row[lm.sdr_column(thr)] = rate
        row["calibration"] = ";".join(sorted(set(ok["calibration"].astype(str)))) if len(ok) else ""
        return row

    summary = [summarise(name, long_df[long_df["landmark"] == name]) for name in long_df["landmark"].unique()]
    summary.append(summarise("ALL", long_df))
    return long_df, pd.DataFrame(summary), notes


def evaluate(
    truth_dir: str | Path,
    pred_dir: str | Path,
    raters: Mapping[str, str | Path] | None = None,
    out_dir: str | Path | None = None,
) -> EvaluationReport:
    """Evaluate a folder of predicted results against a folder of ground-truth results.

    Args:
        truth_dir: folder with ground-truth result JSON files (searched recursively).
        pred_dir: folder with the model's result JSON files.
        raters: optional ``{name: folder}`` of further raters' results, for the ICC.
        out_dir: when given, the CSVs, PNGs and ``report.html`` are written there.

    Returns:
        The :class:`EvaluationReport`; ``counts["failed_files"]`` lists unreadable
        files (prefixed by ``truth/``, ``pred/`` or ``<rater>/``) with the reason.
    """
    t = load_results(truth_dir, "truth")
    p = load_results(pred_dir, "prediction")
    r = {name: load_results(path, f"rater {name!r}") for name, path in (raters or {}).items()}
    failed = [(f"truth/{f}", why) for f, why in t.failed] + [(f"pred/{f}", why) for f, why in p.failed]
    for name, loaded in r.items():
        failed += [(f"{name}/{f}", why) for f, why in loaded.failed]
    for f, why in failed:
        log.warning("skipped %s: %s", f, why)
    report = compare_results(t.results, p.results, {n: v.results for n, v in r.items()}, failed=failed)
    report.provenance["inputs"] = {"truth": str(Path(truth_dir).resolve()), "prediction": str(Path(pred_dir).resolve()),
                                   **{f"rater {n}": str(Path(v).resolve()) for n, v in (raters or {}).items()}}
    loaded = {"truth": t, "prediction": p, **{f"rater {n}": v for n, v in r.items()}}
    for label, ls in loaded.items():
        if ls.ignored:
            kinds = sorted({why for _, why in ls.ignored})
            report.notes.append(f"{label}: {len(ls.ignored)} file(s) that are not results were ignored "
                                f"({'; '.join(kinds)}).")
        if ls.recomputed:
            report.notes.append(f"{label}: {len(ls.recomputed)} file(s) had landmarks but no parameters; their "
                                f"parameters were computed from the landmarks (SpineAlignmentLib "
                                f"{report.provenance['software_version']}).")
    report.counts["ignored_files"] = [[f"{label}/{f}", why] for label, ls in loaded.items() for f, why in ls.ignored]
    report.counts["recomputed_files"] = [f"{label}/{f}" for label, ls in loaded.items() for f in ls.recomputed]
    if out_dir is not None:
        report.write(out_dir)
    return report
