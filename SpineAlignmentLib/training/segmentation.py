"""Training of the shoulder segmentation network (``spine-align train --protocol coronal-shoulder``).

Dataset layout (the SCR/JSRT clavicle layout; ``../shared/datasets/jsrt-clavicles``)::

    images/<ID>.<jpg|png|...>
    masks/<segment folder>/<ID>.png     # binary mask, same size as the image

The segment folders are the protocol table's segment IDs (``clavicle_L``,
``clavicle_R``) or their ``aliases`` (``left_clavicle``, ``right_clavicle``:
patient sides). Images without every mask are skipped and logged.

Split: by image (one JSRT image per patient), seeded and written to
``split.json``: a validation set (reported every epoch) and a test set that no
choice of the run looks at (reported at export beside the validation figures).

Each epoch: MONAI dictionary transforms move the label map with the image (a
horizontal flip swaps the left and right labels, per the table's ``mirror``);
training sees full-width strips of ``crop_rows`` rows (most of them containing
the clavicles) of the letterboxed ``input_shape`` image; validation runs the
shipped inference (:func:`SpineAlignmentLib.inference.segment.segment_array`) on
whole films, compares on the original 1024-px grid and logs IoU/Dice per side,
keypoint errors (px and mm) and CA/CTAD/RSH_bony errors against the same
parameters computed from the reference masks' keypoints.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import SpineAlignmentError
from ..inference.preprocess import letterbox, normalise_intensity
from ..inference.segment import label_map, masks_to_landmarks, mirror_permutation, segment_array
from ..protocols import get_protocol
from .checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from .loop import RunConfig, open_run, optimizer_for, train_epoch

__all__ = ["SegConfig", "SegSample", "load_mask_samples", "train_segmentation", "evaluate_segmentation", "film_row",
           "summarise"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass
class SegConfig(RunConfig):
    """Settings of a segmentation run (all JSON-serialisable)."""

    protocol: str = "coronal-shoulder"
    input_shape: tuple[int, int] = (512, 512)
    crop_rows: int = 256
    batch_size: int = 4
    lr: float = 2e-3
    warmup_epochs: float = 1
    epochs: int = 60
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    spacing_mm: float = 0.35  # pixel size of the dataset's images (JSRT at 1024 px), for mm errors
    orientation: str = "L,F"  # Patient Orientation of the dataset's films (JSRT: patient left on image right)
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    clavicle_crop_prob: float = 0.85
    flip_prob: float = 0.5  # left-right mirror (labels swapped) probability
    val_every: int = 3  # validate every N epochs (and after the last one)
    init_from: str | None = None  # start from these weights (a run's last.pt or a packaged model.pt): a warm restart
    net: dict = field(default_factory=lambda: {
        "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2})


@dataclass
class SegSample:
    """One film cached for training: letterboxed image/labels (uint8) plus its original-grid reference masks."""

    name: str
    image: np.ndarray  # (H, W) uint8, normalised and letterboxed
    labels: np.ndarray  # (H, W) uint8 label map at the input size
    pixels: np.ndarray | None = None  # (rows, cols) original intensities (validation/test only)
    masks: np.ndarray | None = None  # (rows, cols) uint8 reference label map on the original grid
    reference: tuple | None = None  # cached (keypoints, parameters, found) of the reference masks


def discover(data_dir: Path, segments) -> tuple[list[tuple[str, Path, dict[int, Path]]], list[str]]:
    """``[(name, image path, {label value: mask path})]`` and the skipped images with their reason."""
    images_dir, masks_dir = data_dir / "images", data_dir / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise SpineAlignmentError(f"Dataset {data_dir} needs images/ and masks/<segment>/ folders (see docs/datasets.md).")
    folders = {}
    for seg in segments:
        cands = [masks_dir / f for f in (seg.id, *seg.aliases)]
        found = [c for c in cands if c.is_dir()]
        if not found:
            raise SpineAlignmentError(f"Dataset {data_dir} has no mask folder for {seg.name} "
                                      f"(expected masks/{seg.id}/ or one of: {', '.join(seg.aliases) or 'none'}).")
        folders[seg.value] = found[0]
    out, skipped = [], []
    for img in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        masks = {v: f / f"{img.stem}.png" for v, f in folders.items()}
        missing = [str(p) for p in masks.values() if not p.is_file()]
        if missing:
            skipped.append(f"{img.name}: no mask {', '.join(missing)}")
            continue
        out.append((img.name, img, masks))
    return out, skipped


def read_label_map(image_shape: tuple[int, int], masks: dict[int, Path]) -> np.ndarray:
    """(rows, cols) uint8 label map from binary mask files (a pixel in two masks keeps the later label)."""
    lab = np.zeros(image_shape, dtype=np.uint8)
    for value, path in sorted(masks.items()):
        m = np.asarray(Image.open(path).convert("L")) > 0
        if m.shape != tuple(image_shape):
            raise SpineAlignmentError(f"Mask {path} is {m.shape[1]}x{m.shape[0]} but its image is "
                                      f"{image_shape[1]}x{image_shape[0]}; masks must share the image's grid.")
        lab[m] = value
    return lab


def _resize_labels(lab: np.ndarray, input_shape: tuple[int, int], n_labels: int) -> np.ndarray:
    """Label map letterboxed like the image: each label's mask resized (antialiased) and the argmax taken."""
    planes = [letterbox((lab == v).astype(np.float32), input_shape)[0] for v in range(n_labels)]
    # letterbox pads with 0: padding is background
    stack = np.stack(planes)
    pad = stack.sum(axis=0) < 1e-3
    stack[0][pad] = 1.0
    return np.argmax(stack, axis=0).astype(np.uint8)


