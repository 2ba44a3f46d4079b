"""Training of the second-stage ROI refiner (:mod:`SpineAlignmentLib.models.refine`).

Training patches are cut around the *reference* vertebrae with a random
error on the ROI (centre shift, width and angle), drawn to be somewhat larger
than the first stage's validation error, so the refiner learns to pull a coarse
corner back to the true one. Augmentation per patch: left-right mirror (with
TL<->TR, BL<->BR), then, after the per-patch contrast stretch the refiner
always applies, gamma, contrast, brightness, Gaussian noise and blur.

Validation is end to end: the first-stage model (a packaged model) predicts
the validation images once; each epoch refines those predictions and reports
the same metrics as :mod:`SpineAlignmentLib.training.trainer` (landmark error
in original pixels, SMAPE and circular MAE of the AASCE triple). The split is
the first stage's patient-level split (same seed and fraction), so no
validation patient is ever seen by either stage.

Run folder: ``config.json``, ``split.json``, ``hygiene.json``,
``metrics.jsonl``, ``last.pt`` (resume), ``stage1_val.npz`` (cached first-stage
predictions of the validation images).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..inference.preprocess import normalise_intensity
from ..models.landmarks import protocol_landmark_ids
from ..models.network import SpineLandmarkNet
from ..models.refine import (
    FLIP_CORNERS, RoiSpec, _scale_points, normalise_patches, refine_resized, resize_for_rois, roi_grid, sample_rois, to_roi, vertebra_frames)
from .dataset import Sample, check_validation_unseen, load_samples, patient_id, split_names
from .hygiene import write_report
from .losses import DsntLoss
from .metrics import landmark_metrics
from .loop import RunConfig, fit_patch_stage, open_run  # same settings, run folder and schedule as the first stage

__all__ = ["RefinerConfig", "train_refiner", "build_refiner"]

log = logging.getLogger(__name__)


@dataclass
class RefinerConfig(RunConfig):
    """Settings of a refiner run (all JSON-serialisable)."""

    stage1: str = "coronal-spine-landmarks"  # packaged first-stage model (name or folder) for validation
    epochs: int = 30
    warmup_epochs: float = 1
    patch_size: int = 128
    extent: float = 1.8
    images_per_batch: int = 4  # x 17 vertebrae = patches per step
    shift_sd: float = 0.12  # ROI centre error, vertebra widths (per axis)
    scale_sd: float = 0.10  # log ROI width error
    angle_sd_deg: float = 6.0
    tilt_weight: float = 0.0  # weight of the mid-line angle error (degrees) in the loss
    net: dict = field(default_factory=lambda: {
        "stem_channels": [16, 32], "channels": [32, 64, 128, 128], "num_res_units": 1, "features": 32})


def build_refiner(cfg: RefinerConfig) -> SpineLandmarkNet:
    """The ROI network: four heatmaps (TL, TR, BL, BR of the central vertebra)."""
    return SpineLandmarkNet(in_channels=1, out_channels=4, **cfg.net)


@dataclass
class _Cached:
    name: str
    image: np.ndarray  # uint8, normalised, resized by ``scale``
    points: np.ndarray  # (V, 4, 2) in resized pixels
    scale: tuple[float, float]


def _read_normalised(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return normalise_intensity(np.asarray(im.convert("L"), dtype=np.float32))


def _cache_train(s: Sample, spec: RoiSpec) -> _Cached:
    q = s.points.reshape(-1, 4, 2)
    _, widths, _ = vertebra_frames(q)
    img, f = resize_for_rois(_read_normalised(s.image_path), float(np.median(widths)), spec)
    return _Cached(s.name, np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), _scale_points(q, f), f)


def jittered_frames(corners: np.ndarray, cfg: RefinerConfig, rng: np.random.Generator):
    """Frames (centre, width, angle) of (V, 4, 2) reference corners with a simulated first-stage error:
    centre N(0, shift_sd) widths per axis, width x exp(N(0, scale_sd)), angle N(0, angle_sd_deg), each clipped at 2.5 SD."""
    centre, width, angle = vertebra_frames(corners)
    v = len(width)
    centre = centre + np.clip(rng.normal(0, cfg.shift_sd, (v, 2)), -2.5 * cfg.shift_sd, 2.5 * cfg.shift_sd) * width[:, None]
    width = width * np.exp(np.clip(rng.normal(0, cfg.scale_sd, v), -2.5 * cfg.scale_sd, 2.5 * cfg.scale_sd))
    angle = angle + np.radians(np.clip(rng.normal(0, cfg.angle_sd_deg, v), -2.5 * cfg.angle_sd_deg, 2.5 * cfg.angle_sd_deg))
    return centre, width, angle


def augment_intensity(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per patch of (V, 1, S, S) contrast-stretched patches: gamma 0.7-1.5, contrast 0.75-1.25,
    brightness +-0.1, a 3x3 blur with p = 0.2 and Gaussian noise of SD 0-0.03."""
    v = x.shape[0]
    gamma = torch.as_tensor(np.exp(rng.uniform(np.log(0.7), np.log(1.5), v)), dtype=torch.float32)[:, None, None, None]
    x = x.clamp(0, 1) ** gamma
    a = torch.as_tensor(rng.uniform(0.75, 1.25, v), dtype=torch.float32)[:, None, None, None]
    b = torch.as_tensor(rng.uniform(-0.1, 0.1, v), dtype=torch.float32)[:, None, None, None]
    x = (x - 0.5) * a + 0.5 + b
    blur = rng.random(v) < 0.2
    if blur.any():
        k = torch.tensor([0.25, 0.5, 0.25])
        kk = (k[:, None] * k[None, :])[None, None]
        x[blur] = F.conv2d(x[blur], kk, padding=1)
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(int(rng.integers(1 << 31)))) \
        * torch.as_tensor(rng.uniform(0, 0.03, v), dtype=torch.float32)[:, None, None, None]
    return x


