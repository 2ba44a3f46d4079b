"""``spine-align export``: a generic landmark run (:mod:`~SpineAlignmentLib.training.generic`) -> a model folder.

The folder (``metadata.json``, ``model.pt``, ``refine.pt``, ``README.md``) is what ``analyze --model NAME``,
``batch`` and the Slicer module load from the shipped models or a user models folder. Its validation
figures are *measured here*, end to end: every validation film of the run's split is read from the
dataset, passed through :func:`SpineAlignmentLib.pipeline.analyze` with the exported weights, and
compared with the film's own labels measured by :func:`SpineAlignmentLib.pipeline.measure`
(:func:`SpineAlignmentLib.evaluation.compare.compare_results`: landmark errors, every parameter's error,
and for corner sets of T1..L5 the Cobb SMAPE / circular MAE and the levels named right). A run of the
level-sequence family gets the same folder with its own first-stage head and decoding block
(:func:`SpineAlignmentLib.training.level_family.family_blocks`, through
:func:`~SpineAlignmentLib.training.generic_model.model_blocks`, as the trainer's validation builds it). The folder
is opened and finished by :mod:`~SpineAlignmentLib.training.model_folder`, as every export's is.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np

from ..errors import SpineAlignmentError
from .model_folder import changelog, finish_folder, open_folder, write_metadata
from .generic_model import CORRECT_FRACTION, evaluate_films, model_blocks

__all__ = ["export_run"]

log = logging.getLogger(__name__)


#: training films the confidence is calibrated on (never validation films)
CALIBRATION_FILMS = 60


def _calibration(figs: dict, run: Path) -> dict:
    """Isotonic map raw heatmap mass -> P(landmark within CORRECT_FRACTION of the span), from training films.

    Raises:
        SpineAlignmentError: the model finds no landmark on the calibration films (nothing to calibrate, and
            nothing worth exporting).
    """
    from .export import fit_calibration

    raw, err, tol = (np.asarray(figs[k], dtype=float) for k in ("_confidence", "_errors", "_tolerance"))
    if raw.size == 0:
        raise SpineAlignmentError(
            f"The model of run {run} finds no landmark on the {figs['n_images']} training films its confidence is "
            "calibrated on, so there is nothing worth exporting; train it longer (--epochs, then train --resume) "
            "or on more films.")
    xs, ys = fit_calibration(raw, err <= tol)
    return {"raw": xs, "calibrated": ys,
            "definition": f"isotonic fit on {figs['n_images']} training films of P(landmark error <= "
                          f"{CORRECT_FRACTION:.0%} of the film's landmark span) given the heatmap probability mass "
                          "near the decoded point (training films: optimistic for new films)"}


def export_run(run: Path, out: Path, *, name: str | None = None, version: str = "1.0.0", data: Path | None = None,
               license_weights: str | None = None, license_data: str | None = None, fp16: bool = True,
               items_loader=None, change: str | None = None, progress: bool = False) -> dict:
    """Write the model folder ``out`` from a finished generic run; returns the metadata.

    ``change``: this version's changelog line (a re-export into the same folder keeps the earlier versions' lines).

    ``progress``: a bar on stderr over the films measured (calibration films, then validation films).

    Raises:
        SpineAlignmentError: not a finished generic run (resume it first), or ``out`` holds another model.
    """
    import monai
    import torch
    from .checkpoint import load_checkpoint

    from ..models.registry import load_model
    from ..protocols import get_protocol
    from .weights import save_weights
    from .generic import GenericConfig, _load_items
    from .loop import stored_config

    run, out = Path(run), Path(out)
    ck_path = run / "last.pt"
    if not ck_path.is_file() or not (run / "config.json").is_file():
        raise SpineAlignmentError(f"{run} is not a training run folder (no last.pt/config.json); pass --run runs/NAME.")
    ck = load_checkpoint(ck_path)
    cfg = stored_config(GenericConfig, ck["config"])
    if "stage" not in ck:
        raise SpineAlignmentError(f"{run} was not trained by the generic landmark trainer; export it with "
                                  "'spine-align export', which picks the exporter the run needs.")
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
    old = open_folder(out, name)
    stage1 = ck["stage1"] if ck["stage"] == 2 else ck["model"]
    stage2 = ck["model"] if ck["stage"] == 2 else None
    split = json.loads((run / "split.json").read_text())
    rows, cols = (int(v) for v in cfg.input_shape)
    blocks = model_blocks(cfg, ids, stage1, stage2, ck.get("fitted"))  # a family run's decoding choice, when it made one
    blocks["weights"] = save_weights(stage1, out / "model.pt", fp16)
    if stage2 is not None:
        blocks["landmark_refinement"]["weights"] = save_weights(stage2, out / "refine.pt", fp16)
    md = {
        "schema": "spinealignment.model-metadata/1",
        "name": name,
        "version": version,
        "changelog": changelog(old, version, change, f"Trained with 'spine-align train' on {Path(cfg.data).name} "
                                                   f"({len(split['train'])} training films); exported by 'spine-align export'."),
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
        **blocks,
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
    if cfg.family == "levels":
        from .level_family import family_description

        md["description"] = family_description(proto.id, ids)
    # Measure the validation split with the exported weights (end to end), then write the final metadata.
    val_names = set(split["val"])
    figs: dict = {}
    if val_names:
        md["validation"]["mean_error_px"] = 0.0  # replaced below; lets the folder load for the measurement
        write_metadata(md, out)
        items = (items_loader or (lambda c: _load_items(c, None)))(cfg)
        train_names = set(split["train"])
        cal_items = [it for it in items if Path(it.image).name in train_names]
        random.Random(cfg.seed).shuffle(cal_items)
        cal = evaluate_films(load_model(name, folder=out), cal_items[:CALIBRATION_FILMS], proto.id, parameters=False,
                             progress=progress, what="calibration films")
        md["decoding"]["calibration"] = _calibration(cal, run)
        md["decoding"]["low_confidence"] = 0.5  # calibrated: below it a landmark is more likely wrong than right
        write_metadata(md, out)
        model = load_model(name, folder=out)
        val_items = [it for it in items if Path(it.image).name in val_names]
        figs = evaluate_films(model, val_items, proto.id, progress=progress)
        for k in ("_confidence", "_errors", "_tolerance", "_predictions"):
            figs.pop(k)
    cmd = f"spine-align export --run {run.as_posix()} --out {out.as_posix()} --name {name} --version {version}"
    md["validation"] = {"split": f"the run's validation split ({'named in ' + Path(cfg.val_list).name if cfg.val_list else 'whole patients held out'})",
                        "n_images": max(len(val_names), 1), **{k: v for k, v in figs.items() if v is not None},
                        "command": cmd}
    if not val_names:
        md["validation"]["mean_error_px"] = float("nan")
        md["validation"]["note"] = "no validation films: nothing measured"
    md["validation"].setdefault("mean_error_px", float("nan"))
    return finish_folder(md, out, old)
