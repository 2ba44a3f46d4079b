"""Export a training run as a registered model folder, with metrics measured end to end.

``python -m SpineAlignmentLib.training.export --run runs/NAME --data ../shared/datasets/aasce-train
--out Resources/Models/coronal-spine-landmarks``

Steps: take ``best.pt`` of the run, store its weights (float16 by default,
which halves the file; the metrics below are measured *with* the stored
weights), write ``metadata.json`` (schema-validated) and then measure the
validation split of the run through the public inference path
(:func:`SpineAlignmentLib.inference.predict_landmarks` on images read by
:func:`SpineAlignmentLib.imaging.read_radiograph`), with and without flip TTA,
and record those figures in the metadata. The folder is opened, written and finished by
:mod:`~SpineAlignmentLib.training.model_folder`, as every export's is.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import SpineAlignmentError
from ..evaluation.levels import level_shift
from .model_folder import changelog, finish_folder, open_folder, write_metadata
from .weights import save_weights

log = logging.getLogger(__name__)

DATA_CREDIT = {
    "name": "SpineWeb Dataset 16 (AASCE 2019 challenge, training split)",
    "license": "Open Data Commons PDDL 1.0 (public domain dedication), as reported by the dataset",
    "citation": ("Wu H, Bailey C, Rasoulinejad P, Li S. Automatic landmark estimation for adolescent idiopathic "
                 "scoliosis assessment using BoostNet. MICCAI 2017."),
}


#: a corner counts as "correct" for the confidence calibration within this % of its vertebra's width
CAL_TOLERANCE_PCT = 20.0

DESCRIPTION = {
    "vertebra": ("MONAI residual UNet behind a strided stem (input {rows}x{cols}, output at 1/2 resolution) predicting a "
                 "vertebra-centre heatmap, centre and corner offsets and four corner-type heatmaps; the 17 strongest "
                 "centres sorted top to bottom are T1..L5."),
    "landmark": ("Heatmap network (MONAI residual UNet behind a strided stem) predicting one H/2 heatmap per "
                 "corner; coordinates by soft-argmax, confidence by heatmap mass."),
}
COARSE_TO_FINE = {
    "vertebra": ("Coarse: each detected vertebra centre plus its regressed corner offsets. Fine: every coarse corner "
                 "is refined by a soft-argmax (sub-pixel) of its corner-type heatmap in a 5x5 output-pixel window "
                 "around the heatmap maximum found within 3 output pixels (6 input pixels) of the coarse corner. "
                 "Both stages come from one network pass; no second network was trained."),
    "landmark": ("Single trained stage. Coarse: the maximum of each H/2 heatmap; fine: soft-argmax in a small "
                 "window around it (sub-pixel). No second network or ROI re-crop was trained."),
}
VERTEBRA_CHANNELS = {"0": "vertebra centre heatmap", "1": "centre dx / 16 px", "2": "centre dy / 16 px",
                     "3": "TL dx / 16 px", "4": "TL dy / 16 px", "5": "TR dx / 16 px", "6": "TR dy / 16 px",
                     "7": "BL dx / 16 px", "8": "BL dy / 16 px", "9": "BR dx / 16 px", "10": "BR dy / 16 px",
                     "11": "TL corner heatmap", "12": "TR corner heatmap", "13": "BL corner heatmap",
                     "14": "BR corner heatmap", "15": "T1 centre anchor heatmap", "16": "L5 centre anchor heatmap"}
ANCHOR_DESCRIPTION = ("MONAI residual UNet behind a strided stem (input {rows}x{cols}, output at 1/2 resolution) predicting a "
                      "vertebra-centre heatmap, centre and corner offsets, four corner-type heatmaps and two anchor "
                      "heatmaps (T1 and L5 centres); the first and last vertebra are chosen with the anchors and the 15 "
                      "strongest centres between them complete T1..L5.")


def fit_calibration(raw: np.ndarray, correct: np.ndarray, n_bins: int = 20) -> tuple[list[float], list[float]]:
    """Monotone (isotonic, pool-adjacent-violators) map from raw score to P(correct), as knots for ``np.interp``."""
    order = np.argsort(raw, kind="stable")
    r, y = raw[order], correct[order].astype(float)
    bins = np.array_split(np.arange(len(r)), n_bins)
    xs = [float(r[b].mean()) for b in bins if len(b)]
    ys = [float(y[b].mean()) for b in bins if len(b)]
    ws = [len(b) for b in bins if len(b)]
    # pool adjacent violators
    blocks = [[x, v, w] for x, v, w in zip(xs, ys, ws)]
    i = 0
    while i < len(blocks) - 1:
        if blocks[i][1] > blocks[i + 1][1]:
            a, b = blocks[i], blocks[i + 1]
            w = a[2] + b[2]
            blocks[i] = [(a[0] * a[2] + b[0] * b[2]) / w, (a[1] * a[2] + b[1] * b[2]) / w, w]
            del blocks[i + 1]
            i = max(i - 1, 0)
        else:
            i += 1
    kx = [0.0] + [round(b[0], 4) for b in blocks] + [1.0]
    ky = [0.0] + [round(b[1], 4) for b in blocks] + [round(blocks[-1][1], 4)]
    # np.interp needs increasing x
    out_x, out_y = [], []
    for x, v in zip(kx, ky):
        if out_x and x <= out_x[-1]:
            continue
        out_x.append(x)
        out_y.append(v)
    return out_x, out_y


def error_analysis(collect: dict) -> str:
    """One sentence on where the landmark error comes from (per-image figures of the validation run)."""
    e, s = collect["image_mean_error_px"], collect["level_shift"]
    big = e > 50.0
    return (f"Per image: median mean landmark error {np.median(e):.1f} px; {int(big.sum())} of {len(e)} images have a "
            f"mean error above 50 px, {int((big & (s != 0)).sum())} of them with every vertebra named one or more "
            f"levels off; {int((s != 0).sum())} images in all are named off by a level (nearest reference centre).")


def evaluate_end_to_end(model, data_dir: Path, names: list[str], points: dict, refs: dict, *, flip_tta: bool,
                        collect: dict | None = None, refine: bool = True, progress: bool = False,
                        what: str = "validation films") -> dict:
    """Run the public inference path on the named images and compute the validation metrics.

    Only films on which every landmark is found are measured (a chain the model cuts short has no AASCE triple);
    the others are named in ``films_not_all_found``.

    ``collect`` (optional dict) receives per-corner ``conf``, ``error_pct_width``, per-image ``mean_conf``,
    ``image_mean_error_px``, ``level_shift``, and the ``names``, ``preds``, ``heights`` and ``ref_angles`` the
    metrics used. ``progress``: a bar over the films on stderr, ``measuring <what>``.
    """
    from tqdm import tqdm

    from ..imaging import read_radiograph
    from ..inference import predict_landmarks
    from .metrics import landmark_metrics

    preds, truths, heights, ref_angles, times, confs, done, short = [], [], [], [], [], [], [], []
    for n in tqdm(names, desc=f"measuring {what}", unit="film", disable=not progress, leave=False):
        rg = read_radiograph(data_dir / "images" / n)
        t0 = time.perf_counter()
        lms, _ = predict_landmarks(rg, model, flip_tta=flip_tta, refine=refine)
        times.append(time.perf_counter() - t0)
        if any(i not in lms for i in model.landmark_ids):
            short.append(n)
            continue
        done.append(n)
        preds.append(np.array([[lms[i].x, lms[i].y] for i in model.landmark_ids]))
        confs.append(np.array([lms[i].confidence for i in model.landmark_ids]))
        truths.append(points[n])
        heights.append(rg.shape[0])
        ref_angles.append(refs.get(n))
    m = landmark_metrics(preds, truths, heights, ref_angles)
    if collect is not None:
        from .metrics import vertebra_widths

        collect["conf"] = np.concatenate(confs)
        collect["error_pct_width"] = np.concatenate([
            100 * np.linalg.norm(p - t, axis=1) / np.repeat(vertebra_widths(t), 4) for p, t in zip(preds, truths)])
        collect["mean_conf"] = np.array([c.mean() for c in confs])
        collect["image_mean_error_px"] = np.array([np.linalg.norm(p - t, axis=1).mean() for p, t in zip(preds, truths)])
        collect["level_shift"] = np.array([level_shift(p, t) for p, t in zip(preds, truths)])
        collect.update(names=done, preds=preds, heights=heights, ref_angles=ref_angles)
    if not done:
        from ..errors import SpineAlignmentError

        raise SpineAlignmentError(f"The model finds every landmark on none of the {len(names)} {what}; train it longer "
                                  "before exporting it.")
    m["films_not_all_found"] = short
    m["median_seconds_per_image_inference_only"] = float(np.median(times))
    m["mean_confidence"] = float(np.mean(np.concatenate(confs)))
    return m


def _refinement_from_model(folder: Path, out: Path) -> dict:
    """The second stage of an exported model folder, unchanged: its weights file copied into ``out`` (checked
    against its SHA-256) and its metadata ``refinement`` entry (a new first stage with the shipped second stage)."""
    import shutil

    from ..models.registry import sha256_file

    entry = json.loads((Path(folder) / "metadata.json").read_text())["refinement"]
    src = Path(folder) / entry["weights"]["file"]
    if sha256_file(src) != entry["weights"]["sha256"]:
        raise SpineAlignmentError(f"{src}: does not match its SHA-256 in {folder}/metadata.json; restore the model folder.")
    if src.resolve() != (out / src.name).resolve():
        shutil.copyfile(src, out / src.name)
    return entry


def _roi_error_text(cfg: dict) -> str:
    """The simulated first-stage frame error of a ROI stage's training patches (refiner, identification)."""
    return (f"centre shift N(0, {cfg['shift_sd']}) vertebra widths per axis, width x exp(N(0, {cfg['scale_sd']})), "
            f"angle N(0, {cfg['angle_sd_deg']} deg), each clipped at 2.5 SD")