def load_mask_samples(cfg: SegConfig, names: list[str] | None = None, keep_original: set[str] | None = None,
                      progress: bool = False) -> tuple[list[SegSample], list[str]]:
    """Read, normalise and letterbox the dataset (original grids kept for the names in ``keep_original``)."""
    from tqdm import tqdm

    proto = get_protocol(cfg.protocol)
    segs = proto.segments
    n_labels = 1 + max(s.value for s in segs)
    items, skipped = discover(Path(cfg.data), segs)
    if names is not None:
        want = set(names)
        items = [it for it in items if it[0] in want]
    out = []
    for name, img_path, masks in tqdm(items, desc="caching films", unit="img", disable=not progress):
        try:
            pixels = np.asarray(Image.open(img_path).convert("L"), dtype=np.float32)
        except OSError as exc:
            skipped.append(f"{name}: unreadable image ({exc})")
            continue
        lab = read_label_map(pixels.shape, masks)
        x, _ = letterbox(normalise_intensity(pixels), tuple(cfg.input_shape))
        s = SegSample(name, np.round(x * 255).astype(np.uint8), _resize_labels(lab, tuple(cfg.input_shape), n_labels))
        if keep_original is not None and name in keep_original:
            s.pixels, s.masks = pixels, lab
        out.append(s)
    for line in skipped:
        log.warning("skipped %s", line)
    return out, skipped


def image_split(names: list[str], val_fraction: float, test_fraction: float, seed: int) -> tuple[list, list, list]:
    """Seeded split by image into (train, validation, test), each sorted."""
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_val = int(round(val_fraction * len(order)))
    n_test = int(round(test_fraction * len(order)))
    val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    return sorted(train), sorted(val), sorted(test)