class _PatchSet(torch.utils.data.Dataset):
    """One item = the 17 jittered, augmented patches of one image and their corners in patch pixels."""

    def __init__(self, items: list[_Cached], spec: RoiSpec, cfg: RefinerConfig, seed: int) -> None:
        self.items, self.spec, self.cfg, self.seed = items, spec, cfg, seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, i))
        it, spec, cfg = self.items[i], self.spec, self.cfg
        centre, width, angle = jittered_frames(it.points, cfg, rng)
        v = len(width)
        x = normalise_patches(sample_rois(it.image.astype(np.float32) / 255.0, roi_grid(centre, width, angle, spec)))
        uv = to_roi(it.points, centre, width, angle, spec)
        flip = rng.random(v) < 0.5
        x[flip] = torch.flip(x[flip], dims=[-1])
        uv[flip] = uv[flip][:, list(FLIP_CORNERS)]
        uv[flip, :, 0] = (spec.size - 1) - uv[flip, :, 0]
        x = augment_intensity(x, rng)
        valid = np.all((uv >= 0) & (uv <= spec.size - 1), axis=-1)
        return x, torch.as_tensor(uv, dtype=torch.float32), torch.as_tensor(valid)


def _collate(batch):
    xs, uvs, vs = zip(*batch)
    return torch.cat(xs), torch.cat(uvs), torch.cat(vs)


def split_samples(cfg: RunConfig, out: Path) -> tuple[list[Sample], list[Sample]]:
    """Labelled samples after hygiene (report in ``out/hygiene.json``), split by patient like the
    first stage (``out/split.json``): ``(train, val)``."""
    ids = protocol_landmark_ids(cfg.protocol)
    vnames = [ids[i].split("_")[0] for i in range(0, len(ids), 4)]
    samples, hyg = load_samples(Path(cfg.data), vertebra_names=vnames)
    write_report(hyg, out / "hygiene.json")
    if cfg.max_images:
        samples = samples[: cfg.max_images]
    train_names, val_names = split_names([s.name for s in samples], cfg.val_fraction, cfg.seed, cfg.val_list, cfg.data)
    (out / "split.json").write_text(json.dumps({
        "seed": cfg.seed, "val_fraction": cfg.val_fraction, "val_list": cfg.val_list, "train": train_names, "val": val_names,
        "val_patients": sorted({patient_id(n) for n in val_names})}, indent=1))
    if getattr(cfg, "stage1", None):
        check_validation_unseen(cfg.stage1, [s.name for s in samples], val_names, "the first stage")
    by = {s.name: s for s in samples}
    return [by[n] for n in train_names], [by[n] for n in val_names]


