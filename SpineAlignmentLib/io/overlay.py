"""Overlay picture of one result: the radiograph, its landmarks and every construction with values.

Drawn with Pillow's ImageDraw on the downsampled film (no figure, no global
state: safe in worker processes and threads, and about ten times faster than
the Matplotlib figure it replaces). Coordinates are original-image pixels
scaled once to the picture. What keeps it legible:

- every text (parameter names, landmark IDs, level names) is placed by
  :func:`overlay_layout` so that no two label boxes intersect and no label
  covers a landmark; a label pushed away from its anchor gets a leader line;
- lines that coincide with a line already drawn (a Cobb curve and an AASCE
  angle on the same endplate) are offset sideways and dashed, so each angle's
  lines show in its own colour beside its own label;
- text has a black outline, so it reads on bone and on black;
- the values panel sits beside the image and the canvas grows downwards until
  every line of it is shown (a short film keeps all its values).

Four-corner vertebrae (``T1_TL`` ... ``L5_BR``) are labelled with their level
name, and a chain whose levels are uncertain shows the alternative names at
its ends.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.util import find_spec
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


def _display_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The film as ``uint8`` at ``size`` (width, height): area-filtered down first, then a 0.5-99.5 % window
    taken on the small picture (the same window as on the full film, at a fraction of the work)."""
    from PIL import Image

    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    finite = np.isfinite(img)
    if not finite.all():
        img = np.where(finite, img, np.nanmin(img[finite]) if finite.any() else 0.0).astype(np.float32)
    small = np.asarray(Image.fromarray(np.ascontiguousarray(img), mode="F").resize(size, Image.BILINEAR))
    return (_window(small) * 255.0 + 0.5).astype(np.uint8)


def _window(img: np.ndarray) -> np.ndarray:
    """A 2D image in 0..1 with a 0.5-99.5 % window of its finite pixels (0 where none is finite)."""
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return np.zeros_like(img)
    lo, hi = np.percentile(finite, (0.5, 99.5))
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def display_window(image: np.ndarray, step: int = 1) -> np.ndarray:
    """Every ``step``-th pixel of a 2D (or RGB, averaged) image in 0..1 with a 0.5-99.5 % window (the review
    page's crops; the overlay windows its area-filtered picture the same way)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    return _window(img[::step, ::step])


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


#: Picture pixels a coincident line is moved sideways, per line already drawn there.
COINCIDENT_OFFSET = 4.0
#: Two segments closer than this (picture pixels, both ends) count as drawn over each other.
_SAME_LINE = 3.0


@lru_cache(maxsize=8)
def _font(size: int, mono: bool = False):
    """DejaVu Sans (Mono) at ``size`` pixels: Matplotlib's bundled copy, so every machine draws the same glyphs."""
    from PIL import ImageFont

    spec = find_spec("matplotlib")
    folder = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" if spec else None
    name = "DejaVuSansMono.ttf" if mono else "DejaVuSans.ttf"
    if folder is not None and (folder / name).is_file():
        return ImageFont.truetype(str(folder / name), size)
    return ImageFont.load_default(size)


def _rgb(color) -> tuple[int, int, int]:
    if isinstance(color, str):
        return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(int(round(255 * float(c))) for c in color[:3])


@dataclass
class Label:
    """One text of the overlay: ``box`` (left, top, right, bottom) in picture pixels, ``anchor`` the point it
    names; a label placed away from its anchor is joined to it by a leader line."""

    text: str
    box: tuple[float, float, float, float]
    anchor: tuple[float, float]
    color: tuple[int, int, int]
    size: int
    leader: bool = False


@dataclass
class Stroke:
    """One drawn element in picture pixels: ``kind`` line/dash/arrow/arc/cross/dot with its points."""

    kind: str
    points: list[tuple[float, float]]
    color: tuple[int, int, int]
    extra: tuple[float, ...] = ()


@dataclass
class Layout:
    """Everything :func:`render_overlay` draws, in picture pixels (``scale`` = picture px per film px)."""

    scale: float
    image_size: tuple[int, int]
    canvas_size: tuple[int, int]
    strokes: list[Stroke] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    panel: list[str] = field(default_factory=list)
    panel_font: int = 12


