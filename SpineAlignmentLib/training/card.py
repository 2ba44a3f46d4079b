"""The model card (``README.md`` of a model folder), written from its ``metadata.json`` alone.

:func:`write_card` is the one card writer: every export (coronal vertebra network, own-data landmark model,
segmentation), the level-confidence refit and ``benchmark_inference.py --record`` call it, and it sits below all
of them. Own-data cards add :func:`learning_curve_card`, the project's measured answer to "how many films".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["write_card", "levels_card", "learning_curve_card", "plot_learning_curve", "LEARNING_CURVE"]

#: the level family's learning curve on AASCE (rows written by Testing/Python/learning_curve.py)
LEARNING_CURVE = Path(__file__).with_name("learning_curve.json")


def _design(row: dict) -> str:
    """The trainer design a learning-curve row was measured with (rows from before designs were recorded: the
    level family)."""
    return row.get("design", "level family")


def learning_curve_card(out: Path, curve: Path = LEARNING_CURVE) -> list[str]:
    """The "How many films?" section of an own-data model card: the learning curve this project measured
    (the level family on the AASCE coronal films, a table per training-set size), with its plot drawn into
    the model folder (``learning-curve.png``). Empty when the package holds no curve."""
    if not curve.is_file():
        return []
    rows = json.loads(curve.read_text())
    if not rows:
        return []

    designs = list(dict.fromkeys(_design(r) for r in rows))
    lines = ["## How many films? (measured by SpineAlignment, not on your data)", "",
             "The level-family trainer on the AASCE coronal films, N training films drawn as whole "
             f"patients, each measured end to end on the same {rows[0].get('n_images')} patient-held-out validation films "
             "(a seed is another draw of the films and of the augmentation; a row's design is the trainer's design "
             "when it was measured):", "",
             "| training films | seed | epochs (stage 1 + 2) | median landmark error | SMAPE (films computed) | "
             "all levels found and named right | design |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['n_train']} | {r.get('seed', 0)} | {r['epochs']} + {r['refine_epochs']} | "
              f"{_f(r.get('median_error_px'))} px | {_f(r.get('smape_pct'), 2)} % ({r.get('aasce_images_complete')}) | "
              f"{_f(r.get('named_right_of_all_pct'))} % | {designs.index(_design(r)) + 1} |"
              for r in rows]
    lines += [""] + [f"Design {i + 1}: {d}." for i, d in enumerate(designs)]
    plot_learning_curve(rows, out / "learning-curve.png")
    lines += ["", "![Learning curve](learning-curve.png)"]
    lines += ["", "A protocol with fewer, more distinct levels may need fewer films; correct the model's landmarks "
                  "in Slicer, export them for training and retrain.", ""]
    return lines


def _f(v, nd=1) -> str:
    """A figure with ``nd`` decimals, "–" where there is none (None, or not finite)."""
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def _trained(stage: dict, says) -> str:
    """``"; trained <what says() makes of the stage's training block>"``, or nothing when the metadata has none."""
    return f"; trained {says(stage['training'])}" if "training" in stage else ""


def levels_card(md: dict) -> list[str]:
    """The model card's "Vertebra levels" section, from the ``levels`` block (empty without one)."""
    from ..evaluation.levels import end_vertebrae_text, identification_text, warning_text

    lv = md.get("levels")
    if not lv:
        return []
    val = lv["validation"]

    def ident(m: dict) -> str:
        return identification_text(m) + (f"; {end_vertebrae_text(m['end_vertebrae'])}" if "end_vertebrae" in m else "")

    def warn(m: dict) -> str:
        return warning_text(m["warning"])

    part = val["partial"]
    return [
        "## Vertebra levels",
        "",
        "Measured on the validation images, which the level-confidence fit never saw "
        f"(`{lv.get('command', '')}`):",
        "",
        f"- As they are ({val['original']['n_images']} films): {ident(val['original'])}.",
        f"- Re-framed ({val['reframed']['framing']}; {val['reframed']['n_images']} films, which simulate films that "
        f"show more or less neck and pelvis than the training images, and cut T1 or L5 off in some): "
        f"{ident(val['reframed'])}.",
        *([f"- Re-framed keeping all 17 vertebrae ({val['reframed_complete']['framing']}; "
           f"{val['reframed_complete']['n_images']} films): {ident(val['reframed_complete'])}."]
          if "reframed_complete" in val else []),
        *([f"- Neck visible ({val['neck_visible']['framing']}; {val['neck_visible']['n_images']} films): "
           f"{ident(val['neck_visible'])}."] if "neck_visible" in val else []),
        "",
        f"Level confidence (`result.levels`): the probability that all 17 vertebrae are named right, from "
        f"{', '.join(lv['features'])} ({lv['method']}; fitted on {lv['fitted_on']}). Below {lv['warn_below']:.2f} "
        f"({lv['warn_rule']}) the result warns and names the more likely alternative (C7..L4 or T2..S1).",
        *([f"A chain whose weakest vertebra's centre score lies below {lv['vertebra_score_floor']:.2f} "
           f"({lv['vertebra_score_floor_rule']}) names more vertebrae than the film shows clearly: the result warns that "
           "its levels are unreliable and how many named vertebrae are weak (a film of only part of the spine)."]
          if "vertebra_score_floor" in lv else []),
        "",
        f"- Validation as it is: {warn(val['original'])}.",
        f"- Validation re-framed: {warn(val['reframed'])}.",
        *([f"- Validation re-framed keeping all 17 vertebrae: {warn(val['reframed_complete'])}."]
          if "reframed_complete" in val else []),
        *([f"- Neck visible: {warn(val['neck_visible'])}."] if "neck_visible" in val else []),
        *[f"- Partial films ({k}, {part[k]['n_images']} cut from the validation images): the warning fires on "
          f"{100.0 * part[k]['warning']['n_warned'] / max(part[k]['warning']['n_images'], 1):.0f} % of them."
          for k in part],
        "",
    ]


