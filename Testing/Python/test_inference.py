"""Inference: letterbox mapping, sub-pixel decoding, flip TTA, warnings, and the shipped model on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SpineAlignmentLib.inference.decode import decode_heatmaps
from SpineAlignmentLib.inference.predict import predict_array, predict_landmarks
from SpineAlignmentLib.inference.preprocess import Letterbox, letterbox, letterbox_geometry, normalise_intensity
from SpineAlignmentLib.models.dsnt import dsnt, gaussian_heatmaps, local_soft_argmax, peak_mass
from SpineAlignmentLib.models.landmarks import flip_permutation
from SpineAlignmentLib.models.registry import LoadedModel, load_model, models_dir

from conftest import REPO, datasets_dir

SAMPLE = REPO / "Resources" / "SampleData" / "aasce-sample-AP.jpg"


# ---------------------------------------------------------------- letterbox

@pytest.mark.parametrize("src", [(2000, 700), (973, 1427), (3755, 355), (512, 256), (100, 100)])
def test_letterbox_round_trip(src):
    geo = letterbox_geometry(src, (512, 256))
    pts = np.array([[0.0, 0.0], [src[1] - 1.0, src[0] - 1.0], [12.3, 456.7], [src[1] / 2, src[0] / 3]])
    np.testing.assert_allclose(geo.to_original(geo.to_input(pts)), pts, atol=1e-9)
    # the image's outer pixel edges land inside the network input
    edges = geo.to_input(np.array([[-0.5, -0.5], [src[1] - 0.5, src[0] - 0.5]]))
    assert (edges >= -0.5 - 1e-9).all() and edges[1, 0] <= 255.5 + 1e-9 and edges[1, 1] <= 511.5 + 1e-9


def test_anisotropic_mapping_per_axis_hand_worked():
    # x scaled by 1/4, y by 1/2, padding 10 rows above and 3 columns left
    geo = Letterbox(src_shape=(100, 40), dst_shape=(70, 16), scale=(0.5, 0.25), offset=(10, 3))
    # original pixel centre (x=3.5... ) -> ((x + .5) * sx - .5 + ox, (y + .5) * sy - .5 + oy)
    np.testing.assert_allclose(geo.to_input([[7.5, 19.5]]), [[(8.0 * 0.25) - 0.5 + 3, (20.0 * 0.5) - 0.5 + 10]])
    pts = np.random.default_rng(0).uniform(0, 40, (20, 2))
    np.testing.assert_allclose(geo.to_original(geo.to_input(pts)), pts, atol=1e-12)


def test_letterbox_places_content_where_the_mapping_says():
    img = np.zeros((1000, 400), np.float32)
    img[600:620, 100:120] = 1.0  # a 20x20 square centred at (109.5, 609.5)
    out, geo = letterbox(img, (512, 256))
    ys, xs = np.nonzero(out > 0.0)
    w = out[ys, xs]
    com = np.array([np.sum(xs * w) / w.sum(), np.sum(ys * w) / w.sum()])
    np.testing.assert_allclose(com, geo.to_input([[109.5, 609.5]])[0], atol=0.05)
    assert geo.offset == (0, (256 - 205) // 2)


def test_normalise_intensity():
    a = np.arange(1000, dtype=np.float32).reshape(40, 25)
    n = normalise_intensity(a, 0.0, 100.0)
    assert n.min() == 0.0 and n.max() == 1.0 and n.dtype == np.float32
    assert not normalise_intensity(np.full((8, 8), 7.0)).any()


# ---------------------------------------------------------------- decoding

@pytest.mark.parametrize("center", [(20.3, 33.7), (9.0, 11.0), (40.81, 12.12)])
def test_soft_argmax_sub_pixel_on_gaussian(center):
    coords = torch.tensor([[center]], dtype=torch.float32)
    hm = gaussian_heatmaps(coords, 64, 32, stride=2, sigma=1.5)
    g = dsnt(hm, 2)[0, 0].numpy()
    loc = local_soft_argmax(hm, 2, radius=4)[0, 0].numpy()
    # a +-4 heatmap-pixel window truncates the Gaussian (sigma 3 input px) at 2.7 sigma: bias < 0.05 px
    np.testing.assert_allclose(loc, center, atol=0.05)
    np.testing.assert_allclose(g, center, atol=0.01)
    logits = torch.log(hm + 1e-30)
    c, conf, prob = decode_heatmaps(logits, stride=2, window=4, conf_radius=3.0)
    np.testing.assert_allclose(c[0, 0].numpy(), center, atol=0.05)
    # mass of a 2-D Gaussian within r = 2 sigma: 1 - exp(-2) = 0.865
    assert conf[0, 0].item() == pytest.approx(1 - np.exp(-2.0), abs=0.03)


def test_local_soft_argmax_ignores_a_distant_second_mode():
    a = gaussian_heatmaps(torch.tensor([[[20.5, 20.5]]]), 64, 32, 2, 1.5)
    b = gaussian_heatmaps(torch.tensor([[[40.5, 100.5]]]), 64, 32, 2, 1.5)
    mix = 0.7 * a + 0.3 * b
    np.testing.assert_allclose(local_soft_argmax(mix, 2, 3)[0, 0].numpy(), [20.5, 20.5], atol=0.05)
    assert abs(dsnt(mix, 2)[0, 0, 1].item() - 20.5) > 20  # the global mean is pulled away
    # 70 % of the mass is in mode a; a disc of radius 2 sigma holds 1 - exp(-2) of it
    assert peak_mass(mix, local_soft_argmax(mix, 2, 3), 2, 3.0).item() == pytest.approx(0.7 * (1 - np.exp(-2)), abs=0.02)


def test_flat_image_gives_low_confidence():
    c, conf, _ = decode_heatmaps(torch.zeros(1, 3, 64, 32), 2, conf_radius=3.0)
    assert conf.max().item() < 0.02


# ---------------------------------------------------------------- flip TTA

class _MirrorAwareNet(torch.nn.Module):
    """Returns fixed heatmaps for the reference image and the correctly mirrored, channel-swapped
    heatmaps for its mirror image: what a perfectly flip-equivariant network would do."""

    stride = 2

    def __init__(self, ref: np.ndarray, coords: torch.Tensor, perm):
        super().__init__()
        self.ref = torch.from_numpy(ref)
        self.coords = coords  # (C, 2) input px
        self.perm = perm

    def forward(self, x):
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        outs = []
        for img in x:
            if torch.allclose(img[0], self.ref):
                c = self.coords
            else:
                assert torch.allclose(img[0], torch.flip(self.ref, dims=[-1]))
                c = self.coords[self.perm].clone()
                c[:, 0] = (x.shape[-1] - 1) - c[:, 0]
            outs.append(torch.log(gaussian_heatmaps(c[None], h, w, 2, 1.2)[0] + 1e-30))
        return torch.stack(outs)


def _fake_model(image: np.ndarray, ids, coords) -> LoadedModel:
    md = {"network_data_format": {"inputs": {"image": {"intensity": {"low_percentile": 0.5, "high_percentile": 99.5}}}},
          "decoding": {"method": "local-soft-argmax", "window": 3, "confidence_radius": 3.0, "low_confidence": 0.3},
          "protocol": "coronal-spine"}
    norm = normalise_intensity(image, 0.5, 99.5)
    ref, _ = letterbox(norm, (128, 64))
    net = _MirrorAwareNet(ref, torch.tensor(coords, dtype=torch.float32), flip_permutation(ids))
    return LoadedModel("fake", "0", md, net, tuple(ids), (128, 64), 2, None)


def test_flip_tta_swaps_corners_back():
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (300, 150)).astype(np.float32)
    ids = ("T1_TL", "T1_TR", "T1_BL", "T1_BR")
    coords = [[20.3, 30.2], [41.7, 29.1], [21.2, 50.6], [43.9, 52.3]]  # deliberately asymmetric
    model = _fake_model(image, ids, coords)
    plain, c0 = predict_array(image, model, flip_tta=False)
    tta, c1 = predict_array(image, model, flip_tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-3)
    np.testing.assert_allclose(c1, c0, atol=1e-4)
    assert plain[0, 0] < plain[1, 0]  # TL stays left of TR


# ---------------------------------------------------------------- the shipped model

@pytest.fixture(scope="module")
def shipped():
    folder = models_dir() / "coronal-spine-landmarks"
    if not (folder / "metadata.json").is_file():
        pytest.skip(f"shipped model {folder} not present")
    torch.set_num_threads(2)
    return load_model("coronal-spine-landmarks")


def _centroids(lms, ids):
    p = np.array([[lms[i].x, lms[i].y] for i in ids]).reshape(-1, 4, 2)
    return p, p.mean(axis=1)


def test_shipped_model_on_sample_gives_ordered_vertebrae(shipped):
    from SpineAlignmentLib.imaging import read_radiograph

    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} missing")
    rg = read_radiograph(SAMPLE)
    lms, warns = predict_landmarks(rg, shipped)
    assert set(lms) == set(shipped.landmark_ids)
    p, cent = _centroids(lms, shipped.landmark_ids)
    rows, cols = rg.shape
    assert np.all(np.diff(cent[:, 1]) > 0.01 * rows)  # T1 .. L5 strictly top to bottom
    assert np.all(p[:, 0, 0] < p[:, 1, 0]) and np.all(p[:, 2, 0] < p[:, 3, 0])  # left corners left
    assert np.all(p[:, 0, 1] < p[:, 2, 1]) and np.all(p[:, 1, 1] < p[:, 3, 1])  # top corners above
    assert cent[:, 0].min() > 0.1 * cols and cent[:, 0].max() < 0.9 * cols
    assert np.mean([lm.confidence for lm in lms.values()]) > shipped.metadata["decoding"]["low_confidence"]
    assert not any("order" in w or "Low landmark confidence" in w for w in warns), warns
    # flip TTA agrees with the plain prediction to within a few pixels
    lms2, _ = predict_landmarks(rg, shipped, flip_tta=True)
    d = [np.hypot(lms[i].x - lms2[i].x, lms[i].y - lms2[i].y) for i in shipped.landmark_ids]
    assert np.median(d) < 0.01 * rows


@pytest.mark.parametrize("kind", ["blank", "noise", "tiny"])
def test_shipped_model_flags_non_spine_images(shipped, kind):
    rng = np.random.default_rng(7)
    img = {"blank": np.zeros((1500, 600), np.float32),
           "noise": rng.uniform(0, 255, (1500, 600)).astype(np.float32),
           "tiny": rng.uniform(0, 255, (40, 20)).astype(np.float32)}[kind]
    lms, warns = predict_landmarks(img, shipped)
    assert len(lms) == 68
    assert any("confidence" in w.lower() or "blank" in w.lower() or "too small" in w.lower() for w in warns), warns
    assert np.mean([lm.confidence for lm in lms.values()]) < shipped.metadata["decoding"]["low_confidence"]


def test_shipped_model_flags_a_chest_film(shipped):
    from SpineAlignmentLib.imaging import read_radiograph

    d = datasets_dir() / "jsrt-clavicles" / "images"
    if not d.is_dir():
        pytest.skip(f"JSRT images not found at {d}")
    rg = read_radiograph(sorted(d.glob("*.jpg"))[0])
    lms, warns = predict_landmarks(rg, shipped)
    assert warns, "a chest film must not pass as a confident AP spine"


# ---------------------------------------------------------------- vertebra-centre decoding

def _vertebra_output(points: torch.Tensor, h: int, w: int, stride: int, anchors: tuple[int, int] | None = None,
                     centre_peaks: dict[int, float] | None = None) -> torch.Tensor:
    """Ideal network output for (1, 4V, 2) corners: heatmaps as logits, offsets at the centre pixels.

    ``anchors``: vertebra indices whose centres the T1 and L5 anchor maps mark
    (adds channels 15-16); ``centre_peaks``: vertebra index -> centre-map peak
    (default 1).
    """
    from SpineAlignmentLib.models.vertebra import OFFSET_SCALE, _pixel_index, _splat

    nv = points.shape[1] // 4
    q = points.reshape(1, nv, 4, 2)
    c = q.mean(2)
    vv = torch.ones(1, nv, dtype=torch.bool)
    out = torch.zeros(1, 15 if anchors is None else 17, h, w)
    logit = lambda p: torch.logit(p.clamp(1e-6, 1 - 1e-6))
    per = torch.stack([_splat(c[:, [v]], vv[:, [v]], h, w, stride, 2.0) * (centre_peaks or {}).get(v, 1.0)
                       for v in range(nv)], 1)
    out[:, 0] = logit(per.amax(1))
    for k in range(4):
        out[:, 11 + k] = logit(_splat(q[:, :, k], vv, h, w, stride, 1.5))
    if anchors is not None:
        for ch, v in zip((15, 16), anchors):
            out[:, ch] = logit(_splat(c[:, [v]], vv[:, [v]], h, w, stride, 2.0))
    ix, iy = _pixel_index(c, h, w, stride)
    off = (stride - 1) / 2
    for v in range(nv):
        pos = torch.tensor([ix[0, v] * stride + off, iy[0, v] * stride + off])
        out[0, 1:3, iy[0, v], ix[0, v]] = (c[0, v] - pos) / OFFSET_SCALE
        out[0, 3:11, iy[0, v], ix[0, v]] = ((q[0, v] - pos) / OFFSET_SCALE).reshape(-1)
    return out


def test_vertebra_decode_recovers_ordered_corners_and_refines():
    from test_hygiene import coronal_spine

    from SpineAlignmentLib.models.vertebra import OFFSET_SCALE, decode_vertebrae

    pts = torch.tensor(coronal_spine(30.0) * 0.35 + np.array([10.0, -10.0]), dtype=torch.float32)[None]
    out = _vertebra_output(pts, 256, 128, 2)
    p, conf = decode_vertebrae(out, 2)
    assert p.shape == (1, 68, 2) and conf.shape == (1, 68)
    np.testing.assert_allclose(p[0], pts[0].numpy(), atol=0.5)  # splats peak on whole pixels: < 0.5 px
    assert conf.min() > 0.99
    # coarse corners 3 px off: the corner-heatmap refinement pulls them back
    out[0, 3:11] += 3.0 / OFFSET_SCALE
    p2, _ = decode_vertebrae(out, 2)
    np.testing.assert_allclose(p2[0], pts[0].numpy(), atol=0.5)
    p3, _ = decode_vertebrae(out, 2, min_corner_peak=1.1)  # refinement off: the 3 px error stays
    np.testing.assert_allclose(p3[0] - pts[0].numpy(), 3.0, atol=1e-4)


def test_anchors_pick_t1_to_l5_when_c7_looks_stronger():
    """18 vertebra-like centres (C7 on top), C7 stronger than L5: the 17 strongest are C7..L4, shifted by one
    level; the T1/L5 anchor maps put the run back on T1..L5."""
    from test_hygiene import coronal_spine

    from SpineAlignmentLib.models.vertebra import decode_vertebrae

    spine = coronal_spine(20.0) * 0.3 + np.array([10.0, 20.0])
    q = spine.reshape(17, 4, 2)
    c7 = q[0] - (q[1] - q[0])  # one level above T1
    pts = torch.tensor(np.concatenate([c7[None], q]).reshape(1, 72, 2), dtype=torch.float32)
    peaks = {0: 0.95, 17: 0.6}  # C7 0.95, L5 0.6, the rest 1
    plain, _ = decode_vertebrae(_vertebra_output(pts, 256, 128, 2, centre_peaks=peaks), 2)
    np.testing.assert_allclose(plain[0], pts[0, :68].numpy(), atol=0.5)  # C7..L4: off by one level
    out = _vertebra_output(pts, 256, 128, 2, anchors=(1, 17), centre_peaks=peaks)
    fixed, conf = decode_vertebrae(out, 2)
    np.testing.assert_allclose(fixed[0], spine, atol=0.5)
    assert conf[0, -4:].max() < conf[0, :-4].min()  # the weak L5 keeps its lower confidence
    # anchors that agree with the strongest run change nothing
    peaks_l5_strong = {0: 0.6}
    out2 = _vertebra_output(pts, 256, 128, 2, anchors=(1, 17), centre_peaks=peaks_l5_strong)
    np.testing.assert_allclose(decode_vertebrae(out2, 2)[0][0], spine, atol=0.5)
    # a weak spurious centre between T6 and T7 is skipped, not taken in place of L5
    from SpineAlignmentLib.models.vertebra import _pixel_index

    mid = torch.tensor(0.5 * (q[5].mean(0) + q[6].mean(0)), dtype=torch.float32)[None, None]
    ix, iy = _pixel_index(mid, 256, 128, 2)
    out3 = out.clone()
    out3[0, 0, iy[0, 0], ix[0, 0]] = torch.logit(torch.tensor(0.3))
    np.testing.assert_allclose(decode_vertebrae(out3, 2)[0][0], spine, atol=0.5)


def test_vertebra_loss_trains_the_anchor_maps():
    """With 17 channels the loss includes the T1/L5 anchor term, lower for the right anchors."""
    from test_hygiene import coronal_spine

    from SpineAlignmentLib.models.vertebra import VertebraLoss

    pts = torch.tensor(coronal_spine(20.0) * 0.35, dtype=torch.float32)[None]
    valid = torch.ones(1, 68, dtype=torch.bool)
    loss = VertebraLoss(stride=2)
    _, p15 = loss(_vertebra_output(pts, 256, 128, 2), pts, valid)
    assert "anchor" not in p15
    lg, pg = loss(_vertebra_output(pts, 256, 128, 2, anchors=(0, 16)), pts, valid)
    lw, pw = loss(_vertebra_output(pts, 256, 128, 2, anchors=(1, 15)), pts, valid)
    assert pg["anchor"] < 0.1 * pw["anchor"] and float(lg) < float(lw), (pg, pw)
