"""The evaluation report object, and its tables, plots and HTML page.

:class:`EvaluationReport` lives here, below :mod:`.compare` that fills it, so
that writing a report never needs the module that computes one.

Plots use matplotlib's object API (``Figure`` + Agg canvas), never pyplot, so
writing a report does not touch the GUI backend of the host application
(Slicer). Letter-value (boxen) plots use :func:`seaborn.boxenplot` when seaborn
is installed (it comes with the ``stats`` extra via pingouin), else a
matplotlib drawing of :func:`landmarks.letter_values`.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import landmarks as lm
from .statistics import format_p

log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    """Everything ``spine-align evaluate`` computes, as pandas DataFrames.

    Attributes:
        parameters: one row per parameter, columns ``parameter, unit`` +
            :data:`statistics.PARAMETER_COLUMNS` (machine-readable, NaN = missing).
        table1: study 001 Table 1 layout, formatted text, one row per parameter.
        landmarks: one row per landmark ID (+ an ``ALL`` row): counts, error in
            px and mm, normalised error, SDR at 2/2.5/3/4 mm, calibration labels.
        landmark_errors: one row per (image, landmark): the rows of
            :func:`landmarks.compare_landmark_sets` with an ``image`` column.
        icc: long table ``parameter, comparison, sources, n, icc2_1, ...``; one
            row per parameter and pair of sources (truth, model, raters) and,
            with three or more sources, one ``all`` row.
        cobb: SMAPE (%) and circular MAE (deg) per Cobb set (``AASCE``, ``Cobb``).
        counts: ``matched``, ``missing_in_pred``, ``missing_in_truth``, ``failed``
            (ints) and the lists behind them.
        sources: source names in order: ``truth``, ``model``, then raters.
        notes: sentences for the report (e.g. why no SDR was computed).
        images: every ground-truth image name (with or without a prediction), in the order of ``values``.
        values: ``{parameter: {source: (N,) array}}`` over ``images``, NaN where absent.
        files: output name -> path, filled by :meth:`write`.
        provenance: what was compared and by what: ``software_version`` (of this evaluation), ``date``
            (UTC), ``models`` and ``prediction_software_versions`` (as the prediction files say),
            ``inputs`` (absolute folders, set by :func:`evaluate`).
        levels: vertebra naming of T1..L5 corner sets (:func:`levels.level_figures`: images with
            all 17 named right, counts per level shift, Cobb end-vertebra agreement, and the level
            warning's precision and recall when the predictions carry ``levels``); empty otherwise.
    """

    parameters: "object"
    table1: "object"
    landmarks: "object"
    landmark_errors: "object"
    icc: "object"
    cobb: "object"
    counts: dict
    sources: list[str]
    notes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    levels: dict = field(default_factory=dict)

    def parameter_values(self):
        """Long table ``image, parameter, <source>...`` of every compared value (NaN = absent)."""
        import pandas as pd

        frames = [pd.DataFrame({"image": self.images, "parameter": pid, **vals}) for pid, vals in self.values.items()]
        if not frames:
            return pd.DataFrame(columns=["image", "parameter", *self.sources])
        return pd.concat(frames, ignore_index=True)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write CSVs, PNGs and ``report.html`` into ``out_dir`` (created); returns ``files``."""
        self.files = write_report(self, Path(out_dir))
        return self.files


#: Table 1 columns (study 001), in order.
TABLE1_COLUMNS = (
    "Parameter", "Unit", "N", "Ground truth mean (SD)", "Error mean (SD)", "Error median (IQR)",
    "R", "R p value", "Wilcoxon p value",
)

#: ICC grades of study 001 (lower bound, label).
ICC_GRADES = ((0.9, "excellent"), (0.7, "high"), (0.5, "moderate"), (0.25, "low"))


def _fmt(v: float, decimals: int) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{decimals}f}"


def _decimals(unit: str) -> int:
    return 2 if unit in ("ratio", "") else 1


