"""Export a training run as a registered model folder, with metrics measured end to end.

``python -m SpineAlignmentLib.training.export --run runs/NAME --data ../shared/datasets/aasce-train
--out Resources/Models/coronal-spine-landmarks``

Steps: take ``best.pt`` of the run, store its weights (float16 by default,
which halves the file; the metrics below are measured *with* the stored
weights), write ``metadata.json`` (schema-validated) and then measure the
validation split of the run through the public inference path
(:func:`SpineAlignmentLib.inference.predict_landmarks` on images read by
:func:`SpineAlignmentLib.imaging.read_radiograph`), with and without flip TTA,
and record those figures in the metadata.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DATA_CREDIT = {
    "name": "SpineWeb Dataset 16 (AASCE 2019 challenge, training split)",
    "license": "Open Data Commons PDDL 1.0 (public domain dedication), as reported by the dataset",
    "citation": ("Wu H, Bailey C, Rasoulinejad P, Li S. Automatic landmark estimation for adolescent idiopathic "
                 "scoliosis assessment using BoostNet. MICCAI 2017."),
}


DESCRIPTION = {
    "vertebra": ("MONAI residual UNet behind a strided stem (input 512x256, output at 1/2 resolution) predicting a "
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
                     "14": "BR corner heatmap"}


def evaluate_end_to_end(model, data_dir: Path, names: list[str], points: dict, refs: dict, *, flip_tta: bool) -> dict:
    """Run the public inference path on the named images and compute the validation metrics."""
    from ..imaging import read_radiograph
    from ..inference import predict_landmarks
    from .metrics import landmark_metrics

    preds, truths, heights, ref_angles, times, confs = [], [], [], [], [], []
    for n in names:
        rg = read_radiograph(data_dir / "images" / n)
        t0 = time.perf_counter()
        lms, _ = predict_landmarks(rg, model, flip_tta=flip_tta)
        times.append(time.perf_counter() - t0)
        preds.append(np.array([[lms[i].x, lms[i].y] for i in model.landmark_ids]))
        confs.append(np.array([lms[i].confidence for i in model.landmark_ids]))
        truths.append(points[n])
        heights.append(rg.shape[0])
        ref_angles.append(refs.get(n))
    m = landmark_metrics(preds, truths, heights, ref_angles)
    m["median_seconds_per_image_inference_only"] = float(np.median(times))
    m["mean_confidence"] = float(np.mean(np.concatenate(confs)))
    return m


def export(run_dir: Path, data_dir: Path, out: Path, *, name: str, version: str, fp16: bool = True,
           low_confidence: float = 0.3, confidence_radius: float = 3.0, window: int = 3,
           checkpoint: str = "best.pt") -> dict:
    """Write ``out/model.pt`` and ``out/metadata.json`` from ``run_dir/<checkpoint>``; returns the metadata."""
    import monai
    import torch

    from ..models.landmarks import protocol_landmark_ids
    from ..models.registry import load_model, sha256_file, validate_metadata
    from .dataset import load_samples

    run_dir, data_dir, out = Path(run_dir), Path(data_dir), Path(out)
    # Our own run folder: the checkpoint also holds the config, split and RNG state (not only tensors).
    ck = torch.load(run_dir / checkpoint, map_location="cpu", weights_only=False)
    # best.pt stores the 1-based epoch it was taken at, last.pt the 0-based index of the last finished epoch.
    taken_epoch = int(ck["epoch"]) + (1 if "optimizer" in ck else 0)
    cfg = ck["config"]
    split = json.loads((run_dir / "split.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in ck["model"].items()}
    wpath = out / "model.pt"
    torch.save(state, wpath)
    ids = list(ck.get("landmark_ids") or protocol_landmark_ids(cfg["protocol"]))
    rep = cfg.get("representation", "landmark")
    from ..models.vertebra import N_CHANNELS

    net_args = {"in_channels": 1, "out_channels": N_CHANNELS if rep == "vertebra" else len(ids), **cfg["net"]}
    n_params = int(sum(v.numel() for v in ck["model"].values()))
    epochs_run = len((run_dir / "metrics.jsonl").read_text().splitlines()) if (run_dir / "metrics.jsonl").exists() else ck["epoch"]
    cmd = (f"python -m SpineAlignmentLib.training.export --run {run_dir.as_posix()} --checkpoint {checkpoint} "
           f"--data ../shared/datasets/aasce-train --out Resources/Models/{name}")
    md = {
        "schema": "spinealignment.model-metadata/1",
        "name": name,
        "version": version,
        "changelog": {version: "First release: trained from scratch on the AASCE 2019 training split (patient-held-out validation)."},
        "task": "coronal spine vertebra-corner landmark detection (68 corners T1..L5)",
        "description": DESCRIPTION[rep],
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
        "weights": {"file": wpath.name, "sha256": sha256_file(wpath), "dtype": "float16" if fp16 else "float32",
                    "size_bytes": wpath.stat().st_size},
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
                                 "channel_def": (VERTEBRA_CHANNELS if rep == "vertebra"
                                                 else {str(i): lid for i, lid in enumerate(ids)})}},
        },
        "landmarks": ids,
        "decoding": ({"method": "vertebra-centres", "window": 3, "refine_radius": 2, "low_confidence": low_confidence,
                      "flip_tta_default": False,
                      "confidence": "sqrt(vertebra centre peak x corner-heatmap peak), both sigmoid probabilities"}
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
                                 "scale/shift, Gaussian smoothing, Gaussian noise (MONAI dictionary transforms)"),
                "seed": cfg["seed"], "threads": cfg["threads"], "hardware": "2-core CPU, no GPU",
                "checkpoint": f"{checkpoint} (epoch {taken_epoch})",
            },
            "split": {"seed": split["seed"], "method": "by patient (number before the view letter in the file name)",
                      "n_train": len(split["train"]), "n_val": len(split["val"]),
                      "val_patients": split.get("val_patients", []), "val_images": split["val"]},
            "label_hygiene": ck.get("hygiene", {}),
            "epochs_run": int(epochs_run),
        },
        "validation": {"split": "patient-held-out validation split of the AASCE training data", "n_images": len(split["val"]),
                       "mean_error_px": -1.0, "smape_pct": -1.0, "cmae_deg": -1.0, "command": cmd},
    }
    validate_metadata(md, "(export)")
    (out / "metadata.json").write_text(json.dumps(md, indent=1))

    model = load_model(name, folder=out)
    samples, _ = load_samples(data_dir)
    points = {s.name: s.points for s in samples}
    refs = {s.name: s.reference_angles for s in samples}
    val = [n for n in split["val"] if n in points]
    plain = evaluate_end_to_end(model, data_dir, val, points, refs, flip_tta=False)
    tta = evaluate_end_to_end(model, data_dir, val, points, refs, flip_tta=True)
    md["validation"].update({k: plain[k] for k in ("n_images", "mean_error_px", "median_error_px", "mean_error_pct_width",
                                                   "smape_pct", "cmae_deg", "mean_confidence")})
    md["training"]["split"]["n_val_excluded"] = len(split["val"]) - len(val)
    md["validation"]["reference_angles"] = "labels/angles.csv of the dataset (the authors' AASCE triple)"
    md["validation"]["vs_triple_of_cleaned_labels"] = {"smape_pct": plain["smape_pct_vs_label_triple"],
                                                       "cmae_deg": plain["cmae_deg_vs_label_triple"]}
    md["validation"]["flip_tta"] = {k: tta[k] for k in ("mean_error_px", "mean_error_pct_width", "smape_pct", "cmae_deg")}
    validate_metadata(md, "(export)")
    (out / "metadata.json").write_text(json.dumps(md, indent=1))
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="coronal-spine-landmarks")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--fp32", action="store_true", help="store float32 weights instead of float16")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in the run folder (best.pt or last.pt)")
    p.add_argument("--low-confidence", type=float, default=0.3, help="mean confidence below which a warning is given")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger("SpineAlignmentLib.training.hygiene").setLevel(logging.ERROR)
    md = export(Path(a.run), Path(a.data), Path(a.out), name=a.name, version=a.version, fp16=not a.fp32,
                checkpoint=a.checkpoint, low_confidence=a.low_confidence)
    print(json.dumps(md["validation"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