#: the film a card's usage example reads
_EXAMPLE_FILM = "film.dcm"


def write_card(md: dict, out: Path) -> Path:
    """The model card (``README.md`` of the model folder ``out``), from its metadata alone, for every kind of model.

    One writer for the coronal export (:mod:`~SpineAlignmentLib.training.export`), the own-data export
    (:mod:`~SpineAlignmentLib.training.export_generic`), the segmentation export
    (:mod:`~SpineAlignmentLib.training.export_segmentation`), the level-confidence refit and
    ``benchmark_inference.py --record``, so a card never drifts from its metadata. Every card has the same
    frame: title and task, how to run the model, each network's weights, what the kind measures, speed and
    memory (when benchmarked) and its limitations; what the kind measures is chosen by the decoding method the
    model declares, as inference chooses its decoder.
    """
    body, limits = _KINDS.get(md["decoding"]["method"], (_own_data_body, _own_data_limits))
    lines = _head(md) + body(md, Path(out)) + _speed(md)
    lines += ["## Limitations", ""] + [f"- {t}" for t in limits(md)]
    lines += ["- Research software, not a medical device. Check the landmarks before using a value.", ""]
    path = Path(out) / "README.md"
    path.write_text("\n".join(lines))
    return path


def _head(md: dict) -> list[str]:
    """Title, task and how to run the model (command line and Python), the same for every card."""
    task = md["task"][0].upper() + md["task"][1:]
    return [
        f"# {md['name']} {md['version']}", "",
        f"{task} for the `{md['protocol']}` protocol.", "",
        "```", f"spine-align analyze --protocol {md['protocol']} --model {md['name']} --out out/ IMAGE...", "```", "",
        "```python",
        "from SpineAlignmentLib.imaging import read_radiograph",
        "from SpineAlignmentLib.pipeline import analyze",
        f"result = analyze(read_radiograph(\"{_EXAMPLE_FILM}\"), \"{md['protocol']}\", model=\"{md['name']}\")",
        "```", "",
    ]


