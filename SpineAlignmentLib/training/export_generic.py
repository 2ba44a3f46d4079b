"""``spine-align export``: a generic landmark run (:mod:`~SpineAlignmentLib.training.generic`) -> a model folder.

The folder (``metadata.json``, ``model.pt``, ``refine.pt``, ``README.md``) is what ``analyze --model NAME``,
``batch`` and the Slicer module load from the shipped models or a user models folder. Its validation
figures are *measured here*, end to end: every validation film of the run's split is read from the
dataset, passed through :func:`SpineAlignmentLib.pipeline.analyze` with the exported weights, and
compared with the film's own labels measured by :func:`SpineAlignmentLib.pipeline.measure`
(:func:`SpineAlignmentLib.evaluation.compare.compare_results`: landmark errors, every parameter's error,
and for corner sets of T1..L5 the Cobb SMAPE / circular MAE and the levels named right). A run of the
level-sequence family gets the same folder with its own first-stage head and decoding block
(:func:`SpineAlignmentLib.training.level_family.family_metadata`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path

import numpy as np

from ..errors import SpineAlignmentError

__all__ = ["export_run", "evaluate_films", "write_card"]

log = logging.getLogger(__name__)


def _num(v):
    """JSON-safe float (None for NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def evaluate_films(model, items, protocol: str) -> dict:
    """Figures of ``model`` on labelled films (dataset items): what the card and the learning curve report.

    Returns:
        ``{"n_images", "median_error_px", "mean_error_px", ["median_error_mm"], "parameters": {id: {unit, n, mae}},
        ["smape_pct", "cmae_deg"], ["named_right_pct"], "seconds_per_image", "confidences", "errors"}``.
    """
    from ..evaluation.compare import compare_results
    from ..imaging.radiograph import read_radiograph
    from ..models.landmark_roi import landmark_span
    from ..pipeline import analyze, measure

    truths, preds, conf, err, tol = {}, {}, [], [], []
    t0 = time.time()
    for it in items:
        name = Path(it.image).name
        rg = read_radiograph(it.image, spacing=it.spacing_mm) if it.spacing_mm else read_radiograph(it.image)
        res = analyze(rg, protocol, model=model)
        truth = measure(it.landmarks, protocol, spacing_mm=it.spacing_mm, calibration=it.calibration if it.spacing_mm else None,
                        image_size=tuple(rg.shape), patient_orientation=rg.patient_orientation, image=name, source=name)
        preds[name], truths[name] = res.to_dict(), truth.to_dict()
        span = landmark_span(np.array(list(it.landmarks.values()), dtype=float))
        for lid, (x, y) in it.landmarks.items():
            p = res.landmarks.get(lid)
            if p is not None:
                err.append(math.hypot(p.x - x, p.y - y))
                conf.append(p.confidence if p.confidence is not None else 1.0)
                tol.append(CORRECT_FRACTION * span)
    seconds = (time.time() - t0) / max(len(items), 1)
    rep = compare_results(truths, preds, {}, failed=[])
    lm = rep.landmarks
    figs = {"n_images": len(items), "seconds_per_image": round(seconds, 3),
            "median_error_px": _num(np.median(err)) if err else None, "mean_error_px": _num(np.mean(err)) if err else None}
    if len(lm) and "error_mm_median" in lm and (lm["landmark"] == "ALL").any():
        mm = _num(lm[lm["landmark"] == "ALL"].iloc[0]["error_mm_median"])
        if mm is not None:
            figs["median_error_mm"] = mm
    params = {}
    for _, r in rep.parameters.iterrows():
        if int(r.get("n_pairs") or 0):
            params[str(r["parameter"])] = {"unit": str(r["unit"]), "n": int(r["n_pairs"]), "mae": _num(r["abs_error_mean"])}
    figs["parameters"] = params
    for _, r in (rep.cobb if rep.cobb is not None else []).iterrows():
        if str(r["set"]) == "AASCE":
            figs["smape_pct"], figs["cmae_deg"] = _num(r["smape_pct"]), _num(r["circular_mae"])
            figs["aasce_images_complete"] = int(r["n_images_complete"])
            figs["smape_pct_missing_as_failure"] = _num(r["smape_pct_missing_as_failure"])
    if (rep.levels or {}).get("n_images"):
        figs["named_right_pct"] = _num(rep.levels["all_named_right_pct"])
        figs["level_shifts"] = rep.levels["shift_counts"]
    figs["_confidence"], figs["_errors"], figs["_tolerance"] = conf, err, tol
    return figs


#: a landmark counts as found when its error is at most this fraction of the film's landmark span
#: (about half a vertebral body on a whole-spine film); the confidence is calibrated to that probability
CORRECT_FRACTION = 0.02
#: training films the confidence is calibrated on (never validation films)
CALIBRATION_FILMS = 60


def _calibration(figs: dict) -> dict:
    """Isotonic map raw heatmap mass -> P(landmark within CORRECT_FRACTION of the span), from training films."""
    from .export import fit_calibration

    raw, err, tol = (np.asarray(figs[k], dtype=float) for k in ("_confidence", "_errors", "_tolerance"))
    xs, ys = fit_calibration(raw, err <= tol)
    return {"raw": xs, "calibrated": ys,
            "definition": f"isotonic fit on {figs['n_images']} training films of P(landmark error <= "
                          f"{CORRECT_FRACTION:.0%} of the film's landmark span) given the heatmap probability mass "
                          "near the decoded point (training films: optimistic for new films)"}


def export_run(run: Path, out: Path, *, name: str | None = None, version: str = "1.0.0", data: Path | None = None,
               license_weights: str | None = None, license_data: str | None = None, fp16: bool = True,
               items_loader=None) -> dict:
    """Write the model folder ``out`` from a finished generic run; returns the metadata.

    Raises:
        SpineAlignmentError: not a finished generic run (resume it first), or ``out`` holds another model.
    """
    import monai
    import torch
    from .checkpoint import load_checkpoint

    from ..models.landmark_roi import landmark_parts
    from ..models.registry import load_model, validate_metadata
    from ..protocols import get_protocol
    from .export import _save_weights
    from .generic import GenericConfig, _load_items

    run, out = Path(run), Path(out)
    ck_path = run / "last.pt"
    if not ck_path.is_file() or not (run / "config.json").is_file():
        raise SpineAlignmentError(f"{run} is not a training run folder (no last.pt/config.json); pass --run runs/NAME.")
    ck = load_checkpoint(ck_path)
    cfg = GenericConfig(**ck["config"])
    if "stage" not in ck:
        raise SpineAlignmentError(f"{run} was not trained by the generic landmark trainer; "
                                  "use python -m SpineAlignmentLib.training.export for the coronal vertebra model.")
    done = (ck["stage"] == 2 and int(ck["epoch"]) + 1 >= cfg.refine_epochs) or (
        ck["stage"] == 1 and cfg.refine_epochs == 0 and int(ck["epoch"]) + 1 >= cfg.epochs)
    if not done:
        raise SpineAlignmentError(f"Run {run} stopped in stage {ck['stage']} at epoch {int(ck['epoch']) + 1}; "
                                  f"finish it with 'spine-align train ... --out {run} --resume' before exporting.")
    proto = get_protocol(cfg.protocol)
    ids = list(ck["landmark_ids"])
    name = name or out.name
    if data is not None:
        cfg.data = str(data)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "metadata.json").exists():
        old = json.loads((out / "metadata.json").read_text())
        if old.get("name") != name:
            raise SpineAlignmentError(f"{out} already holds model '{old.get('name')}'; choose another --out.")
    stage1 = ck["stage1"] if ck["stage"] == 2 else ck["model"]
    w1 = _save_weights(stage1, out / "model.pt", fp16)
    split = json.loads((run / "split.json").read_text())
    rows, cols = (int(v) for v in cfg.input_shape)
    md = {
        "schema": "spinealignment.model-metadata/1",
        "name": name,
        "version": version,
        "changelog": {version: f"Trained with 'spine-align train' on {Path(cfg.data).name} "
                               f"({len(split['train'])} training films); exported by 'spine-align export'."},
        "task": f"{proto.title} landmark detection ({len(ids)} landmarks)",
        "description": (f"Generic two-stage landmark model for protocol {proto.id}: a MONAI residual UNet behind a strided "
                        f"stem predicts one heatmap per landmark on the letterboxed film ({rows}x{cols}), decoded by a "
                        "windowed soft-argmax; a second network refines each landmark in its own ROI near the original "
                        "resolution (one heatmap per landmark part, DSNT)."),
        "protocol": proto.id,
        "authors": "trained by the user with SpineAlignment (spine-align train / export)",
        "license": {"weights": license_weights or "not stated (weights trained by the user on their own data)",
                    "training_data": license_data or "not stated (the user's own annotated films)"},
        "pytorch_version": torch.__version__.split("+")[0],
        "monai_version": monai.__version__,
        "network": {"class": "SpineAlignmentLib.models.network.SpineLandmarkNet",
                    "args": {"in_channels": 1, "out_channels": len(ids), **cfg.net}, "stride": 2,
                    "parameters": int(sum(v.numel() for v in stage1.values() if v.is_floating_point())),
                    "coarse_to_fine": "stage 1 on the whole film, stage 2 one ROI per landmark"},
        "weights": w1,
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "grayscale, bone bright (MONOCHROME2)", "num_channels": 1,
                                 "spatial_shape": [rows, cols], "dtype": "float32", "value_range": [0.0, 1.0],
                                 "intensity": {"method": "percentile-minmax", "low_percentile": 0.5, "high_percentile": 99.5},
                                 "resize": "letterbox-centred"}},
            "outputs": {"pred": {"type": "heatmap", "format": "logits", "num_channels": len(ids)}}},
        "landmarks": ids,
        "decoding": {"method": "local-soft-argmax", "window": 3, "confidence_radius": 2.0, "low_confidence": 0.3,
                     "flip_tta_default": False},
        "training": {
            "data": {"name": Path(cfg.data).name, "license": license_data or "not stated", "citation": "not stated",
                     "n_images": len(split["train"]) + len(split["val"])},
            "recipe": {k: v for k, v in ck["config"].items() if k not in ("data", "out")},
            "split": {"seed": cfg.seed, "n_train": len(split["train"]), "n_val": len(split["val"]),
                      "val_images": split["val"], "method": "val_list" if cfg.val_list else "by patient (patients.csv)"},
            "epochs_run": int(cfg.epochs) + (int(cfg.refine_epochs) if ck["stage"] == 2 else 0),
        },
        "validation": {"split": "the run's validation split", "n_images": max(len(split["val"]), 1),
                       "mean_error_px": float("nan"), "command": ""},
    }
    if cfg.family == "levels":  # the level-sequence family: same folder, its own first-stage head and decoding
        from .level_family import family_metadata

        family_metadata(md, ids)
    if proto.view == "lateral":
        from .generic import CANONICAL_FACING

        md["decoding"]["facing"] = {"normalised_to": CANONICAL_FACING, "method": "confidence"}
    if ck["stage"] == 2:
        parts, part_index, _ = landmark_parts(ids, proto.flip_pairs)
        w2 = _save_weights(ck["model"], out / "refine.pt", fp16)
        md["landmark_refinement"] = {
            "network": {"class": "SpineAlignmentLib.models.network.SpineLandmarkNet",
                        "args": {"in_channels": 1, "out_channels": len(parts), **cfg.refine_net}, "stride": 2,
                        "parameters": int(sum(v.numel() for v in ck["model"].values() if v.is_floating_point()))},
            "weights": w2, "roi": {"size": int(cfg.roi_size), "fraction": float(cfg.roi_fraction),
                                                  **({"extent": float(cfg.roi_extent)} if cfg.roi_extent else {})},
            "parts": parts, "part_index": [int(i) for i in part_index]}
    # Measure the validation split with the exported weights (end to end), then write the final metadata.
    val_names = set(split["val"])
    figs: dict = {}
    if val_names:
        md["validation"]["mean_error_px"] = 0.0  # replaced below; lets the folder load for the measurement
        (out / "metadata.json").write_text(json.dumps(md, indent=1))
        items = (items_loader or (lambda c: _load_items(c, None)))(cfg)
        train_names = set(split["train"])
        cal_items = [it for it in items if Path(it.image).name in train_names]
        random.Random(cfg.seed).shuffle(cal_items)
        cal = evaluate_films(load_model(name, folder=out), cal_items[:CALIBRATION_FILMS], proto.id)
        md["decoding"]["calibration"] = _calibration(cal)
        md["decoding"]["low_confidence"] = 0.5  # calibrated: below it a landmark is more likely wrong than right
        (out / "metadata.json").write_text(json.dumps(md, indent=1))
        model = load_model(name, folder=out)
        val_items = [it for it in items if Path(it.image).name in val_names]
        figs = evaluate_films(model, val_items, proto.id)
        for k in ("_confidence", "_errors", "_tolerance"):
            figs.pop(k)
    cmd = f"spine-align export --run {run.as_posix()} --out {out.as_posix()} --name {name} --version {version}"
    md["validation"] = {"split": f"the run's validation split ({'named in ' + Path(cfg.val_list).name if cfg.val_list else 'whole patients held out'})",
                        "n_images": max(len(val_names), 1), **{k: v for k, v in figs.items() if v is not None},
                        "command": cmd}
    if not val_names:
        md["validation"]["mean_error_px"] = float("nan")
        md["validation"]["note"] = "no validation films: nothing measured"
    md["validation"].setdefault("mean_error_px", float("nan"))
    validate_metadata(md, str(out / "metadata.json"))
    (out / "metadata.json").write_text(json.dumps(md, indent=1))
    write_card(md, out)
    return md