def table1(parameters) -> "object":
    """Study 001 Table 1 layout from the ``parameters`` table (formatted text).

    Errors are absolute differences ``|pred - truth|``; the IQR is ``q75 - q25``;
    ``*`` marks p < 0.05.
    """
    import pandas as pd

    rows = []
    for _, r in parameters.iterrows():
        d = _decimals(str(r["unit"]))
        rows.append({
            "Parameter": r["parameter"],
            "Unit": r["unit"],
            "N": int(r["n_pairs"]),
            "Ground truth mean (SD)": f"{_fmt(r['truth_mean'], d)} ({_fmt(r['truth_sd'], d)})",
            "Error mean (SD)": f"{_fmt(r['abs_error_mean'], d)} ({_fmt(r['abs_error_sd'], d)})",
            "Error median (IQR)": f"{_fmt(r['abs_error_median'], d)} ({_fmt(r['abs_error_iqr'], d)})",
            "R": _fmt(r["pearson_r"], 3),
            "R p value": format_p(r["pearson_p"]),
            "Wilcoxon p value": format_p(r["wilcoxon_p"]),
        })
    return pd.DataFrame(rows, columns=list(TABLE1_COLUMNS))


def safe_name(text: str) -> str:
    """File-name-safe form of a parameter ID."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# --------------------------------------------------------------------------- plots

#: At most this many outliers are named in a parameter's plots (the largest differences first).
MAX_LABELLED_OUTLIERS = 8


def outliers(images, truth: np.ndarray, pred: np.ndarray, stats_row, limit: int = MAX_LABELLED_OUTLIERS) -> list[tuple[str, float, float]]:
    """``(image, truth, pred)`` of the films outside the Bland–Altman limits of agreement, largest difference first."""
    t = np.asarray(truth, dtype=float)
    p = np.asarray(pred, dtype=float)
    lo, hi = stats_row["ba_loa_lower"], stats_row["ba_loa_upper"]
    if images is None or lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    diff = p - t
    idx = [i for i in np.flatnonzero(np.isfinite(diff)) if diff[i] < lo or diff[i] > hi]
    idx.sort(key=lambda i: -abs(diff[i] - stats_row["ba_bias"]))
    return [(str(images[i]), float(t[i]), float(p[i])) for i in idx[:limit]]


def plot_parameter(pid: str, unit: str, truth: np.ndarray, pred: np.ndarray, stats_row, path: Path,
                   images=None) -> Path:
    """Scatter (pred vs truth, identity line) and Bland–Altman (mean vs pred − truth) side by side; the films
    outside the limits of agreement (:func:`outliers`) are named on both."""
    named = outliers(images, truth, pred, stats_row)
    t = np.asarray(truth, dtype=float)
    p = np.asarray(pred, dtype=float)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    u = f" ({unit})" if unit else ""
    fig = _new_figure(9.0, 4.0)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(t, p, s=10, alpha=0.6, color="tab:blue", edgecolors="none")
    if t.size:
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax1.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=1, ls="--", label="identity")
        ax1.set_xlim(lo - pad, hi + pad)
        ax1.set_ylim(lo - pad, hi + pad)
        ax1.set_aspect("equal", adjustable="box")
    ax1.set_xlabel(f"ground truth{u}")
    ax1.set_ylabel(f"prediction{u}")
    ax1.set_title(f"{pid}: R = {_fmt(stats_row['pearson_r'], 3)}, n = {int(stats_row['n_pairs'])}")
    mean = (t + p) / 2
    diff = p - t
    ax2.scatter(mean, diff, s=10, alpha=0.6, color="tab:blue", edgecolors="none")
    bias, lo_, hi_ = stats_row["ba_bias"], stats_row["ba_loa_lower"], stats_row["ba_loa_upper"]
    d = _decimals(unit) + 1
    for y, style, text in ((bias, "-", f"bias {_fmt(bias, d)}"), (lo_, "--", f"−1.96 SD {_fmt(lo_, d)}"),
                           (hi_, "--", f"+1.96 SD {_fmt(hi_, d)}")):
        if y is not None and math.isfinite(y):
            ax2.axhline(y, color="tab:red" if style == "-" else "0.3", ls=style, lw=1)
            ax2.annotate(text, xy=(1.0, y), xycoords=("axes fraction", "data"), xytext=(-4, 2),
                         textcoords="offset points", ha="right", va="bottom", fontsize=8)
    for name, tv, pv in named:
        ax1.scatter([tv], [pv], s=18, color="tab:red", edgecolors="none")
        ax1.annotate(name, (tv, pv), xytext=(3, 3), textcoords="offset points", fontsize=7, color="tab:red")
        ax2.scatter([(tv + pv) / 2], [pv - tv], s=18, color="tab:red", edgecolors="none")
        ax2.annotate(name, ((tv + pv) / 2, pv - tv), xytext=(3, 3), textcoords="offset points", fontsize=7,
                     color="tab:red")
    ax2.set_xlabel(f"mean of truth and prediction{u}")
    ax2.set_ylabel(f"prediction − truth{u}")
    ax2.set_title("Bland–Altman (95 % limits of agreement)")
    fig.savefig(path)
    return path


def plot_icc_heatmap(icc, path: Path, column: str = "icc2_1") -> Path:
    """Heat map of one ICC type: parameters (rows) × source comparisons (columns), like study 001 Fig. 7.

    Rows and columns are ordered by their mean ICC so that high values gather
    towards the upper right, as in the study (which used hierarchical
    clustering for that; the dendrogram is not drawn here). Red = high, blue = low.
    """
    import pandas as pd

    mat = icc.pivot_table(index="parameter", columns="comparison", values=column, aggfunc="first", dropna=False)
    mat = mat.reindex(columns=list(dict.fromkeys(icc["comparison"])))
    if mat.shape[0] > 1:
        mat = mat.loc[mat.mean(axis=1).sort_values(ascending=False, na_position="last").index]
    if mat.shape[1] > 1:
        mat = mat[mat.mean(axis=0).sort_values(ascending=True, na_position="first").index]
    n_rows, n_cols = mat.shape
    fig = _new_figure(max(4.0, 1.3 * n_cols + 2.5), max(2.5, 0.4 * n_rows + 1.5))
    ax = fig.subplots()
    data = np.ma.masked_invalid(mat.to_numpy(dtype=float))
    # Colour range = the study's grades (low 0.25 … excellent 1.0); lower values share the deepest blue.
    im = ax.imshow(data, cmap="RdBu_r", vmin=0.25, vmax=1.0, aspect="auto")
    ax.set_xticks(range(n_cols), labels=[str(c) for c in mat.columns], rotation=30, ha="right")
    ax.set_yticks(range(n_rows), labels=[str(r) for r in mat.index])
    for i in range(n_rows):
        for j in range(n_cols):
            v = mat.iat[i, j]
            txt = "–" if pd.isna(v) else f"{v:.2f}"
            colour = "white" if (not pd.isna(v) and (v > 0.9 or v < 0.35)) else "black"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color=colour)
    label = {"icc2_1": "ICC(2,1) absolute agreement", "icc3_1": "ICC(3,1) consistency"}.get(column, column)
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(f"{label} between sources")
    fig.savefig(path)
    return path


def plot_landmarks_boxen(landmark_errors, path: Path) -> tuple[Path, str]:
    """Letter-value (boxen) plots of the per-landmark error, plus the normalised error.

    The error is in mm when every compared landmark has a mm error, else in px.

    Returns:
        The path and the unit used (``"mm"`` or ``"px"``).
    """
    ok = landmark_errors[landmark_errors["status"] == "ok"]
    use_mm = bool(len(ok)) and bool(np.isfinite(ok["error_mm"].to_numpy(dtype=float)).all())
    col, unit = ("error_mm", "mm") if use_mm else ("error_px", "px")
    order = list(dict.fromkeys(landmark_errors["landmark"]))
    width = max(8.0, 0.22 * len(order) + 2.0)
    fig = _new_figure(width, 7.5)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    _boxen(ax1, ok, col, order)
    ax1.set_ylabel(f"error ({unit})")
    ax1.set_title(f"Landmark localisation error ({unit}), letter-value plots; n = {ok['image'].nunique()} images")
    _boxen(ax2, ok, "normalised_error", order)
    ax2.axhline(1.0, color="tab:red", lw=0.8, ls="--")
    ax2.set_ylabel("error / nearest-neighbour distance")
    ax2.set_xlabel("")
    ax2.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.savefig(path)
    return path, unit


def _boxen(ax, df, column: str, order: list[str]) -> None:
    data = df[["landmark", column]].copy()
    data[column] = data[column].astype(float)
    data = data[np.isfinite(data[column].to_numpy())]
    try:
        import seaborn as sns
    except ImportError:  # seaborn is optional: draw the letter values directly
        sns = None
    if sns is not None and len(data):
        sns.boxenplot(data=data, x="landmark", y=column, order=order, ax=ax, k_depth="tukey",
                      color="tab:blue", showfliers=True, flier_kws={"s": 2})
    else:
        for i, name in enumerate(order):
            vals = data.loc[data["landmark"] == name, column].to_numpy()
            boxes = lm.letter_values(vals)
            for depth, (_, lo, hi) in enumerate(boxes):
                w = 0.8 * (1 - depth / (len(boxes) + 1))
                ax.add_patch(_rect(i - w / 2, lo, w, hi - lo, alpha=0.35 + 0.5 / (depth + 1)))
            if vals.size:
                ax.plot([i - 0.4, i + 0.4], [np.median(vals)] * 2, color="k", lw=1)
        ax.set_xticks(range(len(order)), labels=order)
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.autoscale(axis="y")
    ax.grid(axis="y", alpha=0.3)


def _rect(x, y, w, h, alpha):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor="tab:blue", edgecolor="0.2", lw=0.5, alpha=min(alpha, 1.0))


# --------------------------------------------------------------------------- writing

def _write_csv(df, path: Path) -> Path:
    df.to_csv(path, index=False, na_rep="NaN")
    return path


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f'<figcaption><a href="{name}">{name}</a></figcaption></figure>')


def _table_html(df, float_format: str = "{:.3g}") -> str:
    if df is None or len(df) == 0:
        return "<p><em>(empty)</em></p>"
    return df.to_html(index=False, na_rep="NaN", escape=True, border=0, classes="t",
                      float_format=lambda v: float_format.format(v))


def write_report(report: EvaluationReport, out_dir: Path) -> dict[str, Path]:
    """Write every output file of an evaluation into ``out_dir``.

    Files: ``parameters.csv``, ``table1.csv``, ``parameter_values.csv``,
    ``landmarks.csv``, ``landmark_errors.csv``, ``icc.csv``, ``cobb.csv``, ``counts.json``,
    ``levels.json`` (vertebra naming, coronal T1..L5 sets only), ``icc_heatmap.png``, ``parameter_<ID>.png`` (scatter + Bland–Altman) per
    parameter, ``landmarks_boxen.png`` (when there are landmarks) and
    ``report.html`` (images embedded as base64, with relative links to the files).

    Returns:
        Output name -> path of every file written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["parameters.csv"] = _write_csv(report.parameters, out_dir / "parameters.csv")
    files["table1.csv"] = _write_csv(report.table1, out_dir / "table1.csv")
    files["landmarks.csv"] = _write_csv(report.landmarks, out_dir / "landmarks.csv")
    files["landmark_errors.csv"] = _write_csv(report.landmark_errors, out_dir / "landmark_errors.csv")
    files["parameter_values.csv"] = _write_csv(report.parameter_values(), out_dir / "parameter_values.csv")
    files["icc.csv"] = _write_csv(report.icc, out_dir / "icc.csv")
    files["cobb.csv"] = _write_csv(report.cobb, out_dir / "cobb.csv")
    if report.levels:
        levels_path = out_dir / "levels.json"
        levels_path.write_text(json.dumps(report.levels, indent=2), encoding="utf-8")
        files["levels.json"] = levels_path
    counts_path = out_dir / "counts.json"
    counts_path.write_text(json.dumps(report.counts, indent=2), encoding="utf-8")
    files["counts.json"] = counts_path
    prov_path = out_dir / "provenance.json"
    prov_path.write_text(json.dumps(report.provenance, indent=2), encoding="utf-8")
    files["provenance.json"] = prov_path

    figures: list[tuple[str, Path]] = []
    if len(report.icc):
        files["icc_heatmap.png"] = plot_icc_heatmap(report.icc, out_dir / "icc_heatmap.png")
    param_figs = []
    for _, row in report.parameters.iterrows():
        pid = row["parameter"]
        vals = report.values.get(pid)
        if not vals or row["n_pairs"] == 0:
            continue
        name = f"parameter_{safe_name(pid)}.png"
        files[name] = plot_parameter(pid, str(row["unit"]), vals["truth"], vals["model"], row, out_dir / name,
                                     images=report.images)
        param_figs.append((pid, files[name], outliers(report.images, vals["truth"], vals["model"], row),
                           str(row["unit"])))
    boxen_unit = None
    if len(report.landmark_errors) and (report.landmark_errors["status"] == "ok").any():
        files["landmarks_boxen.png"], boxen_unit = plot_landmarks_boxen(
            report.landmark_errors, out_dir / "landmarks_boxen.png")

    html_path = out_dir / "report.html"
    html_path.write_text(_html(report, files, param_figs, boxen_unit), encoding="utf-8")
    files["report.html"] = html_path
    log.info("evaluation report written to %s (%d files)", out_dir, len(files))
    return files


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table.t{border-collapse:collapse;font-size:13px;margin:0.5em 0}
table.t th,table.t td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
table.t th{background:#f3f3f3} figure{display:inline-block;margin:0.5em}
img{max-width:100%} .note{background:#fff8e1;padding:0.4em 0.8em;border-left:4px solid #f0b400}
details{margin:0.5em 0}
"""


def _provenance_html(prov: dict) -> str:
    """Model, software version, date and inputs of an evaluation, as a definition list."""
    if not prov:
        return ""
    esc = html.escape
    rows = [("model(s) of the predictions", ", ".join(prov.get("models", []))),
            ("software version of the predictions", ", ".join(prov.get("prediction_software_versions", []))),
            ("evaluated with", f"SpineAlignmentLib {prov.get('software_version', '')}"),
            ("date", prov.get("date", ""))]
    rows += [(f"{k} folder", v) for k, v in (prov.get("inputs") or {}).items()]
    return "<ul>" + "".join(f"<li>{esc(k)}: <b>{esc(str(v))}</b></li>" for k, v in rows) + "</ul>"


def _html(report: EvaluationReport, files: dict[str, Path], param_figs, boxen_unit) -> str:
    c = report.counts
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SpineAlignment evaluation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>SpineAlignment evaluation report</h1>",
        _provenance_html(report.provenance),
        "<h2>Images</h2><ul>",
        f"<li>matched (in truth and prediction): <b>{c['matched']}</b></li>",
        f"<li>missing — in truth only (no prediction): <b>{c['missing_in_pred']}</b></li>",
        f"<li>missing — in prediction only (no truth): <b>{c['missing_in_truth']}</b></li>",
        f"<li>failed (unreadable result files): <b>{c['failed']}</b></li>",
    ]
    for name, rc in c.get("raters", {}).items():
        parts.append(f"<li>rater {esc(name)}: {rc['files']} files, {rc['matched']} matched</li>")
    parts.append(f"<li>sources compared: {esc(', '.join(report.sources))}</li>")
    if c.get("ignored_files"):
        parts.append(f"<li>ignored (not results, e.g. .mrk.json): {len(c['ignored_files'])}</li>")
    if c.get("recomputed_files"):
        parts.append(f"<li>parameters computed here from landmarks: {len(c['recomputed_files'])}</li>")
    parts.append("</ul>")
    for title, key in (("In truth only", "missing_in_pred_images"), ("In prediction only", "missing_in_truth_images")):
        if c.get(key):
            items = "".join(f"<li>{esc(k)}</li>" for k in c[key])
            parts.append(f"<details><summary>{title} ({len(c[key])})</summary><ul>{items}</ul></details>")
    if c.get("failed_files"):
        items = "".join(f"<li><code>{esc(f)}</code>: {esc(why)}</li>" for f, why in c["failed_files"])
        parts.append(f"<details open><summary>Failed files ({len(c['failed_files'])})</summary><ul>{items}</ul>"
                     "</details>")
    for note in report.notes:
        parts.append(f"<p class='note'>{esc(note)}</p>")

    parts.append("<h2>Parameters (Table 1 layout)</h2>")
    parts.append("<p>Error = |prediction − truth|; R = Pearson correlation; Wilcoxon = signed-rank test of "
                 "prediction vs truth; * p &lt; 0.05. Machine-readable: <a href='parameters.csv'>parameters.csv</a>, "
                 "<a href='table1.csv'>table1.csv</a>.</p>")
    parts.append(_table_html(report.table1))
    ba = report.parameters[["parameter", "unit", "n_pairs", "ba_bias", "ba_sd", "ba_loa_lower", "ba_loa_upper",
                            "icc2_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1", "icc3_1_ci_low",
                            "icc3_1_ci_high"]]
    parts.append("<h3>Bland–Altman and ICC (truth vs model)</h3>")
    parts.append("<p>Bias = mean(prediction − truth); limits of agreement = bias ± 1.96 SD. ICC(2,1): two-way "
                 "random, absolute agreement; ICC(3,1): two-way mixed, consistency (pingouin); 95 % CI.</p>")
    parts.append(_table_html(ba, "{:.3f}"))
    if len(report.cobb):
        parts.append("<h3>Cobb angles: AASCE metrics</h3><p>SMAPE = 100 · mean over images of "
                     "Σ|pred − truth| / Σ(|pred| + |truth|) over the set's angles; circular MAE with a 180° "
                     "period. Reported over the films with a prediction (n_images) and with the n_missing films "
                     "whose prediction lacks a truth angle (refused, or no result) counted as failures: "
                     "SMAPE 100 % and a 90° error for each missing angle. <a href='cobb.csv'>cobb.csv</a></p>")
        parts.append(_table_html(report.cobb, "{:.3f}"))

    if report.levels:
        from .levels import level_lines

        parts.append("<h3>Vertebra levels</h3><p>A predicted vertebra is named right when its nearest reference "
                     "vertebra carries its name; the level shift is the median offset over the chain (+1: T2..S1, "
                     "-1: C7..L4). <a href='levels.json'>levels.json</a></p><ul>")
        parts.extend(f"<li>{esc(t)}</li>" for t in level_lines(report.levels))
        parts.append("</ul>")

    parts.append("<h2>ICC among sources</h2>")
    if "icc_heatmap.png" in files:
        parts.append(_img_tag(files["icc_heatmap.png"], "ICC heat map"))
    parts.append("<details><summary>ICC table (<a href='icc.csv'>icc.csv</a>)</summary>")
    parts.append(_table_html(report.icc, "{:.3f}") + "</details>")

    parts.append("<h2>Scatter and Bland–Altman plots</h2>")
    for pid, path, named, unit in param_figs:
        parts.append(_img_tag(path, f"{pid} scatter and Bland–Altman"))
        if named:
            listed = ", ".join(f"{esc(n)} ({pv - tv:+.2f} {esc(unit)})" for n, tv, pv in named)
            parts.append(f"<p>{esc(pid)} outside the limits of agreement (prediction − truth): {listed}</p>")

    parts.append("<h2>Landmarks</h2>")
    if len(report.landmarks):
        parts.append("<p>Euclidean error per landmark; normalised error = error / distance from the truth landmark "
                     "to its nearest other truth landmark (study 001, eq. 6); SDR = share of landmarks within "
                     "2, 2.5, 3, 4 mm (mm only when truth and prediction are calibrated; the truth's spacing "
                     "and calibration label are used). <a href='landmarks.csv'>landmarks.csv</a>, "
                     "<a href='landmark_errors.csv'>landmark_errors.csv</a>.</p>")
        if "landmarks_boxen.png" in files:
            parts.append(_img_tag(files["landmarks_boxen.png"], f"landmark errors ({boxen_unit})"))
        parts.append("<details><summary>Per-landmark table</summary>")
        parts.append(_table_html(report.landmarks, "{:.3g}") + "</details>")
    else:
        parts.append("<p>No landmarks in the matched results.</p>")

    parts.append("<h2>Files</h2><ul>")
    for name in files:
        parts.append(f"<li><a href='{esc(name)}'>{esc(name)}</a></li>")
    parts.append("<li><a href='report.html'>report.html</a></li></ul></body></html>")
    return "\n".join(parts)