def _weights(block: dict) -> str:
    """``class, parameters; weights `file` (dtype, MB), SHA-256 `...` (checked on every load)`` of one network."""
    net, w = block["network"], block["weights"]
    return (f"`{net['class']}`, {net.get('parameters', 0):,} parameters; weights `{w['file']}` "
            f"({w.get('dtype', 'float32')}, {w.get('size_bytes', 0) / 1e6:.2f} MB), SHA-256 `{w.get('sha256', '')}` "
            "(checked on every load)")


def _speed(md: dict) -> list[str]:
    bench = md.get("benchmark") or {}
    return ["## Speed and memory", "", bench["summary"], ""] if bench.get("summary") else []


# -- the coronal vertebra network (decoding "vertebra-centres") ------------------------------------------------

def _vertebra_body(md: dict, out: Path) -> list[str]:
    v, tr = md["validation"], md["training"]
    hy = tr["label_hygiene"]
    rec = tr["recipe"]
    tta = v.get("flip_tta", {})
    sens = v.get("smape_sensitivity")
    return [
        "An AP (coronal) spine radiograph in, the four corners of T1..L5 (68 landmarks, AASCE order "
        "`T1_TL, T1_TR, T1_BL, T1_BR, ..., L5_BR`) out, each with a confidence in [0, 1]. The Cobb curves and the "
        "AASCE triple are computed from them by `SpineAlignmentLib.pipeline`; "
        "`SpineAlignmentLib.inference.predict_landmarks(radiograph, model)` gives the landmarks alone.",
        "",
        "## Network and decoding",
        "",
        md["description"],
        "",
        f"- First stage: {_weights(md)}.",
        "- Input: grayscale, bone bright; intensities scaled between the 0.5th and 99.5th percentiles to [0, 1]; "
        f"letterboxed (aspect kept, centred, zero padding) to {md['network_data_format']['inputs']['image']['spatial_shape'][0]}"
        f" x {md['network_data_format']['inputs']['image']['spatial_shape'][1]} (rows x columns); coordinates mapped "
        "back to original pixels per axis.",
        f"- Coarse to fine: {md['network'].get('coarse_to_fine', 'single stage')}",
        *([f"- Second stage (4 output heatmaps): {_weights(md['refinement'])}"
           + _trained(md["refinement"], lambda t: (
               f"{t['epochs_run']} epochs on ROIs cut around the reference vertebrae with a simulated first-stage "
               f"error ({t['recipe']['roi_error_simulated']}); augmentation: {t['recipe']['augmentation']}"))
           + ". `predict_landmarks(..., refine=False)` returns the first stage alone. "
           + md["refinement"].get("training", {}).get("selection", "")]
          if "refinement" in md else []),
        *([f"- Vertebra identification (classes {', '.join(md['identification']['classes'])}): "
           f"{_weights(md['identification'])}"
           + _trained(md["identification"], lambda t: (
               f"{t['epochs_run']} epochs on context patches ({t['recipe']['patches']}) with a simulated first-stage "
               f"error ({t['recipe']['roi_error_simulated']})"))
           + ". Decoding: "
           f"{md['identification']['decoding']['rule']} (anchor_weight {md['identification']['decoding']['anchor_weight']:g}, "
           f"extra {md['identification']['decoding']['extra']}, min_extra_score "
           f"{md['identification']['decoding']['min_extra_score']:g}). "
           + md["identification"].get("training", {}).get("selection", "")]
          if "identification" in md else []),
        f"- Confidence: {md['decoding'].get('confidence', 'probability mass of each heatmap near its peak')}. A mean "
        f"confidence below {md['decoding']['low_confidence']} gives a low-confidence warning (lateral, chest, empty or "
        "noise images); vertebrae out of order, broken corner order and irregular size/spacing give warnings too.",
        "- Optional flip test-time augmentation (`flip_tta=True`): the mirrored image is predicted too, its "
        "left/right corners swapped back (TL<->TR, BL<->BR), and the two averaged.",
        "",
        "## Training data",
        "",
        f"{tr['data']['name']}. License: {tr['data']['license']}. Please cite: {tr['data']['citation']} "
        "The AASCE challenge: \"Accurate Automated Spinal Curvature Estimation\", MICCAI 2019.",
        "",
        f"- {tr['data']['n_images']} images used after label hygiene; split by patient (the number before the view "
        f"letter in the file name), seed {tr['split']['seed']}: {tr['split']['n_train']} training, "
        f"{tr['split']['n_val']} validation images ({len(tr['split'].get('val_patients', []))} patients). "
        "The validation image names are listed in `metadata.json`.",
        f"- Label hygiene (explicit geometric checks, every finding logged with its file name): "
        f"{hy.get('images_checked', 'n/a')} images checked, {hy.get('images_fixed', 'n/a')} fixed (corners re-sorted "
        f"or vertebrae re-ordered), {hy.get('images_excluded', 'n/a')} excluded; findings by check: "
        f"{', '.join(f'{k} {n}' for k, n in hy.get('findings_by_check', {}).items())}.",
        f"- Recipe: trained from scratch on a 2-core CPU (no GPU, no pretrained weights), {tr['epochs_run']} epochs "
        f"(batch {rec.get('batch_size')}, {rec.get('optimizer')}, lr {rec.get('lr')}, {rec.get('schedule')}); "
        f"loss: {rec.get('loss')}; augmentation: {rec.get('augmentation')}. Weights taken from {rec.get('checkpoint')}.",
        "",
        "## Measured on the patient-held-out validation split",
        "",
        f"{v['n_images']} images, predicted end to end through `predict_landmarks` on the original JPEGs "
        "(reference angles: the dataset's `angles.csv`).",
        "",
        "| | mean landmark error (px) | median (px) | % of vertebra width | SMAPE of the AASCE triple (%) | "
        "circular MAE (deg) | mid-line tilt MAE (deg) |",
        "|---|---|---|---|---|---|---|",
        f"| plain | {_f(v['mean_error_px'])} | {_f(v.get('median_error_px'))} | {_f(v.get('mean_error_pct_width'))} | "
        f"{_f(v['smape_pct'], 2)} | {_f(v['cmae_deg'], 2)} | {_f(v.get('midline_tilt_mae_deg'), 2)} |",
        f"| flip TTA | {_f(tta.get('mean_error_px'))} | | {_f(tta.get('mean_error_pct_width'))} | "
        f"{_f(tta.get('smape_pct'), 2)} | {_f(tta.get('cmae_deg'), 2)} | {_f(tta.get('midline_tilt_mae_deg'), 2)} |",
        "",
        "Mid-line tilt MAE: mean absolute error of each vertebra's mid-line angle (left-edge to right-edge midpoint), "
        "the only input of the triple."
        + ("" if not sens else
           f" How much of the SMAPE is chance: turning every predicted vertebra by N(0, {sens['tilt_sd_deg']:g} deg) "
           f"gives {_f(sens['smape_pct_mean'], 2)} +- {_f(sens['smape_pct_sd'], 2)} % (range "
           f"{_f(sens['smape_pct_min'], 2)}-{_f(sens['smape_pct_max'], 2)} %, {sens['repeats']} repeats): near-tied end "
           "vertebrae flip, so SMAPE differences of a few tenths between models are not resolved by these images."),
        "",
        f"Command: `{v['command']}`. Targets of the project were SMAPE <= 8 % and circular MAE <= 3 deg; "
        "these figures are what was measured, reported as they are. "
        f"{v.get('error_analysis', '')} The confidence calibration and the warning threshold were fitted on "
        "this same split; they change no landmark or angle.",
        "",
        *levels_card(md),
    ]


