"""Review page for a whole study: one card per film to confirm or correct the naming of its vertebra chain.

``spine-align review OUT_DIR`` reads the result JSON files a batch (or
``analyze``) wrote and writes ``OUT_DIR/review.html``: a self-contained page
(inline CSS and script, no network) that opens from disk in any browser. Each
film gets a card, the least certain first (incomplete chains, then the
lowest level confidence; chains without a level confidence, e.g. landmarks
from files, last), showing two crops of the source film at native resolution
(downscaled only past :data:`MAX_CROP_SIDE`): the top of the chain (from the
4th level above its first vertebra, C4 for T1, to below its 3rd; wide enough
for both first ribs) and its bottom (from its second last vertebra to the end
of the sacrum), with the level names drawn on the vertebrae.

The crops are written once as JPEG files into a ``review/`` folder next to the
page (loaded lazily, so 1,000 cards open at once) and written again only when
the result or the film is newer. The page saves the reviewer's decisions as
the CSV that ``--level-anchors`` reads (its columns: the page's help and docs/review.md).

Level names come from the protocol table (:func:`~SpineAlignmentLib.geometry.levels.vertebra_chain`);
results of a protocol without a four-corner vertebra chain are skipped with a
note on the page.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import OutputError, SpineAlignmentError
from ..geometry.levels import adjacent_level, level_rows, vertebra_chain
from ..result import SCHEMA, Result, load_json
from .naming import SUMMARY_CSV, make_items

log = logging.getLogger(__name__)

__all__ = ["REVIEW_HTML", "REVIEW_DIR", "ANCHORS_CSV", "MAX_CROP_SIDE", "SHIFT_HELP", "Crop", "Card",
           "collect_cards", "crop_boxes", "write_crops", "render_page", "build_review"]

#: the page's file name in the results folder
REVIEW_HTML = "review.html"
#: folder next to the page holding the crops
REVIEW_DIR = "review"
#: the file name the page's download gets
ANCHORS_CSV = "level-anchors.csv"
#: longest side of a crop in pixels (native resolution below it, downscaled above)
MAX_CROP_SIDE = 640
#: JPEG quality of the crops
JPEG_QUALITY = 85
#: half the width of the top crop in first-vertebra widths (both first ribs) and of the bottom crop in
#: last-vertebra widths (sacrum and sacroiliac joints)
TOP_HALF_WIDTHS = 3.2
BOTTOM_HALF_WIDTHS = 2.4
#: the crops' height on the page (CSS pixels); the labels are drawn at a fixed size on it
DISPLAY_HEIGHT = 280
LABEL_PX = 13

#: the sign convention of ``shift`` (page help, docs, ``--level-anchors``)
SHIFT_HELP = ("shift +1: every name moves one level down (the vertebra named T1 is really T2, the one named L5 is "
              "S1: the chain is one level too low); shift -1: every name moves one level up (T1 is really C7, L5 is "
              "L4: the chain is one level too high); shift 0: the naming is confirmed")


@dataclass
class Crop:
    """One crop of a film as shown on a card.

    Attributes:
        file: the JPEG, relative to the page (``review/<name>_top.jpg``).
        box: ``(x0, y0, x1, y1)`` the crop's original-pixel bounds (x1, y1 exclusive).
        scale: crop-image pixels per original pixel (1 at native resolution).
        size: ``(width, height)`` of the crop image.
        vertebrae: ``(chain index, corners (4, 2) in crop-image pixels)`` of the chain vertebrae inside it.
    """

    file: str
    box: tuple[int, int, int, int]
    scale: float
    size: tuple[int, int]
    vertebrae: list[tuple[int, np.ndarray]] = field(default_factory=list)


@dataclass
class Card:
    """One film on the page.

    Attributes:
        name: the result file's stem (unique in the folder).
        image: the result's ``image`` field (the key of the anchors CSV).
        protocol: its protocol ID.
        chain: the protocol's vertebra names, top to bottom.
        levels: the result's ``levels`` block (None: no level confidence, e.g. landmarks from a file).
        points: ``(4 n, 2)`` the chain's corners in original pixels (None when a corner is missing).
        film: the source film found (None when not found).
        note: why the card has no crops ("" when it has them).
        crops: ``"top"`` and ``"bottom"`` :class:`Crop` once written.
        overlay: the result's overlay PNG relative to the page, when it exists.
        warnings: the result's warnings.
        result_path: the result JSON.
        image_size: ``(rows, cols)`` of the film the result was measured on (None when it does not say).
    """

    name: str
    image: str
    protocol: str
    chain: tuple[str, ...]
    levels: dict | None
    points: np.ndarray | None
    film: Path | None = None
    note: str = ""
    crops: dict[str, Crop] = field(default_factory=dict)
    overlay: str = ""
    warnings: list[str] = field(default_factory=list)
    result_path: Path | None = None
    image_size: tuple[int, int] | None = None

    @property
    def confidence(self) -> float | None:
        return float(self.levels["confidence"]) if self.levels and "confidence" in self.levels else None

    @property
    def incomplete(self) -> bool:
        return bool(self.levels and self.levels.get("incomplete")) or self.points is None

    def sort_key(self) -> tuple:
        """Incomplete chains first, then the lowest level confidence, then chains without one; by name within."""
        conf = self.confidence
        return (0 if self.incomplete else 1 if conf is not None else 2, conf if conf is not None else 0.0, self.name)


# ---------------------------------------------------------------------------------------------------------------
# reading the results folder


def _result_files(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.glob("*.json") if not p.name.lower().endswith(".mrk.json") and p.is_file())


def source_films(out_dir: Path) -> dict[str, Path]:
    """Result stem -> the film path ``summary.csv`` names for it (batch's naming rule over the table's films)."""
    table = out_dir / SUMMARY_CSV
    if not table.is_file():
        return {}
    try:
        with open(table, newline="", encoding="utf-8") as f:
            paths = [row["image"] for row in csv.DictReader(f) if row.get("image")]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError) as exc:
        log.warning("%s: not read (%s); films are looked for by name only", table, exc)
        return {}
    return {item.name: Path(item.image) for item in make_items([Path(p) for p in paths])}


class _FilmFinder:
    """Finds a result's source film: the path ``summary.csv`` names, else a file of that name in ``films``
    folders (searched recursively, once), else next to the results."""

    def __init__(self, out_dir: Path, films: Sequence[str | Path]):
        self.out_dir = out_dir
        self.by_stem = source_films(out_dir)
        self.films = [Path(f) for f in films]
        self._by_name: dict[str, list[Path]] | None = None

    def _index(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for folder in self.films:
                for p in sorted(folder.rglob("*")):
                    if p.is_file():
                        self._by_name.setdefault(p.name, []).append(p)
        return self._by_name

    def find(self, stem: str, image: str) -> tuple[Path | None, str]:
        named = self.by_stem.get(stem)
        if named is not None and named.name == Path(image).name and named.is_file():
            return named, ""
        for folder in self.films:
            if (folder / image).is_file():
                return folder / image, ""
        hits = self._index().get(Path(image).name, [])
        if len(hits) == 1:
            return hits[0], ""
        if (self.out_dir / image).is_file():
            return self.out_dir / image, ""
        where = f"summary.csv names {named}, which does not exist" if named is not None else \
            "summary.csv does not name it"
        if len(hits) > 1:
            return None, (f"source film {image} is ambiguous: {len(hits)} files of that name under --films "
                          f"({', '.join(str(h) for h in hits[:2])}...); give the folder that holds this one")
        return None, f"source film {image} not found ({where}); give the films' folder with --films DIR"


def _chain_points(result: Result, chain: tuple[str, ...], corners: Sequence[str]) -> tuple[np.ndarray | None, str]:
    ids = [f"{v}_{c}" for v in chain for c in corners]
    missing = sorted({k.rpartition("_")[0] for k in ids if k not in result.landmarks}, key=chain.index)
    if missing:
        return None, f"the chain lacks corners of {', '.join(missing[:6])}{'...' if len(missing) > 6 else ''}"
    return np.array([[result.landmarks[k].x, result.landmarks[k].y] for k in ids], dtype=np.float64), ""


def collect_cards(out_dir: str | Path, films: Sequence[str | Path] = ()) -> tuple[list[Card], list[str]]:
    """The cards of a results folder (sorted, see :meth:`Card.sort_key`) and notes on the results skipped.

    Raises:
        SpineAlignmentError: the folder does not exist or holds no result JSON.
    """
    from ..protocols import get_protocol
    from ..errors import ProtocolError
    from ..geometry.levels import FOUR_CORNERS

    out = Path(out_dir)
    if not out.is_dir():
        raise SpineAlignmentError(f"{out}: no such folder; give the --out folder of spine-align batch or analyze.")
    finder = _FilmFinder(out, films)
    cards: list[Card] = []
    skipped: dict[str, list[str]] = {}
    results = 0
    for path in _result_files(out):
        try:
            data = load_json(path)
        except SpineAlignmentError as exc:
            skipped.setdefault(f"unreadable ({exc})", []).append(path.name)
            continue
        if not str(data.get("schema", "")).startswith(SCHEMA.split("/")[0]):
            continue  # another JSON (a landmark file, a model card): not a result
        results += 1
        try:
            result = Result.from_dict(data, source=str(path))
            proto = get_protocol(result.protocol)
        except (SpineAlignmentError, ProtocolError) as exc:
            skipped.setdefault(str(exc).rstrip("."), []).append(path.name)
            continue
        chain = vertebra_chain(proto.landmark_ids)
        if not chain or result.views:
            skipped.setdefault(f"protocol '{proto.id}' has no vertebra chain to name", []).append(path.name)
            continue
        points, why = _chain_points(result, chain, FOUR_CORNERS)
        image = result.image or path.stem
        card = Card(path.stem, image, proto.id, chain, result.levels, points, warnings=list(result.warnings),
                    result_path=path, image_size=result.image_size)
        overlay = out / f"{path.stem}_overlay.png"
        card.overlay = overlay.name if overlay.is_file() else ""
        if points is None:
            card.note = why
        else:
            card.film, card.note = finder.find(path.stem, image)
        cards.append(card)
    if not results:
        raise SpineAlignmentError(f"{out}: no result JSON files (<name>.json written by spine-align batch or analyze) "
                                  "in this folder; give the --out folder of a batch run.")
    cards.sort(key=Card.sort_key)
    notes = [f"{len(names)} result{'s' if len(names) > 1 else ''} skipped, {reason}: "
             f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}" for reason, names in skipped.items()]
    return cards, notes


# ---------------------------------------------------------------------------------------------------------------
# crops


def crop_boxes(points: np.ndarray, shape: tuple[int, int]) -> dict[str, tuple[int, int, int, int]]:
    """Original-pixel boxes ``(x0, y0, x1, y1)`` of the top and bottom crop of a chain's (4 n, 2) corners on a
    film of ``shape`` (rows, cols), clipped to the film (a box may be empty when the chain lies off the film).

    Top: rows from the 4th level above the first vertebra (extrapolated, C4 for T1) to one vertebra spacing
    below the third vertebra's centre, :data:`TOP_HALF_WIDTHS` first-vertebra widths either side of the
    first three vertebrae's centre line. Bottom: rows from one spacing above the second last vertebra's
    centre to the sacrum's end, :data:`BOTTOM_HALF_WIDTHS` last-vertebra widths either side.
    """
    q = np.asarray(points, dtype=np.float64).reshape(-1, 4, 2)
    c = q.mean(axis=1)
    width = 0.5 * (np.linalg.norm(q[:, 1] - q[:, 0], axis=1) + np.linalg.norm(q[:, 3] - q[:, 2], axis=1))
    rows = level_rows(points)
    top_step = float(np.linalg.norm(c[1] - c[0]))
    bottom_step = float(np.linalg.norm(c[-1] - c[-2]))
    boxes = {
        "top": (float(c[:3, 0].mean()), TOP_HALF_WIDTHS * float(width[0]), rows["C4"], rows["T3"] + top_step),
        "bottom": (float(c[-2:, 0].mean()), BOTTOM_HALF_WIDTHS * float(width[-1]), rows["L4"] - bottom_step,
                   rows["below_sacrum"]),
    }
    h, w = shape
    out = {}
    for key, (cx, half, y0, y1) in boxes.items():
        x0i, x1i = max(int(np.floor(cx - half)), 0), min(int(np.ceil(cx + half)), w)
        y0i, y1i = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h)
        out[key] = (x0i, y0i, max(x1i, x0i), max(y1i, y0i))
    return out


def _crop_geometry(card: Card, key: str, box: tuple[int, int, int, int]) -> Crop:
    x0, y0, x1, y1 = box
    scale = min(1.0, MAX_CROP_SIDE / max(x1 - x0, y1 - y0, 1))
    size = (max(int(round((x1 - x0) * scale)), 1), max(int(round((y1 - y0) * scale)), 1))
    crop = Crop(f"{REVIEW_DIR}/{card.name}_{key}.jpg", box, scale, size)
    q = card.points.reshape(-1, 4, 2)
    for i, corners in enumerate(q):
        cx, cy = corners.mean(axis=0)
        if x0 <= cx < x1 and y0 <= cy < y1:
            # original pixel k covers [k - 0.5, k + 0.5): the crop image's left edge is x0 - 0.5
            crop.vertebrae.append((i, (corners - (x0 - 0.5, y0 - 0.5)) * scale))
    return crop


def _up_to_date(target: Path, sources: Iterable[Path | None]) -> bool:
    try:
        t = target.stat().st_mtime_ns
        return all(s is None or s.stat().st_mtime_ns <= t for s in sources)
    except OSError:
        return False


def write_crops(card: Card, page_dir: Path) -> None:
    """Write the card's top and bottom crops (JPEG) into ``page_dir/review/`` unless they are newer than its
    result and film; fills ``card.crops``, or ``card.note`` when the film cannot be read or does not match."""
    from PIL import Image

    from ..imaging import read_radiograph
    from .overlay import display_window

    if card.film is None or card.points is None:
        return
    # the film is read only when a crop is missing or stale; the crop geometry takes the film's size from the
    # result (the size it was measured on)
    result_size = tuple(card.image_size) if card.image_size else None
    pixels = None
    shape = result_size
    targets = {key: page_dir / REVIEW_DIR / f"{card.name}_{key}.jpg" for key in ("top", "bottom")}
    stale = shape is None or not all(_up_to_date(t, (card.result_path, card.film)) for t in targets.values())
    if stale:
        try:
            pixels = read_radiograph(card.film).pixels
        except SpineAlignmentError as exc:
            card.note = f"source film unreadable: {exc}"
            return
        if result_size is not None and tuple(pixels.shape[:2]) != result_size:
            card.note = (f"source film {card.film} is {pixels.shape[0]}x{pixels.shape[1]} pixels but the result was "
                         f"measured on {result_size[0]}x{result_size[1]}; it is not the film of this result")
            return
        shape = tuple(pixels.shape[:2])
    boxes = crop_boxes(card.points, shape)
    for key, box in boxes.items():
        if box[2] <= box[0] or box[3] <= box[1]:
            continue  # the chain's end lies off the film
        crop = _crop_geometry(card, key, box)
        if pixels is not None:
            x0, y0, x1, y1 = box
            view = (display_window(pixels[y0:y1, x0:x1]) * 255.0 + 0.5).astype(np.uint8)
            img = Image.fromarray(view, mode="L")
            if crop.scale < 1.0:
                img = img.resize(crop.size, Image.Resampling.LANCZOS)
            targets[key].parent.mkdir(parents=True, exist_ok=True)
            part = targets[key].with_name(targets[key].name + ".part")
            img.save(part, format="JPEG", quality=JPEG_QUALITY)
            os.replace(part, targets[key])
        card.crops[key] = crop
    if not card.crops:
        card.note = "the chain's ends lie off the film"


# ---------------------------------------------------------------------------------------------------------------
# the page


def _shifted_names(chain: tuple[str, ...]) -> dict[str, list[str]]:
    """Chain index -> name under each shift (-1, 0, +1), ``"?"`` past the spine's ends."""
    return {str(s): [adjacent_level(v, s) or "?" for v in chain] for s in (-1, 0, 1)}


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _crop_html(card: Card, key: str, crop: Crop, what: str) -> str:
    w, h = crop.size
    font = LABEL_PX * h / DISPLAY_HEIGHT
    shapes = []
    for i, corners in crop.vertebrae:
        tl, tr, bl, br = corners
        pts = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in (tl, tr, br, bl))
        lx = min(tl[0], bl[0]) - 0.4 * font
        ly = 0.5 * (tl[1] + bl[1]) + 0.35 * font
        shapes.append(f'<polygon points="{pts}"/><text x="{_fmt(lx)}" y="{_fmt(ly)}" data-k="{i}" '
                      f'text-anchor="end">{html.escape(card.chain[i])}</text>')
    x0, y0, _, _ = crop.box
    attrs = f'data-x0="{x0}" data-y0="{y0}" data-s="{crop.scale:.6g}" data-w="{w}" data-h="{h}"'
    return (f'<figure class="crop {key}" {attrs}><div class="frame"><img src="{html.escape(crop.file)}" width="{w}" '
            f'height="{h}" loading="lazy" decoding="async" alt="{what} of the chain of {html.escape(card.image)}">'
            f'<svg viewBox="0 0 {w} {h}" style="font-size:{_fmt(font)}px;stroke-width:{_fmt(font / 9)}">'
            f'{"".join(shapes)}<circle class="mark" r="{_fmt(font * 0.45)}" cx="-99" cy="-99"/></svg></div>'
            f'<figcaption>{what}</figcaption></figure>')