def boxes_intersect(a, b) -> bool:
    """True if two (left, top, right, bottom) boxes overlap by more than touching."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class _Placer:
    """Greedy label placement: the first free spot around the anchor, nearest first (vectorised)."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.boxes = np.zeros((0, 4))
        rings = []
        for r in (0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 36, 48):
            for a in range(0, 360, 30 if r < 6 else 15):
                rings.append((r * math.cos(math.radians(a)), r * math.sin(math.radians(a))))
        self.steps = np.array(sorted(set(rings), key=lambda d: (round(math.hypot(*d), 6), d)))

    def block(self, box) -> None:
        self.boxes = np.vstack([self.boxes, np.asarray(box, float)[None]])

    def place(self, w: float, h: float, x: float, y: float, side: str = "right") -> tuple | None:
        """Top-left of a free ``w`` x ``h`` box near (x, y), preferring ``side``, or None if there is none."""
        gap = 4.0
        x0 = x + gap if side == "right" else x - gap - w
        y0 = y - h / 2
        unit = max(h, 8.0)
        cand = np.column_stack([x0 + self.steps[:, 0] * unit, y0 + self.steps[:, 1] * unit])
        cand[:, 0] = np.clip(cand[:, 0], 0, max(0.0, self.width - w))
        cand[:, 1] = np.clip(cand[:, 1], 0, max(0.0, self.height - h))
        boxes = np.column_stack([cand, cand[:, 0] + w, cand[:, 1] + h])
        if len(self.boxes):
            b = self.boxes
            hit = ((boxes[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < boxes[:, None, 2])
                   & (boxes[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < boxes[:, None, 3])).any(axis=1)
            free = np.flatnonzero(~hit)
        else:
            free = np.arange(len(boxes))
        if free.size == 0:
            return None
        box = tuple(float(v) for v in boxes[free[0]])
        self.block(box)
        return box


def _text_size(text: str, size: int, mono: bool = False) -> tuple[float, float]:
    left, top, right, bottom = _font(size, mono).getbbox(text, stroke_width=1)
    return float(right - min(left, 0)), float(size + 3)


def _coincident(seg, drawn) -> int:
    """How many drawn segments ``seg`` lies on (both ends within :data:`_SAME_LINE`, either direction)."""
    a, b = np.asarray(seg[0]), np.asarray(seg[1])
    n = 0
    for p, q in drawn:
        if (max(np.hypot(*(a - p)), np.hypot(*(b - q))) < _SAME_LINE
                or max(np.hypot(*(a - q)), np.hypot(*(b - p))) < _SAME_LINE):
            n += 1
    return n


def _shifted(seg, k: int):
    """``seg`` moved sideways by ``k`` offsets (alternating sides: +1, -1, +2, ...)."""
    (x1, y1), (x2, y2) = seg
    length = math.hypot(x2 - x1, y2 - y1) or 1.0
    nx, ny = -(y2 - y1) / length, (x2 - x1) / length
    d = COINCIDENT_OFFSET * ((k + 1) // 2) * (1 if k % 2 else -1)
    return ((x1 + nx * d, y1 + ny * d), (x2 + nx * d, y2 + ny * d))


def overlay_layout(shape: tuple[int, int], result: Result, max_size: int = 1600) -> Layout:
    """Where every stroke and label of ``result``'s overlay goes on a film of ``shape`` (rows, cols).

    Labels never intersect one another nor cover a landmark; coincident lines are offset and dashed;
    the canvas is tall enough for every line of the values panel.
    """
    rows, cols = int(shape[0]), int(shape[1])
    scale = min(1.0, max_size / max(rows, cols))
    img_w, img_h = max(1, round(cols * scale)), max(1, round(rows * scale))
    font = int(round(max(11.0, min(14.0, 13.0 * max_size / 1600))))
    lines = _panel_lines(result)
    panel_w = int(max(_text_size(t, font, mono=True)[0] for t in lines) + 24)
    line_h = font + 4
    height = max(img_h, 200, 8 + line_h * len(lines) + 8)
    layout = Layout(scale, (img_w, img_h), (img_w + panel_w, height), panel=lines, panel_font=font)

    def px(p) -> tuple[float, float]:
        return (float(p[0]) * scale, float(p[1]) * scale)

    placer = _Placer(img_w, img_h)
    proto = get_protocol(result.protocol)
    dot = 3.5
    points = {}
    for key, lm in result.landmarks.items():
        try:
            color = _rgb(proto.landmark(key).color)
        except Exception:  # noqa: BLE001 - an unknown ID is drawn neutral
            color = (255, 255, 255)
        x, y = px((lm.x, lm.y))
        points[key] = (x, y, color)
        placer.block((x - dot, y - dot, x + dot, y + dot))  # no label covers a landmark

    drawn: list = []
    tags: list[tuple[str, tuple[float, float], tuple[int, int, int]]] = []
    for i, (pid, m) in enumerate(result.parameters.items()):
        color = _rgb(_PALETTE[i % len(_PALETTE)])
        anchor = None
        for con in m.construction:
            pts = [px(p) for p in con.points]
            if con.kind == "line" and len(pts) >= 2:
                seg = (pts[0], pts[1])
                k = _coincident(seg, drawn)
                drawn.append((np.asarray(seg[0]), np.asarray(seg[1])))
                if k:
                    seg = _shifted(seg, k)
                layout.strokes.append(Stroke("dash" if k else "line", list(seg), color))
                pts = list(seg)
            elif con.kind == "plumb":
                layout.strokes.append(Stroke("dash", [(pts[0][0], 0.0), (pts[0][0], img_h - 1.0)], color))
            elif con.kind == "offset" and len(pts) >= 2:
                layout.strokes.append(Stroke("arrow", pts[:2], color))
            elif con.kind == "angle" and len(pts) >= 3:
                layout.strokes.append(Stroke("line", pts[:3], color))
                r = 0.25 * min(math.dist(pts[0], pts[1]), math.dist(pts[2], pts[1]))
                t1 = math.degrees(math.atan2(pts[0][1] - pts[1][1], pts[0][0] - pts[1][0]))
                t2 = math.degrees(math.atan2(pts[2][1] - pts[1][1], pts[2][0] - pts[1][0]))
                start, end = (t1, t2) if (t2 - t1) % 360.0 <= 180.0 else (t2, t1)
                layout.strokes.append(Stroke("arc", [pts[1]], color, (r, start, end)))
            elif con.kind == "point":
                layout.strokes.extend(Stroke("cross", [p], color) for p in pts)
            if anchor is None and con.kind in ("line", "offset", "angle"):
                # the parameter's name at the right end of its first drawn element ties it to the values panel
                anchor = max(pts, key=lambda p: p[0])
        if anchor is not None:
            tags.append((pid, anchor, color))

    def add(text, anchor, color, size, side="right"):
        w, h = _text_size(text, size)
        box = placer.place(w, h, anchor[0], anchor[1], side)
        if box is None:
            return
        near_x = min(max(anchor[0], box[0]), box[2])
        near_y = min(max(anchor[1], box[1]), box[3])
        leader = math.hypot(anchor[0] - near_x, anchor[1] - near_y) > 6.0
        layout.labels.append(Label(text, box, anchor, color, size, leader))

    for pid, anchor, color in tags:  # parameter names first: they tie the drawing to the panel
        add(pid, anchor, color, font)
    uncertain = bool((result.levels or {}).get("uncertain"))
    small = max(10, font - 2)
    for text, x, y in vertebra_labels(result):
        add(text, px((x, y)), (255, 159, 28) if uncertain and "?" in text else (255, 255, 255), small, side="left")
    if len(result.landmarks) <= 50:
        for key, (x, y, color) in points.items():
            add(key, (x, y), color, small)
    layout.strokes.extend(Stroke("dot", [(x, y)], color) for x, y, color in points.values())
    return layout


def _segmentation_outline(seg, scale: float, size: tuple[int, int]) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """Picture pixels on each segment's boundary (mask outlines of a segmentation model)."""
    from PIL import Image

    labels = Image.fromarray(np.asarray(seg.array).astype(np.int32)).resize(size, Image.NEAREST)
    lab = np.asarray(labels)
    out = []
    for s in seg.segments:
        m = lab == s.value
        if not m.any():
            continue
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        out.append((m & ~inner, _rgb(s.color)))
    return out


def _dashed(draw, a, b, color, width, dash=6.0, gap=4.0) -> None:
    length = math.dist(a, b)
    if length == 0:
        return
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    t = 0.0
    while t < length:
        e = min(t + dash, length)
        draw.line([(a[0] + ux * t, a[1] + uy * t), (a[0] + ux * e, a[1] + uy * e)], fill=color, width=width)
        t = e + gap


def render_overlay(image_2d: np.ndarray, result: Result, path: str | Path, max_size: int = 1600) -> Path:
    """Write a PNG of the image with landmarks (coloured by group), constructions and values.

    Args:
        image_2d: ``(rows, cols)`` pixels (any range; shown with a 0.5-99.5 % window).
        result: the measured result; coordinates in original-image pixels.
        path: output PNG (written atomically).
        max_size: longest side of the film part of the picture in pixels.

    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    rows, cols = int(image_2d.shape[0]), int(image_2d.shape[1])
    layout = overlay_layout((rows, cols), result, max_size)
    img_w, img_h = layout.image_size
    gray = Image.fromarray(_display_image(image_2d, (img_w, img_h)))
    canvas = Image.new("RGB", layout.canvas_size, (0, 0, 0))
    canvas.paste(gray.convert("RGB"), (0, 0))
    seg = getattr(result, "segmentation", None)
    if seg is not None:
        pixels = np.asarray(canvas).copy()
        for edge, color in _segmentation_outline(seg, layout.scale, (img_w, img_h)):
            pixels[:img_h, :img_w][edge] = color
        canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    width = 2 if max_size >= 1000 else 1
    for s in layout.strokes:
        if s.kind == "line":
            draw.line(s.points, fill=s.color, width=width)
        elif s.kind == "dash":
            for a, b in zip(s.points, s.points[1:]):
                _dashed(draw, a, b, s.color, width)
        elif s.kind == "arrow":
            (x1, y1), (x2, y2) = s.points
            draw.line(s.points, fill=s.color, width=width)
            ang = math.atan2(y2 - y1, x2 - x1)
            for (x, y), a in (((x2, y2), ang + math.pi), ((x1, y1), ang)):
                for da in (-0.45, 0.45):
                    draw.line([(x, y), (x + 7 * math.cos(a + da), y + 7 * math.sin(a + da))], fill=s.color, width=width)
        elif s.kind == "arc":
            (x, y), (r, start, end) = s.points[0], s.extra
            if r > 1:
                draw.arc((x - r, y - r, x + r, y + r), start, end, fill=s.color, width=width)
        elif s.kind == "cross":
            x, y = s.points[0]
            draw.line([(x - 4, y - 4), (x + 4, y + 4)], fill=s.color, width=width)
            draw.line([(x - 4, y + 4), (x + 4, y - 4)], fill=s.color, width=width)
        elif s.kind == "dot":
            x, y = s.points[0]
            draw.ellipse((x - 3.5, y - 3.5, x + 3.5, y + 3.5), fill=s.color, outline=(0, 0, 0))
    for lab in layout.labels:
        if lab.leader:
            cx = min(max(lab.anchor[0], lab.box[0]), lab.box[2])
            cy = min(max(lab.anchor[1], lab.box[1]), lab.box[3])
            draw.line([lab.anchor, (cx, cy)], fill=lab.color, width=1)
        draw.text((lab.box[0], lab.box[1] + 1), lab.text, font=_font(lab.size), fill=lab.color,
                  stroke_width=1, stroke_fill=(0, 0, 0))
    mono = _font(layout.panel_font, mono=True)
    for k, line in enumerate(layout.panel):
        draw.text((img_w + 8, 8 + k * (layout.panel_font + 4)), line, font=mono, fill=(255, 255, 255))
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        canvas.save(fh, format="png", compress_level=1)  # twice as fast as 3, files about 15 % larger
    os.replace(tmp, path)
    return path