# ------------------------------------------------------------------ transforms
def build_seg_transforms(segments, crop_rows: int, clavicle_prob: float, seed: int, flip_prob: float = 0.5):
    """MONAI dictionary transforms for ``{"image": (1, H, W), "label": (1, H, W)}`` (label moves with the image).

    Flip (with the left/right labels swapped), affine (rotation ±10°, scale ±15 %, shifts), a full-width strip of
    ``crop_rows`` rows (containing the labelled structures with probability ``clavicle_prob``), then intensity
    changes (gamma, contrast, noise, blur) on the image only.
    """
    from monai.transforms import (Compose, MapTransform, RandAdjustContrastd, RandAffined, RandGaussianNoised,
                                  RandGaussianSmoothd, RandScaleIntensityd, RandShiftIntensityd)
    from monai.transforms.transform import Randomizable

    perm = np.asarray(mirror_permutation(segments))

    class RandFlipSwapd(Randomizable, MapTransform):
        """Mirror image and label left-right with probability ``prob`` and swap the mirrored labels."""

        def __init__(self, prob: float = 0.5) -> None:
            MapTransform.__init__(self, ["image", "label"])
            self.prob = prob

        def randomize(self, data=None) -> None:
            self._do = self.R.random_sample() < self.prob

        def __call__(self, data):
            self.randomize()
            d = dict(data)
            if self._do:
                d["image"] = np.ascontiguousarray(np.asarray(d["image"])[..., ::-1])
                d["label"] = np.ascontiguousarray(perm[np.asarray(d["label"]).astype(np.int64)[..., ::-1]])
            return d

    class RandStripd(Randomizable, MapTransform):
        """Full-width strip of ``rows`` rows; with probability ``p_obj`` it contains the labelled rows."""

        def __init__(self, rows: int, p_obj: float) -> None:
            MapTransform.__init__(self, ["image", "label"])
            self.rows, self.p_obj = rows, p_obj

        def randomize(self, data=None) -> None:
            pass

        def __call__(self, data):
            d = dict(data)
            lab = np.asarray(d["label"])
            h = lab.shape[-2]
            if self.rows >= h:
                return d
            fg = np.nonzero(lab.reshape(-1, h, lab.shape[-1]).max(axis=(0, 2)) > 0)[0]
            if fg.size and self.R.random_sample() < self.p_obj:
                lo, hi = fg.min(), fg.max()
                start_min, start_max = max(0, hi - self.rows + 1), min(lo, h - self.rows)
                if start_max < start_min:  # taller than the strip: centre it on the labels
                    start = int(np.clip((lo + hi) // 2 - self.rows // 2, 0, h - self.rows))
                else:
                    start = int(self.R.randint(start_min, start_max + 1))
            else:
                start = int(self.R.randint(0, h - self.rows + 1))
            for k in ("image", "label"):
                d[k] = np.ascontiguousarray(np.asarray(d[k])[..., start:start + self.rows, :])
            return d

    tf = Compose([
        RandFlipSwapd(prob=flip_prob),
        RandAffined(keys=["image", "label"], prob=0.8, rotate_range=(0.17,), scale_range=(0.15, 0.15),
                    translate_range=(30, 40), mode=("bilinear", "nearest"), padding_mode="zeros"),
        RandStripd(crop_rows, clavicle_prob),
        RandAdjustContrastd(keys="image", prob=0.5, gamma=(0.6, 1.6)),
        RandScaleIntensityd(keys="image", prob=0.5, factors=0.2),
        RandShiftIntensityd(keys="image", prob=0.5, offsets=0.1),
        RandGaussianNoised(keys="image", prob=0.3, std=0.03),
        RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0)),
    ])
    tf.set_random_state(seed=seed)
    return tf


