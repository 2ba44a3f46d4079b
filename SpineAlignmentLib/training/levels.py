"""Training of the vertebra identification network (:mod:`SpineAlignmentLib.models.levels`).

Each training image gives one context patch per class, cut with the same
simulated first-stage frame error as the refiner: "above" (C7, or C6 with
p = 0.3), "first" (T1), "inner" (T2 or L4 with p = 0.5, else T3..L3), "last"
(L5) and "below" (S1, or S2 with p = 0.3).

The frames come from two sources. The first stage's own candidates on the
training image (exactly the candidates the decoder would classify, labelled
by matching them to the reference vertebrae: "above" / "below" when they lie
beyond T1 / L5) are used with p = 0.7 when the class has one: they are the
hard cases, C7 and S1 as the first stage sees them. Otherwise the reference
vertebra is used, and for "above" / "below", which are not labelled, a frame
extrapolated from the end vertebrae
(:func:`~SpineAlignmentLib.models.levels.neighbour_vertebrae`). Augmentation:
a left-right mirror (the class does not change) and the refiner's intensity
augmentation; loss: cross-entropy.

Validation, each epoch, on the first stage's patient-held-out split:

* ``patch_acc``: accuracy on the reference patches (no frame error) of the five classes;
* end to end: the packaged first stage's network output of every validation
  image is decoded again with this network choosing the first and last
  vertebra; ``identity_ok`` is the fraction of images whose 17 vertebrae carry
  the right names (:func:`~SpineAlignmentLib.evaluation.levels.level_shift` 0),
  reported with the first-stage landmark metrics (``mean_error_px``,
  ``smape_pct``, ...) and the same figures decoded without identification
  (``base_*``).

Run folder: ``config.json``, ``split.json``, ``hygiene.json``, ``metrics.jsonl``, ``last.pt`` (resume).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SpineAlignmentError
from ..models.levels import ABOVE, BELOW, FIRST, INNER, LAST, LEVEL_CLASSES, LevelClassifier, make_identifier, neighbour_vertebrae
from ..models.refine import RoiSpec, normalise_patches, resize_for_rois, roi_grid, sample_rois, vertebra_frames
from .dataset import Sample
from .metrics import landmark_metrics
from .refiner import _cache_train, _Cached, _read_normalised, augment_intensity, jittered_frames, load_stage1, split_samples
from .loop import RunConfig, fit_patch_stage, open_run

__all__ = ["LevelsConfig", "train_levels", "build_level_classifier", "evaluate_identification", "label_candidates",
           "first_stage_candidates"]

log = logging.getLogger(__name__)


@dataclass
class LevelsConfig(RunConfig):
    """Settings of an identification run (all JSON-serialisable)."""

    stage1: str = "coronal-spine-landmarks"  # packaged first-stage model (name or folder) for validation
    epochs: int = 24
    lr: float = 1e-3
    warmup_epochs: float = 1
    patch_size: int = 96
    extent: float = 4.0  # patch side in vertebra widths
    images_per_batch: int = 16  # x 5 patches (one per class) per step
    shift_sd: float = 0.12
    scale_sd: float = 0.10
    angle_sd_deg: float = 6.0
    anchor_weight: float = 2.0  # decoding: weight of log P(first) + log P(last) against the centre scores
    extra: int = 3  # decoding: up to this many candidates beyond 17
    min_extra_score: float = 0.25  # decoding: centre score an extra candidate needs
    framings: int = 0  # candidates are also mined on this many re-framed copies of each training image
    neck: int = 0  # this many copies of each training image with a synthetic neck above T1 join the training set
    net: dict = field(default_factory=lambda: {"channels": [16, 32, 64, 128, 128], "num_res_units": 1, "dropout": 0.1})


def build_level_classifier(cfg: LevelsConfig) -> LevelClassifier:
    return LevelClassifier(size=cfg.patch_size, **cfg.net)


def label_candidates(candidates: np.ndarray, points: np.ndarray, max_dist: float = 0.5, *,
                     index: bool = False) -> np.ndarray:
    """Class of each (K, 4, 2) first-stage candidate against the (V, 4, 2) reference vertebrae: the
    matched vertebra's class when its centre is within ``max_dist`` x the median vertebra height of a
    reference centre, ABOVE / BELOW beyond the first / last reference centre, else -1 (not used).
    With ``index``: the index of the matched reference vertebra instead (-1 when none matches)."""
    q = np.asarray(points, dtype=np.float64).reshape(-1, 4, 2)
    c = np.asarray(candidates, dtype=np.float64).reshape(-1, 4, 2).mean(axis=1)
    ref = q.mean(axis=1)
    height = float(np.median(np.linalg.norm(0.5 * (q[:, 2] + q[:, 3]) - 0.5 * (q[:, 0] + q[:, 1]), axis=-1)))
    d = np.linalg.norm(c[:, None] - ref[None], axis=-1)
    k = d.argmin(axis=1)
    labels = np.full(len(c), -1)
    near = d[np.arange(len(c)), k] < max_dist * height
    if index:
        return np.where(near, k, -1)
    labels[near] = np.where(k[near] == 0, FIRST, np.where(k[near] == len(q) - 1, LAST, INNER))
    labels[~near & (c[:, 1] < ref[0, 1])] = ABOVE
    labels[~near & (c[:, 1] > ref[-1, 1])] = BELOW
    return labels


def _class_frames(points: np.ndarray, candidates: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  p_candidate: float = 0.7, matched: np.ndarray | None = None) -> np.ndarray:
    """(5, 4, 2) corners of one vertebra per class (ABOVE, FIRST, INNER, LAST, BELOW order); ``matched``
    (the reference index of each candidate) restricts the inner class's candidates to the chosen inner vertebra."""
    q = np.asarray(points, dtype=np.float64).reshape(-1, 4, 2)
    n = len(q)
    inner = (1 if rng.random() < 0.5 else n - 2) if rng.random() < 0.5 else int(rng.integers(2, n - 2))
    frames = [neighbour_vertebrae(q, -2 if rng.random() < 0.3 else -1), q[0], q[inner], q[-1],
              neighbour_vertebrae(q, 2 if rng.random() < 0.3 else 1)]
    for cls in range(len(frames)):
        pool = np.flatnonzero((labels == cls) if cls != INNER or matched is None else (matched == inner))
        if len(pool) and rng.random() < p_candidate:
            frames[cls] = candidates[int(rng.choice(pool))]
    return np.stack(frames)


