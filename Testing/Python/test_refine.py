"""Second-stage ROI refinement: ROI geometry, sampling, resize mapping and the whole refine chain."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SpineAlignmentLib.models.refine import (
    FLIP_CORNERS, RoiSpec, from_roi, refine_corners, resize_for_rois, roi_grid, sample_rois, to_roi, vertebra_frames,
    _scale_points)


def _vertebra(centre, width, height, angle_deg):
    """(4, 2) TL, TR, BL, BR of a rectangle rotated by angle (image axes, y down)."""
    a = math.radians(angle_deg)
    u = np.array([math.cos(a), math.sin(a)])  # along the mid-line, to the right
    v = np.array([-math.sin(a), math.cos(a)])  # down
    c = np.asarray(centre, float)
    return np.array([c - u * width / 2 - v * height / 2, c + u * width / 2 - v * height / 2,
                     c - u * width / 2 + v * height / 2, c + u * width / 2 + v * height / 2])


def test_vertebra_frames_hand_worked():
    q = np.stack([_vertebra((50, 60), 20, 12, 30), _vertebra((10, 5), 8, 6, -90)])
    centre, width, angle = vertebra_frames(q)
    np.testing.assert_allclose(centre, [[50, 60], [10, 5]], atol=1e-12)
    np.testing.assert_allclose(width, [20, 8], atol=1e-12)
    np.testing.assert_allclose(np.degrees(angle), [30, -90], atol=1e-12)


def test_roi_maps_hand_worked_and_round_trip():
    spec = RoiSpec(size=64, extent=2.0)
    q = _vertebra((100, 200), 40, 30, 0)[None]
    centre, width, angle = vertebra_frames(q)
    uv = to_roi(q, centre, width, angle, spec)[0]
    # 40 x 30 px vertebra in an 80 px ROI sampled on 64 pixels (1.25 image px per patch px): 32 x 24 patch px
    half = 31.5
    np.testing.assert_allclose(uv, [[half - 16, half - 12], [half + 16, half - 12],
                                    [half - 16, half + 12], [half + 16, half + 12]], atol=1e-9)
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 300, (3, 7, 2))
    c3, w3, a3 = rng.uniform(50, 250, (3, 2)), rng.uniform(20, 90, 3), rng.uniform(-1, 1, 3)
    np.testing.assert_allclose(from_roi(to_roi(pts, c3, w3, a3, spec), c3, w3, a3, spec), pts, atol=1e-9)


def test_roi_is_rotated_with_the_vertebra():
    """In the ROI of a tilted vertebra its corners sit where they sit for the untilted one."""
    spec = RoiSpec(size=96, extent=1.8)
    flat = _vertebra((0, 0), 50, 35, 0)[None]
    tilted = _vertebra((120, 80), 50, 35, 25)[None]
    uv_flat = to_roi(flat, *vertebra_frames(flat), spec)
    uv_tilt = to_roi(tilted, *vertebra_frames(tilted), spec)
    np.testing.assert_allclose(uv_tilt, uv_flat, atol=1e-9)


def test_sample_rois_is_exact_on_a_linear_image():
    """Bilinear sampling reproduces a linear intensity ramp exactly at every rotated ROI pixel."""
    h, w = 120, 90
    yy, xx = np.mgrid[0:h, 0:w]
    img = (0.3 * xx + 0.7 * yy).astype(np.float32)
    spec = RoiSpec(size=16, extent=1.5)
    c, wd, a = np.array([[45.0, 60.0]]), np.array([30.0]), np.array([0.4])
    grid = roi_grid(c, wd, a, spec)
    patch = sample_rois(img, grid)[0, 0].numpy()
    np.testing.assert_allclose(patch, 0.3 * grid[0, ..., 0] + 0.7 * grid[0, ..., 1], rtol=1e-5)
    # outside the image: zero
    far = sample_rois(img, roi_grid(np.array([[500.0, 500.0]]), wd, a, spec))
    assert float(far.abs().max()) == 0.0


def test_resize_for_rois_maps_points():
    img = np.zeros((400, 300), np.float32)
    img[199:202, 99:102] = 1.0  # dot centred on (x=100, y=200)
    spec = RoiSpec(size=64, extent=2.0)  # 32 px per median vertebra
    small, f = resize_for_rois(img, 80.0, spec)
    assert f == pytest.approx((120 / 300, 160 / 400))
    assert small.shape == (160, 120)
    yy, xx = np.mgrid[0:small.shape[0], 0:small.shape[1]]
    m = small.sum()
    x, y = (small * xx).sum() / m, (small * yy).sum() / m
    np.testing.assert_allclose([x, y], _scale_points(np.array([100.0, 200.0]), f), atol=0.05)
    # a vertebra already smaller than the target is never enlarged
    same, f1 = resize_for_rois(img, 20.0, spec)
    assert f1 == (1.0, 1.0) and same.shape == img.shape


class _BlobNet(torch.nn.Module):
    """A stand-in refiner: channel k is the log of the patch's quadrant k (TL, TR, BL, BR), at stride 2.

    On an image whose only bright spots are the four corners of one vertebra,
    its DSNT output is those corners, so the whole chain (resize, rotated ROI,
    decode, inverse maps) can be checked against known positions.
    """

    stride = 2

    def forward(self, x):
        p = torch.log(F.avg_pool2d(x, 2)[:, 0].clamp_min(1e-12))  # softmax = the intensity: DSNT = blob centroid
        s = p.shape[-1]
        half = s // 2
        out = torch.full((x.shape[0], 4, s, s), -1e4)
        out[:, 0, :half, :half] = p[:, :half, :half]
        out[:, 1, :half, half:] = p[:, :half, half:]
        out[:, 2, half:, :half] = p[:, half:, :half]
        out[:, 3, half:, half:] = p[:, half:, half:]
        return out


def _corner_image(q, shape, sigma):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.zeros(shape, np.float32)
    for x, y in q.reshape(-1, 2):
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.clip(img, 0, 1)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_refine_chain_recovers_corners_from_a_shifted_roi(flip_tta):
    # vertebrae 180 px apart: no other vertebra's corner falls inside a 162 px ROI
    true = np.stack([_vertebra((150, 120 + 180 * i), 90, 55, 12 - 8 * i) for i in range(3)])
    img = _corner_image(true, (600, 300), sigma=4.0)
    coarse = true + np.array([6.0, -5.0]) + np.random.default_rng(0).normal(0, 2, true.shape)
    spec = RoiSpec(size=64, extent=1.8)
    refined, mass = refine_corners(_BlobNet().eval(), img, coarse.reshape(-1, 2), spec, stride=2, flip_tta=flip_tta)
    assert refined.shape == (12, 2) and mass.shape == (12,)
    err_coarse = np.linalg.norm(coarse.reshape(-1, 2) - true.reshape(-1, 2), axis=1)
    err = np.linalg.norm(refined - true.reshape(-1, 2), axis=1)
    assert err_coarse.mean() > 6.0
    # a 90 px vertebra is resized to 35.6 px (factor 0.4): 1 px there is 2.5 px here
    assert err.max() < 0.5, err
    assert np.all(mass > 0.5)


def test_flip_corner_order_is_an_involution():
    assert [FLIP_CORNERS[k] for k in FLIP_CORNERS] == [0, 1, 2, 3]


def test_normalise_patches_stretches_each_patch_alike():
    from SpineAlignmentLib.models.refine import normalise_patches

    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 32, 32, generator=g)
    dark, bright = 0.02 * base + 0.01, 0.5 * base + 0.4  # a dim upper-thoracic patch and a lumbar one
    out = normalise_patches(torch.cat([dark, bright]))
    torch.testing.assert_close(out[0], out[1], atol=1e-4, rtol=0)
    flat = out.reshape(2, -1)
    assert float(flat.min()) == 0.0 and float(flat.max()) == 1.0
    assert abs(float((flat[0] <= 0).float().mean()) - 0.01) < 0.005  # 1 % of the pixels clipped at each end
    # a blank patch stays finite
    assert torch.isfinite(normalise_patches(torch.zeros(1, 1, 8, 8))).all()
