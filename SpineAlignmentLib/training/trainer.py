"""The coronal vertebra network's trainer (the specialised family: vertebra centres + corner offsets + corner maps).

It runs on the shared loop (:mod:`~SpineAlignmentLib.training.loop`: run folder, schedule, epochs, resume).
Run directory contents:

* ``config.json``      -- every setting of the run (also stored in checkpoints);
* ``split.json``       -- patient-level train/validation split (image names, patient keys);
* ``hygiene.json``     -- label hygiene report: every finding with its file name and action;
* ``metrics.jsonl``    -- one JSON object per epoch (loss terms, validation metrics, time);
* ``last.pt``          -- resume checkpoint (weights, optimiser, scheduler, epoch, RNG states);
* ``best.pt``          -- weights of the epoch with the lowest validation landmark error.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..inference.decode import decode_heatmaps
from ..models.landmarks import flip_permutation, protocol_landmark_ids
from ..models.network import SpineLandmarkNet
from ..models.vertebra import ANCHORS, N_CHANNELS, VertebraLoss, decode_vertebrae
from ..protocols import get_protocol
from .checkpoint import init_states, restore_rng, rng_state, save_checkpoint
from .dataset import CachedSample, cache_sample, check_validation_unseen, load_samples, patient_id, split_names
from .hygiene import write_report
from .losses import DsntLoss
from .loop import LandmarkDataset, RunConfig, open_run, optimizer_for, train_epoch
from .metrics import landmark_metrics
from .transforms import build_train_transforms

__all__ = ["TrainConfig", "train", "evaluate_samples", "build_network", "init_weights_from"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig(RunConfig):
    """Settings of a first-stage (whole-image) run."""

    input_shape: tuple[int, int] = (512, 256)
    batch_size: int = 8
    heatmap_loss: str = "kl"
    representation: str = "vertebra"  # "vertebra" (centre + offsets + corner maps) or "landmark" (one map per corner)
    init_from: str | None = None  # weights to start from (a run's checkpoint or a packaged model.pt)
    anchors: bool = False  # vertebra representation: add the T1/L5 anchor maps (channels 15-16)
    reframe: float = 0.0  # probability of re-framing a training film (top C4..T3, bottom L4..below the sacrum)
    neck: float = 0.0  # probability of a synthetic neck above T1 (training/neck.py)
    net: dict = field(default_factory=lambda: {
        "stem_channels": [16, 32], "channels": [32, 64, 128, 256, 256], "num_res_units": 1, "features": 64})


def build_network(cfg: TrainConfig, n_landmarks: int) -> SpineLandmarkNet:
    out = (ANCHORS.stop if cfg.anchors else N_CHANNELS) if cfg.representation == "vertebra" else n_landmarks
    net = SpineLandmarkNet(in_channels=1, out_channels=out, **cfg.net)
    if cfg.representation == "vertebra":
        # Heatmap logits start at a 1 % prior (CenterNet) so the first focal-loss steps are not dominated
        # by every background pixel predicting 0.5.
        with torch.no_grad():
            net.head.bias[0] = -4.6
            net.head.bias[11:] = -4.6
    return net


#: logit offset of a new head channel copied from the centre map (sigmoid(-4) = 1.8 %)
NEW_CHANNEL_BIAS_SHIFT = 4.0


def init_weights_from(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Start from the weights in ``path`` (``{"model": state}`` checkpoint or a bare state dict).

    Tensors of the same shape are copied. The head may have more output
    channels than the source (e.g. the T1/L5 anchor maps added to a network
    trained without them): the source channels are copied and each new channel
    starts as a copy of channel 0 (the vertebra-centre map) with its bias
    lowered by ``NEW_CHANNEL_BIAS_SHIFT`` (a map firing on all 17 centres would
    start with a huge anchor loss whose gradients disturb the shared features);
    the anchor maps then specialise. Returns the names of the parameters that
    were not copied in full.
    """
    src = init_states(path, second=False)[0]
    own = model.state_dict()
    partial = []
    for k, v in own.items():
        s = src.get(k)
        if s is None:
            partial.append(k)
            continue
        s = s.float()
        if s.shape == v.shape:
            own[k] = s
            continue
        partial.append(k)
        if k.startswith("head.") and s.ndim == v.ndim:
            axis = 1 if v.ndim == 4 else 0  # ConvTranspose2d weight is (in, out, kh, kw)
            n = s.shape[axis]
            new = v.clone()
            new.narrow(axis, 0, n).copy_(s)
            for c in range(n, v.shape[axis]):
                new.narrow(axis, c, 1).copy_(s.narrow(axis, 0, 1) - (NEW_CHANNEL_BIAS_SHIFT if v.ndim == 1 else 0.0))
            own[k] = new
    model.load_state_dict(own)
    return partial


