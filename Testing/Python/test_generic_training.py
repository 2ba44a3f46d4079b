"""The generic landmark model: level groups and parts from the protocol tables, ROI geometry, facing
normalisation, splits (hand-worked values)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from SpineAlignmentLib.models.landmark_roi import (
    LandmarkRoi, group_angles, group_centres, landmark_groups, landmark_parts, landmark_span, level_groups,
    refine_landmarks)
from SpineAlignmentLib.protocols import get_protocol
from SpineAlignmentLib.training.generic import GenericConfig, auto_input_shape, mirrors_for_facing, split_items
from SpineAlignmentLib.training.loop import stored_config

from spines import lateral_spine, select


def _names(ids, groups):
    return [[ids[k] for k in g] for g in groups]


def test_coronal_parts_and_groups():
    ids = get_protocol("coronal-spine").landmark_ids
    parts, index, mirror = landmark_parts(ids)
    assert parts == ["TL", "TR", "BL", "BR"]
    assert list(index[:8]) == [0, 1, 2, 3, 0, 1, 2, 3]
    assert list(mirror) == [1, 0, 3, 2]  # a mirrored AP film swaps the image-left and image-right corners
    groups = _names(ids, landmark_groups(ids))
    assert len(groups) == 17 and groups[0] == ["T1_TL", "T1_TR", "T1_BL", "T1_BR"] and groups[-1][0] == "L5_TL"


def test_lateral_parts_and_groups():
    ids = get_protocol("sagittal-whole-spine").landmark_ids
    parts, index, mirror = landmark_parts(ids)
    assert {"OD", "AI", "PI", "PS", "AS", "FH_1", "FH_2", "c"} == set(parts)
    assert list(mirror) == list(range(len(parts)))  # anterior/posterior never swap in a mirror
    groups = _names(ids, landmark_groups(ids))
    assert ["C7_AI", "C7_PS", "C7_PI", "C7c"] in groups
    assert ["OD"] in groups and ["FH_1"] in groups and ["FH_2"] in groups
    assert ["S1_AS", "S1_PS"] in groups
    lumbar = get_protocol("lumbar-dynamic").landmark_ids
    assert ["L3_AS", "L3_PS", "L3_AI", "L3_PI", "L3c"] in _names(lumbar, landmark_groups(lumbar))
    cervical = get_protocol("cervical-lateral").landmark_ids
    assert ["PNS"] in _names(cervical, landmark_groups(cervical))


def test_span_and_group_centres():
    pts = np.array([[0.0, 0.0], [30.0, 40.0], [np.nan, np.nan]])
    assert landmark_span(pts) == pytest.approx(50.0)
    c = group_centres(pts, [np.array([0, 1]), np.array([2])])
    assert c[0] == pytest.approx([15.0, 20.0]) and np.isnan(c[1]).all()
    # ROI side: 1.6 x the median level size (diagonals 10, 20, 50 -> 20), whatever the whole span is
    q = np.array([[0, 0], [6, 8], [0, 100], [12, 116], [0, 300], [30, 340], [500, 900]], dtype=float)
    groups = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5]), np.array([6])]
    assert LandmarkRoi(size=32, extent=1.6).side(q, groups) == pytest.approx(32.0)
    assert LandmarkRoi(size=32, fraction=0.1).side(q, groups) == pytest.approx(0.1 * np.hypot(500, 900))


class _Brightness(torch.nn.Module):
    """Stand-in ROI network: every part's heatmap is the patch itself, sharpened (its bright blob = the landmark)."""

    stride = 2

    def __init__(self, parts: int):
        super().__init__()
        self.parts = parts

    def forward(self, x):
        y = torch.nn.functional.avg_pool2d(x, 2) * 40.0
        return y.repeat(1, self.parts, 1, 1)