class _LevelSet(torch.utils.data.Dataset):
    """One item = five augmented context patches (one per class) of one image and their classes."""

    def __init__(self, items: list[_Cached], spec: RoiSpec, cfg: LevelsConfig, seed: int | None,
                 candidates: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.items, self.spec, self.cfg, self.seed = items, spec, cfg, seed
        self.candidates = candidates or {}  # name -> (K, 4, 2) candidates in resized pixels, (K,) labels, (K,) matched index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        it, spec = self.items[i], self.spec
        labels = torch.tensor([ABOVE, FIRST, INNER, LAST, BELOW])
        image = it.image.astype(np.float32) / 255.0
        if self.seed is None:  # validation: the reference frames, one step beyond each end
            q = it.points
            frames = np.stack([neighbour_vertebrae(q, -1), q[0], q[len(q) // 2], q[-1], neighbour_vertebrae(q, 1)])
            return normalise_patches(sample_rois(image, roi_grid(*vertebra_frames(frames), spec))), labels
        rng = np.random.default_rng((self.seed, i))
        cand, lab, matched = self.candidates.get(it.name, (np.zeros((0, 4, 2)), np.zeros(0, int), np.zeros(0, int)))
        frames = jittered_frames(_class_frames(it.points, cand, lab, rng, matched=matched), self.cfg, rng)
        x = normalise_patches(sample_rois(image, roi_grid(*frames, spec)))
        flip = rng.random(len(labels)) < 0.5
        x[flip] = torch.flip(x[flip], dims=[-1])
        return augment_intensity(x, rng), labels


def _collate(batch):
    xs, ys = zip(*batch)
    return torch.cat(xs), torch.cat(ys), None


def neck_samples(train: list[Sample], copies: int, seed: int, folder: Path, progress: bool = False) -> list[Sample]:
    """``copies`` copies of each training sample with a synthetic neck above T1
    (:func:`~SpineAlignmentLib.training.neck.add_neck`, top 0.8-3 T1-T2 spacings above T1), written once as
    PNG files in ``folder``: the "above" class then shows cervical vertebrae without ribs (on the AASCE films
    as they are, the region above T1 is mostly off the film)."""
    import zlib

    from PIL import Image
    from tqdm import tqdm

    from .neck import TRAIN_MARGIN, add_neck

    if copies <= 0:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for s in tqdm(train, desc="neck copies", disable=not progress):
        rng = np.random.default_rng((seed, zlib.crc32(s.name.encode()), 7))
        pixels = None
        for k in range(copies):
            margin, nrng = float(rng.uniform(*TRAIN_MARGIN)), np.random.default_rng(rng.integers(1 << 62))
            path = folder / f"{Path(s.name).stem}.neck{k}.png"
            if pixels is None:
                with Image.open(s.image_path) as im:
                    pixels = np.asarray(im.convert("L"))
            film, points = add_neck(pixels, s.points, margin, nrng)
            if not path.exists():
                Image.fromarray(film).save(path)
            out.append(Sample(f"{s.name}#neck{k}", path, s.label_path, points, tuple(film.shape), s.reference_angles))
    return out


def _ce_loss(logits: torch.Tensor, labels: torch.Tensor, _valid=None):
    loss = F.cross_entropy(logits, labels)
    return loss, {"ce": float(loss.detach()), "acc": float((logits.argmax(1) == labels).float().mean())}


def first_stage_candidates(model, image: np.ndarray, extra: int, min_extra_score: float) -> np.ndarray:
    """(K, 4, 2) original-pixel corners of the candidates the decoder would classify on ``image``
    (normalised, original pixels): the 17 strongest distinct centres and up to ``extra`` more."""
    from ..inference.preprocess import letterbox
    from ..models.vertebra import decode_vertebrae

    x, geo = letterbox(image, tuple(model.input_shape))
    with torch.inference_mode():
        out = model.network(torch.from_numpy(np.ascontiguousarray(x[None, None])))
    seen: list[np.ndarray] = []

    def record(i, corners):
        seen.append(np.asarray(corners, dtype=np.float64))
        return np.ones(len(corners)), np.ones(len(corners))

    dec = model.metadata["decoding"]
    decode_vertebrae(out, model.stride, len(model.landmark_ids) // 4, search=int(dec["window"]),
                     radius=int(dec.get("refine_radius", 2)), identify=record, extra=extra, min_extra_score=min_extra_score)
    return geo.to_original(seen[0].reshape(-1, 2)).reshape(-1, 4, 2)


def _mine_candidates(stage1_model, sample: Sample, cfg: LevelsConfig) -> np.ndarray:
    """(K, 4, 2) original-pixel first-stage candidates of one training image: on the film as it is and on
    ``cfg.framings`` re-framed copies (:func:`~SpineAlignmentLib.training.framing.random_framing`, seeded by
    the image's name), whose candidates are shifted back to the original film's rows. Re-framed films
    show more neck or pelvis, or less, so the first stage takes C7, T2, L4 or S1 as a chain end there:
    the hard cases the identification network must tell apart."""
    import zlib

    from PIL import Image

    from ..inference.preprocess import normalise_intensity
    from .framing import random_framing, reframe

    with Image.open(sample.image_path) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32)
    found = [first_stage_candidates(stage1_model, normalise_intensity(pixels), cfg.extra, cfg.min_extra_score)]
    rng = np.random.default_rng((cfg.seed, zlib.crc32(sample.name.encode())))
    for _ in range(cfg.framings):
        top, bottom = random_framing(sample.points, rng)
        framed, _ = reframe(pixels, sample.points, top, bottom)
        cand = first_stage_candidates(stage1_model, normalise_intensity(framed), cfg.extra, cfg.min_extra_score)
        cand[..., 1] += round(top)
        found.append(cand)
    return np.concatenate(found)


def _train_candidates(stage1: "_Stage1Val", cfg: LevelsConfig, train: list[Sample], items: list[_Cached], out: Path,
                      progress: bool) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """First-stage candidates of every training image (:func:`_mine_candidates`) with their labels and the
    index of the reference vertebra each matches (-1: none), in the cached images' resized pixels
    (original-pixel candidates cached in ``out/stage1_train_candidates[_framedN].npz``)."""
    from tqdm import tqdm

    from ..models.refine import _scale_points

    cache = out / ("stage1_train_candidates" + (f"_framed{cfg.framings}" if cfg.framings else "") + ".npz")
    found = dict(np.load(cache)) if cache.exists() else {}
    missing = [s for s in train if s.name not in found]
    for s in tqdm(missing, desc="first-stage candidates", disable=not progress):
        found[s.name] = _mine_candidates(stage1.model, s, cfg)
    if missing:
        np.savez_compressed(cache, **found)
    res = {}
    for s, it in zip(train, items):
        cand = found[s.name]
        res[s.name] = (_scale_points(cand, it.scale), label_candidates(cand, s.points),
                       label_candidates(cand, s.points, index=True))
    return res


def _identity_metrics(preds: list[np.ndarray], samples: list[Sample]) -> dict:
    """Landmark metrics of (68, 2) predictions plus ``identity_ok``, the fraction of images named right."""
    from ..evaluation.levels import cobb_ends, end_vertebra_agreement, identification_figures, level_shift

    m = landmark_metrics(preds, [s.points for s in samples], [s.image_shape[0] for s in samples],
                         [s.reference_angles for s in samples])
    m["identity_ok"] = float(np.mean([level_shift(p, s.points) == 0 for p, s in zip(preds, samples)]))
    ident = identification_figures(preds, [s.points for s in samples])
    m["all_named_right_pct"] = ident["all_named_right_pct"]
    m["shift_counts"] = ident["shift_counts"]
    m["end_vertebrae"] = end_vertebra_agreement([cobb_ends(p, s.image_shape[0]) for p, s in zip(preds, samples)],
                                                [cobb_ends(s.points, s.image_shape[0]) for s in samples])
    return m


class _Stage1Val:
    """The packaged first stage's raw output for each validation image, kept for re-decoding, and the
    metrics of its own decoding (``base``, without identification)."""

    def __init__(self, cfg: LevelsConfig, val: list[Sample], spec: RoiSpec) -> None:
        from ..inference.preprocess import letterbox

        self.model = load_stage1(cfg.stage1)
        if self.model.metadata["decoding"]["method"] != "vertebra-centres":
            raise SpineAlignmentError(
                f"First-stage model {cfg.stage1} decodes by '{self.model.metadata['decoding']['method']}'; vertebra "
                "identification needs a vertebra-centres model (spine-align train --representation vertebra).")
        self.items = []
        coarse = []
        for s in val:
            norm = _read_normalised(s.image_path)
            x, geo = letterbox(norm, tuple(self.model.input_shape))
            with torch.inference_mode():
                out = self.model.network(torch.from_numpy(np.ascontiguousarray(x[None, None]))).half()
            coarse.append(self._decode(out, geo))
            # resized as at inference: for the median width of the first stage's vertebrae
            self.items.append((s, out, geo, resize_for_rois(norm, float(np.median(vertebra_frames(coarse[-1])[1])), spec)))
        self.base = _identity_metrics(coarse, val) if val else {}

    def _decode(self, out, geo, **kw) -> np.ndarray:
        from ..models.vertebra import decode_vertebrae

        dec = self.model.metadata["decoding"]
        pts, _ = decode_vertebrae(out, self.model.stride, len(self.model.landmark_ids) // 4, search=int(dec["window"]),
                                  radius=int(dec.get("refine_radius", 2)), **kw)
        return geo.to_original(pts[0])

    def decode(self, identify_for) -> list[np.ndarray]:
        """Corners (68, 2) original pixels per image; ``identify_for(item)`` gives the decoder's identification arguments."""
        return [self._decode(it[1], it[2], **identify_for(it)) for it in self.items]


@torch.no_grad()
def evaluate_identification(net, spec: RoiSpec, cfg: LevelsConfig, stage1: _Stage1Val) -> tuple[dict, dict]:
    """End-to-end metrics of the first stage decoded with identification, and without it (``stage1.base``)."""
    net.eval()

    def identify_for(it):
        s, out, geo, resized = it
        return {"identify": make_identifier(net, spec, geo.to_original, stage1.model.input_shape[1], resized=resized),
                "extra": cfg.extra, "min_extra_score": cfg.min_extra_score, "anchor_weight": cfg.anchor_weight}

    return _identity_metrics(stage1.decode(identify_for), [it[0] for it in stage1.items]), stage1.base


def train_levels(cfg: LevelsConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) the identification network; returns the last epoch's validation metrics."""
    from tqdm import tqdm

    cfg, state, out = open_run(cfg, resume)
    spec = RoiSpec(cfg.patch_size, cfg.extent)
    train, val = split_samples(cfg, out)
    train = train + neck_samples(train, cfg.neck, cfg.seed, out / "neck_films", progress)
    train_items = [_cache_train(s, spec) for s in tqdm(train, desc="caching", disable=not progress)]
    val_items = [_cache_train(s, spec) for s in val]
    stage1 = _Stage1Val(cfg, val, spec)
    candidates = _train_candidates(stage1, cfg, train, train_items, out, progress)
    log.info("first-stage candidates on the training images: %s", ", ".join(
        f"{c} {int(sum((v[1] == k).sum() for v in candidates.values()))}" for k, c in enumerate(LEVEL_CLASSES)))

    net = build_level_classifier(cfg)
    val_set = _LevelSet(val_items, spec, cfg, None)

    @torch.no_grad()
    def validate(net, epoch):
        if not val:
            return {}, {}
        net.eval()
        xs, ys, _ = _collate([val_set[i] for i in range(len(val_set))])
        pred = torch.cat([net(xs[k:k + 64]) for k in range(0, len(xs), 64)]).argmax(1)
        acc = float((pred == ys).float().mean())
        metrics, base = evaluate_identification(net, spec, cfg, stage1)
        log.info("epoch %d: patch acc %.3f; identity %.3f (first stage alone %.3f), all 17 named right %.1f %% (%.1f), "
                 "shifts -2..+2 %s (%s), Cobb end vertebrae exact %.1f %% (%.1f), within one %.1f %% (%.1f), "
                 "err %.1f px (%.1f), SMAPE %.2f %% (%.2f)",
                 epoch + 1, acc, metrics["identity_ok"], base["identity_ok"], metrics["all_named_right_pct"],
                 base["all_named_right_pct"], "/".join(map(str, metrics["shift_counts"].values())),
                 "/".join(map(str, base["shift_counts"].values())), metrics["end_vertebrae"]["exact_pct"],
                 base["end_vertebrae"]["exact_pct"], metrics["end_vertebrae"]["within_one_pct"],
                 base["end_vertebrae"]["within_one_pct"], metrics["mean_error_px"], base["mean_error_px"],
                 metrics["smape_pct"], base["smape_pct"])
        return ({"val_patch_acc": acc,
                 "val_patch_acc_by_class": {c: float((pred[ys == k] == k).float().mean()) for k, c in enumerate(LEVEL_CLASSES)},
                 **{f"val_{k}": v for k, v in metrics.items()},
                 **{f"val_base_{k}": base[k] for k in ("identity_ok", "all_named_right_pct", "shift_counts", "end_vertebrae",
                                                       "mean_error_px", "smape_pct", "cmae_deg")}},
                {**metrics, "patch_acc": acc})

    return fit_patch_stage(net, cfg, state, out, lambda seed: _LevelSet(train_items, spec, cfg, seed, candidates),
                           _collate, _ce_loss, validate, progress)