def load_stage1(stage1: str):
    """The packaged first-stage model a later stage is validated on: a model folder or a registered name."""
    from ..models.registry import load_model

    folder = Path(stage1)
    return load_model(folder.name, folder=folder) if folder.is_dir() else load_model(stage1)


def _stage1_predictions(cfg: RefinerConfig, val: list[Sample], out: Path) -> dict[str, np.ndarray]:
    """First-stage corners (68, 2) of every validation image, original pixels (cached in the run folder)."""
    cache = out / "stage1_val.npz"
    if cache.exists():
        data = np.load(cache)
        if all(s.name in data for s in val):
            return {s.name: data[s.name] for s in val}
    from ..inference.predict import predict_array

    model = load_stage1(cfg.stage1)
    preds = {}
    for s in val:
        with Image.open(s.image_path) as im:
            px = np.asarray(im.convert("L"), dtype=np.float32)
        preds[s.name], _ = predict_array(px, model, refine=False)
    np.savez_compressed(cache, **preds)
    return preds


@torch.no_grad()
def evaluate_refiner(net, spec: RoiSpec, stride: int, val: list[Sample], coarse: dict[str, np.ndarray],
                     images: dict[str, tuple[np.ndarray, tuple[float, float]]], iterations: int = 1,
                     flip_tta: bool = False) -> tuple[dict, dict]:
    """Metrics of the refined first-stage predictions and of the coarse ones (original pixels).

    ``images``: per validation image, its :func:`resize_for_rois` output for the coarse corners.
    """
    net.eval()
    refined = [refine_resized(net, *images[s.name], coarse[s.name], spec, stride=stride, iterations=iterations,
                              flip_tta=flip_tta)[0] for s in val]
    truth = [s.points for s in val]
    heights = [s.image_shape[0] for s in val]
    refs = [s.reference_angles for s in val]
    return (landmark_metrics(refined, truth, heights, refs),
            landmark_metrics([coarse[s.name] for s in val], truth, heights, refs))


def train_refiner(cfg: RefinerConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) the ROI refiner; returns the last epoch's validation metrics."""
    from tqdm import tqdm

    cfg, state, out = open_run(cfg, resume)
    spec = RoiSpec(cfg.patch_size, cfg.extent)

    train, val = split_samples(cfg, out)
    train_items = [_cache_train(s, spec) for s in tqdm(train, desc="caching", disable=not progress)]
    coarse = _stage1_predictions(cfg, val, out) if val else {}
    val_images = {s.name: resize_for_rois(_read_normalised(s.image_path),
                                          float(np.median(vertebra_frames(coarse[s.name])[1])), spec) for s in val}

    net = build_refiner(cfg)
    stride = net.stride
    loss_fn = DsntLoss(stride, cfg.sigma, cfg.coord_weight, cfg.js_weight, reg="kl", tilt_weight=cfg.tilt_weight)

    def validate(net, epoch):
        if not val:
            return {}, {}
        metrics, base = evaluate_refiner(net, spec, stride, val, coarse, val_images)
        log.info("epoch %d: val err %.1f px (coarse %.1f), median %.1f px, SMAPE %.2f %% (coarse %.2f), CMAE %.2f deg",
                 epoch + 1, metrics["mean_error_px"], base["mean_error_px"], metrics["median_error_px"],
                 metrics["smape_pct"], base["smape_pct"], metrics["cmae_deg"])
        return ({**{f"val_{k}": v for k, v in metrics.items()},
                 **{f"val_coarse_{k}": base[k] for k in ("mean_error_px", "median_error_px", "smape_pct", "cmae_deg")}},
                metrics)

    return fit_patch_stage(net, cfg, state, out, lambda seed: _PatchSet(train_items, spec, cfg, seed), _collate,
                           loss_fn, validate, progress)
