"""Overlay picture of one result: the radiograph, its landmarks and every construction with values.

Drawn with Matplotlib's object API on an Agg canvas (no pyplot state), so it
is safe in worker processes and threads. Everything is drawn in
original-image pixel coordinates; only the displayed image is downsampled.
The values panel sits beside the image, so it never covers a landmark;
four-corner vertebrae (``T1_TL`` ... ``L5_BR``) are labelled with their level
name, and a chain whose levels are uncertain shows the alternative names at
its ends.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import numpy as np

from ..geometry.measurement import format_value
from ..protocols import get_protocol
from ..inference.levels import levels_line
from ..result import Result

#: characters per line of the values panel (longer lines wrap)
PANEL_CHARS = 44

_PALETTE = ("#ffd23f", "#3bceac", "#ee4266", "#7b9cff", "#ff9f1c", "#b5e48c", "#f15bb5", "#00bbf9")


def value_text(pid: str, value: float, unit: str, calibration: str | None) -> str:
    """``"SVA = 12.3 mm (calibrated:GEOMETRY)"``: value with unit, and the calibration label of a distance."""
    text = f"{pid} = {format_value(value, unit)}"
    if unit in ("mm", "px") and calibration:
        text += f" ({calibration})"
    return text


def _display_image(image: np.ndarray, step: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """The film windowed to 0..1; with ``size`` (rows, cols) resized to the picture's pixels as 8-bit RGBA.

    Handed 8-bit RGBA at the picture's own size, matplotlib draws the film without resampling it through
    float64 RGBA copies (150 MB less for a 2048 x 2048 film; README, "Reliability": peak memory per command).
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    img = img[::step, ::step]
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        img = np.zeros_like(img)
    else:
        lo, hi = np.percentile(finite, (0.5, 99.5))
        if hi <= lo:
            hi = lo + 1.0
        img = np.clip((img - lo) / (hi - lo), 0.0, 1.0)
    if size is None:
        return img
    from PIL import Image

    rows, cols = max(1, int(round(size[0]))), max(1, int(round(size[1])))
    gray = Image.fromarray(np.rint(img * 255.0).astype(np.uint8)).resize((cols, rows), Image.BOX)
    return np.asarray(gray.convert("RGBA"))


def _arc(ax, a, v, b, color, radius) -> None:
    """Angle arc at vertex v from ray v->a to ray v->b (image coordinates, y down)."""
    from matplotlib.patches import Arc

    t1 = math.degrees(math.atan2(a[1] - v[1], a[0] - v[0]))
    t2 = math.degrees(math.atan2(b[1] - v[1], b[0] - v[0]))
    d = (t2 - t1) % 360.0
    start, end = (t1, t2) if d <= 180.0 else (t2, t1)
    ax.add_patch(Arc(v, 2 * radius, 2 * radius, theta1=start, theta2=end, color=color, lw=1.2))


def vertebra_labels(result: Result) -> list[tuple[str, float, float]]:
    """``(text, x, y)`` of a level label beside each four-corner vertebra of a result (original pixels):
    just left of the vertebra's left edge, at its centre height. The chain's end vertebrae carry the
    alternative names when the result's levels are uncertain (``"T1 (C7?)"``, ``"L5 (L4?)"``); every label
    ends in ``?`` when the chain is incomplete (more names than vertebrae found)."""
    groups: dict[str, dict[str, tuple[float, float]]] = {}
    for key, lm in result.landmarks.items():
        name, _, corner = key.rpartition("_")
        if corner in ("TL", "TR", "BL", "BR") and name:
            groups.setdefault(name, {})[corner] = (lm.x, lm.y)
    full = [(n, c) for n, c in groups.items() if len(c) == 4]
    full.sort(key=lambda nc: np.mean([p[1] for p in nc[1].values()]))
    levels = result.levels or {}
    alt = levels.get("alternative") if levels.get("uncertain") and not levels.get("incomplete") else None
    labels = []
    for i, (name, c) in enumerate(full):
        text = f"{name}?" if levels.get("incomplete") else name  # names stretched over fewer vertebrae: all guesses
        if alt and i == 0:
            text = f"{name} ({alt['top']}?)"
        elif alt and i == len(full) - 1:
            text = f"{name} ({alt['bottom']}?)"
        x = min(c["TL"][0], c["BL"][0])
        y = float(np.mean([p[1] for p in c.values()]))
        labels.append((text, float(x), y))
    return labels


def _panel_lines(result: Result) -> list[str]:
    proto = get_protocol(result.protocol)
    lines = [result.protocol, f"calibration: {result.calibration}"]
    for pid, m in result.parameters.items():
        lines.append(value_text(pid, m.value, m.unit, m.calibration))
    # a film of a pair has the per-image values as <ID>_<role> (SA_L1L2_flexion): those count as computed
    missing = [pid for pid in proto.parameter_ids
               if pid not in result.parameters and not any(k.startswith(f"{pid}_") for k in result.parameters)]
    if missing:
        lines.append("not computed: " + ", ".join(missing))
    if result.levels:
        lines.append(levels_line(result.levels))
    return [part for line in lines for part in textwrap.wrap(line, PANEL_CHARS, subsequent_indent="  ")]


