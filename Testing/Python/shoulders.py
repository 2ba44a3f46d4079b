"""Synthetic chest films with clavicle masks (a test tool; never a clinical model's data).

Each film: a dark lung field with a bright mediastinum, ribs as bright arcs, and
two clavicles drawn as tilted bright bars whose exact masks are written in the
SCR/JSRT layout (``masks/left_clavicle`` = the patient's left, on the image
right). The clavicles' tilts and heights are random, so the shoulder parameters
vary from film to film. The patient-right clavicle is drawn brighter than the
left: real films tell the sides apart by anatomy a tiny test network cannot
see in a few seconds of training, so the synthetic films give it a local cue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def clavicle_mask(shape: tuple[int, int], medial: tuple[float, float], lateral: tuple[float, float],
                  half_width: float) -> np.ndarray:
    """Boolean mask of a bar from ``medial`` to ``lateral`` (x, y pixels) with rounded ends."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    a, b = np.asarray(medial, float), np.asarray(lateral, float)
    d = b - a
    t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / (d @ d), 0.0, 1.0)
    px, py = a[0] + t * d[0], a[1] + t * d[1]
    dist = np.hypot(xx - px, yy - py)
    return dist <= half_width


def synthetic_film(rng: np.random.Generator, size: int = 256, *, drop: str | None = None):
    """``(image uint8 (size, size), {"L": mask, "R": mask}, truth)`` with the clavicle end points in ``truth``.

    ``drop="L"`` (or ``"R"``) leaves that clavicle out of the image and its mask empty (cut off / hidden).
    """
    s = size / 256.0
    img = np.full((size, size), 40.0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img += 60.0 * np.exp(-((xx - size / 2) / (22 * s)) ** 2)  # mediastinum / spine
    for k in range(6):  # ribs
        cy = (70 + 28 * k) * s
        img += 25.0 * (np.abs(yy - cy - 0.002 * (xx - size / 2) ** 2 / s) < 3 * s)
    masks, truth = {}, {}
    for side, sign in (("L", +1), ("R", -1)):  # patient left on the image right
        med = (size / 2 + sign * rng.uniform(12, 20) * s, rng.uniform(58, 72) * s)
        lat = (size / 2 + sign * rng.uniform(85, 105) * s, med[1] + rng.uniform(-22, 8) * s)
        m = clavicle_mask((size, size), med, lat, rng.uniform(8, 10) * s)
        if drop == side:
            m = np.zeros_like(m)
        else:
            img[m] += 100.0 if side == "L" else 180.0  # a local cue tells the sides apart (small test networks)
        masks[side] = m
        truth[side] = {"medial": med, "lateral": lat}
    img += rng.normal(0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), masks, truth


def write_dataset(folder: Path, n: int, seed: int = 0, size: int = 256) -> Path:
    """Write ``n`` synthetic films in the JSRT/SCR clavicle layout under ``folder``."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks/left_clavicle", "masks/right_clavicle"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, masks, _ = synthetic_film(rng, size)
        name = f"SYN{i:03d}"
        Image.fromarray(img).save(folder / "images" / f"{name}.png")
        Image.fromarray((masks["L"] * 255).astype(np.uint8)).save(folder / "masks/left_clavicle" / f"{name}.png")
        Image.fromarray((masks["R"] * 255).astype(np.uint8)).save(folder / "masks/right_clavicle" / f"{name}.png")
    return folder
