"""A synthetic neck above T1: coronal training films that show what clinical films show.

The AASCE films are cut tight above T1 (the top edge lies a median 0.57
vertebra spacings above T1's top endplate), so a network trained on them
learns "the topmost vertebra is T1" and names C7 as T1 on clinical films,
which commonly show C6-C7 in full. Padding above the film
(:class:`~SpineAlignmentLib.training.framing.RandFramingd`) does not teach
otherwise: the network never sees a vertebra above T1 that carries no ribs.

:func:`add_neck` replaces everything above T1 (from just inside the C7-T1
disc) with a neck built from the film itself:

* **soft tissue**: a column centred on the spine line extrapolated upwards
  (1.2-2.0 T1 widths either side), at the film's own paraspinal intensity just
  below the cut, with soft edges and the film's own noise level, over air
  (the film's dark level) on both sides; beside the spine its lowest rows fade
  into the film's top row, so the seam is no cue (the film itself, T1 and its
  first ribs, is never changed);
* **cervical vertebrae without ribs**: copies of the film's own T1 body
  (sampled in T1's frame), narrowed to 0.70-0.85 of T1's width with a soft
  window that keeps the body and drops the rib heads beside it, each level up
  smaller (heights and spacings x 0.9 per level), separated by discs, along the
  extrapolated spine line with a small random bend.

The new film's top lies ``margin`` T1-T2 spacings above T1's top endplate.
The same function makes the training augmentation (:class:`RandNeckd`, in
network-input pixels) and the "neck-visible" validation copies (original
pixels, :mod:`SpineAlignmentLib.training.level_confidence`); the corners T1..L5
move with the film, nothing above T1 is labelled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .framing import WholeChainTransform

__all__ = ["add_neck", "neck_applies", "RandNeckd", "TRAIN_MARGIN", "VALIDATION_MARGIN"]

#: top margin (T1-T2 spacings above T1's top endplate) drawn for training films
TRAIN_MARGIN = (0.8, 3.0)
#: top margin of the neck-visible validation copies (clinical films: median 1.03, 90th percentile 1.67)
VALIDATION_MARGIN = (1.0, 2.0)
#: each cervical level up is this much smaller than the one below it (height, width, spacing)
LEVEL_SHRINK = 0.9


def neck_applies(ids) -> bool:
    """Whether a neck can be built for films labelled with these landmark IDs: the four corners of T1..L5 in
    order (TL, TR, BL, BR per vertebra), the chain :func:`add_neck` builds cervical vertebrae above."""
    from ..geometry.coronal import VERTEBRAE
    from ..geometry.levels import vertebra_chain

    return vertebra_chain(ids) == VERTEBRAE


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def add_neck(image: np.ndarray, points: np.ndarray, margin: float, rng: np.random.Generator,
             ) -> tuple[np.ndarray, np.ndarray]:
    """The film with a synthetic neck above T1 whose top edge lies ``margin`` T1-T2 spacings above T1.

    Args:
        image: ``(H, W)`` film, any intensity scale (bone bright).
        points: ``(68, 2)`` T1..L5 corners (TL, TR, BL, BR per vertebra), ``(x, y)`` pixels of ``image``.
        margin: the new top edge, in T1-T2 centre spacings above T1's top endplate (> 0).
        rng: NumPy generator for the random shape and texture choices.

    Returns:
        ``(film, points)``: the new ``(H', W)`` film (same dtype) and the corners in its pixels (rows shifted).
    """
    a = np.asarray(image, dtype=np.float32)
    q = np.asarray(points, dtype=np.float64).reshape(-1, 4, 2)
    h, w = a.shape
    c1, c2 = q[0].mean(axis=0), q[1].mean(axis=0)
    spacing = float(np.linalg.norm(c1 - c2))
    up = (c1 - c2) / max(spacing, 1e-6)  # along the spine, towards the head (y < 0 mostly)
    side = np.array([-up[1], up[0]])  # perpendicular, image-right-ish
    if side[0] < 0:
        side = -side
    top_mid, bottom_mid = q[0][:2].mean(axis=0), q[0][2:].mean(axis=0)
    t1_width = float(np.linalg.norm(q[0][1] - q[0][0]))
    t1_height = float(np.linalg.norm(top_mid - bottom_mid))
    disc = max(float(np.linalg.norm(bottom_mid - q[1][:2].mean(axis=0))), 0.12 * t1_height)
    t1_top = float(q[0][:2, 1].min())
    cut = int(np.floor(t1_top - 0.4 * disc))  # rows above this are replaced (from inside the C7-T1 disc)
    new_top = t1_top - margin * spacing  # in old rows; may be < 0 (rows added) or > 0 (rows removed)
    add = int(round(max(cut - new_top, 1.0)))  # synthetic rows on top of the kept film
    cut = max(cut, 0)  # below 0: the film's edge is already below the cut, nothing of it lies above
    keep = a[cut:]
    out_h = add + keep.shape[0]
    off = add - cut  # new row = old row + off
    # ---- the neck: background, soft tissue column, vertebrae; in new-film pixels
    lo, hi = np.percentile(a, [2, 98])
    band = a[cut:cut + max(int(0.6 * spacing), 2)]
    xs = np.arange(w)
    spine_x_at_cut = top_mid[0] + (cut - top_mid[1]) * (up[0] / up[1] if abs(up[1]) > 1e-6 else 0.0)
    para = band[:, np.abs(xs - spine_x_at_cut) < 1.5 * t1_width] if band.size else band
    tissue = float(np.median(para)) if para.size else float(0.5 * (lo + hi))
    tissue = float(np.clip(tissue * rng.uniform(0.85, 1.05), lo, hi))
    air = float(lo + (tissue - lo) * rng.uniform(0.0, 0.25))
    hp = (band - ndimage.uniform_filter(band, 3)) if band.size else np.zeros(1)
    noise_sd = float(1.4826 * np.median(np.abs(hp - np.median(hp))))  # robust: edges of ribs are no noise
    yy, xx = np.mgrid[0:add, 0:w].astype(np.float64)
    # spine line in new pixels: from T1's top centre upwards, with a small bend
    origin = top_mid + np.array([0.0, off])
    bend = rng.normal(0.0, 0.04)  # sideways drift per spacing, growing quadratically
    t_row = (yy - origin[1]) / up[1] if abs(up[1]) > 1e-6 else np.zeros_like(yy)  # distance along the spine
    centre_x = origin[0] + t_row * up[0] + bend * (t_row / spacing) ** 2 * t1_width
    half_neck = t1_width * rng.uniform(1.2, 2.0)
    edge = max(0.25 * t1_width, 2.0)
    column = _smoothstep((half_neck - np.abs(xx - centre_x)) / edge + 0.5)
    neck = air + (tissue - air) * column
    # ---- cervical vertebrae: copies of T1's body in T1's frame, narrowed, smaller each level up
    fx, fy = side, -up  # T1 frame axes in image pixels: x across, y down the spine
    ph, pw = t1_height + disc, t1_width * 1.2
    gy, gx = np.mgrid[0:max(int(ph), 2), 0:max(int(pw), 2)].astype(np.float64)
    src = (top_mid - 0.5 * disc * fy)[:, None, None] + fx[:, None, None] * (gx - pw / 2) + fy[:, None, None] * gy
    patch = ndimage.map_coordinates(a, [src[1], src[0]], order=1, mode="nearest")
    disc_rows = np.r_[patch[: max(int(0.4 * disc), 1)], patch[-max(int(0.4 * disc), 1):]]
    patch_bg = float(np.median(disc_rows))  # the discs above and below T1: the level a copied body stands on
    narrow = rng.uniform(0.70, 0.85)
    centre = origin.copy()
    level_h, level_w, gap = t1_height, t1_width * narrow, disc
    vert = np.zeros((add, w))
    for k in range(8):
        level_h, level_w, gap = level_h * LEVEL_SHRINK, level_w * (LEVEL_SHRINK if k else 1.0), gap * LEVEL_SHRINK
        bottom = centre + up * gap  # the bottom endplate of this level
        mid = bottom + up * level_h / 2
        t_mid = float(np.dot(mid - origin, up))
        mid = mid + np.array([bend * (t_mid / spacing) ** 2 * t1_width, 0.0])
        if mid[1] + level_h < 0:
            break
        # new pixel -> this level's frame -> T1 patch coordinates
        dx, dy = xx - mid[0], yy - mid[1]
        u = dx * fx[0] + dy * fx[1]  # across, pixels
        v = dx * fy[0] + dy * fy[1]  # down the spine, pixels
        pv = (v / level_h + 0.5) * t1_height + 0.5 * disc  # rows of the patch
        pu = u / level_w * t1_width + pw / 2
        inside = _smoothstep((0.5 * level_w - np.abs(u)) / max(0.12 * level_w, 1.0)) * \
            _smoothstep((0.5 * level_h + 0.25 * gap - np.abs(v)) / max(0.12 * level_h, 1.0))
        sample = ndimage.map_coordinates(patch, [pv, pu], order=1, mode="nearest")
        vert += inside * (sample - patch_bg)
        centre = mid - np.array([bend * (t_mid / spacing) ** 2 * t1_width, 0.0]) + up * level_h / 2
    neck = neck + vert * rng.uniform(0.8, 1.1)
    if noise_sd > 0:
        neck = neck + ndimage.gaussian_filter(rng.normal(0.0, noise_sd, neck.shape), 0.5)
    out = np.empty((out_h, w), dtype=np.float32)
    out[:add] = np.clip(neck, lo, max(hi, a.max()))
    out[add:] = keep
    # the neck's lowest rows fade into the film's first kept row over 0.3-1.2 spacings, beside the spine
    # only, so that the seam is no cue; the film itself (T1 and its first ribs) is never touched
    fade = min(max(int(rng.uniform(0.3, 1.2) * spacing), 1), add)
    if fade > 0 and keep.shape[0]:
        t = _smoothstep((np.arange(fade) + 0.5) / fade)[:, None]  # 0 at the top of the fade, 1 at the cut
        spine_band = _smoothstep((0.75 * t1_width - np.abs(xs - origin[0])) / max(0.2 * t1_width, 1.0))[None, :]
        mix = (1.0 - spine_band) * t
        out[add - fade:add] = out[add - fade:add] * (1 - mix) + keep[:1] * mix
    dtype = np.asarray(image).dtype
    if not np.issubdtype(dtype, np.floating):
        out = np.clip(np.round(out), np.iinfo(dtype).min, np.iinfo(dtype).max)
    film = out.astype(dtype)
    moved = np.asarray(points, dtype=np.float64).copy()
    moved[:, 1] += off
    return film, moved


class RandNeckd(WholeChainTransform):
    """With probability ``prob``, give a letterboxed coronal training film (network-input pixels,
    ``(1, H, W)``) a synthetic neck (:func:`add_neck`, top margin drawn from :data:`TRAIN_MARGIN`) and fit the
    taller film back into the input (scaled about the centre column; the aspect is kept, empty columns are 0).
    Films whose corners are not all on the input are left as they are."""

    def __init__(self, keys, points_key: str = "points", prob: float = 0.5,
                 margin: tuple[float, float] = TRAIN_MARGIN) -> None:
        super().__init__(keys, points_key, prob)
        self.margin = margin

    def __call__(self, data):
        d, pts = self.chain(data)
        if pts is None:
            return d
        key = self.keys[0]
        img = np.asarray(d[key], dtype=np.float32)
        h, w = img.shape[-2:]
        if (pts[:, 0] > w - 1).any() or (pts[:, 1] > h - 1).any():
            return d  # a corner off the input: nothing to build a neck from
        # content columns/rows of the letterbox (padding is exactly 0)
        rows = np.flatnonzero(img[0].max(axis=1) > 0)
        cols = np.flatnonzero(img[0].max(axis=0) > 0)
        if rows.size < 8 or cols.size < 8:
            return d
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        content = img[0, r0:r1, c0:c1]
        local = pts - np.array([c0, r0])
        gen = np.random.default_rng(int(self.R.randint(0, 2 ** 31 - 1)))
        film, moved = add_neck(content, local, float(self.R.uniform(*self.margin)), gen)
        fh, fw = film.shape
        s = min(h / fh, w / fw)
        oy, ox = (h - fh * s) / 2.0, (w - fw * s) / 2.0
        # output (y, x) -> input (y', x') = ((y - oy) / s, (x - ox) / s), pixel centres at integers
        out = ndimage.affine_transform(film, [1.0 / s, 1.0 / s], offset=[-oy / s + 0.5 / s - 0.5, -ox / s + 0.5 / s - 0.5],
                                       output_shape=(h, w), order=1, mode="constant", cval=0.0, prefilter=False)
        out = np.clip(out, 0.0, None)  # letterbox padding stays the darkest value
        d[key] = out[None].astype(np.float32)
        d[self.points_key] = ((moved + 0.5) * s - 0.5 + np.array([ox, oy])).astype(np.float32)
        return d