def decode_output(out: torch.Tensor, stride: int, representation: str, n_landmarks: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, K, 2) input-pixel coordinates and (B, K) confidence from network output."""
    if representation == "vertebra":
        return decode_vertebrae(out, stride, n_landmarks // 4)
    coords, conf, _ = decode_heatmaps(out, stride)
    return coords.numpy(), conf.numpy()


@torch.no_grad()
def evaluate_samples(model: torch.nn.Module, samples: list[CachedSample], batch_size: int = 8,
                     representation: str = "vertebra") -> tuple[dict, list[np.ndarray]]:
    """Predict cached samples (no augmentation) and compute metrics in original pixels."""
    model.eval()
    preds = []
    stride = getattr(model, "stride", 2)
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        x = torch.from_numpy(np.stack([s.image[None].astype(np.float32) / 255.0 for s in chunk]))
        coords, _ = decode_output(model(x), stride, representation, len(chunk[0].points))
        for s, c in zip(chunk, coords):
            preds.append(s.geometry.to_original(c))
    metrics = landmark_metrics(
        preds, [s.original_points for s in samples], [s.geometry.src_shape[0] for s in samples],
        [s.reference_angles for s in samples])
    return metrics, preds


def _load_cache(samples, cfg: TrainConfig, progress: bool) -> list[CachedSample]:
    """Decode, normalise and letterbox every sample once; epochs then only augment in memory."""
    from tqdm import tqdm

    it = tqdm(samples, desc="caching images", unit="img", disable=not progress)
    return [cache_sample(s, tuple(cfg.input_shape)) for s in it]


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a landmark network; returns the best validation metrics.

    Raises:
        SpineAlignmentError: bad data folder, or ``resume`` without a checkpoint.
    """
    cfg, state, out = open_run(cfg, resume)
    cfg.input_shape = tuple(cfg.input_shape)
    ckpt_path = out / "last.pt"

    ids = protocol_landmark_ids(cfg.protocol)
    vnames = [ids[i].split("_")[0] for i in range(0, len(ids), 4)]
    samples, hyg = load_samples(Path(cfg.data), vertebra_names=vnames)
    hyg_summary = write_report(hyg, out / "hygiene.json")
    if cfg.max_images:
        samples = samples[: cfg.max_images]
    names = [s.name for s in samples]
    train_names, val_names = split_names(names, cfg.val_fraction, cfg.seed, cfg.val_list, cfg.data)
    (out / "split.json").write_text(json.dumps({
        "seed": cfg.seed, "val_fraction": cfg.val_fraction, "val_list": cfg.val_list,
        "train": train_names, "val": val_names,
        "val_patients": sorted({patient_id(n) for n in val_names}),
        "train_patients": sorted({patient_id(n) for n in train_names}),
    }, indent=1))
    if cfg.init_from and state is None:  # before the films are cached
        check_validation_unseen(cfg.init_from, names, val_names, "the weights of --init-from")
    cached = {s.name: s for s in _load_cache(samples, cfg, progress)}
    train_set = [cached[n] for n in train_names]
    val_set = [cached[n] for n in val_names]
    log.info("train %d images, validation %d images (%d patients)", len(train_set), len(val_set),
             len({patient_id(n) for n in val_names}))

    model = build_network(cfg, len(ids))
    if cfg.init_from and state is None:
        partial = init_weights_from(model, cfg.init_from)
        log.info("initialised from %s (not copied in full: %s)", cfg.init_from, ", ".join(partial) or "none")
    opt, start_epoch = optimizer_for(model, cfg, state)
    if cfg.representation == "vertebra":
        loss_fn = VertebraLoss(model.stride)
    else:
        loss_fn = DsntLoss(model.stride, cfg.sigma, cfg.coord_weight, cfg.js_weight, reg=cfg.heatmap_loss)
    best = {"mean_error_px": float("inf")}
    if state is not None:
        best = state.get("best", best)
        restore_rng(state["rng"])
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    perm = flip_permutation(ids, get_protocol(cfg.protocol).flip_pairs)
    t_start = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        model.train()
        tf = build_train_transforms(perm, seed=cfg.seed * 1000 + epoch, reframe=cfg.reframe, neck=cfg.neck)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(LandmarkDataset(train_set, tf), batch_size=cfg.batch_size,
                                             shuffle=True, generator=g, num_workers=0, drop_last=len(train_set) > cfg.batch_size)
        means, lr = train_epoch(model, loader, loss_fn, opt, cfg, epoch, progress,
                                lambda batch: (batch["image"], batch["points"], batch["valid"]))
        train_time = time.time() - t0
        metrics, _ = evaluate_samples(model, val_set, cfg.batch_size, cfg.representation) if val_set else ({}, [])
        row = {"epoch": epoch + 1, "lr": lr, "train_time_s": round(train_time, 1),
               "val_time_s": round(time.time() - t0 - train_time, 1),
               **{f"train_{k}": v for k, v in means.items()},
               **{f"val_{k}": v for k, v in metrics.items()}}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("epoch %d: train err %.1f px (input), val err %.1f px, %.1f %% width, SMAPE %.2f %%, CMAE %.2f deg",
                 epoch + 1, row.get("train_err_px", float("nan")), metrics.get("mean_error_px", float("nan")),
                 metrics.get("mean_error_pct_width", float("nan")), metrics.get("smape_pct", float("nan")),
                 metrics.get("cmae_deg", float("nan")))
        if metrics and metrics["mean_error_px"] < best.get("mean_error_px", float("inf")):
            best = {**metrics, "epoch": epoch + 1}
            save_checkpoint(out / "best.pt", {"model": model.state_dict(), "config": asdict(cfg), "epoch": epoch + 1,
                                              "metrics": metrics, "landmark_ids": list(ids), "hygiene": hyg_summary})
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "config": asdict(cfg),
            "best": best, "landmark_ids": list(ids), "hygiene": hyg_summary, "rng": rng_state()})
        if cfg.time_limit_min is not None and (time.time() - t_start) / 60.0 >= cfg.time_limit_min:
            log.info("time limit of %.0f min reached after epoch %d; resume with --resume", cfg.time_limit_min, epoch + 1)
            break
    (out / "best_metrics.json").write_text(json.dumps(best, indent=1))
    return best
