"""Export a segmentation run (``train --protocol coronal-shoulder``) as a registered model folder.

``python -m SpineAlignmentLib.training.export --run runs/NAME --data ../shared/datasets/jsrt-clavicles
--out Resources/Models/coronal-shoulder-clavicles`` (the export entry point sends segmentation runs here).

Steps: take the run's ``last.pt`` (the last epoch: no epoch is chosen on a
split), store the weights (float16 by default; every figure below is measured
*with* the stored weights), write ``metadata.json`` (schema-validated) and
measure the run's validation split and its test split (which no choice of the
run looked at) through the public path: ``read_radiograph`` → ``pipeline.analyze``
(segmentation, mask keypoints, ``measure``) on the original films, compared
with the reference masks on their own 1024-px grid. The figures and a per-film
table go into the metadata and the model card (README.md).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DATA_CREDIT = {
    "name": "JSRT database (Japanese Society of Radiological Technology) with the SCR clavicle masks "
            "(van Ginneken et al. 2006), 1024 px version",
    "license": "research use only; images copyright JSRT; SCR masks for research use. The weights are trained on "
               "these data and inherit their research-use-only terms.",
    "citation": ("Shiraishi J et al. Development of a digital image database for chest radiographs with and without a "
                 "lung nodule. AJR 2000;174:71-74. van Ginneken B, Stegmann MB, Loog M. Segmentation of anatomical "
                 "structures in chest radiographs using supervised methods: a comparative study on a public database. "
                 "Med Image Anal 2006;10:19-40."),
}

CORACOIDS = ("No labelled coracoid data is reachable by this project (the JSRT/SCR masks cover the clavicles, lungs "
             "and heart only), so the model does not find the coracoids: Cor_top_L/Cor_top_R stay hand-placed (guided "
             "placement in Slicer, or a landmark file) and CHD appears once they exist. No coracoid guess is shipped.")

LIMITS = [
    "Trained on about 140 PA chest films of one source (JSRT, Japan, digitised film, 1024 px at 0.35 mm): other "
    "detectors, AP whole-spine films with the shoulders at the top, children and strongly rotated patients are "
    "outside what it has seen.",
    "Sides: it names the clavicles as the patient's left and right on films displayed with the patient's left on the "
    "image right; with Patient Orientation the film is mirrored first when needed. Without Patient Orientation the "
    "sides are image sides and the result says so.",
    "Keypoints follow the mask rule of docs/definitions.md §4.1 (top point, end caps of the principal axis); they are "
    "as good as the mask ends, which are the least certain part of a clavicle mask.",
    CORACOIDS,
]


def _fmt(v, nd=3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def run_lineage(run_dir: Path) -> list[dict]:
    """The runs that led to ``run_dir`` (each warm restart ``init_from`` an earlier run's ``last.pt``), oldest first:
    ``[{"run", "epochs_run", "lr", "init_from"}]``."""
    from .checkpoint import load_checkpoint

    out, seen = [], set()
    run = Path(run_dir)
    while run is not None and run.resolve() not in seen and (run / "config.json").is_file():
        seen.add(run.resolve())
        cfg = json.loads((run / "config.json").read_text())
        state = load_checkpoint(run / "last.pt") if (run / "last.pt").is_file() else {}
        out.append({"run": str(run), "epochs_run": int(state.get("epoch", -1)) + 1, "lr": cfg.get("lr"),
                    "init_from": cfg.get("init_from")})
        run = Path(cfg["init_from"]).parent if cfg.get("init_from") else None
    return out[::-1]


def evaluate_folder(model, data_dir: Path, names: list[str], cfg, flip_tta: bool = False, progress: bool = False,
                    what: str = "validation films") -> tuple[dict, list[dict]]:
    """Analyse films by name through the public path and compare with their reference masks
    (``progress``: a bar over the films on stderr, ``measuring <what>``)."""
    from tqdm import tqdm

    from ..imaging import read_radiograph
    from ..pipeline import analyze
    from ..protocols import get_protocol
    from .segmentation import discover, film_row, read_label_map, summarise

    segs = get_protocol(model.protocol).segments
    items = {n: (p, m) for n, p, m in discover(data_dir, segs)[0]}
    rows = []
    times = []
    for name in tqdm(names, desc=f"measuring {what}", unit="film", disable=not progress, leave=False):
        path, masks = items[name]
        t = time.perf_counter()
        rg = read_radiograph(path, spacing=(cfg["spacing_mm"], cfg["spacing_mm"]), patient_orientation=cfg["orientation"])
        res = analyze(rg, model.protocol, model=model, flip_tta=flip_tta)
        times.append(time.perf_counter() - t)
        ref = read_label_map(rg.shape, masks)
        rows.append(film_row(name, res.segmentation.array, res, ref, segs, cfg["spacing_mm"], cfg["orientation"]))
    m = summarise(rows, segs, cfg["spacing_mm"])
    m["seconds_per_image_median_under_export"] = float(np.median(times)) if times else float("nan")
    return m, rows


def export_segmentation(run_dir: Path, data_dir: Path, out: Path, *, name: str, version: str, fp16: bool = True,
                        checkpoint: str = "last.pt", command: str = "", progress: bool = False) -> dict:
    """Write the model folder and return its metadata (``progress``: bars over the films measured, on stderr)."""
    import monai
    import torch
    from .checkpoint import load_checkpoint

    from ..models.registry import LoadedModel, _load_network, load_model, sha256_file, validate_metadata
    from ..protocols import get_protocol
    from .weights import stored_weights
    from .segmentation import SegConfig, build_seg_network

    state = load_checkpoint(run_dir / checkpoint)
    cfg = SegConfig(**state["config"])
    split = json.loads((run_dir / "split.json").read_text())
    proto = get_protocol(cfg.protocol)
    net = build_seg_network(cfg)
    net.load_state_dict(state["model"])
    out.mkdir(parents=True, exist_ok=True)
    sd = stored_weights(net.state_dict(), fp16)
    wpath = out / "model.pt"
    torch.save(sd, wpath)
    n_params = sum(p.numel() for p in net.parameters())
    lineage = run_lineage(run_dir)
    rows_log = [json.loads(line) for r in lineage for line in (Path(r["run"]) / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
    md = {
        "schema": "spinealignment.model-metadata/1",
        "name": name,
        "version": version,
        "changelog": {version: "First release: clavicle segmentation (patient-left, patient-right) trained from "
                               "scratch on the JSRT/SCR clavicle masks; keypoints from the masks."},
        "task": "coronal shoulder balance: clavicle segmentation (background, patient-left, patient-right clavicle) "
                "and mask keypoints Clav_top/Clav_med/Clav_lat per side",
        "description": (f"MONAI residual U-Net (levels {cfg.net['channels']}, {cfg.net['num_res_units']} residual units "
                        f"per level, {n_params / 1e6:.2f} M parameters) on the whole film letterboxed to "
                        f"{cfg.input_shape[0]}x{cfg.input_shape[1]}; softmax probabilities are resized back to the "
                        "film's own grid, the argmax is the label map, and each clavicle's largest component gives "
                        "its keypoints by the rule of docs/definitions.md §4.1."),
        "protocol": proto.id,
        "authors": "SpineAlignment contributors",
        "copyright": "SpineAlignment contributors",
        "license": {"weights": "Apache-2.0 for the code; the weights are derived from JSRT/SCR data and are for research "
                               "use only", "training_data": DATA_CREDIT["license"]},
        "pytorch_version": torch.__version__.split("+")[0],
        "monai_version": monai.__version__,
        "network": {"class": "SpineAlignmentLib.models.segmentation.SegmentationUNet",
                    "args": {"in_channels": 1, "out_channels": 1 + max(s.value for s in proto.segments), **cfg.net},
                    "stride": 1, "parameters": int(n_params)},
        "weights": {"file": "model.pt", "sha256": sha256_file(wpath), "dtype": "float16" if fp16 else "float32",
                    "size_bytes": wpath.stat().st_size},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "grayscale, bone bright (MONOCHROME2)", "num_channels": 1,
                                 "spatial_shape": list(cfg.input_shape), "dtype": "float32", "value_range": [0.0, 1.0],
                                 "intensity": {"method": "percentile-minmax", "low_percentile": 0.5,
                                               "high_percentile": 99.5},
                                 "resize": "letterbox-centred"}},
            "outputs": {"pred": {"type": "label-probabilities", "format": "logits",
                                 "num_channels": 1 + max(s.value for s in proto.segments)}}},
        "segments": [{"value": s.value, "id": s.id, "name": s.name, "side": s.side} for s in proto.segments],
        "landmarks": [lid for s in proto.segments for lid in s.landmarks],
        "not_detected": {"landmarks": ["Cor_top_L", "Cor_top_R", "ST_L", "ST_R"], "reason": CORACOIDS},
        "decoding": {"method": "mask-keypoints", "low_confidence": 0.5, "min_fraction_of_image": 2e-4,
                     "flip_tta_default": False,
                     "keypoints": "docs/definitions.md §4.1 (largest component; top = centroid of the most superior "
                                  "pixels; medial/lateral = centroids of the end caps of the principal axis)",
                     "confidence": "mean probability over the component x its share of the label's pixels x "
                                   "elongation factor (axis ratio 1 -> 0, >= 3 -> 1); implausible length or position "
                                   "-> not trusted"},
        "training": {
            "data": {**DATA_CREDIT, "n_images": len(split["train"]) + len(split["val"]) + len(split["test"])},
            "recipe": {"config": state["config"], "loss": "Dice (foreground, batch) + cross-entropy",
                       "augmentation": "left-right flip with the labels swapped, affine (rotation 10 deg, scale 15 %, "
                                       "shift), full-width strips of crop_rows rows (most containing the clavicles), "
                                       "gamma/contrast/shift, noise, blur (MONAI dictionary transforms)",
                       "selection": "the last epoch (no epoch chosen on the validation or test split)"},
            "split": {"seed": split["seed"], "by": "image (one JSRT film per patient)", "n_train": len(split["train"]),
                      "n_val": len(split["val"]), "val_images": split["val"], "n_test": len(split["test"]),
                      "test_images": split["test"]},
            "epochs_run": sum(int(r["epochs_run"]) for r in lineage),
            "lineage": lineage,
            "train_time_s": round(sum(r.get("train_time_s", 0) + r.get("val_time_s", 0) for r in rows_log)),
        },
    }
    # The stored (float16) weights, loaded with the registry's SHA-256 check, are what every figure is measured on;
    # the metadata is written once it is complete (it needs the figures to validate).
    model = LoadedModel(name=name, version=version, metadata=md, network=_load_network(md["network"], md["weights"], out),
                        landmark_ids=tuple(md["landmarks"]), input_shape=tuple(cfg.input_shape), stride=1, folder=out)
    cfg_d = {"spacing_mm": cfg.spacing_mm, "orientation": cfg.orientation}
    val, val_rows = evaluate_folder(model, data_dir, split["val"], cfg_d, progress=progress)
    test, test_rows = evaluate_folder(model, data_dir, split["test"], cfg_d, progress=progress, what="test films")
    val_tta, _ = evaluate_folder(model, data_dir, split["val"], cfg_d, flip_tta=True, progress=progress,
                                 what="validation films with flip TTA")
    md["validation"] = {
        "split": f"validation split ({len(split['val'])} films held out by image; nothing was chosen on it)",
        "n_images": val["n_images"], "metrics": val,
        "test": {"split": f"test split ({len(split['test'])} films held out by image)", "n_images": test["n_images"],
                 "metrics": test},
        "flip_tta": {"split": "validation", "metrics": val_tta},
        "reference": "parameters of the reference masks' keypoints, by the same rule, at 0.35 mm per pixel",
        "per_image": {"validation": val_rows, "test": test_rows},
        "command": command,
    }
    validate_metadata(md, str(out / "metadata.json"))
    (out / "metadata.json").write_text(json.dumps(md, indent=1))
    write_readme(md, out)
    load_model(name, folder=out)  # the folder loads as users will load it
    return md


def _metrics_table(md: dict) -> str:
    v = md["validation"]
    cols = [("validation", v["metrics"]), ("test", v["test"]["metrics"]), ("validation, flip TTA", v["flip_tta"]["metrics"])]
    lines = ["| | " + " | ".join(f"{c} (n={m['n_images']})" for c, m in cols) + " |",
             "|---|" + "---|" * len(cols)]

    def row(label, key, nd=3):
        lines.append(f"| {label} | " + " | ".join(_fmt(m.get(key), nd) for _, m in cols) + " |")

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
    return "\n".join(lines)


def write_readme(md: dict, out: Path) -> Path:
    """The model card, generated from the metadata only (no typed figure)."""
    v = md.get("validation", {})
    tr = md["training"]
    parts = [
        f"# {md['name']} {md['version']}", "",
        md["task"] + ".", "",
        "## Network", "", md["description"], "",
        f"Weights: `{md['weights']['file']}`, {md['weights']['dtype']}, {md['weights']['size_bytes'] / 1e6:.1f} MB, "
        f"SHA-256 `{md['weights']['sha256']}` (checked on every load).", "",
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
        parts += ["## Measured accuracy", "",
                  "Films analysed end to end through `pipeline.analyze` with the stored weights; masks compared on "
                  "the films' own 1024-px grid; keypoints and parameters compared with those of the reference masks "
                  "(same rule, 0.35 mm per pixel, Patient Orientation L,F).", "",
                  _metrics_table(md), "",
                  f"Produced by: `{v.get('command', '')}`", ""]
    b = md.get("benchmark")
    if b and b.get("summary"):
        parts += ["## Speed and memory", "", b["summary"], ""]
    parts += ["## What it cannot do", ""] + [f"- {t}" for t in LIMITS] + [""]
    path = out / "README.md"
    path.write_text("\n".join(parts))
    return path