def _vertebra_limits(md: dict) -> list[str]:
    lv = md.get("levels")
    return [
        "Trained on one public dataset (AASCE 2019 training split: adolescent scoliosis, one centre); other "
        "populations, devices, adults with implants or severe rotation are untested.",
        ("Vertebra identity: the identification network chooses the first (T1) and last (L5) vertebra among the "
         "first stage's candidates; a vertebra the first stage misses, or a wrong T1/L5 call, still shifts the names "
         "by one level (see the error analysis above)."
         if "identification" in md else
         "Vertebra identity comes from order and two anchors: the T1/L5 anchor maps choose the first and last "
         "vertebra, the strongest centres between them the rest. A missed vertebra, or an anchor on C7 or S1, still shifts "
         "the names by one level; the AASCE triple is little affected, named levels are."
         if "15" in md["network_data_format"]["outputs"]["pred"].get("channel_def", {}) else
         "Vertebra identity comes from order: the 17 strongest centres sorted top to bottom are T1..L5. A missed or "
         "extra vertebra (C7, S1) shifts the names by one; the AASCE triple is little affected, named levels are."),
        *([f"Vertebra levels: on the validation images as they are, "
           f"{lv['validation']['original']['n_images'] - lv['validation']['original']['all_named_right']} "
           f"of {lv['validation']['original']['n_images']} chains are not all named right, and on re-framed "
           f"films {100 - lv['validation']['reframed']['all_named_right_pct']:.0f} % are not; the level "
           "warning catches the share measured above, not all of them (see Vertebra levels)."] if lv else []),
        "No pixel spacing exists for the training images; distances are in pixels.",
    ]


