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
table go into the metadata and the model card (README.md). The folder is opened and finished by
:mod:`~SpineAlignmentLib.training.model_folder`, as every export's is.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from .model_folder import changelog, finish_folder, open_folder

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
                        checkpoint: str = "last.pt", command: str = "", change: str | None = None,
                        progress: bool = False) -> dict:
    """Write the model folder and return its metadata (``change``: this version's changelog line; ``progress``:
    bars over the films measured, on stderr)."""
    import monai
    import torch
    from .checkpoint import load_checkpoint

    from ..models.registry import LoadedModel, _load_network
    from ..protocols import get_protocol
    from .weights import save_weights
    from .segmentation import SegConfig, build_seg_network

    state = load_checkpoint(run_dir / checkpoint)
    cfg = SegConfig(**state["config"])
    split = json.loads((run_dir / "split.json").read_text())
    proto = get_protocol(cfg.protocol)
    net = build_seg_network(cfg)
    net.load_state_dict(state["model"])
    old = open_folder(out, name)
    weights = save_weights(net.state_dict(), out / "model.pt", fp16)
    n_params = sum(p.numel() for p in net.parameters())
    lineage = run_lineage(run_dir)
    rows_log = [json.loads(line) for r in lineage for line in (Path(r["run"]) / "metrics.jsonl").read_text().splitlines()
                if line.strip()]
    md = {
        "schema": "spinealignment.model-metadata/1",
        "name": name,
        "version": version,
        "changelog": changelog(old, version, change, "First release: clavicle segmentation (patient-left, "
                               "patient-right) trained from scratch on the JSRT/SCR clavicle masks; keypoints from the masks."),
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
        "weights": weights,
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
    return finish_folder(md, out, old)