def render_overlay(image_2d: np.ndarray, result: Result, path: str | Path, max_size: int = 1600) -> Path:
    """Write a PNG of the image with landmarks (coloured by group), constructions and values.

    Args:
        image_2d: ``(rows, cols)`` pixels (any range; shown with a 0.5-99.5 % window).
        result: the measured result; coordinates in original-image pixels.
        path: output PNG (written atomically).
        max_size: longest side of the picture in pixels.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    rows, cols = int(image_2d.shape[0]), int(image_2d.shape[1])
    scale = min(1.0, max_size / max(rows, cols))
    step = max(1, int(1.0 / scale))
    dpi = 100.0
    font = max(5.0, min(10.0, 9.0 * max_size / 1600))
    lines = _panel_lines(result)
    # the values panel is a strip right of the image (monospace: about 0.6 em per character, plus margins)
    panel_px = max(len(t) for t in lines) * 0.65 * font * dpi / 72.0 + 24
    img_w, img_h = max(cols * scale, 200), max(rows * scale, 200)
    fig = Figure(figsize=((img_w + panel_px) / dpi, img_h / dpi), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    frac = img_w / (img_w + panel_px)
    ax = fig.add_axes((0, 0, frac, 1))
    ax.imshow(_display_image(image_2d, step, (img_h, img_w)), extent=(-0.5, cols - 0.5, rows - 0.5, -0.5),
              interpolation="nearest")
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.axis("off")
    lw = 1.2

    proto = get_protocol(result.protocol)
    seg = getattr(result, "segmentation", None)
    if seg is not None:
        # mask outlines of a segmentation model, in each segment's colour (drawn under the constructions)
        # at the picture's resolution (no finer outline can be seen; a full 2048 x 2048 grid cost 250 MB)
        every = max(step, math.ceil(1.0 / scale))
        sub = np.asarray(seg.array)[::every, ::every]
        yy = np.arange(sub.shape[0]) * every
        xx = np.arange(sub.shape[1]) * every
        for s in seg.segments:
            if (sub == s.value).any():
                ax.contour(xx, yy, (sub == s.value).astype(np.float32), levels=[0.5], colors=[s.color], linewidths=lw)
    for i, (pid, m) in enumerate(result.parameters.items()):
        color = _PALETTE[i % len(_PALETTE)]
        tagged = False
        for con in m.construction:
            pts = np.array(con.points, dtype=float).reshape(-1, 2)
            if con.kind == "line":
                ax.plot(pts[:2, 0], pts[:2, 1], color=color, lw=lw)
            elif con.kind == "plumb":
                ax.plot([pts[0, 0], pts[0, 0]], [0, rows - 1], color=color, lw=lw * 0.8, ls="--")
            elif con.kind == "offset":
                ax.annotate("", xy=pts[1], xytext=pts[0],
                            arrowprops={"arrowstyle": "<->", "color": color, "lw": lw})
            elif con.kind == "angle" and len(pts) >= 3:
                ax.plot(pts[:3, 0], pts[:3, 1], color=color, lw=lw)
                r = 0.25 * min(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[1]))
                _arc(ax, pts[0], pts[1], pts[2], color, r)
            elif con.kind == "point":
                ax.plot(pts[:, 0], pts[:, 1], "x", color=color, ms=5, mew=1.2)
            if not tagged and con.kind in ("line", "offset", "angle"):
                # the parameter's name at the end of its first drawn element ties it to the values panel
                end = pts[int(np.argmax(pts[:, 0]))]
                ax.text(end[0] + 8 / scale, end[1], pid, color=color, fontsize=font * 0.8, va="center",
                        bbox={"facecolor": "black", "alpha": 0.4, "edgecolor": "none", "pad": 1})
                tagged = True
    # landmarks on top, coloured by display group
    many = len(result.landmarks) > 50
    for key, lm in result.landmarks.items():
        try:
            color = proto.landmark(key).color
        except Exception:  # noqa: BLE001 - an unknown ID is drawn neutral
            color = (1.0, 1.0, 1.0)
        ax.plot(lm.x, lm.y, "o", ms=3.5, mfc=color, mec="black", mew=0.4)
        if not many:
            ax.text(lm.x + 6 / scale, lm.y, key, color=color, fontsize=font * 0.7, va="center")
    # level names beside the vertebrae (small, left of each vertebra, so the corners stay visible)
    uncertain = bool((result.levels or {}).get("uncertain"))
    for text, x, y in vertebra_labels(result):
        ax.text(x - 10 / scale, y, text, color="#ff9f1c" if uncertain and "?" in text else "white",
                fontsize=font * 0.65, va="center", ha="right",
                bbox={"facecolor": "black", "alpha": 0.35, "edgecolor": "none", "pad": 0.5})
    # values panel beside the image
    pax = fig.add_axes((frac, 0, 1 - frac, 1))
    pax.axis("off")
    pax.text(8 / ((1 - frac) * fig.bbox.width), 0.995, "\n".join(lines), transform=pax.transAxes, va="top",
             ha="left", fontsize=font, color="white", family="monospace")
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, pil_kwargs={"compress_level": 3})
    os.replace(tmp, path)
    return path