def _identification_entry(levels_run: Path, checkpoint: str, out: Path, fp16: bool) -> dict:
    """Store the identification weights as ``out/levels.pt``; the metadata ``identification`` entry."""
    from .checkpoint import load_checkpoint

    from ..models.levels import LEVEL_CLASSES

    ck = load_checkpoint(levels_run / checkpoint)
    cfg = ck["config"]
    rows = [json.loads(r) for r in (levels_run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    return {
        "network": {"class": "SpineAlignmentLib.models.levels.LevelClassifier",
                    "args": {"size": int(cfg["patch_size"]), **cfg["net"]}, "stride": 2 ** len(cfg["net"]["channels"]),
                    "parameters": int(sum(v.numel() for v in ck["model"].values()))},
        "weights": save_weights(ck["model"], out / "levels.pt", fp16),
        "roi": {"size": int(cfg["patch_size"]), "extent": float(cfg["extent"])},
        "classes": list(LEVEL_CLASSES),
        "decoding": {"anchor_weight": float(cfg["anchor_weight"]), "extra": int(cfg["extra"]),
                     "min_extra_score": float(cfg["min_extra_score"]),
                     "rule": ("up to `extra` more distinct centres scoring at least `min_extra_score` are candidates; "
                              "the first and last vertebra and the 15 strongest centres between them maximise "
                              "sum log(centre score) + anchor_weight * (log P(first) + log P(last))")},
        "training": {
            "run": levels_run.as_posix(), "checkpoint": f"{checkpoint} (epoch {int(ck['epoch']) + 1})", "epochs_run": len(rows),
            "recipe": {"epochs": cfg["epochs"], "patches_per_step": 5 * cfg["images_per_batch"], "optimizer": "AdamW",
                       "lr": cfg["lr"], "weight_decay": cfg["weight_decay"], "loss": "cross-entropy over the 5 classes",
                       "patches": ("per image one per class: C7 (C6 p=0.3), T1, an inner vertebra (T2 or L4 p=0.5), L5, "
                                   "S1 (S2 p=0.3); with p=0.7 a first-stage candidate of that class on the training image "
                                   "(matched to the reference), else the reference vertebra or, beyond T1 and L5, a frame "
                                   "extrapolated from the end vertebrae"),
                       "roi_error_simulated": _roi_error_text(cfg),
                       "augmentation": "left-right mirror p=0.5 and the refiner's intensity augmentation",
                       "split": "the first stage's validation films (same seed and fraction, or the same --val-list; checked against its metadata)"},
            "validation_last_epoch": {"patch_accuracy": last.get("val_patch_acc"),
                                      "images_named_right_first_stage": last.get("val_identity_ok"),
                                      "images_named_right_first_stage_without": last.get("val_base_identity_ok")},
        },
    }


def _refinement_entry(refiner_run: Path, checkpoint: str, out: Path, fp16: bool, iterations: int) -> dict:
    """Store the second-stage weights as ``out/refine.pt``; the metadata ``refinement`` entry."""
    from .checkpoint import load_checkpoint

    ck = load_checkpoint(refiner_run / checkpoint)
    cfg = ck["config"]
    weights = save_weights(ck["model"], out / "refine.pt", fp16)
    epochs_run = len((refiner_run / "metrics.jsonl").read_text().splitlines())
    return {
        "network": {"class": "SpineAlignmentLib.models.network.SpineLandmarkNet",
                    "args": {"in_channels": 1, "out_channels": 4, **cfg["net"]}, "stride": 2,
                    "parameters": int(sum(v.numel() for v in ck["model"].values()))},
        "weights": weights,
        "roi": {"size": int(cfg["patch_size"]), "extent": float(cfg["extent"])},
        "iterations": int(iterations),
        "training": {
            "run": refiner_run.as_posix(), "checkpoint": f"{checkpoint} (epoch {int(ck['epoch']) + 1})", "epochs_run": epochs_run,
            "recipe": {"epochs": cfg["epochs"], "patches_per_step": 17 * cfg["images_per_batch"], "optimizer": "AdamW",
                       "lr": cfg["lr"], "weight_decay": cfg["weight_decay"],
                       "loss": (f"{cfg['coord_weight']} * Wing(w=10, eps=2) on DSNT coordinates (patch px) + "
                                f"{cfg['js_weight']} * KL(Gaussian sigma={cfg['sigma']} heatmap px || softmax heatmap)"
                                + (f" + {cfg['tilt_weight']} * |mid-line angle error| (deg)" if cfg.get("tilt_weight") else "")),
                       "roi_error_simulated": _roi_error_text(cfg),
                       "augmentation": ("left-right mirror p=0.5 with TL<->TR and BL<->BR swap, gamma 0.7-1.5, contrast "
                                        "0.75-1.25, brightness +-0.1, 3x3 blur p=0.2, Gaussian noise SD 0-0.03"),
                       "split": "the first stage's validation films (same seed and fraction, or the same --val-list; checked against its metadata)"},
        },
    }


def _pass_selection(model, plain: dict, iterations: int, data_dir: Path, names: list[str], points: dict,
                    refs: dict, progress: bool = False) -> str:
    """Measure the alternatives to the exported number of refinement passes (the first stage alone and one
    pass more) on the same validation images, and say so: the pass count is chosen on this split."""
    first = evaluate_end_to_end(model, data_dir, names, points, refs, flip_tta=False, refine=False, progress=progress,
                                what="validation films, first stage alone")
    model.metadata["refinement"]["iterations"] = iterations + 1
    try:
        more = evaluate_end_to_end(model, data_dir, names, points, refs, flip_tta=False, progress=progress,
                                   what=f"validation films, {iterations + 1} refinement passes")
    finally:
        model.metadata["refinement"]["iterations"] = iterations

    def fig(m: dict) -> str:
        return (f"SMAPE {m['smape_pct']:.2f} %, circular MAE {m['cmae_deg']:.2f} deg, mid-line tilt MAE "
                f"{m['midline_tilt_mae_deg']:.2f} deg, mean error {m['mean_error_px']:.1f} px")

    def passes(k: int) -> str:
        return f"{k} pass{'es' if k > 1 else ''}"

    return (f"The number of passes was chosen on the validation split ({len(names)} images, measured by the export): "
            f"first stage alone {fig(first)}; {passes(iterations)} (exported) {fig(plain)}; "
            f"{passes(iterations + 1)} {fig(more)}.")


def export(run_dir: Path, data_dir: Path, out: Path, *, name: str, version: str, fp16: bool = True,
           low_confidence: float = 0.3, confidence_radius: float = 3.0, window: int = 3,
           checkpoint: str = "best.pt", auto_low_confidence: bool = True, refiner_run: Path | None = None,
           refiner_checkpoint: str = "last.pt", refine_iterations: int = 1, levels_run: Path | None = None,
           levels_checkpoint: str = "last.pt", change: str | None = None, levels_framings: int = 3,
           refiner_model: Path | None = None, progress: bool = False) -> dict:
    """Write ``out/model.pt`` (``out/refine.pt`` for a second stage, ``out/levels.pt`` for
    vertebra identification) and ``out/metadata.json``
    from ``run_dir/<checkpoint>``; returns the metadata. ``refiner_model``: take the second stage unchanged
    from this exported model folder instead of a ``refiner_run``.

    ``change`` is this version's changelog line; earlier entries of an existing
    ``out/metadata.json`` are kept. A vertebra-centres model also gets its naming figures
    (``validation.identification``, ``validation.end_vertebrae``) and its level confidence
    (the ``levels`` block, :func:`~SpineAlignmentLib.training.level_confidence.levels_block`, fitted on the
    training split with ``levels_framings`` re-framed copies of each image). ``progress``: bars over the films
    measured, on stderr.
    """
    import monai
    import torch
    from .checkpoint import load_checkpoint

    from ..models.landmarks import protocol_landmark_ids
    from ..models.registry import load_model
    from .dataset import load_samples
    from .metrics import triple_sensitivity

    run_dir, data_dir, out = Path(run_dir), Path(data_dir), Path(out)
    ck = load_checkpoint(run_dir / checkpoint)
    # best.pt stores the 1-based epoch it was taken at, last.pt the 0-based index of the last finished epoch.
    taken_epoch = int(ck["epoch"]) + (1 if "optimizer" in ck else 0)
    cfg = ck["config"]
    split = json.loads((run_dir / "split.json").read_text())
    old_md = open_folder(out, name)
    history = changelog(old_md, version, change,
                    "First release: trained from scratch on the AASCE 2019 training split (patient-held-out validation).")
    weights = save_weights(ck["model"], out / "model.pt", fp16)
    ids = list(ck.get("landmark_ids") or protocol_landmark_ids(cfg["protocol"]))
    rep = cfg.get("representation", "landmark")
    n_out = int(ck["model"]["head.bias"].shape[0])
    anchored = rep == "vertebra" and n_out > 15
    net_args = {"in_channels": 1, "out_channels": n_out, **cfg["net"]}
    rows, cols = (int(v) for v in cfg["input_shape"])
    n_params = int(sum(v.numel() for v in ck["model"].values()))
    epochs_run = len((run_dir / "metrics.jsonl").read_text().splitlines()) if (run_dir / "metrics.jsonl").exists() else ck["epoch"]
    cmd = (f"python -m SpineAlignmentLib.training.export --run {run_dir.as_posix()} --checkpoint {checkpoint} "
           + (f"--refiner {Path(refiner_run).as_posix()} --refiner-checkpoint {refiner_checkpoint} "
              f"--refine-iterations {refine_iterations} " if refiner_run is not None else "")
           + (f"--levels {Path(levels_run).as_posix()} --levels-checkpoint {levels_checkpoint} "
              if levels_run is not None else "")
           + f"--version {version} --data ../shared/datasets/aasce-train --out Resources/Models/{name}")
    md = {
        "schema": "spinealignment.model-metadata/1",
        "name": name,
        "version": version,
        "changelog": history,
        "task": "coronal spine vertebra-corner landmark detection (68 corners T1..L5)",
        "description": (ANCHOR_DESCRIPTION if anchored else DESCRIPTION[rep]).format(rows=rows, cols=cols),
        "protocol": cfg["protocol"],
        "authors": "SpineAlignment contributors",
        "copyright": "SpineAlignment contributors",
        "license": {"weights": "Apache-2.0 (trained weights; training data PDDL 1.0)", "training_data": DATA_CREDIT["license"]},
        "pytorch_version": torch.__version__.split("+")[0],
        "monai_version": monai.__version__,
        "network": {
            "class": "SpineAlignmentLib.models.network.SpineLandmarkNet",
            "args": net_args,
            "stride": 2,
            "parameters": n_params,
            "coarse_to_fine": COARSE_TO_FINE[rep],
        },
        "weights": weights,
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "grayscale, bone bright (MONOCHROME2)", "num_channels": 1,
                "spatial_shape": list(cfg["input_shape"]), "dtype": "float32", "value_range": [0.0, 1.0],
                "intensity": {"method": "percentile-minmax", "low_percentile": 0.5, "high_percentile": 99.5},
                "resize": "letterbox-centred",
                "notes": "aspect-preserving antialiased bilinear resize, centred, zero padding; mapped back per axis",
            }},
            "outputs": {"pred": {"type": "heatmap", "format": "logits", "num_channels": net_args["out_channels"],
                                 "spatial_shape": [cfg["input_shape"][0] // 2, cfg["input_shape"][1] // 2],
                                 "channel_def": ({k: v for k, v in VERTEBRA_CHANNELS.items() if int(k) < n_out}
                                                 if rep == "vertebra"
                                                 else {str(i): lid for i, lid in enumerate(ids)})}},
        },
        "landmarks": ids,
        "decoding": ({"method": "vertebra-centres", "window": 3, "refine_radius": 2, "low_confidence": low_confidence,
                      "flip_tta_default": False,
                      "confidence": ("sqrt(vertebra centre peak x corner-heatmap peak) (sigmoid outputs), mapped through the "
                                     "isotonic calibration table below")}
                     if rep == "vertebra" else
                     {"method": "local-soft-argmax", "window": window, "confidence_radius": confidence_radius,
                      "low_confidence": low_confidence, "flip_tta_default": False}),
        "training": {
            "data": {**DATA_CREDIT, "n_images": len(split["train"]) + len(split["val"])},
            "recipe": {
                "epochs": cfg["epochs"], "batch_size": cfg["batch_size"], "optimizer": "AdamW",
                "lr": cfg["lr"], "weight_decay": cfg["weight_decay"],
                "schedule": f"linear warm-up {cfg['warmup_epochs']} epochs, cosine to 1 % of peak",
                "loss": (("CenterNet focal loss on the vertebra-centre heatmap (Gaussian sigma 2 output px) + focal loss "
                          "on the 4 corner-type heatmaps (sigma 1.5) + smooth-L1 on centre/corner offsets over the 3x3 "
                          "pixels around each centre") if rep == "vertebra" else
                         (f"{cfg['coord_weight']} * Wing(w=10, eps=2) on DSNT coordinates (input px) + "
                          f"{cfg['js_weight']} * {cfg.get('heatmap_loss', 'js').upper()}(Gaussian sigma={cfg['sigma']} "
                          "heatmap px, softmax heatmap)")),
                "augmentation": ("rotation +-10 deg, scale 0.85-1.15 (+-6 % anisotropy), shift +-8 %/6 %, "
                                 "horizontal flip p=0.5 with TL<->TR and BL<->BR swap, gamma 0.6-1.6, intensity "
                                 "scale/shift, Gaussian smoothing, Gaussian noise (MONAI dictionary transforms)"
                                 + (f"; first, with p={cfg['neck']:g}, a synthetic neck above T1 (training/neck.py: "
                                    "cervical vertebrae without ribs built from the film's own T1, in soft tissue; top "
                                    "0.8-3 T1-T2 spacings above T1)" if cfg.get("neck") else "")
                                 + (f"; with p={cfg['reframe']:g}, a re-framing (top C4..T3, bottom L4..below the "
                                    "sacrum)" if cfg.get("reframe") else "")),
                **({"init_from": f"{cfg['init_from']} (fine-tuned from these weights)"} if cfg.get("init_from") else {}),
                "seed": cfg["seed"], "threads": cfg["threads"], "hardware": "2-core CPU, no GPU",
                "checkpoint": f"{checkpoint} (epoch {taken_epoch})",
            },
            "split": {"seed": split["seed"], "method": (f"the films named in {split['val_list']} (--val-list)" if split.get("val_list")
                                                        else "by patient (number before the view letter in the file name)"),
                      "n_train": len(split["train"]), "n_val": len(split["val"]),
                      "val_patients": split.get("val_patients", []), "val_images": split["val"]},
            "label_hygiene": ck.get("hygiene", {}),
            "epochs_run": int(epochs_run),
        },
        "validation": {"split": "patient-held-out validation split of the AASCE training data", "n_images": len(split["val"]),
                       "mean_error_px": -1.0, "smape_pct": -1.0, "cmae_deg": -1.0, "command": cmd},
    }
    if refiner_run is not None or refiner_model is not None:
        md["refinement"] = (_refinement_entry(Path(refiner_run), refiner_checkpoint, out, fp16, refine_iterations)
                            if refiner_run is not None else _refinement_from_model(Path(refiner_model), out))
        r = md["refinement"]
        md["description"] += (f" A second network refines each vertebra's four corners in a {r['roi']['size']}x"
                              f"{r['roi']['size']} ROI rotated to the vertebra (DSNT heatmaps).")
        md["network"]["coarse_to_fine"] = (
            f"Stage 1 (this network, whole image at {rows}x{cols}): vertebra centres, their regressed corner offsets, each "
            "corner then refined by a soft-argmax of its corner-type heatmap near the coarse corner; "
            + ("the first and last vertebra are chosen with the T1/L5 anchor maps and the 15 strongest centres "
               "between them complete T1..L5. "
               if anchored else "the 17 strongest centres sorted top to bottom are T1..L5. ")
            + "Stage 2 (the 'refinement' network): for each vertebra a square "
            f"ROI of {r['roi']['extent']} vertebra widths, centred on the stage-1 vertebra and rotated to its "
            f"mid-line, is sampled at {r['roi']['size']}x{r['roi']['size']} from the image resized so that the "
            f"median vertebra spans {r['roi']['size'] / r['roi']['extent']:.0f} px (about the original resolution); "
            "four corner heatmaps are decoded by DSNT and mapped back "
            f"({r['iterations']} pass{'es' if r['iterations'] > 1 else ''}).")
    if levels_run is not None:
        md["identification"] = _identification_entry(Path(levels_run), levels_checkpoint, out, fp16)
        r = md["identification"]
        md["description"] += (" A third network tells which detected vertebra is T1 and which L5 from a context patch "
                              f"of {r['roi']['extent']:g} vertebra widths around each candidate.")
        md["network"]["coarse_to_fine"] = md["network"]["coarse_to_fine"].replace(
            "the 17 strongest centres sorted top to bottom are T1..L5. ",
            f"up to {r['decoding']['extra']} candidates beyond 17 are classified by the 'identification' network "
            f"({r['roi']['size']}x{r['roi']['size']} patch of {r['roi']['extent']:g} vertebra widths, rotated to the "
            "candidate's mid-line; classes above T1, T1, inner, L5, below L5); the first and last vertebra are chosen "
            "with its T1 and L5 probabilities and the strongest centres between them complete T1..L5. ")
    write_metadata(md, out)

    model = load_model(name, folder=out)
    samples, _ = load_samples(data_dir)
    points = {s.name: s.points for s in samples}
    refs = {s.name: s.reference_angles for s in samples}
    val = [n for n in split["val"] if n in points]
    raw: dict = {}
    plain = evaluate_end_to_end(model, data_dir, val, points, refs, flip_tta=False, collect=raw, progress=progress)
    val = raw["names"]  # every figure below is measured on the films whose landmarks were all found
    if rep == "vertebra":
        # Raw heatmap peaks are not probabilities; calibrate them so that the pipeline's trust threshold
        # (a landmark below it is not used) means what it says.
        kx, ky = fit_calibration(raw["conf"], raw["error_pct_width"] <= CAL_TOLERANCE_PCT)
        md["decoding"]["calibration"] = {
            "raw": kx, "calibrated": ky,
            "definition": (f"isotonic fit on the {len(val)} validation images of P(corner error <= {CAL_TOLERANCE_PCT:g} % "
                           "of its vertebra's width) given sqrt(centre peak x corner peak)")}
        cal_mean = np.interp(raw["mean_conf"], kx, ky)
        plain["mean_confidence"] = float(np.mean(np.interp(raw["conf"], kx, ky)))
        md["validation"]["image_mean_confidence_percentiles"] = {
            "p5": float(np.percentile(cal_mean, 5)), "p50": float(np.percentile(cal_mean, 50))}
        if auto_low_confidence:
            # Warn below 80 % of the 5th percentile of the validation images' mean confidence.
            md["decoding"]["low_confidence"] = round(0.8 * float(np.percentile(cal_mean, 5)), 2)
            md["decoding"]["low_confidence_rule"] = "0.8 x 5th percentile of the validation images' mean calibrated confidence"
        write_metadata(md, out)
        model = load_model(name, folder=out)
    tta = evaluate_end_to_end(model, data_dir, val, points, refs, flip_tta=True, progress=progress,
                              what="validation films with flip TTA")
    md["validation"].update({k: plain[k] for k in ("n_images", "mean_error_px", "median_error_px", "mean_error_pct_width",
                                                   "smape_pct", "cmae_deg", "midline_tilt_mae_deg", "mean_confidence")})
    if all(r is not None for r in raw["ref_angles"]):
        md["validation"]["smape_sensitivity"] = triple_sensitivity(raw["preds"], raw["heights"], raw["ref_angles"])
    md["training"]["split"]["n_val_excluded"] = len(split["val"]) - len(val) - len(plain["films_not_all_found"])
    if plain["films_not_all_found"]:
        md["validation"]["films_not_all_found"] = plain["films_not_all_found"]
    md["validation"]["reference_angles"] = "labels/angles.csv of the dataset (the authors' AASCE triple)"
    md["validation"]["vs_triple_of_cleaned_labels"] = {"smape_pct": plain["smape_pct_vs_label_triple"],
                                                       "cmae_deg": plain["cmae_deg_vs_label_triple"]}
    md["validation"]["error_analysis"] = error_analysis(raw)
    if rep == "vertebra":
        from ..evaluation.levels import cobb_ends, end_vertebra_agreement, identification_figures
        from .level_confidence import levels_block

        truths = [points[n] for n in val]
        md["validation"]["identification"] = identification_figures(raw["preds"], truths)
        md["validation"]["end_vertebrae"] = end_vertebra_agreement(
            [cobb_ends(p, h) for p, h in zip(raw["preds"], raw["heights"])],
            [cobb_ends(t, h) for t, h in zip(truths, raw["heights"])])
        train_names = set(split["train"])
        md["levels"] = levels_block(model, [s for s in samples if s.name in train_names],
                                    [s for s in samples if s.name in set(val)], framings=levels_framings,
                                    command=cmd + f" --levels-framings {levels_framings}", progress=progress)
    md["validation"]["flip_tta"] = {k: tta[k] for k in ("mean_error_px", "mean_error_pct_width", "smape_pct", "cmae_deg",
                                                        "midline_tilt_mae_deg")}
    if "refinement" in md:
        md["refinement"]["training"]["selection"] = _pass_selection(model, plain, refine_iterations, data_dir, val, points,
                                                                    refs, progress)
    return finish_folder(md, out, old_md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="coronal-spine-landmarks")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--fp32", action="store_true", help="store float32 weights instead of float16")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in the run folder (best.pt or last.pt)")
    p.add_argument("--low-confidence", type=float, default=None,
                   help="mean confidence below which a warning is given (default: derived from the validation split)")
    p.add_argument("--refiner", default=None, metavar="RUN", help="second-stage run folder (spine-align train --stage refine)")
    p.add_argument("--refiner-checkpoint", default="last.pt")
    p.add_argument("--refiner-model", default=None, metavar="FOLDER",
                   help="take the second stage unchanged from this exported model folder (instead of --refiner)")
    p.add_argument("--refine-iterations", type=int, default=1)
    p.add_argument("--levels", default=None, metavar="RUN", help="identification run folder (spine-align train --stage levels)")
    p.add_argument("--levels-checkpoint", default="last.pt")
    p.add_argument("--change", default=None, help="changelog line for this version")
    p.add_argument("--levels-framings", type=int, default=3,
                   help="re-framed copies per image for the level-confidence fit and its measurement (default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr (no progress bar)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar over the films measured")
    a = p.parse_args(argv)
    from ..progress import shows_progress

    progress = shows_progress(a)
    import torch

    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("SpineAlignmentLib.training.hygiene").setLevel(logging.ERROR)
    from ..protocols import get_protocol

    run_protocol = json.loads((Path(a.run) / "config.json").read_text()).get("protocol", "coronal-spine")
    if get_protocol(run_protocol).model_kinds[0] == "segmentation":  # a segmentation run (e.g. the shoulder clavicles)
        from .export_segmentation import export_segmentation

        md = export_segmentation(Path(a.run), Path(a.data), Path(a.out), name=a.name, version=a.version,
                                 fp16=not a.fp32, checkpoint="last.pt" if a.checkpoint == "best.pt" else a.checkpoint,
                                 command="python -m SpineAlignmentLib.training.export " + " ".join(
                                     sys.argv[1:] if argv is None else argv), change=a.change, progress=progress)
        print(json.dumps({k: v for k, v in md["validation"].items() if k != "per_image"}, indent=1))
        return 0
    md = export(Path(a.run), Path(a.data), Path(a.out), name=a.name, version=a.version, fp16=not a.fp32,
                checkpoint=a.checkpoint, low_confidence=a.low_confidence if a.low_confidence is not None else 0.3,
                auto_low_confidence=a.low_confidence is None, refiner_run=Path(a.refiner) if a.refiner else None,
                refiner_checkpoint=a.refiner_checkpoint, refine_iterations=a.refine_iterations,
                levels_run=Path(a.levels) if a.levels else None, levels_checkpoint=a.levels_checkpoint, change=a.change,
                levels_framings=a.levels_framings, progress=progress,
                refiner_model=Path(a.refiner_model) if a.refiner_model else None)
    print(json.dumps(md["validation"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
