"""The one training loop of every model family: run folder, settings, schedule, epochs, resume.

Every trainer (the coronal vertebra network, :mod:`~SpineAlignmentLib.training.trainer`; the own-data
landmark models, per-landmark or level family, :mod:`~SpineAlignmentLib.training.generic`; their ROI stages,
:mod:`~SpineAlignmentLib.training.refiner` and :mod:`~SpineAlignmentLib.training.levels`; the clavicle
segmentation, :mod:`~SpineAlignmentLib.training.segmentation`) opens its run folder with :func:`open_run`
(``config.json``; resume from ``last.pt`` through :mod:`~SpineAlignmentLib.training.checkpoint`, the one
checkpoint reader and writer), builds its optimiser with :func:`optimizer_for` and runs its epochs with
:func:`train_epoch` (the ROI stages with :func:`fit_patch_stage`, which owns their whole epoch loop). What
differs between families (network, targets, loss, decoding) lives in the family's own modules.

Determinism: the data order and augmentation of epoch ``e`` are seeded with ``seed * 1000 + e``, so a
resumed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SpineAlignmentError
from .checkpoint import load_checkpoint, save_checkpoint
from .dataset import CachedSample

__all__ = ["RunConfig", "LandmarkDataset", "seed_all", "lr_at", "train_epoch", "optimizer_for", "fit_patch_stage",
           "open_run", "run_kind", "stored_config"]

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Settings every training run has (both stages; all JSON-serialisable)."""

    protocol: str = "coronal-spine"
    data: str = ""
    out: str = ""
    epochs: int = 60
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 2
    val_fraction: float = 0.2
    seed: int = 0
    threads: int = 2
    sigma: float = 1.5  # target Gaussian, heatmap pixels
    coord_weight: float = 0.1
    js_weight: float = 1.0
    time_limit_min: float | None = None
    max_images: int | None = None
    val_list: str | None = None  # file naming the validation images (one per line, or a split.json); else a patient split


class LandmarkDataset(torch.utils.data.Dataset):
    """Cached samples -> augmented ``{"image": (1, H, W), "points": (K, 2), "valid": (K,)}`` tensors."""

    def __init__(self, samples: list[CachedSample], transform=None) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        d = {"image": s.image[None].astype(np.float32) / 255.0, "points": s.points.astype(np.float32)}
        if self.transform is not None:
            d = self.transform(d)
        img = np.asarray(d["image"], dtype=np.float32)
        pts = np.asarray(d["points"], dtype=np.float32)
        h, w = img.shape[-2:]
        valid = d.get("valid")
        if valid is None:
            valid = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        return {"image": torch.from_numpy(np.ascontiguousarray(img)), "points": torch.from_numpy(pts),
                "valid": torch.from_numpy(np.asarray(valid, dtype=bool))}


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def lr_at(epoch_float: float, cfg: RunConfig) -> float:
    """Linear warm-up then cosine decay to 1 % of the peak rate."""
    if epoch_float < cfg.warmup_epochs:
        return cfg.lr * max(epoch_float / max(cfg.warmup_epochs, 1e-9), 0.02)
    t = (epoch_float - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def train_epoch(model, loader, loss_fn, opt, cfg: RunConfig, epoch: int, progress: bool, unpack) -> tuple[dict, float]:
    """One optimisation pass over ``loader`` (scheduled lr per step, gradient clipping at 5).

    ``unpack(batch)`` gives ``(inputs, targets, valid)`` for ``loss_fn(model(inputs), targets, valid)``.
    Returns the mean of each loss part over the steps and the last learning rate.
    """
    from tqdm import tqdm

    sums: dict[str, float] = {}
    nb = len(loader)
    lr = lr_at(epoch, cfg)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress, leave=False)
    for b, batch in enumerate(bar):
        lr = lr_at(epoch + b / max(nb, 1), cfg)
        for gr in opt.param_groups:
            gr["lr"] = lr
        x, target, valid = unpack(batch)
        loss, parts = loss_fn(model(x), target, valid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        parts["loss"] = float(loss.detach())
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix({k: f"{v:.3g}" for k, v in parts.items()})
    return {k: v / max(nb, 1) for k, v in sums.items()}, lr


def optimizer_for(net, cfg: RunConfig, state: dict | None) -> tuple[torch.optim.Optimizer, int]:
    """AdamW for ``net``; with a resume checkpoint ``state``, its weights and optimiser state are restored.

    Returns ``(optimiser, first epoch to run)``.
    """
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is None:
        return opt, 0
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return opt, int(state["epoch"]) + 1


def fit_patch_stage(net, cfg: RunConfig, state: dict | None, out: Path, dataset_for_epoch, collate, loss_fn,
                    validate, progress: bool) -> dict:
    """The epoch loop of the ROI stages (refiner, identification).

    AdamW (resumed from ``state``); per epoch a shuffled loader over ``dataset_for_epoch(seed)``
    (``cfg.images_per_batch`` images per step), :func:`train_epoch`, ``validate(net, epoch)`` giving
    ``(row fields, metrics)`` (``({}, {})`` without a validation split), a row in ``metrics.jsonl``
    and an atomic ``last.pt``; stops after ``cfg.epochs`` or the epoch that passes
    ``cfg.time_limit_min``. Returns the last validation metrics.
    """
    opt, start = optimizer_for(net, cfg, state)
    last: dict = {}
    t_start = time.time()
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        net.train()
        seed = cfg.seed * 1000 + epoch
        data = dataset_for_epoch(seed)
        loader = torch.utils.data.DataLoader(data, batch_size=cfg.images_per_batch, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed), collate_fn=collate,
                                             num_workers=0, drop_last=len(data) > cfg.images_per_batch)
        means, _ = train_epoch(net, loader, loss_fn, opt, cfg, epoch, progress, lambda batch: batch)
        train_time = time.time() - t0
        row = {"epoch": epoch + 1, "train_time_s": round(train_time, 1), **{f"train_{k}": v for k, v in means.items()}}
        fields, metrics = validate(net, epoch)
        row.update(fields)
        last = metrics or last
        row["val_time_s"] = round(time.time() - t0 - train_time, 1)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        save_checkpoint(out / "last.pt", {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                                          "config": asdict(cfg), "metrics": last})
        if cfg.time_limit_min is not None and (time.time() - t_start) / 60.0 >= cfg.time_limit_min:
            log.info("time limit of %.0f min reached after epoch %d; resume with --resume", cfg.time_limit_min, epoch + 1)
            break
    return last