class SegDataset(torch.utils.data.Dataset):
    """Cached samples -> augmented ``(image (1, h, W) float32, label (1, h, W) int64)``."""

    def __init__(self, samples: list[SegSample], transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        d = {"image": s.image[None].astype(np.float32) / 255.0, "label": s.labels[None].astype(np.float32)}
        d = self.transform(d)
        img = torch.as_tensor(np.asarray(d["image"]), dtype=torch.float32)
        lab = torch.as_tensor(np.rint(np.asarray(d["label"])), dtype=torch.int64)
        return img, lab


class SegLoss(torch.nn.Module):
    """Dice (foreground labels, over the batch) + cross-entropy, with each part for the log."""

    def __init__(self, dice_weight: float, ce_weight: float) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        self.ce = torch.nn.CrossEntropyLoss()
        self.wd, self.wc = dice_weight, ce_weight

    def forward(self, logits, target, _valid=None):
        d = self.dice(logits, target)
        c = self.ce(logits, target[:, 0])
        return self.wd * d + self.wc * c, {"dice_loss": float(d.detach()), "ce": float(c.detach())}


# ------------------------------------------------------------------ evaluation
def _iou_dice(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    inter = float(np.logical_and(pred, ref).sum())
    a, b = float(pred.sum()), float(ref.sum())
    union = a + b - inter
    iou = inter / union if union else 1.0
    dice = 2 * inter / (a + b) if (a + b) else 1.0
    return iou, dice


def keypoints_and_parameters(labels: np.ndarray, segments, spacing: float, orientation: str, probabilities=None):
    """Landmarks from a label map and the shoulder parameters they give (``measure``), as plain dicts."""
    from ..geometry.frame import coronal_frame
    from ..geometry.orientation import parse_patient_orientation
    from ..pipeline import measure

    frame = coronal_frame(parse_patient_orientation(orientation)).frame
    lms, found, _ = masks_to_landmarks(labels, segments, frame, (spacing, spacing), probabilities)
    res = measure({k: (v.x, v.y) for k, v in lms.items()}, "coronal-shoulder", spacing_mm=(spacing, spacing),
                  calibration="manual:dataset", patient_orientation=orientation)
    return {k: np.array([v.x, v.y]) for k, v in lms.items()}, {k: m.value for k, m in res.parameters.items()}, found


def film_row(name: str, pred: np.ndarray, result, ref: np.ndarray, segments, spacing: float, orientation: str,
             reference: tuple | None = None, probabilities: np.ndarray | None = None) -> dict:
    """One film's comparison: IoU/Dice per segment, keypoint errors (px), parameter errors.

    ``result`` is the film's :class:`~SpineAlignmentLib.result.Result` from ``analyze`` (its trusted landmarks and
    parameters are compared), or ``None`` to derive them from ``pred`` here. ``reference`` caches the reference
    masks' ``keypoints_and_parameters``.
    """
    row: dict = {"image": name}
    for seg in segments:
        iou, dice = _iou_dice(pred == seg.value, ref == seg.value)
        row[f"iou_{seg.id}"], row[f"dice_{seg.id}"] = iou, dice
    if result is None:
        kp_p, par_p, found = keypoints_and_parameters(pred, segments, spacing, orientation, probabilities)
        row["warned"] = False
    else:
        kp_p = {k: np.array([v.x, v.y]) for k, v in result.landmarks.items()}
        par_p = {k: m.value for k, m in result.parameters.items()}
        found = {seg.id: all(lid in kp_p for lid in seg.landmarks) for seg in segments}
        row["warned"] = any(("clavicle" in w and ("uncertain" in w or "implausible" in w or w.startswith("No ")))
                            for w in result.warnings)
    kp_r, par_r, _ = reference or keypoints_and_parameters(ref, segments, spacing, orientation)
    row["missing"] = [k for k, v in found.items() if not v]
    row["kp_err_px"] = {k: float(np.linalg.norm(kp_p[k] - kp_r[k])) for k in kp_r if k in kp_p}
    row["param_err"] = {k: float(par_p[k] - par_r[k]) for k in par_r if k in par_p}
    row["param_ref"] = par_r
    return row


def summarise(rows: list[dict], segments, spacing: float) -> dict:
    """IoU/Dice per segment (mean, median, min), keypoint errors (px, mm; mean, median, 95th percentile), mean and
    largest absolute CA/CTAD/RSH_bony errors with their counts, and the films with a side missing or a warning."""
    m: dict = {"n_images": len(rows)}
    for seg in segments:
        for kind in ("iou", "dice"):
            v = np.array([r[f"{kind}_{seg.id}"] for r in rows])
            m[f"{kind}_{seg.id}_mean"] = float(v.mean()) if v.size else float("nan")
            m[f"{kind}_{seg.id}_median"] = float(np.median(v)) if v.size else float("nan")
            m[f"{kind}_{seg.id}_min"] = float(v.min()) if v.size else float("nan")
    errs = np.array([e for r in rows for e in r["kp_err_px"].values()])
    if errs.size:
        m.update(kp_err_px_mean=float(errs.mean()), kp_err_px_median=float(np.median(errs)),
                 kp_err_px_p95=float(np.percentile(errs, 95)), kp_err_mm_mean=float(errs.mean() * spacing),
                 kp_err_mm_median=float(np.median(errs) * spacing))
    for pid in ("CA", "CTAD", "RSH_bony"):
        v = np.abs([r["param_err"][pid] for r in rows if pid in r["param_err"]])
        m[f"{pid}_mae"] = float(v.mean()) if v.size else float("nan")
        m[f"{pid}_max_abs_err"] = float(v.max()) if v.size else float("nan")
        m[f"{pid}_n"] = int(v.size)
    m["images_side_missing"] = [r["image"] for r in rows if r["missing"]]
    m["n_low_confidence"] = int(sum(bool(r.get("warned")) for r in rows))
    return m


def evaluate_segmentation(network, samples: list[SegSample], cfg: SegConfig, flip_tta: bool = False) -> tuple[dict, list[dict]]:
    """Whole-film inference (:func:`segment_array`) on samples with original grids; :func:`summarise` metrics
    and one :func:`film_row` per film."""
    segs = get_protocol(cfg.protocol).segments
    network.eval()
    rows = []
    for s in samples:
        prob = segment_array(s.pixels, network, tuple(cfg.input_shape), segs, flip_tta=flip_tta)
        if s.reference is None:
            s.reference = keypoints_and_parameters(s.masks, segs, cfg.spacing_mm, cfg.orientation)
        rows.append(film_row(s.name, label_map(prob), None, s.masks, segs, cfg.spacing_mm, cfg.orientation,
                             s.reference, prob))
    return summarise(rows, segs, cfg.spacing_mm), rows


# ------------------------------------------------------------------ training
def build_seg_network(cfg: SegConfig):
    from ..models.segmentation import SegmentationUNet

    n_labels = 1 + max(s.value for s in get_protocol(cfg.protocol).segments)
    return SegmentationUNet(in_channels=1, out_channels=n_labels, **cfg.net)


def train_segmentation(cfg: SegConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) the segmentation network; returns the last validation metrics.

    The run folder holds ``config.json``, ``split.json`` (train/validation/test names), ``metrics.jsonl``
    (one row per epoch) and ``last.pt`` (weights, optimiser, epoch, RNG: resumable with ``resume``).
    The last epoch is the model (no epoch is chosen on the validation split).
    """
    cfg, state, out = open_run(cfg, resume)
    cfg.input_shape = tuple(cfg.input_shape)
    proto = get_protocol(cfg.protocol)
    if not proto.segments:
        raise SpineAlignmentError(f"Protocol '{proto.id}' has no segments in its table; it is not trained by segmentation.")
    items, _ = discover(Path(cfg.data), proto.segments)
    names = [n for n, _, _ in items]
    if cfg.max_images:
        names = names[: cfg.max_images]
    if len(names) < 3:
        raise SpineAlignmentError(f"Dataset {cfg.data} has {len(names)} usable films; at least 3 are needed.")
    train_n, val_n, test_n = image_split(names, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    (out / "split.json").write_text(json.dumps({"seed": cfg.seed, "by": "image", "train": train_n, "val": val_n,
                                                "test": test_n}, indent=1))
    samples, skipped = load_mask_samples(cfg, names, keep_original=set(val_n), progress=progress)
    (out / "skipped.json").write_text(json.dumps(skipped, indent=1))
    by_name = {s.name: s for s in samples}
    train_set = [by_name[n] for n in train_n if n in by_name]
    val_set = [by_name[n] for n in val_n if n in by_name]
    log.info("train %d films, validation %d, test %d (kept apart)", len(train_set), len(val_set), len(test_n))

    net = build_seg_network(cfg)
    if cfg.init_from and state is None:
        src = load_checkpoint(cfg.init_from, "weights file")
        net.load_state_dict({k: v.float() for k, v in src.get("model", src).items()})
        log.info("initialised from %s", cfg.init_from)
    opt, start = optimizer_for(net, cfg, state)
    if state is not None:
        restore_rng(state["rng"])
        log.info("resumed at epoch %d", start)
    loss_fn = SegLoss(cfg.dice_weight, cfg.ce_weight)
    last: dict = state.get("metrics", {}) if state else {}
    t_start = time.time()
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        net.train()
        seed = cfg.seed * 1000 + epoch
        tf = build_seg_transforms(proto.segments, cfg.crop_rows, cfg.clavicle_crop_prob, seed, cfg.flip_prob)
        loader = torch.utils.data.DataLoader(SegDataset(train_set, tf), batch_size=cfg.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed), num_workers=0,
                                             drop_last=len(train_set) > cfg.batch_size)
        means, lr = train_epoch(net, loader, loss_fn, opt, cfg, epoch, progress, lambda b: (b[0], b[1], None))
        train_time = time.time() - t0
        stop = cfg.time_limit_min is not None and (time.time() - t_start) / 60.0 >= cfg.time_limit_min
        validate = val_set and ((epoch + 1) % max(cfg.val_every, 1) == 0 or epoch + 1 == cfg.epochs or stop)
        metrics, _ = evaluate_segmentation(net, val_set, cfg) if validate else ({}, [])
        last = metrics or last
        row = {"epoch": epoch + 1, "lr": lr, "train_time_s": round(train_time, 1),
               "val_time_s": round(time.time() - t0 - train_time, 1),
               **{f"train_{k}": v for k, v in means.items()},
               **{f"val_{k}": v for k, v in metrics.items() if not isinstance(v, list)},
               "val_images_side_missing": metrics.get("images_side_missing", [])}
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("epoch %d: loss %.3f, val IoU L %.3f R %.3f, kp err %.1f px, CA %.2f CTAD %.2f deg, RSH_bony %.2f mm",
                 epoch + 1, means.get("loss", float("nan")), metrics.get("iou_clavicle_L_mean", float("nan")),
                 metrics.get("iou_clavicle_R_mean", float("nan")), metrics.get("kp_err_px_mean", float("nan")),
                 metrics.get("CA_mae", float("nan")), metrics.get("CTAD_mae", float("nan")),
                 metrics.get("RSH_bony_mae", float("nan")))
        save_checkpoint(out / "last.pt", {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                                          "config": asdict(cfg), "metrics": last, "rng": rng_state()})
        if stop:
            log.info("time limit of %.0f min reached after epoch %d; resume with --resume", cfg.time_limit_min, epoch + 1)
            break
    return last
