"""Overlay legibility (SpineAlignmentLib/io/overlay.py): labels never overlap, coincident lines stay apart,
text is outlined, and the canvas lists every value however short the film."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from PIL import Image
from spines import coronal_spine
from test_dicom_sr import SHOULDER
from test_geometry import _lumbar_image

from SpineAlignmentLib.geometry.coronal import VERTEBRAE
from SpineAlignmentLib.io.overlay import boxes_intersect, overlay_layout, render_overlay
from SpineAlignmentLib.pairs import film_result, measure_pair
from SpineAlignmentLib.pipeline import measure
from SpineAlignmentLib.result import Landmark, View


def _coronal():
    thetas = [0, 4, 8, 12, 8, 2, -6, -14, -20, -14, -6, 0, 6, 12, 8, 4, 0]
    pts = coronal_spine(thetas)
    assert len(pts) == 4 * len(VERTEBRAE)
    return measure(pts, "coronal-spine", image_size=(900, 800))


def _shoulder():
    return measure(SHOULDER, "coronal-shoulder", spacing_mm=(0.2, 0.2), image_size=(300, 400),
                   patient_orientation="L,F")


def _short_lumbar_film():
    """A 320-row flexion film of a lumbar pair: IROM and dST for every level L1L2..L5S1 in the panel."""
    flex = _lumbar_image([-6, -4, -3, -2, -1, 0], [5, 0, 0, 0, 0, 0])
    ext = _lumbar_image([8, 4, 3, 2, 1, 0], [0, 0, 0, 0, 0, 0], facing=-1)
    views = {r: View({k: Landmark(*p) for k, p in pts.items()}, image=f"{r}.png", image_size=(320, 700),
                     spacing_mm=(0.2, 0.2), calibration="manual:user") for r, pts in (("flexion", flex),
                                                                                       ("extension", ext))}
    return film_result(measure_pair("lumbar-dynamic", views), "flexion")


@pytest.mark.parametrize("make, shape", [(_coronal, (900, 800)), (_shoulder, (300, 400))])
def test_no_two_labels_intersect_and_every_drawn_parameter_is_named(make, shape):
    res = make()
    layout = overlay_layout(shape, res, max_size=800)
    boxes = [lab.box for lab in layout.labels]
    for a, b in itertools.combinations(layout.labels, 2):
        assert not boxes_intersect(a.box, b.box), (a.text, a.box, b.text, b.box)
    texts = {lab.text for lab in layout.labels}
    drawn = {pid for pid, m in res.parameters.items() if any(c.kind in ("line", "offset", "angle")
                                                             for c in m.construction)}
    assert drawn and drawn <= texts, drawn - texts
    # no label covers a landmark, and every label lies on the film part of the picture
    w, h = layout.image_size
    for lm in res.landmarks.values():
        x, y = lm.x * layout.scale, lm.y * layout.scale
        assert not any(b[0] < x < b[2] and b[1] < y < b[3] for b in boxes), (lm, x, y)
    assert all(0 <= b[0] and b[2] <= w and 0 <= b[1] and b[3] <= h for b in boxes)
    if shape == (300, 400):  # few landmarks: each one named (CA, Clav_top_L and Clav_lat_L overlapped before)
        assert set(SHOULDER) <= texts and {"CA", "CTAD", "CHD", "RSH_bony"} & texts


def test_lines_on_a_shared_endplate_are_drawn_apart():
    """A Cobb curve and an AASCE angle on the same endplate: the second line is offset and dashed, not hidden."""
    res = _coronal()
    layout = overlay_layout((900, 800), res, max_size=800)
    segs = [s for s in layout.strokes if s.kind in ("line", "dash") and len(s.points) == 2]
    dashed = [s for s in segs if s.kind == "dash"]
    assert dashed, "the fixture has Cobb and AASCE lines on the same endplates"
    for a, b in itertools.combinations(segs, 2):
        if a.color == b.color:
            continue
        (p1, p2), (q1, q2) = np.asarray(a.points), np.asarray(b.points)
        same = max(np.linalg.norm(p1 - q1), np.linalg.norm(p2 - q2))
        swapped = max(np.linalg.norm(p1 - q2), np.linalg.norm(p2 - q1))
        assert min(same, swapped) >= 3.0, (a, b)
    assert "AASCE_2" in {lab.text for lab in layout.labels}


def test_short_film_lists_every_value(tmp_path):
    res = _short_lumbar_film()
    assert "IROM_L5S1" in res.parameters
    layout = overlay_layout((320, 700), res, max_size=1600)
    assert any(line.startswith("IROM_L5S1 = ") for line in layout.panel)
    needed = 8 + (layout.panel_font + 4) * len(layout.panel)
    assert layout.canvas_size[1] >= needed > 320  # the canvas grew below the film to hold the panel
    img = Image.open(render_overlay(np.zeros((320, 700), np.float32), res, tmp_path / "o.png", max_size=1600))
    assert img.size == layout.canvas_size
    # the last panel line is drawn: white text pixels in the panel strip below the film's height
    strip = np.asarray(img.convert("L"))[needed - layout.panel_font - 6:needed, layout.image_size[0]:]
    assert (strip > 200).sum() > 20


@pytest.mark.parametrize("background", [0.0, 1.0])
def test_text_reads_on_black_and_on_bone(background, tmp_path):
    """Labels carry a black outline around coloured text: both show on a white (bone) and a black film."""
    res = _shoulder()
    img = np.full((300, 400), background, np.float32)
    img[0, 0] = 1.0 - background  # a window exists
    layout = overlay_layout(img.shape, res, max_size=800)
    png = np.asarray(Image.open(render_overlay(img, res, tmp_path / "o.png", max_size=800)).convert("RGB"), float)
    lab = next(lab for lab in layout.labels if lab.text == "CA")
    x0, y0, x1, y1 = (int(math.floor(v)) for v in lab.box)
    patch = png[y0:y1 + 1, x0:x1 + 1]
    dark = (patch.max(axis=-1) < 40).sum()
    colour = (np.abs(patch - np.array(lab.color, float)).max(axis=-1) < 40).sum()
    assert dark > 10 and colour > 10, (dark, colour)
