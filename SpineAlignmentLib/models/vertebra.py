"""Vertebra-centred landmark representation: one centre heatmap, corner offsets, corner heatmaps.

Why not one heatmap per corner: 17 vertebrae look alike, so a network that
must put ``T7_TL`` in its own channel has to *count* vertebrae before it can
learn what a corner looks like; trained from scratch on a CPU it stayed stuck
at spreading each map along the spine. Here every output is shared by all
vertebrae (translation-equivariant, 17x the positive examples per image) and
identity comes from geometry: the 17 strongest centres, sorted top to bottom,
are T1..L5 (as in Yi et al., "Vertebra-focused landmark detection for
scoliosis assessment", ISBI 2020).

Output channels (all at ``1/stride`` of the input):

* ``0``: vertebra-centre heatmap logits (CenterNet-style focal loss);
* ``1-2``: centre offset ``(dx, dy) / OFFSET_SCALE`` from the pixel centre;
* ``3-10``: corner offsets ``(dx, dy) / OFFSET_SCALE`` of TL, TR, BL, BR from
  the pixel centre;
* ``11-14``: corner-type heatmap logits (TL, TR, BL, BR; one map for the 17
  corners of that type);
* ``15-16`` (optional, ``spine-align train --anchors``): anchor heatmap logits of the first (T1) and last (L5)
  vertebra centre. Sorting the strongest centres fails by one level when C7 or
  S1 looks as vertebra-like as T1 or L5; T1 (first ribs) and L5 (on the
  sacrum) are told apart by local anatomy, so the decoder chooses the first
  and last vertebra with them and the strongest centres in between.

Decoding is coarse to fine: coarse corners = centre peak + regressed offsets;
each coarse corner is then refined by a soft-argmax of its corner-type
heatmap in a small window around the coarse position (an ROI refinement per
vertebra, sub-pixel).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .dsnt import heatmap_grid

__all__ = ["N_CHANNELS", "OFFSET_SCALE", "ANCHORS", "VertebraLoss", "decode_vertebrae", "focal_loss",
           "vertebra_candidates", "chain_points", "refine_on_heatmap"]

N_CHANNELS = 15  # ANCHORS.stop (17) with the optional T1/L5 anchor maps
OFFSET_SCALE = 16.0  # input pixels per offset unit (keeps regression targets around 1)
CENTER, CENTER_OFF, CORNER_OFF, CORNER_HM, ANCHORS = 0, slice(1, 3), slice(3, 11), slice(11, 15), slice(15, 17)


def _splat(points: torch.Tensor, valid: torch.Tensor, h: int, w: int, stride: int, sigma: float) -> torch.Tensor:
    """Max of unnormalised Gaussians (peak 1) at ``points`` (B, N, 2) -> (B, h, w); peaks set exactly to 1."""
    xs, ys = heatmap_grid(h, w, stride, points.device)
    s = sigma * stride
    gx = torch.exp(-0.5 * ((xs[None, None, :] - points[..., 0:1]) / s) ** 2)
    gy = torch.exp(-0.5 * ((ys[None, None, :] - points[..., 1:2]) / s) ** 2)
    g = gy[..., :, None] * gx[..., None, :] * valid[..., None, None].float()
    hm = g.amax(dim=1)
    ix, iy = _pixel_index(points, h, w, stride)
    b = torch.arange(points.shape[0])[:, None].expand_as(ix)
    ok = valid & (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    hm[b[ok], iy[ok], ix[ok]] = 1.0
    return hm


def _pixel_index(points: torch.Tensor, h: int, w: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    off = (stride - 1) / 2.0
    ix = torch.round((points[..., 0] - off) / stride).long()
    iy = torch.round((points[..., 1] - off) / stride).long()
    return ix, iy


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet penalty-reduced focal loss, summed over pixels and divided by the number of peaks."""
    logits = logits.float()
    pos = target.eq(1.0).float()
    log_p = F.logsigmoid(logits)
    log_1p = F.logsigmoid(-logits)
    p = log_p.exp()
    pos_loss = -((1 - p) ** alpha) * log_p * pos
    neg_loss = -((1 - target) ** beta) * (p ** alpha) * log_1p * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1.0)