# -- segmentation models (decoding "mask-keypoints") ------------------------------------------------------------

def _segmentation_body(md: dict, out: Path) -> list[str]:
    v = md.get("validation", {})
    tr = md["training"]
    lines = [
        "## Network", "", md["description"], "",
        f"- {_weights(md)}.", "",
        "## Training data and terms", "",
        f"{tr['data']['name']}; {tr['data']['n_images']} films. {tr['data']['license']}", "",
        f"Cite: {tr['data']['citation']}", "",
        f"Split by image (seed {tr['split']['seed']}): {tr['split']['n_train']} training, {tr['split']['n_val']} "
        f"validation, {tr['split']['n_test']} test films (lists in metadata.json). {tr['recipe']['selection'][:1].upper()}{tr['recipe']['selection'][1:]}; "
        f"{tr['epochs_run']} epochs, about {tr.get('train_time_s', 0) / 60:.0f} min on a 2-core CPU"
        + (" in " + " then ".join(f"{r['epochs_run']} epochs at peak lr {r['lr']:g}" for r in tr["lineage"])
           + " (each run a warm restart from the previous one's last weights, `--init-from`)"
           if len(tr.get("lineage", [])) > 1 else "") + ".", "",
    ]
    if v:
        lines += ["## Measured accuracy", "",
                  "Films analysed end to end through `pipeline.analyze` with the stored weights; masks compared on "
                  "the films' own 1024-px grid; keypoints and parameters compared with those of the reference masks "
                  "(same rule, 0.35 mm per pixel, Patient Orientation L,F).", "",
                  *_segmentation_table(md), "",
                  f"Produced by: `{v.get('command', '')}`", ""]
    return lines


def _segmentation_table(md: dict) -> list[str]:
    v = md["validation"]
    cols = [("validation", v["metrics"]), ("test", v["test"]["metrics"]), ("validation, flip TTA", v["flip_tta"]["metrics"])]
    lines = ["| | " + " | ".join(f"{c} (n={m['n_images']})" for c, m in cols) + " |",
             "|---|" + "---|" * len(cols)]

    def row(label, key, nd=3):
        lines.append(f"| {label} | " + " | ".join(_f(m.get(key), nd) for _, m in cols) + " |")

    for s in md["segments"]:
        row(f"IoU {s['name']} (mean)", f"iou_{s['id']}_mean")
        row(f"IoU {s['name']} (min)", f"iou_{s['id']}_min")
        row(f"Dice {s['name']} (mean)", f"dice_{s['id']}_mean")
    row("keypoint error, mean (px at 1024)", "kp_err_px_mean", 1)
    row("keypoint error, median (px)", "kp_err_px_median", 1)
    row("keypoint error, 95th percentile (px)", "kp_err_px_p95", 1)
    row("keypoint error, mean (mm)", "kp_err_mm_mean", 2)
    row("CA mean absolute error (deg)", "CA_mae", 2)
    row("CA largest absolute error (deg)", "CA_max_abs_err", 2)
    row("CTAD mean absolute error (deg)", "CTAD_mae", 2)
    row("CTAD largest absolute error (deg)", "CTAD_max_abs_err", 2)
    row("RSH_bony mean absolute error (mm)", "RSH_bony_mae", 2)
    row("RSH_bony largest absolute error (mm)", "RSH_bony_max_abs_err", 2)
    row("films with a low-confidence warning", "n_low_confidence", 0)
    return lines