def write_card(md: dict, out: Path) -> Path:
    """Model card (README.md) from the metadata, so its figures never drift from it."""
    v, tr = md["validation"], md["training"]

    def f(x, nd=1):
        return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{nd}f}"

    lines = [
        f"# {md['name']} {md['version']}", "",
        f"{md['task']} for the `{md['protocol']}` protocol. {md['description']}", "",
        "Trained by its user with SpineAlignment; it is only as good as the films and labels it learnt from. "
        "Check its landmarks before using the values.", "",
        "```", f"spine-align analyze --protocol {md['protocol']} --model {md['name']} --out out/ IMAGE...", "```", "",
        "## Validation (measured by the export, end to end)", "",
        f"{v['n_images']} film(s) of {v['split']}:", "",
        "| figure | value |", "|---|---|",
        f"| median landmark error | {f(v.get('median_error_px'))} px"
        + (f" ({f(v['median_error_mm'], 2)} mm)" if v.get("median_error_mm") is not None else "") + " |",
        f"| mean landmark error | {f(v.get('mean_error_px'))} px |",
    ]
    if v.get("smape_pct") is not None:
        lines.append(f"| SMAPE of the AASCE triple | {f(v['smape_pct'], 2)} % |")
        lines.append(f"| circular MAE of the AASCE triple | {f(v.get('cmae_deg'), 2)}° |")
        lines.append(f"| films with all 68 corners trusted (AASCE triple computed) | {v.get('aasce_images_complete')} |")
    if v.get("named_right_pct") is not None:
        lines.append(f"| films with every vertebra named right | {f(v['named_right_pct'])} % |")
    lines.append(f"| seconds per film (analyze, this machine) | {f(v.get('seconds_per_image'), 2)} |")
    params = v.get("parameters") or {}
    if params:
        lines += ["", "| parameter | unit | n | MAE |", "|---|---|---|---|"]
        lines += [f"| {pid} | {p['unit']} | {p['n']} | {f(p['mae'], 2)} |" for pid, p in params.items()]
    lines += ["", "## Training", "",
              f"- Data: {tr['data']['name']} ({tr['split']['n_train']} training, {tr['split']['n_val']} validation films); "
              f"licence of the data: {md['license']['training_data']}; of the weights: {md['license']['weights']}.",
              f"- Epochs: {tr['recipe'].get('epochs')} (stage 1) + {tr['recipe'].get('refine_epochs')} (stage 2).",
              f"- Confidence: {md['decoding']['calibration']['definition']}; landmarks below "
              f"{md['decoding']['low_confidence']} are flagged." if "calibration" in md["decoding"] else "- Confidence: uncalibrated.",
              f"- Command: `{v['command']}`", ""]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