def _card_html(n: int, card: Card) -> str:
    from ..inference.levels import levels_line

    levels = card.levels or {}
    conf = card.confidence
    if levels:
        line = levels_line(levels)
        alt = levels.get("alternative") or {}
        alt_text = (f"alternative naming {alt['top']}&ndash;{alt['bottom']} (shift {int(alt['shift']):+d}, "
                    f"p {float(alt['probability']):.2f})") if alt else ""
    else:
        line, alt_text = "no level confidence (landmarks not from a model)", ""
    if card.incomplete and card.points is None:
        line = f"incomplete chain: {card.note}"
    cls = "card" + (" incomplete" if card.incomplete else " uncertain" if levels.get("uncertain") else "")
    crops = "".join(_crop_html(card, key, card.crops[key], what) for key, what in
                    (("top", f"top ({card.chain[0]}; click where {card.chain[0]} is)"), ("bottom", "bottom"))
                    if key in card.crops)
    note = f'<p class="note">{html.escape(card.note)}</p>' if card.note else ""
    links = f' <a href="{html.escape(card.overlay)}" target="_blank">overlay</a>' if card.overlay else ""
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in card.warnings)
    warn = f'<details><summary>{len(card.warnings)} warning{"s" if len(card.warnings) > 1 else ""}</summary><ul>{warn}</ul></details>' if warn else ""
    first, last = card.chain[0], card.chain[-1]
    up = (adjacent_level(first, -1) or "?", adjacent_level(last, -1) or "?")
    down = (adjacent_level(first, 1) or "?", adjacent_level(last, 1) or "?")
    buttons = (f'<button data-act="0" title="the naming is right (key c)">confirm {first}&ndash;{last} <kbd>c</kbd></button>'
               f'<button data-act="-1" title="every name moves one level up (key u)">names up: {first}&rarr;{up[0]}, '
               f'{last}&rarr;{up[1]} <kbd>u</kbd></button>'
               f'<button data-act="1" title="every name moves one level down (key d)">names down: {first}&rarr;{down[0]}, '
               f'{last}&rarr;{down[1]} <kbd>d</kbd></button>'
               f'<button data-act="clear" title="forget the decision (key x)">clear <kbd>x</kbd></button>')
    return (f'<section class="{cls}" id="c{n}" tabindex="0" data-image="{html.escape(card.image, quote=True)}" '
            f'data-proto="{html.escape(card.protocol)}" data-conf="{"" if conf is None else conf}">'
            f'<header><b>{n + 1}. {html.escape(card.name)}</b> <span class="conf">{html.escape(line)}</span>'
            f'{" &middot; " + alt_text if alt_text else ""}{links}<span class="decision"></span></header>'
            f'{note}<div class="crops">{crops}</div><div class="buttons">{buttons}</div>{warn}</section>')