def _segmentation_limits(md: dict) -> list[str]:
    nd = md.get("not_detected")
    return [
        f"Trained on {md['training']['split']['n_train']} films of {md['training']['data']['name']}: other "
        "detectors, AP whole-spine films with the shoulders at the top, children and strongly rotated patients are "
        "outside what it has seen.",
        "Sides: it names the clavicles as the patient's left and right on films displayed with the patient's left on the "
        "image right; with Patient Orientation the film is mirrored first when needed. Without Patient Orientation the "
        "sides are image sides and the result says so.",
        "Keypoints follow the mask rule of docs/definitions.md §4.1 (top point, end caps of the principal axis); they are "
        "as good as the mask ends, which are the least certain part of a clavicle mask.",
        *([f"Not detected ({', '.join(nd['landmarks'])}): {nd['reason']}"] if nd else []),
    ]


# -- own-data landmark models (spine-align train / export: per-landmark heatmaps or the level family) ----------

def _own_data_body(md: dict, out: Path) -> list[str]:
    v, tr = md["validation"], md["training"]
    lines = [
        md["description"], "",
        f"- First stage: {_weights(md)}.",
        *([f"- Second stage, one ROI per level ("
           f"{'turned along the spine' if md['landmark_refinement']['roi'].get('rotate') else 'upright'}): "
           f"{_weights(md['landmark_refinement'])}."] if "landmark_refinement" in md else []),
        "",
        "## Validation (measured by the export, end to end)", "",
        f"{v['n_images']} film(s) of {v['split']}:", "",
        "| figure | value |", "|---|---|",
        f"| median landmark error | {_f(v.get('median_error_px'))} px"
        + (f" ({_f(v['median_error_mm'], 2)} mm)" if v.get("median_error_mm") is not None else "") + " |",
        f"| mean landmark error | {_f(v.get('mean_error_px'))} px |",
    ]
    if v.get("smape_pct") is not None:
        lines.append(f"| SMAPE of the AASCE triple | {_f(v['smape_pct'], 2)} % |")
        lines.append(f"| circular MAE of the AASCE triple | {_f(v.get('cmae_deg'), 2)}° |")
        lines.append(f"| films with all 68 corners trusted (AASCE triple computed) | {v.get('aasce_images_complete')} |")
    if v.get("named_right_pct") is not None:
        found = sum((v.get("level_shifts") or {}).values())
        lines.append(f"| films with every vertebra named right | {v.get('named_right_films')} of {v['n_images']} "
                     f"({_f(v.get('named_right_of_all_pct'))} %); of the {found} with every vertebra found: "
                     f"{_f(v['named_right_pct'])} % |")
    lines.append(f"| seconds per film (analyze, this machine) | {_f(v.get('seconds_per_image'), 2)} |")
    params = v.get("parameters") or {}
    if params:
        lines += ["", "| parameter | unit | n | MAE |", "|---|---|---|---|"]
        lines += [f"| {pid} | {p['unit']} | {p['n']} | {_f(p['mae'], 2)} |" for pid, p in params.items()]
    lines += ["", "## Training", "",
              f"- Data: {tr['data']['name']} ({tr['split']['n_train']} training, {tr['split']['n_val']} validation films); "
              f"licence of the data: {md['license']['training_data']}; of the weights: {md['license']['weights']}.",
              f"- Epochs: {tr['recipe'].get('epochs')} (stage 1) + {tr['recipe'].get('refine_epochs')} (stage 2).",
              *_family_decoding(md["decoding"]),
              f"- Confidence: {md['decoding']['calibration']['definition']}; landmarks below "
              f"{md['decoding']['low_confidence']} are flagged." if "calibration" in md["decoding"] else "- Confidence: uncalibrated.",
              f"- Command: `{v['command']}`", ""]
    return lines + learning_curve_card(out)