def test_refine_landmarks_geometry_round_trip():
    """A film with one bright blob per landmark: ROIs placed on first-stage points 12 px off must come back to
    the blobs (resize, patch sampling, DSNT and the mapping back to original pixels all agree)."""
    rows, cols = 900, 700
    truth = np.array([[200.3, 150.0], [500.0, 420.7], [333.0, 780.2]])
    yy, xx = np.mgrid[0:rows, 0:cols]
    img = np.zeros((rows, cols), np.float32)
    for x, y in truth:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 6.0 ** 2)).astype(np.float32)
    coarse = truth + np.array([[12.0, -9.0], [-10.0, 11.0], [8.0, 12.0]])
    roi = LandmarkRoi(size=64, fraction=0.15)
    groups = [np.array([0]), np.array([1]), np.array([2])]
    out, mass = refine_landmarks(_Brightness(1), img, coarse, np.zeros(3, dtype=int), groups, np.full(3, -1), roi,
                                 stride=2)
    assert np.abs(out - truth).max() < 2.0, out
    assert (mass > 0.3).all()
    # the same with each ROI turned along a chain (the three groups as levels) and with the mirrored patches
    # averaged in: the mapping back must undo the turn and the mirror
    turned = LandmarkRoi(size=64, fraction=0.15, rotate=True)
    for mirror in (None, np.array([0])):
        out, _ = refine_landmarks(_Brightness(1), img, coarse, np.zeros(3, dtype=int), groups, np.arange(3), turned,
                                  stride=2, mirror_parts=mirror)
        assert np.abs(out - truth).max() < 2.0, (mirror, out)


def test_group_angles_follow_the_chain():
    """A level's ROI turns so that its rows run from the previous level to the next one found."""
    t = np.deg2rad(30.0)
    down = np.array([np.sin(t), np.cos(t)])  # the spine runs down and to the right, 30 degrees off vertical
    c = np.array([[100.0, 50.0]]) + np.arange(5)[:, None] * 40.0 * down
    c[2] = np.nan  # a level not found: its neighbours bridge it
    rank = np.array([0, 1, 2, 3, -1])  # the last group is a landmark outside the chain
    a = group_angles(c, rank)
    assert a[[0, 1, 3]] == pytest.approx([-t, -t, -t])
    assert a[2] == 0.0 and a[4] == 0.0
    # the patch's v axis (rows) is the chain's direction: (-sin a, cos a) == down
    assert np.array([-np.sin(a[0]), np.cos(a[0])]) == pytest.approx(down)
    assert group_angles(np.array([[0.0, 0.0], [0.0, 10.0]]), np.arange(2)) == pytest.approx([0.0, 0.0])
    assert group_angles(np.array([[0.0, 0.0], [np.nan, np.nan]]), np.arange(2)) == pytest.approx([0.0, 0.0])
    # neighbours are neighbours along the spine, not in the table's order: groups listed C2, T1, C7 (a chain bent at
    # C7) turn as C2-C7-T1 does
    bent = np.array([[0.0, 0.0], [10.0, 20.0], [0.0, 10.0]])
    assert group_angles(bent, np.array([2, 101, 7])) == pytest.approx(
        [np.arctan2(0.0, 10.0), np.arctan2(-10.0, 10.0), np.arctan2(-10.0, 20.0)])


def test_level_groups_place_the_table_groups_along_the_spine():
    """The whole-spine table lists C2, C7, T1, T5, ... before the centroid levels C3c..L5c: each group's rank is its
    place from the head down, whatever the table's order; landmarks outside the chain are -1."""
    whole = get_protocol("sagittal-whole-spine").landmark_ids
    rank = {names[0]: r for names, r in zip(_names(whole, landmark_groups(whole)), level_groups(whole))}
    assert rank["OD"] == -1 and rank["FH_1"] == -1 and rank["FH_2"] == -1
    chain = sorted((r, n) for n, r in rank.items() if r >= 0)
    assert [n.split("_")[0].rstrip("c") for _, n in chain] == [
        "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12",
        "L1", "L2", "L3", "L4", "L5", "S1"]
    assert level_groups(["L5_AS", "L6_AS", "S1_AS"]).tolist() == sorted(level_groups(["L5_AS", "L6_AS", "S1_AS"]))


def test_a_run_made_before_a_setting_existed_keeps_how_it_trained():
    assert GenericConfig().roi_rotate is True  # new runs turn their ROIs
    assert stored_config(GenericConfig, {"epochs": 3}).roi_rotate is False  # an older run's stored settings
    assert stored_config(GenericConfig, {"roi_rotate": True}).roi_rotate is True


def test_facing_normalisation_from_landmarks():
    proto = get_protocol("sagittal-whole-spine")
    rng = np.random.default_rng(3)
    right = select(lateral_spine(rng, facing=+1), "sagittal-whole-spine")
    left = select(lateral_spine(rng, facing=-1), "sagittal-whole-spine")
    assert mirrors_for_facing(proto, right) is False  # anterior already to the image right
    assert mirrors_for_facing(proto, left) is True
    assert mirrors_for_facing(proto, {"OD": (1.0, 2.0)}) is None  # nothing tells the facing: film skipped
    assert mirrors_for_facing(get_protocol("coronal-spine"), {}) is False  # AP films are never normalised