class VertebraLoss(torch.nn.Module):
    """Focal losses on the centre and corner heatmaps + L1 on offsets around each centre.

    Call with network output (B, 15, h, w), corner points (B, 4V, 2) in input
    pixels (TL, TR, BL, BR per vertebra) and a (B, 4V) validity mask. A
    vertebra counts only when its four corners are valid. Offsets are
    supervised on the 3x3 pixels around each centre.
    """

    def __init__(self, stride: int, sigma_center: float = 2.0, sigma_corner: float = 1.5,
                 offset_weight: float = 1.0, corner_weight: float = 1.0) -> None:
        super().__init__()
        self.stride, self.sigma_center, self.sigma_corner = stride, sigma_center, sigma_corner
        self.offset_weight, self.corner_weight = offset_weight, corner_weight

    def forward(self, out: torch.Tensor, points: torch.Tensor, valid: torch.Tensor):
        b, _, h, w = out.shape
        q = points.reshape(b, -1, 4, 2)
        vv = valid.reshape(b, -1, 4).all(dim=-1)  # (B, V)
        centers = q.mean(dim=2)
        with torch.no_grad():
            t_center = _splat(centers, vv, h, w, self.stride, self.sigma_center)
            t_corner = torch.stack([_splat(q[:, :, k], vv, h, w, self.stride, self.sigma_corner) for k in range(4)], 1)
        l_center = focal_loss(out[:, CENTER], t_center)
        l_corner = focal_loss(out[:, CORNER_HM], t_corner)
        l_anchor = out.new_zeros(())
        if out.shape[1] >= ANCHORS.stop:
            # T1 and L5 centres; a map whose vertebra is outside the (augmented) image must stay empty
            with torch.no_grad():
                t_anchor = torch.stack([_splat(centers[:, [k]], vv[:, [k]], h, w, self.stride, self.sigma_center)
                                        for k in (0, -1)], 1)
            l_anchor = focal_loss(out[:, ANCHORS], t_anchor)
        # offsets on the 3x3 neighbourhood of each centre pixel
        ix, iy = _pixel_index(centers, h, w, self.stride)
        dd = torch.tensor([-1, 0, 1])
        ox = (ix[..., None, None] + dd[None, None, None, :]).expand(b, -1, 3, 3).reshape(b, -1)
        oy = (iy[..., None, None] + dd[None, None, :, None]).expand(b, -1, 3, 3).reshape(b, -1)
        vn = vv[..., None].expand(b, -1, 9).reshape(b, -1) & (ox >= 0) & (ox < w) & (oy >= 0) & (oy < h)
        off = (self.stride - 1) / 2.0
        pos = torch.stack([ox.float() * self.stride + off, oy.float() * self.stride + off], dim=-1)  # (B, 9V, 2)
        rep = lambda t: t[:, :, None].expand(b, t.shape[1], 9, *t.shape[2:]).reshape(b, t.shape[1] * 9, *t.shape[2:])
        tgt_center = (rep(centers) - pos) / OFFSET_SCALE  # (B, 9V, 2)
        tgt_corner = (rep(q) - pos[:, :, None, :]) / OFFSET_SCALE  # (B, 9V, 4, 2)
        flat = (oy.clamp(0, h - 1) * w + ox.clamp(0, w - 1))  # (B, 9V)
        reg = out[:, 1:11].reshape(b, 10, h * w)
        g = torch.gather(reg, 2, flat[:, None, :].expand(b, 10, flat.shape[1])).permute(0, 2, 1)  # (B, 9V, 10)
        target = torch.cat([tgt_center, tgt_corner.reshape(b, -1, 8)], dim=-1)
        m = vn.float()[..., None]
        l_off = (F.smooth_l1_loss(g.float(), target, reduction="none", beta=0.1) * m).sum() / (m.sum() * 10).clamp_min(1.0)
        loss = l_center + self.corner_weight * l_corner + self.offset_weight * l_off + l_anchor
        with torch.no_grad():
            # error of the coarse corners at the exact centre pixel (a training-progress figure, input px)
            g0 = g.reshape(b, -1, 9, 10)[:, :, 4]
            c0 = pos.reshape(b, -1, 9, 2)[:, :, 4]
            pred = c0[:, :, None, :] + g0[..., 2:].reshape(b, -1, 4, 2) * OFFSET_SCALE
            err = torch.linalg.norm(pred - q, dim=-1)
            mv = vv.float()[..., None].expand_as(err)
            err_px = float((err * mv).sum() / mv.sum().clamp_min(1.0))
        parts = {"center": float(l_center.detach()), "corner": float(l_corner.detach()),
                 "offset": float(l_off.detach()), "err_px": err_px}
        if out.shape[1] >= ANCHORS.stop:
            parts["anchor"] = float(l_anchor.detach())
        return loss, parts