def render_page(cards: Sequence[Card], notes: Sequence[str], *, title: str, generated: str) -> str:
    """The review page's HTML for cards whose crops are written (inline CSS and script; no network)."""
    from .review_assets import CSS, SCRIPT

    chains = {c.protocol: c.chain for c in cards}
    config = {"names": {p: _shifted_names(ch) for p, ch in chains.items()},
              "first": {p: ch[0] for p, ch in chains.items()},
              "csvName": ANCHORS_CSV, "storageKey": f"spine-align-review:{title}"}
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    notes_block = f'<ul class="notes">{notes_html}</ul>' if notes_html else ""
    uncertain = sum(1 for c in cards if c.incomplete or (c.levels or {}).get("uncertain"))
    first = next(iter(chains.values()), ("T1",))[0]
    help_text = html.escape(SHIFT_HELP)
    config_json = json.dumps(config).replace("</", "<\\/")  # no "</script>" inside the script element
    cards_html = "".join(_card_html(n, c) for n, c in enumerate(cards))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Level review: {html.escape(title)}</title><style>:root {{ --crop-h: {DISPLAY_HEIGHT}px; }}{CSS}</style></head>
<body>
<aside id="panel">
<h1>Level review</h1>
<p>{html.escape(title)}: {len(cards)} film{'s' if len(cards) != 1 else ''}, {uncertain} uncertain or incomplete,
least certain first. Generated {html.escape(generated)}.</p>
<p class="help">Keys on the selected card: <kbd>c</kbd> confirm, <kbd>u</kbd> names one level up,
<kbd>d</kbd> names one level down, <kbd>x</kbd> clear, <kbd>j</kbd>/<kbd>k</kbd> next/previous card.
Click the top crop where {html.escape(first)} is to anchor the chain there.</p>
<p class="help">Saved as <code>{ANCHORS_CSV}</code> for <code>spine-align batch ... --level-anchors {ANCHORS_CSV}</code>,
which re-measures only the films listed: <code>image,shift</code> rows ({help_text}) and
<code>image,level,x,y</code> rows (this vertebra is <i>level</i>; x, y in original film pixels); both kinds
together give the columns <code>image,shift,level,x,y</code>, each row filling its own.</p>
<p id="counts"></p>
<p><button id="download">Download {ANCHORS_CSV}</button> <button id="clear-all">Clear all</button></p>
<textarea id="csv" rows="8" readonly spellcheck="false"></textarea>
{notes_block}
</aside>
<main id="cards">
{cards_html}
</main>
<script id="review-config" type="application/json">{config_json}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def build_review(out_dir: str | Path, page: str | Path | None = None, *, films: Sequence[str | Path] = (),
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the review page of a results folder.

    Args:
        out_dir: the ``--out`` folder of ``spine-align batch`` or ``analyze``.
        page: the HTML file (default ``out_dir/review.html``); the crops go to ``review/`` beside it.
        films: folders to look for source films in when ``summary.csv`` does not name them (moved films).
        progress: called with (cards done, cards) while the crops are written.

    Returns:
        ``{"page": path, "cards": n, "with_crops": n, "without_crops": n, "skipped_notes": [...],
        "seconds": total, "crop_seconds": time writing crops}``.

    Raises:
        SpineAlignmentError: no results in the folder; OutputError: the page cannot be written.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    page_path = Path(page) if page is not None else out / REVIEW_HTML
    cards, notes = collect_cards(out, films)
    page_dir = page_path.parent
    if page_dir.resolve() != out.resolve():  # links to overlays are relative to the page
        for c in cards:
            if c.overlay:
                c.overlay = os.path.relpath(out / c.overlay, page_dir)
    t1 = time.perf_counter()
    for i, card in enumerate(cards):
        write_crops(card, page_dir)
        if progress is not None:
            progress(i + 1, len(cards))
    t2 = time.perf_counter()
    text = render_page(cards, notes, title=str(out.resolve().name or out.resolve()),
                       generated=time.strftime("%Y-%m-%d %H:%M"))
    try:
        page_dir.mkdir(parents=True, exist_ok=True)
        part = page_path.with_name(page_path.name + ".part")
        part.write_text(text, encoding="utf-8")
        os.replace(part, page_path)
    except OSError as exc:
        from ..safefiles import describe_os_error

        raise OutputError(f"{page_path}: cannot be written ({describe_os_error(exc)}); give a writable --out.") from None
    return {"page": str(page_path), "cards": len(cards), "with_crops": sum(1 for c in cards if c.crops),
            "without_crops": sum(1 for c in cards if not c.crops), "skipped_notes": notes,
            "seconds": round(time.perf_counter() - t0, 3), "crop_seconds": round(t2 - t1, 3)}