def test_auto_input_shape():
    assert auto_input_shape([(2500, 1000), (2400, 900), (2600, 1100)], 384) == (384, 128)
    assert auto_input_shape([(1000, 1000)], 384) == (384, 384)
    assert auto_input_shape([(1000, 3000)], 384) == (384, 768)  # at most twice as wide as high


def test_split_keeps_patients_apart_and_subsets_whole_patients():
    items = [SimpleNamespace(image=f"/d/p{p}_{k}.png", patient=f"p{p}") for p in range(20) for k in range(3)]
    cfg = GenericConfig(val_fraction=0.2, seed=0, train_images=10)
    train, val = split_items(items, cfg)
    vp, tp = {it.patient for it in val}, {it.patient for it in train}
    assert not vp & tp
    assert len(val) == 12  # 4 whole patients = 20 % of 60 films
    assert len(train) == 10
    full, _ = split_items(items, GenericConfig(val_fraction=0.2, seed=0))
    assert len(full) == 48 and {it.patient for it in train} <= {it.patient for it in full}


def test_export_refuses_a_model_that_finds_no_landmark_on_its_calibration_films(tmp_path):
    """A run whose model finds nothing on the training films has no confidence to calibrate: one sentence
    naming the run, not an IndexError from the isotonic fit."""
    from SpineAlignmentLib.errors import SpineAlignmentError
    from SpineAlignmentLib.training.export_generic import _calibration

    figs = {"_confidence": [], "_errors": [], "_tolerance": [], "n_images": 6}
    with pytest.raises(SpineAlignmentError, match=r"run .*my-run finds no landmark on the 6 training films"):
        _calibration(figs, tmp_path / "my-run")
    figs = {"_confidence": [0.2, 0.9], "_errors": [30.0, 1.0], "_tolerance": [5.0, 5.0], "n_images": 1}
    cal = _calibration(figs, tmp_path / "my-run")
    assert np.interp(0.9, cal["raw"], cal["calibrated"]) == 1.0 and np.interp(0.2, cal["raw"], cal["calibrated"]) == 0.0


def test_card_quotes_the_learning_curve_and_copies_its_plot(tmp_path):
    """An own-data model card's "How many films?" section is the packaged curve, row by row, with its plot drawn
    into the model folder; without a curve there is no section (nothing made up)."""
    import json

    from SpineAlignmentLib.training.card import learning_curve_card

    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps([
        {"size": "25", "seed": 0, "n_train": 25, "epochs": 600, "refine_epochs": 64, "n_images": 94,
         "median_error_px": 31.25, "smape_pct": 15.5, "aasce_images_complete": 70, "named_right_of_all_pct": 40.0},
        {"size": "25", "seed": 1, "n_train": 26, "epochs": 600, "refine_epochs": 64, "n_images": 94,
         "median_error_px": 29.0, "smape_pct": None, "aasce_images_complete": 0, "named_right_of_all_pct": 38.3}]))
    folder = tmp_path / "model"
    folder.mkdir()
    lines = learning_curve_card(folder, curve)
    text = "\n".join(lines)
    assert "on the same 94 patient-held-out validation films" in text
    assert "| 25 | 0 | 600 + 64 | 31.2 px | 15.50 % (70) | 40.0 % | 1 |" in lines
    assert "| 26 | 1 | 600 + 64 | 29.0 px | – % (0) | 38.3 % | 1 |" in lines
    assert "Design 1: level family." in lines
    from PIL import Image

    with Image.open(folder / "learning-curve.png") as im:  # the plot, drawn from the rows
        assert im.format == "PNG" and im.size[0] > 400
    assert "![Learning curve](learning-curve.png)" in lines
    assert learning_curve_card(folder, tmp_path / "none.json") == []
    # rows measured with two designs: each row says which, each design is named once
    rows = json.loads(curve.read_text())
    rows[1]["design"] = "with part maps"
    curve.write_text(json.dumps(rows))
    lines = learning_curve_card(folder, curve)
    assert lines[lines.index("| 25 | 0 | 600 + 64 | 31.2 px | 15.50 % (70) | 40.0 % | 1 |") + 1].endswith("| 2 |")
    assert "Design 1: level family." in lines and "Design 2: with part maps." in lines