def stored_config(cls, stored: dict):
    """The ``cls`` config of a run from its stored settings: a setting added after the run was made takes the
    value that reproduces how that run trained (``cls.BEFORE_IT_EXISTED``), not today's default."""
    return cls(**{**getattr(cls, "BEFORE_IT_EXISTED", {}), **stored})


def open_run(cfg: RunConfig, resume: bool, keep: tuple[str, ...] = ("epochs", "time_limit_min", "threads")):
    """Create the run folder, set threads and seeds, write ``config.json``; on ``resume`` load
    ``last.pt`` and take the run's settings from it (only the settings named in ``keep``, the stopping
    rules and threads, may change).

    Returns ``(cfg, state, out)``: the effective config (same type as ``cfg``), the loaded
    checkpoint or ``None``, and the run folder.
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state = None
    if resume:
        ckpt = out / "last.pt"
        if not ckpt.exists():
            raise SpineAlignmentError(f"Cannot resume: {ckpt} does not exist; start without --resume.")
        state = load_checkpoint(ckpt)
        kept = {k: getattr(cfg, k) for k in keep}
        cfg = stored_config(type(cfg), {**state["config"], **{k: v for k, v in kept.items() if v is not None}})
    torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    return cfg, state, out


def run_kind(run: Path) -> str:
    """Which exporter a finished run folder needs: ``"segmentation"`` (a segmentation protocol's run),
    ``"landmarks"`` (an own-data landmark run of the generic trainer, per-landmark or level family: its
    checkpoint records its stage) or ``"vertebra"`` (the coronal vertebra network's trainer).

    Raises:
        SpineAlignmentError: no ``config.json`` and ``last.pt`` in ``run`` (not a run folder, or not finished).
    """
    from ..protocols import get_protocol

    run = Path(run)
    if not (run / "config.json").is_file() or not (run / "last.pt").is_file():
        raise SpineAlignmentError(f"{run} is not a training run folder (no last.pt/config.json); pass --run runs/NAME.")
    try:
        cfg = json.loads((run / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise SpineAlignmentError(f"{run / 'config.json'} is not readable JSON ({exc}); pass the run folder "
                                  "'spine-align train' wrote.") from None
    if get_protocol(cfg.get("protocol", "coronal-spine")).model_kinds[0] == "segmentation":
        return "segmentation"
    return "landmarks" if "stage" in load_checkpoint(run / "last.pt") else "vertebra"
