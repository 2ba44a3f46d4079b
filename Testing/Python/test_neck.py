"""Synthetic neck above T1 (training/neck.py): hand-worked geometry of the new film, the film below T1 kept
exactly, no rib-like structure beside the synthetic vertebrae, and the training transform moving corners
with the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from SpineAlignmentLib.training.neck import RandNeckd, add_neck


def _spine(rows: int = 900, cols: int = 300, top: float = 60.0, spacing: float = 40.0, height: float = 30.0,
           width: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """A film with 17 bright boxes (vertebrae) on a grey background and a bright 'rib' bar beside T1..T12;
    corners TL, TR, BL, BR per vertebra, T1's top endplate at row ``top``."""
    img = np.full((rows, cols), 60, np.uint8)
    pts = []
    cx = cols / 2
    for v in range(17):
        y0 = top + v * spacing
        img[int(y0):int(y0 + height), int(cx - width / 2):int(cx + width / 2)] = 200
        if v < 12:  # ribs beside the thoracic vertebrae
            img[int(y0 + 5):int(y0 + 12), 10:int(cx - width / 2 - 10)] = 180
            img[int(y0 + 5):int(y0 + 12), int(cx + width / 2 + 10):cols - 10] = 180
        pts += [[cx - width / 2, y0], [cx + width / 2, y0], [cx - width / 2, y0 + height], [cx + width / 2, y0 + height]]
    return img, np.array(pts, dtype=float)


@pytest.mark.parametrize("margin", [1.0, 1.5, 2.0, 3.0])
def test_new_top_lies_margin_spacings_above_t1_and_the_film_below_is_kept(margin):
    img, pts = _spine()
    film, moved = add_neck(img, pts, margin, np.random.default_rng(0))
    spacing = 40.0  # T1-T2 centre distance
    t1_top = moved[:2, 1].min()
    assert t1_top == pytest.approx(margin * spacing, abs=1.0)  # the new film's top edge is row 0
    off = moved[0, 1] - pts[0, 1]
    np.testing.assert_allclose(moved[:, 0], pts[:, 0])
    np.testing.assert_allclose(moved[:, 1] - pts[:, 1], off)  # every corner moved by the same rows
    assert film.dtype == img.dtype and film.shape[1] == img.shape[1]
    # from the cut (inside the C7-T1 disc) down, the film is the original: T1 and its ribs are never touched
    below = int(pts[0, 1]) - 3  # the cut lies 0.4 disc (4 rows) above T1
    np.testing.assert_array_equal(film[below + int(off):], img[below:])


def test_the_synthetic_vertebrae_sit_above_t1_without_ribs():
    img, pts = _spine()
    film, moved = add_neck(img, pts, 2.5, np.random.default_rng(1))
    t1_top = int(moved[0, 1])
    cx = int(moved[0, 0] + 30)
    neck = film[:t1_top - 4].astype(float)
    # along the spine line there are bright bodies (vertebrae) separated by darker discs
    profile = ndimage.uniform_filter1d(neck[:, cx - 10:cx + 10].mean(axis=1), 3)
    assert profile.max() - profile.min() > 40
    # beside them, where the film has ribs below T1, the neck has no rib-like bright bar
    side = neck[:, 15:int(moved[0, 0]) - 15].mean(axis=1)
    assert side.max() < 150


def test_cut_off_film_gets_rows_on_top_and_no_landmark_above_t1():
    """A film cut just above T1 (the AASCE framing) grows upwards; the corners keep their count and order."""
    img, pts = _spine(top=8.0)
    film, moved = add_neck(img, pts, 2.0, np.random.default_rng(2))
    assert film.shape[0] > img.shape[0]
    assert moved.shape == (68, 2) and (np.diff(moved.reshape(17, 4, 2)[:, 0, 1]) > 0).all()


def test_rand_neck_moves_corners_with_the_pixels():
    """In network-input pixels: a corner marked by a dot on its own channel stays under the dot."""
    img, pts = _spine(rows=512, cols=256, top=20.0, spacing=27.0, height=20.0, width=40.0)
    x = img[None].astype(np.float32) / 255.0
    t = RandNeckd(keys="image", points_key="points", prob=1.0)
    t.set_random_state(3)
    d = t({"image": x, "points": pts.astype(np.float32)})
    assert d["image"].shape == x.shape
    q = d["points"]
    assert q[0, 1] > pts[0, 1] + 10  # the spine moved down to make room for the neck
    # the bright box of each vertebra is where its corners say (centre of mass inside the corner box)
    out = d["image"][0]
    for v in (0, 8, 16):
        box = q[4 * v:4 * v + 4]
        y0, y1 = int(box[:, 1].min()) + 1, int(box[:, 1].max())
        x0, x1 = int(box[:, 0].min()) + 1, int(box[:, 0].max())
        assert out[y0:y1, x0:x1].mean() > 0.6
        assert out[y1 + 2:y1 + 4, x0:x1].mean() < out[y0:y1, x0:x1].mean() - 0.2  # the disc below is darker
