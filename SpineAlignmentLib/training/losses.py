"""Losses for DSNT landmark training: coordinate Wing loss + Jensen-Shannon heatmap regularisation."""

from __future__ import annotations

import math

import torch

import torch.nn.functional as F

from ..models.dsnt import dsnt, gaussian_factors, js_divergence

__all__ = ["wing_loss", "DsntLoss"]


def wing_loss(err: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """Wing loss (Feng et al., CVPR 2018) of non-negative errors, elementwise (pixels in, pixels out).

    ``w * ln(1 + e / eps)`` below ``w`` (strong gradient for small errors), linear above.
    """
    c = w - w * math.log(1.0 + w / eps)
    return torch.where(err < w, w * torch.log1p(err / eps), err - c)


class DsntLoss(torch.nn.Module):
    """``coord_weight * Wing(|pred - gt|) + js_weight * D(Gaussian(gt, sigma), heatmap)``.

    ``D`` is the heatmap regulariser: ``"kl"`` (default), the Kullback-Leibler
    divergence ``KL(q || p)`` of the softmax heatmap ``p`` from the Gaussian
    target ``q`` (cross-entropy minus the target's entropy; its gradient on the
    logits is ``p - q``, which does not vanish while ``p`` is still diffuse), or
    ``"js"``, the Jensen-Shannon divergence of the DSNT paper. In a first run
    from scratch JS stayed near its ceiling ``ln 2`` for five epochs (its
    gradient vanishes when the two maps barely overlap), so KL is the default.

    Args:
        stride: input pixels per heatmap pixel.
        sigma: target Gaussian standard deviation, heatmap pixels.
        coord_weight: weight of the Wing term (errors in input pixels).
        js_weight: weight of the heatmap term (nats).
        reg: ``"kl"`` or ``"js"``.
        tilt_weight: with four channels (TL, TR, BL, BR of one vertebra), weight of
            the mean absolute error (degrees) of the vertebra's mid-line angle (left-edge
            midpoint to right-edge midpoint), the quantity Cobb and AASCE angles are made of.
        js_pool: the JS term compares both maps after sum-pooling by this factor
            (1 = at full heatmap resolution); the coordinate term always uses
            the full-resolution map.

    Call with logits (B, C, h, w), target (B, C, 2) input pixels and a (B, C)
    validity mask (points pushed out of the image by augmentation do not count).
    Returns ``(loss, parts)`` with the terms as floats for logging.
    """

    def __init__(self, stride: int, sigma: float = 1.5, coord_weight: float = 0.1, js_weight: float = 1.0,
                 js_pool: int = 2, reg: str = "kl", tilt_weight: float = 0.0) -> None:
        super().__init__()
        if reg not in ("kl", "js"):
            raise ValueError(f"unknown heatmap regulariser {reg!r}")
        self.reg = reg
        self.js_pool = js_pool
        self.stride, self.sigma = stride, sigma
        self.coord_weight, self.js_weight = coord_weight, js_weight
        self.tilt_weight = tilt_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor):
        b, c, h, w = logits.shape
        log_p = F.log_softmax(logits.reshape(b, c, h * w).float(), dim=-1).reshape(b, c, h, w)
        prob = log_p.exp()
        pred = dsnt(prob, self.stride)
        err = torch.linalg.norm(pred - target, dim=-1)
        m = valid.float()
        n = m.sum().clamp_min(1.0)
        coord = (wing_loss(err) * m).sum() / n
        qy, qx = gaussian_factors(target, h, w, self.stride, self.sigma)
        if self.reg == "kl":
            # sum_q q log p without building q: q = qy (x) qx is separable.
            cross = torch.einsum("bch,bchw,bcw->bc", qy, log_p, qx)
            neg_entropy = torch.special.xlogy(qy, qy).sum(-1) + torch.special.xlogy(qx, qx).sum(-1)
            js_map = neg_entropy - cross
        elif self.js_pool > 1 and h % self.js_pool == 0 and w % self.js_pool == 0:
            # Compare the shapes at a coarser grid: sum-pooling keeps both maps normalised
            # and is exact for the separable target, at 1/js_pool**2 of the cost.
            k = self.js_pool
            pp = F.avg_pool2d(prob, k) * (k * k)
            qy = qy.reshape(b, c, h // k, k).sum(-1)
            qx = qx.reshape(b, c, w // k, k).sum(-1)
            q = qy[..., :, None] * qx[..., None, :]
            js_map = js_divergence(pp, q, q_factors=(qy, qx))
        else:
            q = qy[..., :, None] * qx[..., None, :]
            js_map = js_divergence(prob, q, log_p=log_p, q_factors=(qy, qx))
        js = (js_map * m).sum() / n
        loss = self.coord_weight * coord + self.js_weight * js
        parts = {"wing": float(coord.detach()), "js": float(js.detach()), "err_px": float((err.detach() * m).sum() / n)}
        if self.tilt_weight > 0 and c == 4:
            tilt = _midline_angle_error_deg(pred, target)
            mv = valid.all(dim=1).float()
            tilt = (tilt * mv).sum() / mv.sum().clamp_min(1.0)
            loss = loss + self.tilt_weight * tilt
            parts["tilt_deg"] = float(tilt.detach())
        return loss, parts


def _midline_angle_error_deg(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) absolute angle (degrees) between the predicted and target mid-lines of (B, 4, 2) TL, TR, BL, BR corners."""
    def mid(q):
        return 0.5 * (q[:, 1] + q[:, 3]) - 0.5 * (q[:, 0] + q[:, 2])

    a, b = mid(pred), mid(target)
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    dot = (a * b).sum(-1)
    return torch.rad2deg(torch.atan2(cross, dot).abs())