def _family_decoding(dec: dict) -> list[str]:
    """The level family's decoding, as its run chose it on its training films (nothing for other models)."""
    if dec.get("method") != "level-family" or "chosen_on" not in dec:
        return []
    anchors = dec.get("anchors") or {}
    naming = {"positions": "the regressed level positions corrected by the anchor",
              "geometry": "counting the detected vertebrae from the anchor"}.get(dec.get("anchor_naming"), "")
    named = ("from the regressed level positions (no anchor)." if not (anchors and naming) else
             "anchored by " + ", ".join(f"{k} (next to {a['level']})" for k, a in anchors.items()) + f", then by {naming}.")
    return [f"- Decoding (chosen on the training films): level-centre threshold {dec['min_score']:g}, part search "
            f"{dec.get('part_window', 0)} output pixels, part floor {dec.get('part_floor', 0.0):g}; a film with fewer "
            f"than {dec.get('min_levels', 0)} levels found (the fewest on a training film) is flagged as unreliably "
            f"named; level names {named}"]


def _own_data_limits(md: dict) -> list[str]:
    return [f"Trained by its user with SpineAlignment on {md['training']['data']['name']} "
            f"({md['training']['split']['n_train']} training films): it is only as good as the films and labels it "
            "learnt from, and films unlike them (another view, device, population, implants) are untested."]


#: the card's body and limitations of each kind of model, by the decoding method its metadata declares
#: (anything else: an own-data landmark model of ``spine-align train``)
_KINDS = {"vertebra-centres": (_vertebra_body, _vertebra_limits),
          "mask-keypoints": (_segmentation_body, _segmentation_limits)}


def plot_learning_curve(rows: list[dict], path: Path) -> None:
    """The learning curve's plot (PNG): median error, SMAPE and levels named right against the training films
    (log scale; the mean over seeds, each seed's value as a grey cross)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.4), dpi=110)
    FigureCanvasAgg(fig)
    designs = list(dict.fromkeys(_design(r) for r in rows))
    ticks = sorted({round(r["n_train"]) for r in rows})
    for i, (key, label) in enumerate((("median_error_px", "median landmark error (px)"), ("smape_pct", "SMAPE, AASCE triple (%)"),
                                      ("named_right_of_all_pct", "all 17 found and named right (%)"))):
        ax = fig.add_subplot(1, 3, i + 1)
        for di, design in enumerate(designs):  # one line per design the rows were measured with
            drows = [r for r in rows if _design(r) == design]
            sizes = list(dict.fromkeys(r["size"] for r in drows))
            by = {sz: [r for r in drows if r["size"] == sz] for sz in sizes}
            n = [sum(r["n_train"] for r in by[sz]) / len(by[sz]) for sz in sizes]
            vals = [[r.get(key) for r in by[sz] if r.get(key) is not None] for sz in sizes]
            ax.plot(n, [sum(v) / len(v) if v else float("nan") for v in vals], ("o-", "s-", "^-")[di % 3],
                    markersize=5, label=f"design {di + 1}")
            for x, v in zip(n, vals):
                if len(v) > 1:  # each seed of a seeded size
                    ax.plot([x] * len(v), v, "x", color="grey")
        if len(designs) > 1 and i == 0:
            ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(x) for x in ticks], fontsize=7)
        ax.set_xlabel("training films")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
