"""The level-sequence landmark family (models/level_family.py, training/level_family.py): layout read from the
protocol table, hand-worked target/decoding geometry, absent landmarks, bad input, and a tiny train -> export ->
analyze-by-name round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from SpineAlignmentLib.errors import SpineAlignmentError
from SpineAlignmentLib.models.level_family import (INDEX_SCALE, LevelFamilyLoss, decode_levels, level_layout,
                                                   name_chain, never_labelled)
from SpineAlignmentLib.models.vertebra import OFFSET_SCALE
from SpineAlignmentLib.protocols import get_protocol

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

WHOLE = get_protocol("sagittal-whole-spine").landmark_ids


def test_layout_from_the_whole_spine_table():
    lay = level_layout(WHOLE)
    assert lay.levels[0] == "C2" and lay.levels[-1] == "S1" and len(lay.levels) == 24
    assert [lay.ids[k] for k in lay.singles] == ["OD", "FH_1", "FH_2"]

    def parts_of(level):
        row = lay.members[lay.levels.index(level)]
        return sorted(lay.parts[p] for p in range(len(lay.parts)) if row[p] >= 0)

    assert parts_of("C2") == ["AI", "PI", "c"]  # fewer parts than T5
    assert parts_of("T5") == ["AI", "AS", "PI", "PS", "c"]
    assert parts_of("S1") == ["AS", "PS"]
    assert lay.n_channels == 2 + 2 * 5 + 3 * 3 + 5  # centre, position, offsets, singles, one map per part
    coronal = level_layout(get_protocol("coronal-spine").landmark_ids)
    assert coronal.levels == tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])
    assert coronal.parts == ("TL", "TR", "BL", "BR") and coronal.singles == ()


def test_a_table_that_is_no_level_sequence_is_one_sentence():
    with pytest.raises(SpineAlignmentError, match=r"L6_AS names level L6, which is not a spine level"):
        level_layout(["L5_AS", "L6_AS"])
    with pytest.raises(SpineAlignmentError, match="name no vertebral level"):
        level_layout(["OD", "FH_1"])


def _logit(q):
    return float(np.log(q / (1.0 - q)))


def _encode(lay, levels_xy: dict[int, np.ndarray], singles: dict[int, tuple[float, float]], h: int, w: int,
            stride: int = 2, part_maps: bool = True) -> torch.Tensor:
    """Network output that a perfect first stage gives: centre peaks at the level centres' pixels, the exact
    level positions and part offsets there, single-landmark peaks with their offsets, and part maps whose
    soft-argmax is each part's exact point (bilinear weights over the 4 pixels around it, peak 0.9999).
    ``part_maps=False``: the output of a model exported before the part maps (fewer channels)."""
    out = torch.full((1, lay.n_channels, h, w), -10.0)
    off = (stride - 1) / 2.0
    for p in range(len(lay.parts)):
        out[0, lay.part_channel(p)] = -20.0
        for pts in levels_xy.values():
            if not np.isfinite(pts[p]).all():
                continue
            u, v = (pts[p] - off) / stride
            x0, y0 = int(np.floor(u)), int(np.floor(v))
            fx, fy = u - x0, v - y0
            wts = {(y0, x0): (1 - fx) * (1 - fy), (y0, x0 + 1): fx * (1 - fy), (y0 + 1, x0): (1 - fx) * fy,
                   (y0 + 1, x0 + 1): fx * fy}
            top = max(wts.values())
            for (yy, xx), q in wts.items():
                if 0 <= yy < h and 0 <= xx < w and q > 0:
                    out[0, lay.part_channel(p), yy, xx] = _logit(0.9999 * q / top)
    for lv, pts in levels_xy.items():  # pts (P, 2), NaN for parts the level does not have
        centre = np.nanmean(pts, axis=0)
        ix, iy = int(round((centre[0] - off) / stride)), int(round((centre[1] - off) / stride))
        out[0, 0, iy, ix] = 5.0
        for jy in (iy - 1, iy, iy + 1):  # the loss supervises the 3x3 pixels around the centre
            for jx in (ix - 1, ix, ix + 1):
                out[0, 1, jy, jx] = lv / INDEX_SCALE
                pix = np.array([jx * stride + off, jy * stride + off])
                for p in range(len(lay.parts)):
                    if np.isfinite(pts[p]).all():
                        out[0, 2 + 2 * p:4 + 2 * p, jy, jx] = torch.tensor((pts[p] - pix) / OFFSET_SCALE)
    for j, (x, y) in singles.items():
        ch = lay.single_channel(j)
        ix, iy = int(round((x - off) / stride)), int(round((y - off) / stride))
        out[0, ch, iy, ix] = 5.0
        out[0, ch + 1:ch + 3, iy, ix] = torch.tensor((np.array([x, y]) - [ix * stride + off, iy * stride + off]) / OFFSET_SCALE)
    return out if part_maps else out[:, :lay.part_channel(0)]


def _chain(lay, levels, x0=60.0, y0=20.0, step=14.0):
    """Corner-ish points of the given levels (a vertical chain): each part at a fixed offset from the centre."""
    shifts = {"AS": (6, -4), "PS": (-6, -4), "AI": (6, 4), "PI": (-6, 4), "c": (0, 0)}
    out = {}
    for lv in levels:
        c = np.array([x0 + 0.3 * lv, y0 + step * lv])
        row = lay.members[lv]
        pts = np.full((len(lay.parts), 2), np.nan)
        for p, name in enumerate(lay.parts):
            if row[p] >= 0:
                pts[p] = c + shifts[name] + 0.37  # off the pixel grid: decoding must be exact, not snapped
        out[lv] = pts
    return out


def test_a_synthetic_chain_decodes_exactly_and_absent_landmarks_are_not_found():
    lay = level_layout(WHOLE)
    h, w = 180, 64  # 360 x 128 input pixels
    present = list(range(3, 15))  # C5..T9: a chain shorter than the protocol's (the film's top and bottom cut)
    chain = _chain(lay, present, y0=-20.0)
    od = lay.singles.index(WHOLE.index("OD"))
    out = _encode(lay, chain, {od: (40.3, 11.8)}, h, w)
    info: list = []
    pts, conf = decode_levels(out, 2, lay, info=info)
    assert info[0]["levels"] == [lay.levels[lv] for lv in present]
    for lv, p in chain.items():
        for part in range(len(lay.parts)):
            k = lay.members[lv, part]
            if k >= 0:
                np.testing.assert_allclose(pts[0, k], p[part], atol=1e-4)
                assert conf[0, k] > 0.99
    np.testing.assert_allclose(pts[0, WHOLE.index("OD")], (40.3, 11.8), atol=1e-4)
    # levels above C5 and below T9, and both femoral heads, are not on this "film": not found, never invented
    for lid in ("C2_AI", "C2c", "C4c", "T10c", "L5c", "S1_AS", "FH_1", "FH_2"):
        assert np.isnan(pts[0, WHOLE.index(lid)]).all() and conf[0, WHOLE.index(lid)] == 0.0


def test_part_maps_place_a_part_the_offsets_put_a_few_pixels_off():
    """Offsets 3 input px off every part's point: the part maps move each part back onto its point (within the
    search window); without part maps (an older model's output) the offsets' point is kept."""
    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(3, 15)), y0=-20.0)
    exact = _encode(lay, chain, {}, 180, 64)
    shifted = exact.clone()
    shifted[:, 2:2 + 2 * len(lay.parts)] += 3.0 / OFFSET_SCALE  # every part 3 px right and 3 px down
    pts, conf = decode_levels(shifted, 2, lay)
    old_pts, old_conf = decode_levels(shifted[:, :lay.part_channel(0)], 2, lay)
    for lv, p in chain.items():
        for part in range(len(lay.parts)):
            k = lay.members[lv, part]
            if k >= 0:
                np.testing.assert_allclose(pts[0, k], p[part], atol=1e-3)
                np.testing.assert_allclose(old_pts[0, k], p[part] + 3.0, atol=1e-4)
                assert conf[0, k] > 0.99 and old_conf[0, k] > 0.99
    # a part map that sees nothing near the offsets' point keeps that point, and the landmark's confidence says so
    blind = shifted.clone()
    blind[:, lay.part_channel(0):] = -20.0
    b_pts, b_conf = decode_levels(blind, 2, lay)
    k = lay.members[10, 0]
    np.testing.assert_allclose(b_pts[0, k], chain[10][0] + 3.0, atol=1e-4)
    assert 0.0 < b_conf[0, k] < 0.01
    # with a part floor, a part its map does not see has confidence 0 (not found) but keeps its point for the ROI
    f_pts, f_conf = decode_levels(blind, 2, lay, part_floor=0.05)
    np.testing.assert_allclose(f_pts[0, k], b_pts[0, k])
    assert f_conf[0, k] == 0.0


def _truth(lay, chain) -> np.ndarray:
    """(K, 2) labels of the whole-spine table for a ``_chain`` (NaN for every landmark not in it)."""
    pts = np.full((len(lay.ids), 2), np.nan)
    for lv, p in chain.items():
        for part in range(len(lay.parts)):
            if lay.members[lv, part] >= 0:
                pts[lay.members[lv, part]] = p[part]
    return pts


def test_level_errors_count_missed_and_wrong_levels():
    from SpineAlignmentLib.training.level_family import level_errors

    lay = level_layout(WHOLE)
    truth = _truth(lay, _chain(lay, list(range(3, 13))))  # C5..T7 labelled, 14 px apart
    assert level_errors(truth, truth, lay) == (0, 0)
    pred = truth.copy()
    pred[[k for k in lay.members[5] if k >= 0]] = np.nan  # C7 not found: missed
    assert level_errors(pred, truth, lay) == (1, 0)
    for k in lay.members[8]:  # T3 reported 9 px low (more than half the 14 px spacing): named as its neighbour
        if k >= 0:
            pred[k, 1] += 9.0
    assert level_errors(pred, truth, lay) == (1, 1)
    spurious = _truth(lay, _chain(lay, [13]))  # T8 reported, but the film does not show it
    pred[np.isfinite(spurious).all(1)] = spurious[np.isfinite(spurious).all(1)]
    assert level_errors(pred, truth, lay) == (1, 2)


def test_the_decoding_is_chosen_on_training_films():
    """Films whose true levels C5..T6 include one centre detected at 0.22 only, and a spurious centre (0.12)
    below the chain: 0.1 reports the spurious level, 0.25 misses the weak one, 0.15 and 0.2 make no level error
    and the higher of them is chosen. Offsets 3 px off and exact part maps: a part search is chosen over the
    offsets alone."""
    from types import SimpleNamespace

    from SpineAlignmentLib.training.level_family import fit_decoding

    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(3, 12)))
    out = _encode(lay, chain, {}, 180, 64)
    out[:, 2:2 + 2 * len(lay.parts)] += 3.0 / OFFSET_SCALE
    ix, iy = [int(v) for v in torch.nonzero(out[0, 0] > 4.0)[4].flip(0)]  # the 5th level's centre pixel (x, y)
    out[0, 0, iy, ix] = _logit(0.22)
    out[0, 0, 170, 30] = _logit(0.12)  # a spurious centre far below the chain
    out[0, 1, 169:172, 29:32] = 12 / INDEX_SCALE

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return out.expand(x.shape[0], -1, -1, -1)

    model = SimpleNamespace(network=Fixed(), stride=2, landmark_ids=tuple(WHOLE))
    films = [SimpleNamespace(image=np.zeros((360, 128), np.uint8), points=_truth(lay, chain)) for _ in range(3)]
    fit = fit_decoding(model, films)
    cand = fit["candidates"]["min_score"]
    assert cand["0.1"] == {"missed": 0, "wrong": 3} and cand["0.25"] == {"missed": 3, "wrong": 0}
    assert cand["0.15"] == cand["0.2"] == {"missed": 0, "wrong": 0}
    assert fit["min_score"] == 0.2 and fit["fitted_on"] == "3 training films"
    assert fit["min_levels"] == 9  # C5..T6 labelled whole on every film
    medians = fit["candidates"]["part_window_median_error_input_px"]
    assert abs(medians["0"] - np.hypot(3, 3)) < 1e-3 and fit["part_window"] > 0 and medians[str(fit["part_window"])] < 0.01
    # every part is seen by its map: no floor drops anything, and the lowest (0) is kept
    assert fit["part_floor"] == 0.0 and all(v == {"dropped": 0, "unlabelled_reported": 0}
                                            for v in fit["candidates"]["part_floor"].values())
    # films on which one level's AS is not labelled (cut off) and its map sees nothing there: a floor drops it
    p_as = lay.parts.index("AS")
    lv = next(li for li in sorted(chain)[1:] if lay.members[li, p_as] >= 0)
    k_as = lay.members[lv, p_as]
    ux, uy = (chain[lv][p_as] - 0.5) / 2
    out[0, lay.part_channel(p_as), int(uy) - 1:int(uy) + 3, int(ux) - 1:int(ux) + 3] = -20.0
    cut = _truth(lay, chain)
    cut[k_as] = np.nan
    films = [SimpleNamespace(image=np.zeros((360, 128), np.uint8), points=cut) for _ in range(3)]
    fit = fit_decoding(model, films)
    assert fit["candidates"]["part_floor"]["0.0"] == {"dropped": 0, "unlabelled_reported": 3}
    assert fit["part_floor"] == 0.05 and fit["candidates"]["part_floor"]["0.05"] == {"dropped": 0, "unlabelled_reported": 0}
    assert fit["min_levels"] == 8  # one level lost its AS: 8 levels labelled whole


def test_the_chain_keeps_its_own_names_and_is_never_stretched():
    # regressed positions of 4 detected centres, one level missed between the 3rd and the 4th
    assert name_chain([3.2, 4.1, 4.9, 7.2], 10).tolist() == [3, 4, 5, 7]
    # every level found: the count names them, whatever the noise of the positions
    assert name_chain([1.4, 0.9, 3.5, 2.6, 4.9, 4.1], 6).tolist() == [0, 1, 2, 3, 4, 5]
    # noisy positions that all say "level 0": one name per centre, strictly increasing, from the top
    assert name_chain([0.1, 0.0, 0.2], 24).tolist() == [0, 1, 2]
    # positions past the protocol's last level: pushed back inside it, never past it
    assert name_chain([5.0, 6.0, 7.0], 6).tolist() == [3, 4, 5]
    # with a finite cost of leaving a centre unnamed, a double detection of level 1 is left out (-1)
    assert name_chain([0.1, 1.0, 1.2, 2.1, 3.0], 6, drop_cost=1.5, gap_cost=0.75).tolist() == [0, 1, -1, 2, 3]
    assert name_chain([], 5).tolist() == []


def test_the_loss_is_lowest_at_the_encoding_the_decoder_reads():
    lay = level_layout(WHOLE)
    h, w = 180, 64
    chain = _chain(lay, list(range(0, 10)))
    pts = np.full((1, len(WHOLE), 2), np.nan, dtype=np.float32)
    for lv, p in chain.items():
        for part in range(len(lay.parts)):
            if lay.members[lv, part] >= 0:
                pts[0, lay.members[lv, part]] = p[part]
    valid = torch.from_numpy(np.isfinite(pts).all(-1))
    loss = LevelFamilyLoss(lay, stride=2)
    good = _encode(lay, chain, {}, h, w)
    bad = good.clone()
    bad[:, 2:2 + 2 * len(lay.parts)] += 0.5  # every part offset 8 px off
    l_good, parts_good = loss(good, torch.from_numpy(pts), valid)
    l_bad, parts_bad = loss(bad, torch.from_numpy(pts), valid)
    assert parts_good["err_px"] < 1e-3 and parts_bad["err_px"] > 5.0
    assert parts_good["offset"] < 1e-6 and parts_good["index"] < 1e-6 and parts_bad["offset"] > 0.4
    assert float(l_good) < float(l_bad)
    # part maps: the loss counts them, and a map with its peaks moved 4 output px away costs more
    moved = good.clone()
    moved[:, lay.part_channel(0):] = torch.roll(good[:, lay.part_channel(0):], 4, dims=-1)
    l_moved, parts_moved = loss(moved, torch.from_numpy(pts), valid)
    assert parts_moved["part"] > parts_good["part"] > 0.0 and float(l_moved) > float(l_good)
    # an output without part maps (an older model) is trained without them
    _, parts_old = loss(good[:, :lay.part_channel(0)], torch.from_numpy(pts), valid)
    assert parts_old["part"] == 0.0 and parts_old["offset"] == parts_good["offset"]


def test_a_level_never_labelled_is_named_before_training():
    from SpineAlignmentLib.training.level_family import check_family_data

    ids = get_protocol("lumbar-dynamic").landmark_ids
    films = [{k: (1.0, 2.0) for k in ids if not k.startswith("L3")} for _ in range(3)]
    assert never_labelled(films, ids) == ["L3"]

    class Item:
        def __init__(self, lm):
            self.landmarks = lm

    with pytest.raises(SpineAlignmentError, match=r"No film of DATA labels level L3, so the level family cannot"):
        check_family_data([Item(f) for f in films], ids, "DATA")
    check_family_data([Item({k: (1.0, 2.0) for k in ids})], ids, "DATA")  # every level labelled: no error


FAST = dict(input_shape=None, input_rows=128, epochs=40, refine_epochs=4, batch_size=8, roi_size=32,
            lr=3e-3, warmup_epochs=1, threads=1, val_fraction=0.25, family="levels",
            net={"stem_channels": [8, 16], "channels": [16, 32, 64], "num_res_units": 1, "features": 32},
            refine_net={"stem_channels": [8, 16], "channels": [16, 32], "num_res_units": 1, "features": 16})


def test_tiny_family_run_beats_the_mean_shape_and_round_trips_by_name(tmp_path, monkeypatch):
    from synthetic_lateral import write_dataset
    from test_generic_loop import _mean_shape_errors

    from SpineAlignmentLib.cli import main as cli
    from SpineAlignmentLib.io.dataset import read_dataset
    from SpineAlignmentLib.training.checkpoint import load_checkpoint
    from SpineAlignmentLib.training.generic import GenericConfig, split_items, train_generic

    protocol = "lumbar-dynamic"
    data = write_dataset(tmp_path / "data", protocol, 16, seed=1)  # 32 films
    cfg = GenericConfig(protocol=protocol, data=str(data), out=str(tmp_path / "run"), seed=0, **FAST)
    res = train_generic(cfg, progress=False)
    train, val = split_items(read_dataset(data, protocol).items, cfg)
    baseline = float(np.median(_mean_shape_errors(protocol, train, val)))
    assert res["final"]["median_error_px"] < 0.5 * baseline, (res["final"], baseline)

    models = tmp_path / "models"
    monkeypatch.setenv("SPINEALIGN_MODELS", str(models))
    assert cli(["export", "--run", str(tmp_path / "run"), "--out", str(models / "my-levels")]) == 0
    md = json.loads((models / "my-levels" / "metadata.json").read_text())
    assert md["decoding"]["method"] == "level-family" and md["network"]["args"]["out_channels"] == level_layout(
        get_protocol(protocol).landmark_ids).n_channels
    assert "landmark_refinement" in md
    # the run chose its centre threshold and part search on its training films, and the export kept the choice
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert md["decoding"]["min_score"] == ck["fitted"]["min_score"] and "training films" in md["decoding"]["chosen_on"]
    assert md["decoding"]["part_window"] == ck["fitted"]["part_window"]
    card = (models / "my-levels" / "README.md").read_text()  # and the card says what it chose
    assert (f"level-centre threshold {md['decoding']['min_score']:g}, part search {md['decoding']['part_window']} "
            "output pixels") in card
    assert "level names from the regressed level positions (no anchor)" in card  # the lumbar table has none
    # train's validation builds and decodes the family model as the export does: the same figures, to the bit
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert md["validation"]["median_error_px"] == last["val_median_error_px"] == res["final"]["median_error_px"]
    assert md["validation"]["n_points"] == last["val_n_points"] > 0
    assert md["description"].startswith("Level-sequence landmark model for protocol lumbar-dynamic")
    film = Path(val[0].image)
    out = tmp_path / "out"
    assert cli(["analyze", str(film), "--protocol", protocol, "--model", "my-levels", "--out", str(out)]) == 0
    result = json.loads((out / f"{film.stem}.json").read_text())
    assert result["model"]["name"] == "my-levels"
    # analyze by the model's name finds on this film exactly what the trainer's final validation found on it
    # (whose median over the validation films beats the mean shape, above)
    validated = json.loads((tmp_path / "run" / "val_predictions.json").read_text())[film.name]
    assert set(result["landmarks"]) == set(validated) and len(validated) >= len(val[0].landmarks) // 2
    for k, (x, y) in validated.items():
        assert abs(result["landmarks"][k]["x"] - x) < 1e-3 and abs(result["landmarks"][k]["y"] - y) < 1e-3


def test_train_and_dataset_check_name_a_level_never_labelled(tmp_path, capsys):
    """A dataset where L3 is never labelled: 'dataset check' warns in one sentence, 'train --trainer levels'
    refuses in one sentence before any epoch (exit 2, no traceback)."""
    from synthetic_lateral import write_dataset

    from SpineAlignmentLib.cli import main as cli

    data = write_dataset(tmp_path / "data", "lumbar-dynamic", 3, seed=1)
    for f in data.glob("*.json"):
        d = json.loads(f.read_text())
        d["landmarks"] = {k: v for k, v in d["landmarks"].items() if not k.startswith("L3")}
        f.write_text(json.dumps(d))
    assert cli(["dataset", "check", str(data), "--protocol", "lumbar-dynamic"]) == 0
    out = capsys.readouterr().out
    assert "no usable film labels level L3; a level-sequence model" in out
    rc = cli(["train", "--protocol", "lumbar-dynamic", "--data", str(data), "--out", str(tmp_path / "run"),
              "--trainer", "levels", "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "labels level L3, so the level family cannot learn to name it" in err
    assert not (tmp_path / "run" / "last.pt").exists()  # refused before any epoch
    # the default trainer of a dataset-format folder is the family too (its levels name vertebrae)
    assert cli(["train", "--protocol", "lumbar-dynamic", "--data", str(data), "--out", str(tmp_path / "run2"),
                "--no-progress", "--threads", "1"]) == 2
    assert "so the level family cannot learn to name it" in capsys.readouterr().err


def _predict_fixed(out: torch.Tensor, **decoding):
    """predict_landmarks with a whole-spine level-family "model" whose network always returns ``out`` (a
    360 x 128 input, stride 2), on a noise film: what the decoder and the rules after it make of that output."""
    from SpineAlignmentLib.inference.predict import predict_landmarks
    from SpineAlignmentLib.models.registry import LoadedModel

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return out.expand(x.shape[0], -1, -1, -1)

    md = {"protocol": "sagittal-whole-spine",
          "network_data_format": {"inputs": {"image": {"intensity": {"low_percentile": 0.5, "high_percentile": 99.5}}}},
          "decoding": {"method": "level-family", "window": 3, "min_score": 0.3, "low_confidence": 0.3, **decoding}}
    model = LoadedModel("fixed", "1.0.0", md, Fixed(), tuple(WHOLE), (360, 128), 2, Path("."))
    return predict_landmarks(np.random.default_rng(0).uniform(0, 1, (360, 128)).astype(np.float32), model)


def test_predict_leaves_undetected_levels_out_with_a_warning():
    """A film showing C5..T9 only: predict_landmarks returns those levels under their own names and OD, leaves
    every other landmark out (never stretches the names over the protocol) and says so in one warning."""
    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(3, 15)), y0=-20.0)
    od = lay.singles.index(WHOLE.index("OD"))
    out = _encode(lay, chain, {od: (40.3, 11.8)}, 180, 64)
    landmarks, warns = _predict_fixed(out)
    found = {lay.levels[lv] for lv in chain}
    assert set(landmarks) == {k for k in WHOLE if k == "OD" or k.split("_")[0].rstrip("c") in found}
    np.testing.assert_allclose([landmarks["T5c"].x, landmarks["T5c"].y], chain[10][lay.parts.index("c")], atol=1e-3)
    missing = [w for w in warns if "not found on this film" in w]
    assert len(missing) == 1 and "C2_AI" in missing[0] and "left out" in missing[0]


def test_predict_reports_a_part_that_lands_off_the_film_as_not_found():
    """A level whose centre is on the film but whose upper corners the film's top edge cuts: the corners the
    offsets place above the edge are not found (NaN, left out), the rest of the level is kept."""
    lay = level_layout(WHOLE)
    top = next(li for li in range(len(lay.levels)) if lay.members[li][lay.parts.index("AS")] >= 0)  # C7
    # the first level's centre at row 2, its upper corners (4 px above the centre) at row -1.6: off the film
    chain = _chain(lay, list(range(top, top + 8)), y0=2.0 - 14.0 * top)
    out = _encode(lay, chain, {}, 180, 64)
    landmarks, _ = _predict_fixed(out)
    first = lay.members[top]
    off = {WHOLE[k] for p, k in enumerate(first) if k >= 0 and chain[top][p][1] < -0.5}
    on = {WHOLE[k] for p, k in enumerate(first) if k >= 0 and chain[top][p][1] >= -0.5}
    assert off and on  # the test cuts the level, it does not remove it
    assert not off & set(landmarks) and on <= set(landmarks)
    assert all(np.isfinite([lm.x, lm.y]).all() for lm in landmarks.values())


def test_predict_reports_a_part_its_map_does_not_see_as_not_found():
    """With part maps and a part floor, a part whose map sees nothing near it is left out (the rest kept)."""
    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(3, 15)), y0=-20.0)
    out = _encode(lay, chain, {}, 180, 64)
    p_as = lay.parts.index("AS")
    lv = next(li for li in sorted(chain)[1:] if lay.members[li, p_as] >= 0)
    ux, uy = (chain[lv][p_as] - 0.5) / 2
    out[0, lay.part_channel(p_as), int(uy) - 1:int(uy) + 3, int(ux) - 1:int(ux) + 3] = -20.0
    seen, _ = _predict_fixed(out, part_window=3, part_radius=2)  # no floor: reported, from its offsets
    landmarks, _ = _predict_fixed(out, part_window=3, part_radius=2, part_floor=0.05)
    unseen = WHOLE[lay.members[lv, p_as]]
    assert unseen in seen and unseen not in landmarks and set(landmarks) == set(seen) - {unseen}


def test_a_chain_shorter_than_any_training_film_says_its_names_are_unreliable():
    """The model learnt from films showing at least 20 levels whole; a film on which 12 are found (C5..T9) gets
    one warning that names the levels found and says their names are unreliable; a model that learnt from
    films showing 10 levels or more says nothing."""
    from SpineAlignmentLib.inference.predict import LEVELS_UNRELIABLE

    lay = level_layout(WHOLE)
    out = _encode(lay, _chain(lay, list(range(3, 15)), y0=-20.0), {}, 180, 64)
    _, warns = _predict_fixed(out, min_levels=20)
    flagged = [w for w in warns if LEVELS_UNRELIABLE in w]
    assert len(flagged) == 1 and "Only 12 of the 24 levels were found (C5..T9)" in flagged[0]
    assert "(20)" in flagged[0]
    _, warns = _predict_fixed(out, min_levels=10)
    assert not [w for w in warns if LEVELS_UNRELIABLE in w]


def test_one_part_map_peak_is_given_to_one_level_only():
    """Levels 6 px apart (centroid-only thoracic levels of the whole-spine table) and a centroid map with one
    peak, between T9's and T10's centroids: T9 (decoded first) takes it, T10 keeps its own offsets' point and a
    confidence that says its map did not see it; the two are never placed on the same point."""
    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(3, 20)), y0=-20.0, step=6.0)
    t9, t10, c = lay.levels.index("T9"), lay.levels.index("T10"), lay.parts.index("c")
    out = _encode(lay, chain, {}, 180, 64)
    out[0, lay.part_channel(c)] = -20.0
    u, v = (chain[t9][c] + [0.0, 3.0] - 0.5) / 2
    out[0, lay.part_channel(c), int(round(v)), int(round(u))] = 5.0  # 1-2 output px from either centroid
    pts, conf = decode_levels(out, 2, lay)
    k9, k10 = lay.members[t9, c], lay.members[t10, c]
    peak = np.array([int(round(u)), int(round(v))]) * 2 + 0.5
    np.testing.assert_allclose(pts[0, k9], peak, atol=1e-3)
    np.testing.assert_allclose(pts[0, k10], chain[t10][c], atol=1e-4)  # its offsets' point, not the peak
    assert conf[0, k10] < 0.01 < conf[0, k9]


def test_two_landmarks_on_one_point_leave_the_less_confident_out():
    """A model output that puts T12c and L1c on the very same point: predict leaves one of them out with a
    warning naming the pair (measuring would refuse two landmarks on one point), and analyze goes on."""
    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(4, 19)), y0=-90.0, step=24.0)  # levels far enough apart to stay two centres
    l3, l4, c = lay.levels.index("T12"), lay.levels.index("L1"), lay.parts.index("c")
    chain[l4] = chain[l4].copy()
    chain[l4][c] = chain[l3][c]
    landmarks, warns = _predict_fixed(_encode(lay, chain, {}, 180, 64))
    assert ("T12c" in landmarks) != ("L1c" in landmarks)
    twin = [w for w in warns if "on the very point of another" in w]
    assert len(twin) == 1 and "L1c on T12c" in twin[0]


def test_a_part_its_offsets_put_off_the_film_stays_not_found_when_its_map_peaks_inside():
    """The first level's upper corners lie above the film's top edge; their part maps peak on the film's first
    row, just below them (the cut vertebra's visible rim): the part search would pull them onto the film, but
    where the offsets put them decides, so they stay not found."""
    lay = level_layout(WHOLE)
    top = next(li for li in range(len(lay.levels)) if lay.members[li][lay.parts.index("AS")] >= 0)  # C7
    chain = _chain(lay, list(range(top, top + 8)), y0=2.0 - 14.0 * top)
    out = _encode(lay, chain, {}, 180, 64)
    cut = [p for p, k in enumerate(lay.members[top]) if k >= 0 and chain[top][p][1] < -0.5]
    for p in cut:
        out[0, lay.part_channel(p), 0, int(round((chain[top][p][0] - 0.5) / 2))] = 5.0
    landmarks, _ = _predict_fixed(out, part_window=3, part_radius=2)
    off = {WHOLE[lay.members[top][p]] for p in cut}
    assert off and not off & set(landmarks)
    assert {WHOLE[k] for k in lay.members[top] if k >= 0} - off <= set(landmarks)  # the rest of the level is kept


def _framing_biased(out: torch.Tensor, chain: dict, bias: float) -> torch.Tensor:
    """The output with every level's regressed position ``bias`` levels off (what a model that learnt the framing
    of its training films says on a film framed otherwise: on a film cut above C7 it calls C5 "T1")."""
    out = out.clone()
    out[0, 1] += bias / INDEX_SCALE
    return out


def test_the_dens_anchors_c2_and_a_cut_chain_is_named_from_it():
    """A film showing C2..C7 of the whole-spine table, whose regressed positions all say "3 levels lower"
    (framing): by the positions alone the chain is C5..T3; with the dens (OD) anchoring C2 it is named from the
    anatomy, C2..C7, and every part lands where it is. Without the dens on the film, the positions name it."""
    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(0, 6)), y0=30.0)
    od = lay.singles.index(WHOLE.index("OD"))
    c2 = np.nanmean(chain[0], axis=0)
    biased = _framing_biased(_encode(lay, chain, {od: (c2[0] + 3.1, c2[1] - 5.2)}, 180, 64), chain, 3.0)
    anchors = {WHOLE.index("OD"): 0}
    info: list = []
    decode_levels(biased, 2, lay, info=info)
    assert info[0]["levels"] == ["C5", "C6", "C7", "T1", "T2", "T3"] and not info[0]["anchored"]
    info = []
    pts, conf = decode_levels(biased, 2, lay, anchors=anchors, info=info)
    assert info[0]["levels"] == ["C2", "C3", "C4", "C5", "C6", "C7"] and info[0]["anchored"]
    for lv, p in chain.items():
        for part in range(len(lay.parts)):
            if lay.members[lv, part] >= 0:
                np.testing.assert_allclose(pts[0, lay.members[lv, part]], p[part], atol=1e-4)
    no_dens = _framing_biased(_encode(lay, chain, {}, 180, 64), chain, 3.0)
    info = []
    decode_levels(no_dens, 2, lay, anchors=anchors, info=info)
    assert info[0]["levels"][0] == "C5" and not info[0]["anchored"]


def test_an_anchor_between_two_levels_names_nothing():
    """A dens detected half-way between two centres is no anchor on this film (it is not clearly nearer one of
    them): the positions name the chain."""
    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(0, 6)), y0=30.0)
    mid = (np.nanmean(chain[1], axis=0) + np.nanmean(chain[2], axis=0)) / 2
    od = lay.singles.index(WHOLE.index("OD"))
    out = _framing_biased(_encode(lay, chain, {od: tuple(mid)}, 180, 64), chain, 3.0)
    info: list = []
    decode_levels(out, 2, lay, anchors={WHOLE.index("OD"): 0}, info=info)
    assert info[0]["levels"][0] == "C5" and not info[0]["anchored"]


def test_anchors_are_learnt_from_the_training_labels():
    """OD next to C2 on every film anchors C2; FH_1 half-way between L5 and S1 anchors nothing; with fewer than
    ANCHOR_MIN_FILMS films that label it, OD anchors nothing either."""
    from SpineAlignmentLib.models.level_family import ANCHOR_MIN_FILMS, level_anchors

    lay = level_layout(WHOLE)
    films = []
    for i in range(ANCHOR_MIN_FILMS):
        chain = _chain(lay, list(range(0, 24)), y0=30.0 + i)
        pts = _truth(lay, chain)
        c2 = np.nanmean(chain[0], axis=0)
        pts[WHOLE.index("OD")] = c2 + (3.0, -5.0)
        pts[WHOLE.index("FH_1")] = (np.nanmean(chain[22], axis=0) + np.nanmean(chain[23], axis=0)) / 2 + (0.0, 0.5)
        films.append(pts)
    got = level_anchors(lay, films)
    assert set(got) == {"OD"} and got["OD"]["level"] == "C2" and got["OD"]["films"] == ANCHOR_MIN_FILMS
    assert got["OD"]["ratio"] == pytest.approx(np.hypot(3, 5) / np.linalg.norm(np.nanmean(chain[1], axis=0) - c2 - (3, -5)), abs=1e-3)
    assert level_anchors(lay, films[:-1]) == {}


def test_duplicate_centre_peaks_are_one_level_each():
    """Every one of four levels detected twice, 4 px apart (each duplicate with its own offsets to the same parts):
    the nearest-neighbour spacing of the peaks is the duplicates' own, so only the level's size (from its part
    offsets, about 7.6 px here) tells them apart; four levels are found, named as they are, not eight."""
    lay = level_layout(get_protocol("cervical-lateral").landmark_ids)
    chain = _chain(lay, [1, 2, 3, 4], y0=30.0)
    out = _encode(lay, chain, {}, 180, 64)
    for lv, pts in chain.items():
        centre = np.nanmean(pts, axis=0)
        ix, iy = int(round((centre[0] - 0.5) / 2)) + 2, int(round((centre[1] - 0.5) / 2))
        out[0, 0, iy, ix] = 4.0  # a weaker twin two output pixels to the right
        out[0, 1, iy, ix] = lv / INDEX_SCALE
        pix = np.array([ix * 2 + 0.5, iy * 2 + 0.5])
        for p in range(len(lay.parts)):
            if np.isfinite(pts[p]).all():
                out[0, 2 + 2 * p:4 + 2 * p, iy, ix] = torch.tensor((pts[p] - pix) / OFFSET_SCALE)
    info: list = []
    pts, _ = decode_levels(out, 2, lay, info=info)
    assert info[0]["levels"] == ["C3", "C4", "C5", "C6"]
    for lv, p in chain.items():
        np.testing.assert_allclose(pts[0, lay.members[lv, 0]], p[0], atol=1e-4)


def test_predict_reads_the_anchors_of_the_model_metadata():
    """The anchors a model folder declares (``decoding.anchors``) reach the decoder: the framing-biased C2..C7
    film is named C2..C7 through predict_landmarks."""
    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(0, 6)), y0=30.0)
    od = lay.singles.index(WHOLE.index("OD"))
    c2 = np.nanmean(chain[0], axis=0)
    out = _framing_biased(_encode(lay, chain, {od: (c2[0] + 3.1, c2[1] - 5.2)}, 180, 64), chain, 3.0)
    plain, _ = _predict_fixed(out)
    anchored, _ = _predict_fixed(out, anchors={"OD": {"level": "C2", "ratio": 0.6, "films": 100}})
    assert "C2c" not in plain and "T3c" in plain
    assert "C2c" in anchored and "T3c" not in anchored
    np.testing.assert_allclose([anchored["C2c"].x, anchored["C2c"].y], chain[0][lay.parts.index("c")], atol=1e-3)


def test_counting_from_an_anchor_names_a_missed_level_as_a_gap():
    """Centres 10 px apart with one level missing (a 20-px step): counted from the anchored first centre they are
    levels 0, 1, 2, 4, 5; from an anchor in the middle, the centres above count up; names past the protocol's
    levels are -1."""
    from SpineAlignmentLib.models.level_family import geometric_names

    xy = np.array([[50.0, 0.0], [51.0, 10.0], [52.0, 20.0], [53.0, 40.0], [54.0, 50.0]])
    assert geometric_names(xy, 0, 0, 24).tolist() == [0, 1, 2, 4, 5]
    assert geometric_names(xy, 2, 3, 24).tolist() == [1, 2, 3, 5, 6]
    assert geometric_names(xy, 0, 20, 24).tolist() == [20, 21, 22, -1, -1]
    # a step 1.6 times its neighbours' is still one level (a taller vertebra, as C2 is), 1.8 times is two
    assert geometric_names(np.array([[0, 0], [0, 16], [0, 26], [0, 36]], float), 0, 0, 7).tolist() == [0, 1, 2, 3]
    assert geometric_names(np.array([[0, 0], [0, 18], [0, 28], [0, 38]], float), 0, 0, 7).tolist() == [0, 2, 3, 4]


def test_the_anchored_naming_is_chosen_on_training_films():
    """Training films whose regressed positions are framing-biased and not even in order below the dens: named
    from the positions, the anchored chain is wrong; counted from the dens, right. The fit keeps the anchors it
    learnt from the labels and chooses counting; the metadata block carries both."""
    from types import SimpleNamespace

    from SpineAlignmentLib.training.level_family import family_blocks, fit_decoding

    lay = level_layout(WHOLE)
    chain = _chain(lay, list(range(0, 6)), y0=30.0)
    od = lay.singles.index(WHOLE.index("OD"))
    c2 = np.nanmean(chain[0], axis=0)
    out = _encode(lay, chain, {od: (c2[0] + 3.1, c2[1] - 5.2)}, 180, 64)
    for lv, pos in zip(range(1, 6), (5.0, 4.0, 6.0, 7.0, 8.0)):  # C3 says "C7", C4 says "C6": order broken below C2
        centre = np.nanmean(chain[lv], axis=0)
        ix, iy = int(round((centre[0] - 0.5) / 2)), int(round((centre[1] - 0.5) / 2))
        out[0, 1, iy - 1:iy + 2, ix - 1:ix + 2] = pos / INDEX_SCALE

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return out.expand(x.shape[0], -1, -1, -1)

    model = SimpleNamespace(network=Fixed(), stride=2, landmark_ids=tuple(WHOLE))
    truth = _truth(lay, chain)
    truth[WHOLE.index("OD")] = (c2[0] + 3.1, c2[1] - 5.2)
    films = [SimpleNamespace(image=np.zeros((360, 128), np.uint8), points=truth) for _ in range(12)]
    fit = fit_decoding(model, films)
    assert fit["anchors"]["OD"]["level"] == "C2" and fit["anchors"]["OD"]["films"] == 12
    naming = fit["candidates"]["anchor_naming"]
    assert naming["geometry"] == {"missed": 0, "wrong": 0} and naming["positions"]["wrong"] > 0
    assert fit["anchor_naming"] == "geometry"
    md = family_blocks({"network": {"args": {}}, "network_data_format": {"outputs": {"pred": {}}}, "decoding": {}},
                       WHOLE, fit)
    assert md["decoding"]["anchor_naming"] == "geometry" and md["decoding"]["anchors"]["OD"]["level"] == "C2"
    info: list = []
    decode_levels(out, 2, lay, anchors={WHOLE.index("OD"): 0}, anchor_geometry=True, info=info)
    assert info[0]["levels"] == ["C2", "C3", "C4", "C5", "C6", "C7"]


def test_an_anchor_the_protocol_does_not_have_is_one_sentence_when_the_model_loads():
    """A model folder naming an anchor its protocol lacks fails when it is loaded (before a batch starts, before
    any weights are read), in one sentence naming the anchor."""
    from SpineAlignmentLib.errors import ModelError
    from SpineAlignmentLib.models.registry import assemble_model

    def md(anchors):
        return {"name": "edited", "version": "1.0.0", "protocol": "sagittal-whole-spine", "landmarks": list(WHOLE),
                "network": {"stride": 2}, "weights": {"file": "model.pt"},
                "network_data_format": {"inputs": {"image": {"spatial_shape": [360, 128]}}},
                "decoding": {"method": "level-family", "anchors": anchors}}

    def never(net, w):
        raise AssertionError("no network is read for a model whose metadata is refused")

    with pytest.raises(ModelError, match=r"names anchor DENS in its metadata.json \(decoding.anchors\)"):
        assemble_model(md({"DENS": {"level": "C2"}}), Path("."), never)  # a cervical landmark in a whole-spine model
    with pytest.raises(ModelError, match="export the model again"):
        assemble_model(md({"OD": {"level": "C1"}}), Path("."), never)
    loaded = assemble_model(md({"OD": {"level": "C2"}}), Path("."), lambda net, w: torch.nn.Identity())
    assert loaded.metadata["decoding"]["anchors"]["OD"]["level"] == "C2"