def refine_on_heatmap(hm: np.ndarray, x: float, y: float, stride: int, search: int, radius: int) -> tuple[float, float, float]:
    """Soft-argmax of ``hm`` (probabilities) around its maximum near input point (x, y).

    Returns (x, y, peak) in input pixels; the input point and peak 0 when the
    window is empty.
    """
    h, w = hm.shape
    off = (stride - 1) / 2.0
    cx, cy = int(round((x - off) / stride)), int(round((y - off) / stride))
    x0, x1 = max(cx - search, 0), min(cx + search + 1, w)
    y0, y1 = max(cy - search, 0), min(cy + search + 1, h)
    if x0 >= x1 or y0 >= y1:
        return x, y, 0.0
    win = hm[y0:y1, x0:x1]
    k = int(np.argmax(win))
    py, px = y0 + k // win.shape[1], x0 + k % win.shape[1]
    peak = float(hm[py, px])
    a0, a1 = max(px - radius, 0), min(px + radius + 1, w)
    b0, b1 = max(py - radius, 0), min(py + radius + 1, h)
    patch = hm[b0:b1, a0:a1]
    s = patch.sum()
    if s <= 0:
        return x, y, peak
    gy, gx = np.mgrid[b0:b1, a0:a1]
    return (float((patch * gx).sum() / s) * stride + off, float((patch * gy).sum() / s) * stride + off, peak)


def _select_distinct(centers: np.ndarray, corners: np.ndarray, scores: np.ndarray, n: int, min_separation: float,
                     n_max: int | None = None, min_score: float = 0.0) -> np.ndarray:
    """Indices of the best-scoring candidates whose centres are at least
    ``min_separation`` x (median vertebra height) apart: the ``n`` best, plus up
    to ``n_max - n`` more whose score is at least ``min_score``; fills up to
    ``n`` by score if too few are distinct."""
    n_max = n if n_max is None else n_max
    heights = np.linalg.norm(0.5 * (corners[:, 2] + corners[:, 3]) - 0.5 * (corners[:, 0] + corners[:, 1]), axis=-1)
    d_min = min_separation * float(np.median(heights[np.argsort(-scores)[:n]]))
    chosen: list[int] = []
    for j in np.argsort(-scores, kind="stable"):
        if len(chosen) >= n and scores[j] < min_score:
            break
        if all(np.hypot(*(centers[j] - centers[k])) >= d_min for k in chosen):
            chosen.append(int(j))
        if len(chosen) == n_max:
            break
    for j in np.argsort(-scores, kind="stable"):
        if len(chosen) >= n:
            break
        if j not in chosen:
            chosen.append(int(j))
    return np.array(chosen)


def _anchored_run(ys: np.ndarray, scores: np.ndarray, anchor_first: np.ndarray, anchor_last: np.ndarray, n: int,
                  weight: float) -> np.ndarray:
    """Indices of ``n`` candidates, T1 to L5: a first and a last candidate (by ``y``) and the ``n - 2``
    best-scoring candidates between them, maximising ``sum log(score) + weight * (log anchor_first[first] +
    log anchor_last[last])``. Candidates above the first or below the last (C7, S1) are left out; a weak
    candidate between them (a double detection) is skipped as it is by the plain top-``n`` rule, which
    this reduces to when ``weight`` is 0."""
    order = np.argsort(ys, kind="stable")
    ls = np.log(np.clip(scores[order], 1e-6, 1.0))
    la = np.log(np.clip(anchor_first[order], 1e-6, 1.0))
    lb = np.log(np.clip(anchor_last[order], 1e-6, 1.0))
    m = len(order)
    best, best_sel = -np.inf, order[:n]
    for i in range(m - n + 1):
        for j in range(i + n - 1, m):
            keep = i + 1 + np.argsort(-ls[i + 1:j], kind="stable")[: n - 2]
            s = ls[i] + ls[j] + ls[keep].sum() + weight * (la[i] + lb[j])
            if s > best:
                best, best_sel = s, order[np.sort(np.concatenate([[i], keep, [j]]))]
    return best_sel


