"""Protocol-generic landmark trainer: any protocol's landmarks from a dataset-format folder.

Everything protocol-specific comes from the protocol table: the landmark IDs (channel order), the
left/right partners a mirror swaps (coronal views; :func:`~SpineAlignmentLib.models.landmarks.flip_permutation`)
and, for lateral views, the facing direction every film is normalised to (definitions.md §1.1: the
facing is read from the anterior/posterior corners, :func:`~SpineAlignmentLib.geometry.frame.lateral_frame`;
films facing image-left are mirrored before training and predictions mirrored back, so a network
never has to learn both directions; lateral films are never mirrored as augmentation).

Two stages, both MONAI building blocks trained from scratch (the whole-spine and cervical studies'
coarse-to-fine design):

1. **whole film** -- :class:`~SpineAlignmentLib.models.network.SpineLandmarkNet` on the letterboxed
   film (input shape from the films' median aspect ratio), one heatmap per landmark, DSNT decoding,
   loss :class:`~SpineAlignmentLib.training.losses.DsntLoss` over the landmarks *present* on each film
   (a missing landmark is never invented; it just does not count); or, with ``family="levels"``, the
   level-sequence family's head, loss and decoding (:mod:`SpineAlignmentLib.training.level_family`: one
   level-centre map, part offsets, absent landmarks learnt as absent) in the same loop;
2. **one ROI per vertebral level** -- :mod:`SpineAlignmentLib.models.landmark_roi`: patches cut around
   each level's reference landmarks (side 1.6 level sizes) with a simulated first-stage error, one heatmap
   per landmark part.

Run folder (same layout and ``--resume`` as the other trainers): ``config.json``, ``split.json``,
``dataset.json`` (the dataset check's findings and every skipped file with its reason),
``metrics.jsonl`` (a ``stage`` field per row; the last row, ``"final": true``, holds the figures of the
model the export ships), ``last.pt`` (the resume checkpoint: stage 1, then stage 2 with the final stage-1
weights beside it; the export reads it, so the last epoch is what ships), ``best.pt`` (stage-1 weights of
the epoch with the lowest validation error, for inspection only), ``final_metrics.json`` and
``val_predictions.json`` (the validation films' landmarks from the final model).

Validation (every ``val_every`` epochs, and the final row) is the export's own measurement,
:func:`~SpineAlignmentLib.training.generic_model.evaluate_films`: each validation film read from its file
and analysed end to end by the model the run's weights make at that point (stage 1 alone during stage 1),
facing chosen by the network on lateral views as for a new film, weights rounded to float16 as the export
stores them. So the final row's ``val_median_error_px`` is the ``median_error_px`` of the exported card.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar
from pathlib import Path

import numpy as np
import torch

from ..errors import SpineAlignmentError
from ..geometry.frame import lateral_frame
from ..inference.preprocess import Letterbox, letterbox, normalise_intensity
from ..models.landmark_roi import LandmarkRoi, group_angles, group_centres, landmark_groups, landmark_parts, level_groups
from ..models.landmarks import flip_permutation
from ..models.network import SpineLandmarkNet
from ..models.refine import _scale_points, normalise_patches, roi_grid, sample_rois, to_roi
from ..protocols import get_protocol
from .losses import DsntLoss
from .refiner import augment_intensity
from .checkpoint import init_states, save_checkpoint
from .dataset import check_validation_unseen, split_names
from .generic_model import CANONICAL_FACING, LANDMARK_FIGURES, evaluate_films, run_model
from .loop import LandmarkDataset, RunConfig, open_run, optimizer_for, train_epoch
from .transforms import build_train_transforms

__all__ = ["GenericConfig", "train_generic", "build_stage1", "build_stage2", "mirrors_for_facing",
           "auto_input_shape", "validation_row"]

log = logging.getLogger(__name__)



@dataclass
class GenericConfig(RunConfig):
    """Settings of a generic landmark run (JSON-serialisable; stored in every checkpoint)."""

    #: settings added later, as the runs made before them trained (:func:`~.loop.stored_config`)
    BEFORE_IT_EXISTED: ClassVar[dict] = {"roi_rotate": False}

    epochs: int = 60
    batch_size: int = 8
    input_shape: tuple[int, int] | None = None  # None: input_rows rows, columns from the films' median aspect
    net: dict = field(default_factory=lambda: {
        "stem_channels": [16, 32], "channels": [32, 64, 128, 256, 256], "num_res_units": 1, "features": 64})
    # 512 rows and a 5-level UNet (deepest level H/64): on the AASCE films the full-data model measured a median
    # error of 19.3 px against 28.4 px with 384 rows and 4 levels (docs/training.md)
    input_rows: int = 512  # with input_shape None: rows of the letterboxed input
    train_images: int | None = None  # learning curves: train on this many training images (whole patients, seeded)
    refine_epochs: int = 30  # stage 2 (0: no second stage)
    val_every: int = 1  # validate every N epochs (and after the last) in both stages
    # stage 2: 128-px ROIs, every level of a coronal film per step, a simulated first-stage error of 0.07 ROI sides
    # and a 4-level network. On the AASCE split-1 films (docs/training.md) these took the level family's median from
    # 14.1 px (96-px ROIs, 12 per film, 0.15/0.1 error, 3 levels: worse than its first stage alone, 13.3 px) to the
    # figure there; the part maps made the first stage accurate enough that the wider simulated error only blurred
    # the second stage.
    roi_size: int = 128
    roi_fraction: float = 0.08  # fallback: ROI side as a fraction of the landmark span (no level group of 2+)
    roi_extent: float | None = 1.6  # ROI side in median level-group sizes (None: the fraction of the span)
    roi_per_image: int = 17  # level groups (ROIs) per film per stage-2 step
    roi_shift_sd: float = 0.07  # simulated first-stage error, ROI sides (per axis)
    roi_scale_sd: float = 0.07
    # a level's ROI turned along the spine (models.landmark_roi.group_angles), with this simulated error of the
    # first stage's direction (degrees); False: axis-aligned ROIs (the design before it)
    roi_rotate: bool = True
    roi_angle_sd: float = 6.0
    refine_net: dict = field(default_factory=lambda: {
        "stem_channels": [16, 32], "channels": [32, 64, 128, 128], "num_res_units": 1, "features": 32})
    # first-stage design: "landmarks", one heatmap per landmark; "levels", the
    # level-sequence family (models.level_family: one shared level-centre map, part offsets, single landmarks)
    family: str = "landmarks"
    # probability that a training film shows only part of its labelled span (training.framing.RandSpanCropd)
    crop: float = 0.0
    # probability that a training film gets a synthetic neck above T1 (training.neck.RandNeckd: cervical vertebrae
    # without ribs built from the film's own T1), for tables whose landmarks are the T1..L5 corners (neck_applies)
    neck: float = 0.0
    # start from these weights: a generic run's checkpoint (both stages when it holds them) or a model folder's
    # model.pt (its refine.pt beside it is the second stage)
    init_from: str | None = None


def build_stage1(cfg: GenericConfig, ids) -> SpineLandmarkNet:
    """First-stage network of ``cfg.family`` for the landmark IDs ``ids``."""
    if cfg.family == "levels":
        from .level_family import build_family_net

        return build_family_net(cfg.net, ids)
    return SpineLandmarkNet(in_channels=1, out_channels=len(ids), **cfg.net)


def stage1_loss(cfg: GenericConfig, net, ids):
    if cfg.family == "levels":
        from .level_family import family_loss

        return family_loss(net, ids)
    return DsntLoss(net.stride, cfg.sigma, cfg.coord_weight, cfg.js_weight)


def build_stage2(cfg: GenericConfig, n_parts: int) -> SpineLandmarkNet:
    return SpineLandmarkNet(in_channels=1, out_channels=n_parts, **cfg.refine_net)


def mirrors_for_facing(protocol, landmarks: dict, patient_orientation=None) -> bool | None:
    """Whether a film of ``protocol`` must be mirrored to face :data:`CANONICAL_FACING`.

    Coronal views: never (``False``). Lateral views: ``True`` when the anterior direction is image-left;
    ``None`` when the landmarks do not tell (the film cannot be normalised and is skipped).
    """
    if protocol.view != "lateral":
        return False
    try:
        info, _ = lateral_frame({k: np.asarray(v, dtype=np.float64) for k, v in landmarks.items()}, patient_orientation)
    except Exception:  # LandmarkError: no vertebra with both anterior and posterior corners
        return None
    return info.facing != CANONICAL_FACING


def auto_input_shape(sizes: list[tuple[int, int]], rows: int = 512, multiple: int = 64) -> tuple[int, int]:
    """Network input (rows, cols) for films of these (rows, cols): ``rows`` high, the median aspect wide."""
    aspect = float(np.median([c / r for r, c in sizes])) if sizes else 1.0
    cols = int(min(max(round(rows * aspect / multiple) * multiple, 2 * multiple), 2 * rows))
    return rows, cols


@dataclass
class _Film:
    name: str
    patient: str
    mirrored: bool
    image: np.ndarray  # stage 1: (rows, cols) uint8 letterboxed input
    points: np.ndarray  # (K, 2) input pixels, NaN for absent landmarks
    geometry: Letterbox
    roi_image: np.ndarray | None = None  # stage 2: film resized for its ROI side (uint8, facing-normalised)
    roi_points: np.ndarray | None = None  # (K, 2) in roi_image pixels
    roi_side: float = 0.0  # ROI side in roi_image pixels


def _read_pixels(path: Path) -> np.ndarray:
    from ..imaging.radiograph import read_radiograph

    return read_radiograph(path).pixels


def _points_array(ids, landmarks: dict) -> np.ndarray:
    return np.array([landmarks.get(i, (np.nan, np.nan)) for i in ids], dtype=np.float64)


def _mirror_x(points: np.ndarray, cols: int) -> np.ndarray:
    p = np.array(points, dtype=np.float64)
    p[:, 0] = (cols - 1) - p[:, 0]
    return p


def _cache_film(item, ids, mirrored: bool, shape_in, roi: LandmarkRoi, with_roi: bool) -> _Film:
    pts = _points_array(ids, item.landmarks)
    norm = normalise_intensity(_read_pixels(item.image))
    cols = norm.shape[1]
    work = norm[:, ::-1] if mirrored else norm
    wpts = _mirror_x(pts, cols) if mirrored else pts
    img, geo = letterbox(np.ascontiguousarray(work), shape_in)
    film = _Film(Path(item.image).name, item.patient, mirrored, np.clip(np.rint(img * 255), 0, 255).astype(np.uint8),
                 geo.to_input(wpts).astype(np.float32), geo)
    if with_roi:
        side = roi.side(wpts, landmark_groups(ids))
        r, f = roi.resize(np.ascontiguousarray(work), side)
        film.roi_image = np.clip(np.rint(r * 255), 0, 255).astype(np.uint8)
        film.roi_points = _scale_points(wpts, f)
        film.roi_side = side * f[0]
    return film


def split_items(items, cfg: GenericConfig) -> tuple[list, list]:
    """Train / validation items: ``cfg.val_list`` when given, else whole patients drawn with ``cfg.seed``
    until ``cfg.val_fraction`` of the films; then, with ``cfg.train_images``, whole training patients
    drawn with the seed until that many films (never a patient on both sides)."""
    if cfg.val_list:
        names = set(split_names([Path(it.image).name for it in items], val_list=cfg.val_list, data=cfg.data)[1])
        val = [it for it in items if Path(it.image).name in names]
        train = [it for it in items if Path(it.image).name not in names]
    else:
        groups: dict[str, list] = {}
        for it in items:
            groups.setdefault(it.patient, []).append(it)
        keys = sorted(groups)
        random.Random(cfg.seed).shuffle(keys)
        val, target = [], cfg.val_fraction * len(items)
        for k in keys:
            if len(val) >= target:
                break
            val.extend(groups[k])
        chosen = {id(it) for it in val}
        train = [it for it in items if id(it) not in chosen]
    if cfg.train_images:
        groups = {}
        for it in train:
            groups.setdefault(it.patient, []).append(it)
        keys = sorted(groups)
        random.Random(cfg.seed + 1).shuffle(keys)
        sub: list = []
        for k in keys:
            if len(sub) >= cfg.train_images:
                break
            sub.extend(groups[k])
        train = sub[: cfg.train_images]
    return train, val


def _load_items(cfg: GenericConfig, out: Path | None):
    """The dataset's usable films (read by :func:`SpineAlignmentLib.io.dataset.read_dataset`); findings to
    ``out/dataset.json``. Refuses a dataset with errors in most files or no usable film."""
    from ..io.dataset import read_dataset

    report = read_dataset(Path(cfg.data), cfg.protocol)
    if out is not None:
        (out / "dataset.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))
    errors = [f for f in report.findings if f.severity == "error"]
    for f in errors:
        log.warning("skipped: %s", f.message)
    if not report.items:
        raise SpineAlignmentError(f"No usable labelled film in {cfg.data} for protocol {cfg.protocol}; "
                                  f"run 'spine-align dataset check {cfg.data} --protocol {cfg.protocol}' to see why.")
    if len(errors) > len(report.items):
        raise SpineAlignmentError(
            f"{len(errors)} files of {cfg.data} have errors and only {len(report.items)} films are usable; "
            f"this does not look like a {cfg.protocol} dataset (run 'spine-align dataset check').")
    return report.items


def epoch_figure(row: dict) -> str:
    """``": val median 12.3 px"`` for an epoch that was validated, else ``" (not validated this epoch)"``: never nan."""
    val = row.get("val_median_error_px")
    if val is None or not np.isfinite(val):
        return " (not validated this epoch)"
    return f": val median {val:.1f} px"


def validation_row(figs: dict) -> dict:
    """The ``val_*`` fields of a ``metrics.jsonl`` row from :func:`evaluate_films` figures: the landmark
    figures only (the parameters depend on the confidence calibration the export adds), None never written."""
    return {f"val_{k}": figs[k] for k in LANDMARK_FIGURES if figs.get(k) is not None}


class _Patches(torch.utils.data.Dataset):
    """One item = ROIs of up to ``roi_per_image`` level groups of one film (centred on the group's reference
    points with a simulated first-stage error), with their (P, 2) part targets and (P,) validity."""

    def __init__(self, films, part_index, mirror_parts, groups, rank, n_parts, cfg: GenericConfig, roi: LandmarkRoi,
                 seed: int, mirror: bool):
        self.films, self.part_index, self.mirror_parts, self.groups = films, part_index, mirror_parts, groups
        self.rank = rank
        self.n_parts, self.cfg, self.roi, self.seed, self.mirror = n_parts, cfg, roi, seed, mirror

    def __len__(self) -> int:
        return len(self.films)

    def __getitem__(self, i: int):
        rng = np.random.default_rng((self.seed, i))
        f, cfg, roi = self.films[i], self.cfg, self.roi
        centres = group_centres(f.roi_points, self.groups)
        usable = np.where(np.isfinite(centres).all(axis=1))[0]
        pick = rng.choice(usable, size=min(cfg.roi_per_image, len(usable)), replace=False)
        n = len(pick)
        side = f.roi_side * np.exp(np.clip(rng.normal(0, cfg.roi_scale_sd, n), -2.5 * cfg.roi_scale_sd, 2.5 * cfg.roi_scale_sd))
        shift = np.clip(rng.normal(0, cfg.roi_shift_sd, (n, 2)), -2.5 * cfg.roi_shift_sd, 2.5 * cfg.roi_shift_sd)
        centre = centres[pick] + shift * side[:, None]
        angle = np.zeros(n)
        if roi.rotate:
            sd = np.deg2rad(cfg.roi_angle_sd)
            angle = group_angles(centres, self.rank)[pick] + np.clip(rng.normal(0, sd, n), -2.5 * sd, 2.5 * sd)
        x = normalise_patches(sample_rois(f.roi_image.astype(np.float32) / 255.0, roi_grid(centre, side, angle, roi.spec)))
        target = np.zeros((n, self.n_parts, 2))
        valid = np.zeros((n, self.n_parts), dtype=bool)
        s = roi.size - 1
        for j, gi in enumerate(pick):
            g = self.groups[gi]
            uv = to_roi(f.roi_points[g][None], centre[j:j + 1], side[j:j + 1], angle[j:j + 1], roi.spec)[0]
            ok = np.isfinite(uv).all(axis=1) & (uv >= 0).all(axis=1) & (uv <= s).all(axis=1)
            parts = self.part_index[g]
            target[j, parts] = np.nan_to_num(uv)
            valid[j, parts] = ok
        if self.mirror:
            flip = rng.random(n) < 0.5
            x[flip] = torch.flip(x[flip], dims=[-1])
            target[flip, :, 0] = s - target[flip, :, 0]
            perm = np.argsort(self.mirror_parts)  # new channel q holds old part mirror^-1(q) (mirror is an involution)
            target[flip] = target[flip][:, perm]
            valid[flip] = valid[flip][:, perm]
        x = augment_intensity(x, rng)
        return x, torch.as_tensor(target, dtype=torch.float32), torch.as_tensor(valid)


def _load_init(net, state: dict, path: str, which: str) -> None:
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError:
        raise SpineAlignmentError(f"{path}: its {which}-stage weights do not fit this run's network (another protocol, "
                                  "trainer or network size); give a checkpoint of the same design, or start without "
                                  "--init-from.") from None


def _collate(batch):
    x, t, v = zip(*batch)
    return torch.cat(x), torch.cat(t), torch.cat(v)


def train_generic(cfg: GenericConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) both stages of a generic landmark model; returns the final validation figures.

    Raises:
        SpineAlignmentError: bad data folder, no usable film, or ``resume`` without a checkpoint.
    """
    cfg, state, out = open_run(cfg, resume, keep=("epochs", "refine_epochs", "time_limit_min", "threads"))
    proto = get_protocol(cfg.protocol)
    ids = proto.landmark_ids
    items = _load_items(cfg, out)
    train_items, val_items = split_items(items, cfg)
    if cfg.family == "levels":
        from .level_family import check_family_data

        check_family_data(train_items, ids, cfg.data)
    if cfg.neck > 0:
        from .neck import neck_applies

        if not neck_applies(ids):
            raise SpineAlignmentError(f"--neck builds cervical vertebrae above T1 from a film's T1..L5 corners; the "
                                      f"landmarks of protocol {cfg.protocol} are not that chain: drop --neck.")
    init = None
    if cfg.init_from and state is None:
        check_validation_unseen(cfg.init_from, [Path(it.image).name for it in items],
                                [Path(it.image).name for it in val_items], "the weights of --init-from")
        init = init_states(cfg.init_from)
    if cfg.input_shape is None:
        cfg.input_shape = auto_input_shape([tuple(it.image_size) for it in train_items], cfg.input_rows)
    cfg.input_shape = tuple(cfg.input_shape)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    (out / "split.json").write_text(json.dumps({
        "seed": cfg.seed, "val_fraction": cfg.val_fraction, "val_list": cfg.val_list, "train_images": cfg.train_images,
        "train": sorted(Path(it.image).name for it in train_items), "val": sorted(Path(it.image).name for it in val_items),
        "train_patients": sorted({it.patient for it in train_items}), "val_patients": sorted({it.patient for it in val_items}),
    }, indent=1))
    roi = LandmarkRoi(cfg.roi_size, cfg.roi_fraction, cfg.roi_extent, cfg.roi_rotate)
    with_roi = cfg.refine_epochs > 0

    def cache(its, what):
        from tqdm import tqdm

        films = []
        for it in tqdm(its, desc=f"caching {what}", unit="film", disable=not progress):
            mirrored = mirrors_for_facing(proto, it.landmarks, it.patient_orientation)
            if mirrored is None:
                log.warning("skipped %s: its facing direction cannot be read from the landmarks (no vertebra "
                            "with both anterior and posterior corners)", it.image)
                continue
            films.append(_cache_film(it, ids, mirrored, cfg.input_shape, roi, with_roi))
        return films

    fitted = None  # a family run's decoding, chosen on its training films once stage 1 is done

    def validate(stage1: dict, stage2: dict | None) -> dict:
        """The export's end-to-end figures of the model these weights make, on every validation film."""
        t0 = time.time()
        with torch.random.fork_rng(devices=[]):  # building the networks draws random weights: training stays as it was
            figs = evaluate_films(run_model(cfg, ids, stage1, stage2, fitted=fitted), val_items, proto.id, parameters=False,
                                  progress=progress)
        figs["val_time_s"] = round(time.time() - t0, 1)
        return figs

    def write_row(row: dict) -> None:
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")

    train_films = cache(train_items, "training films")
    if not train_films:
        raise SpineAlignmentError(f"No training film left in {cfg.data} after the split; add films or lower --val-fraction.")
    log.info("train %d films, validation %d films, input %s", len(train_films), len(val_items), cfg.input_shape)

    # ---- stage 1 ----
    net = build_stage1(cfg, ids)
    if init is not None:
        _load_init(net, init[0], cfg.init_from, "first")
    opt, start = optimizer_for(net, cfg, state if state is not None and state.get("stage", 1) == 1 else None)
    best = (state or {}).get("best") or {}
    if state is not None and state.get("stage", 1) == 2:
        net.load_state_dict(state["stage1"])
        start = cfg.epochs
    loss_fn = stage1_loss(cfg, net, ids)
    perm = flip_permutation(ids, proto.flip_pairs) if proto.view != "lateral" else None
    t_start = time.time()
    final = None  # figures of the final model, once measured
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        net.train()
        tf = build_train_transforms(perm, seed=cfg.seed * 1000 + epoch, crop=cfg.crop, neck=cfg.neck)  # perm None: lateral
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        loader = torch.utils.data.DataLoader(LandmarkDataset(train_films, tf), batch_size=cfg.batch_size, shuffle=True,
                                             generator=g, num_workers=0, drop_last=len(train_films) > cfg.batch_size)
        means, lr = train_epoch(net, loader, loss_fn, opt, cfg, epoch, progress,
                                lambda b: (b["image"], torch.nan_to_num(b["points"]), b["valid"]))
        row = {"stage": 1, "epoch": epoch + 1, "lr": lr, "train_time_s": round(time.time() - t0, 1),
               **{f"train_{k}": v for k, v in means.items()}}
        if val_items and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            figs = validate(net.state_dict(), None)
            m = {k: figs[k] for k in LANDMARK_FIGURES if figs.get(k) is not None}
            row.update(validation_row(figs), val_time_s=figs["val_time_s"])
            if m.get("median_error_px", float("inf")) < best.get("median_error_px", float("inf")):
                best = {**m, "epoch": epoch + 1}
                save_checkpoint(out / "best.pt", {"model": net.state_dict(), "config": asdict(cfg), "epoch": epoch + 1, "metrics": m,
                                        "landmark_ids": list(ids)})
            if epoch + 1 == cfg.epochs and not with_roi:
                final = figs
        write_row(row)
        log.info("stage 1 epoch %d%s", epoch + 1, epoch_figure(row))
        save_checkpoint(out / "last.pt", {"stage": 1, "model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                                "config": asdict(cfg), "best": best, "landmark_ids": list(ids)})
        if cfg.time_limit_min is not None and (time.time() - t_start) / 60.0 >= cfg.time_limit_min:
            log.info("time limit reached after stage-1 epoch %d; resume with --resume", epoch + 1)
            return {"stopped": "time limit", "stage": 1, "epoch": epoch + 1, "best": best}
    stage1_state = net.state_dict()
    stage2_state = None
    if cfg.family == "levels":
        # the family's decoding (centre threshold, part search and floor), chosen once on the training films and
        # kept with the weights
        fitted = (state or {}).get("fitted") if start >= cfg.epochs else None  # stage 1 trained on: choose again
        if fitted is None:
            from .level_family import fit_decoding

            with torch.random.fork_rng(devices=[]):
                fitted = fit_decoding(run_model(cfg, ids, stage1_state, None), train_films, cfg.seed)
            log.info("decoding chosen on %s: centre threshold %s, part search %s, part floor %s; fewest levels on a "
                     "training film %s; level anchors %s (named by %s)", fitted["fitted_on"], fitted["min_score"],
                     fitted["part_window"], fitted["part_floor"], fitted["min_levels"],
                     ", ".join(f"{k} -> {a['level']}" for k, a in fitted["anchors"].items()) or "none",
                     fitted["anchor_naming"])
            if state is not None and state.get("stage") == 2:  # a stage-2 checkpoint from before the choice: keep it
                save_checkpoint(out / "last.pt", {**state, "fitted": fitted})
            else:
                save_checkpoint(out / "last.pt", {"stage": 1, "model": stage1_state, "optimizer": opt.state_dict(),
                                                  "epoch": cfg.epochs - 1, "config": asdict(cfg), "best": best,
                                                  "landmark_ids": list(ids), "fitted": fitted})
    result = {"stage1": best, "input_shape": list(cfg.input_shape)}

    # ---- stage 2 ----
    if with_roi:
        parts, part_index, mirror_parts = landmark_parts(ids, proto.flip_pairs)
        groups, rank = landmark_groups(ids), level_groups(ids)
        rnet = build_stage2(cfg, len(parts))
        if init is not None and init[1] is not None:
            _load_init(rnet, init[1], cfg.init_from, "second")
        rstate = state if state is not None and state.get("stage") == 2 else None
        rcfg = RunConfig(**{k: getattr(cfg, k) for k in RunConfig.__dataclass_fields__})
        rcfg.epochs, rcfg.warmup_epochs = cfg.refine_epochs, 1  # same schedule shape over the stage-2 epochs
        ropt, rstart = optimizer_for(rnet, rcfg, rstate)
        for epoch in range(rstart, cfg.refine_epochs):
            t0 = time.time()
            rnet.train()
            seed = cfg.seed * 1000 + 500 + epoch
            data = _Patches(train_films, part_index, mirror_parts, groups, rank, len(parts), cfg, roi, seed,
                            mirror=perm is not None)
            loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, collate_fn=_collate,
                                                 generator=torch.Generator().manual_seed(seed), num_workers=0)
            rloss = DsntLoss(rnet.stride, cfg.sigma, cfg.coord_weight, cfg.js_weight)
            means, lr = train_epoch(rnet, loader, rloss, ropt, rcfg, epoch, progress, lambda b: b)
            row = {"stage": 2, "epoch": epoch + 1, "lr": lr, "train_time_s": round(time.time() - t0, 1),
                   **{f"train_{k}": v for k, v in means.items()}}
            if val_items and (epoch + 1) % cfg.val_every == 0 and epoch + 1 < cfg.refine_epochs:
                figs = validate(stage1_state, rnet.state_dict())
                row.update(validation_row(figs), val_time_s=figs["val_time_s"])
            write_row(row)
            log.info("stage 2 epoch %d%s", epoch + 1, epoch_figure(row))
            save_checkpoint(out / "last.pt", {"stage": 2, "stage1": stage1_state, "model": rnet.state_dict(),
                                    "optimizer": ropt.state_dict(), "epoch": epoch, "config": asdict(cfg), "best": best,
                                    "landmark_ids": list(ids), "parts": parts, "fitted": fitted})
            if cfg.time_limit_min is not None and (time.time() - t_start) / 60.0 >= cfg.time_limit_min:
                log.info("time limit reached after stage-2 epoch %d; resume with --resume", epoch + 1)
                return {"stopped": "time limit", "stage": 2, "epoch": epoch + 1, "best": best}
        stage2_state = rnet.state_dict()
    if val_items:
        # The final model (also after a resume past the last epoch), measured as the export measures it: the
        # last row of metrics.jsonl and the figures the export writes in the card agree.
        if final is None:
            final = validate(stage1_state, stage2_state)
        row = {"stage": 2 if with_roi else 1, "epoch": cfg.refine_epochs if with_roi else cfg.epochs, "final": True,
               **validation_row(final), "val_time_s": final["val_time_s"]}
        write_row(row)
        log.info("final model (as the export measures it)%s", epoch_figure(row))
        result["final"] = {k: final[k] for k in LANDMARK_FIGURES if final.get(k) is not None}
        (out / "val_predictions.json").write_text(json.dumps(final["_predictions"]))
    (out / "final_metrics.json").write_text(json.dumps(result, indent=1))
    return result