def decode_vertebrae(out: torch.Tensor, stride: int, n_vertebrae: int = 17, *, search: int = 3, radius: int = 2,
                     min_corner_peak: float = 0.1, min_separation: float = 0.5, extra: int = 3,
                     min_extra_score: float = 0.05, anchor_weight: float = 2.0,
                     identify=None, candidates: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode network output into ordered corner landmarks.

    Args:
        out: (B, 15, h, w) network output.
        stride: input pixels per output pixel.
        n_vertebrae: vertebrae to return (the strongest centres, sorted top to bottom).
        search: half-size (output pixels) of the window around a coarse corner where
            the corner heatmap's maximum is looked for.
        radius: half-size of the soft-argmax window around that maximum.
        min_corner_peak: below this corner-heatmap peak the coarse corner is kept.
        min_separation: two detected centres closer than this fraction of the
            median vertebra height are one vertebra (the weaker is dropped and the
            next candidate taken): a stronger non-maximum suppression than the
            3x3 peak test, against double detections of one vertebra.
        extra, min_extra_score, anchor_weight: with anchor channels (T1, L5),
            up to ``extra`` more distinct centres scoring at least
            ``min_extra_score`` are candidates too; the first and last vertebra
            and the ``n_vertebrae - 2`` strongest centres between them are chosen
            to maximise ``sum log(centre score) + anchor_weight * (log T1 anchor
            at the first + log L5 anchor at the last centre)``. Without anchor
            channels: the ``n_vertebrae`` strongest centres.
        identify: optional ``identify(i, corners) -> (first, last)``: for image ``i``
            of the batch and its (k, 4, 2) candidate corners (input pixels), the
            probability that each candidate is the first (T1) and the last (L5)
            vertebra (:mod:`SpineAlignmentLib.models.levels`); used instead of
            anchor channels, with the same ``extra``, ``min_extra_score`` and
            ``anchor_weight`` rule.
        candidates: optional list that receives, per image, its candidates (:func:`vertebra_candidates`:
            ``centers``, ``corners``, ``scores``), ``chain`` (the indices of the chosen ones, top to bottom)
            and ``corner_prob`` (4, h, w): what a level anchor re-decodes the chain from
            (:mod:`SpineAlignmentLib.inference.anchor`).

    Returns:
        ``(points, confidence)``: (B, 4 * n_vertebrae, 2) ``(x, y)`` input pixels in
        the order TL, TR, BL, BR per vertebra, top to bottom; (B, 4 * n_vertebrae)
        confidence in [0, 1] (geometric mean of the vertebra's centre score and the
        corner's heatmap peak).
    """
    out = out.float()
    b = out.shape[0]
    cand = vertebra_candidates(out, stride, n_vertebrae)
    cand_centers, cand_corners, cand_scores = cand["centers"], cand["corners"], cand["scores"]
    anchored = "anchors" in cand
    corner_hm = torch.sigmoid(out[:, CORNER_HM]).numpy()
    points = np.zeros((b, n_vertebrae * 4, 2))
    conf = np.zeros((b, n_vertebrae * 4))
    for i in range(b):
        if anchored or identify is not None:
            sel = _select_distinct(cand_centers[i], cand_corners[i], cand_scores[i], n_vertebrae, min_separation,
                                   n_max=n_vertebrae + extra, min_score=min_extra_score)
            first, last = identify(i, cand_corners[i][sel]) if identify is not None else cand["anchors"][i][:, sel]
            sel = sel[_anchored_run(cand_centers[i][sel, 1], cand_scores[i][sel], np.asarray(first), np.asarray(last),
                                    n_vertebrae, anchor_weight)]
        else:
            sel = _select_distinct(cand_centers[i], cand_corners[i], cand_scores[i], n_vertebrae, min_separation)
        sel = sel[np.argsort(cand_centers[i][sel, 1], kind="stable")]  # top to bottom: T1..L5
        points[i], conf[i] = chain_points(corner_hm[i], cand_corners[i][sel], cand_scores[i][sel], stride,
                                          search=search, radius=radius, min_corner_peak=min_corner_peak)
        if candidates is not None:
            candidates.append({"centers": cand_centers[i], "corners": cand_corners[i], "scores": cand_scores[i],
                               "chain": sel, "corner_prob": corner_hm[i]})
    return points, conf


def vertebra_candidates(out: torch.Tensor, stride: int, n_vertebrae: int = 17) -> dict[str, np.ndarray]:
    """The first stage's vertebra candidates: the strongest local maxima of the centre heatmap with their
    regressed centres and corners (what :func:`decode_vertebrae` chooses the chain from).

    Returns:
        ``centers`` (B, n, 2) and ``corners`` (B, n, 4, 2) network-input pixels (TL, TR, BL, BR), ``scores``
        (B, n) centre probabilities, and with anchor channels ``anchors`` (B, 2, n) (T1, L5 probabilities);
        ``n = max(3 * n_vertebrae, n_vertebrae + 8)`` (at most the heatmap's pixels).
    """
    out = out.float()
    b, _, h, w = out.shape
    center = torch.sigmoid(out[:, CENTER])
    keep = (F.max_pool2d(center[:, None], 3, stride=1, padding=1)[:, 0] == center).float()
    n_cand = min(max(3 * n_vertebrae, n_vertebrae + 8), h * w)
    cand_scores, cand_idx = (center * keep).reshape(b, -1).topk(n_cand, dim=-1)
    off = (stride - 1) / 2.0
    reg = out[:, 1:11].reshape(b, 10, -1)
    cand_vals = torch.gather(reg, 2, cand_idx[:, None, :].expand(b, 10, n_cand)).permute(0, 2, 1).numpy()
    cand_pos = np.stack([(cand_idx % w).numpy() * stride + off, (cand_idx // w).numpy() * stride + off], axis=-1)
    found = {"centers": cand_pos + cand_vals[..., 0:2] * OFFSET_SCALE,
             "corners": cand_pos[:, :, None, :] + cand_vals[..., 2:].reshape(b, n_cand, 4, 2) * OFFSET_SCALE,
             "scores": cand_scores.numpy()}
    if out.shape[1] >= ANCHORS.stop:
        anchors = torch.sigmoid(out[:, ANCHORS]).reshape(b, 2, -1)
        found["anchors"] = torch.gather(anchors, 2, cand_idx[:, None, :].expand(b, 2, n_cand)).numpy()
    return found


def chain_points(corner_prob: np.ndarray, corners: np.ndarray, scores: np.ndarray, stride: int, *, search: int = 3,
                 radius: int = 2, min_corner_peak: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Corners of a chain of chosen candidates, each refined on its corner-type heatmap.

    Args:
        corner_prob: (4, h, w) corner-type probabilities (TL, TR, BL, BR) of one image.
        corners: (V, 4, 2) the candidates' regressed corners, network-input pixels, in chain order.
        scores: (V,) their centre probabilities.

    Returns:
        ``(points, confidence)``: (4V, 2) and (4V,) as :func:`decode_vertebrae` gives them.
    """
    v = len(corners)
    points, conf = np.zeros((v * 4, 2)), np.zeros(v * 4)
    for j in range(v):
        for k in range(4):
            x, y = corners[j, k]
            rx, ry, peak = refine_on_heatmap(corner_prob[k], x, y, stride, search, radius)
            if peak >= min_corner_peak:
                x, y = rx, ry
            points[4 * j + k] = (x, y)
            conf[4 * j + k] = float(np.sqrt(max(float(scores[j]), 0.0) * max(peak, 0.0)))
    return points, conf
