"""Level confidence of a coronal chain: framing changes, chain features, the logistic model, the warning,
naming figures (identification rate, shifts, end vertebrae, warning precision/recall) and where they show."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from SpineAlignmentLib.evaluation.levels import (end_vertebra_agreement, identification_figures, level_figures,
                                                 level_shift, named_right, warning_figures)
from SpineAlignmentLib.inference.levels import (FEATURES, alternative_names, assess_levels, chain_features,
                                                level_probabilities_from_features, level_warning, levels_line,
                                                levels_may_be)
from SpineAlignmentLib.training.framing import level_rows, random_framing, reframe

from test_hygiene import coronal_spine
from test_inference import _vertebra_output, shipped  # noqa: F401 - the shipped model fixture


def _chain(n: int = 17, top: float = 100.0, spacing: float = 70.0) -> np.ndarray:
    """(4n, 2) straight chain: 80 x 50 px boxes, centres ``spacing`` apart from y = top + 25."""
    box = np.array([[0, 0], [80, 0], [0, 50], [80, 50]], float) + [300, top]
    return np.concatenate([box + [0, spacing * k] for k in range(n)])


def _shifted_by_one_level(truth: np.ndarray, steps: int) -> np.ndarray:
    """The chain a model names one level off: T2..S1 (steps=+1) or C7..L4 (-1), extrapolated by one spacing."""
    q = truth.reshape(-1, 4, 2)
    d = q[1].mean(0) - q[0].mean(0)
    beyond = q[-1] + d if steps > 0 else q[0] - d
    return (np.concatenate([q[1:], beyond[None]]) if steps > 0 else np.concatenate([beyond[None], q[:-1]])).reshape(-1, 2)


# ---------------------------------------------------------------------------- framing

def test_reframe_crops_and_pads_hand_worked():
    a = np.arange(40, dtype=np.float32).reshape(10, 4) + 5  # min 5
    pts = np.array([[1.0, 3.0], [2.0, 8.0]])
    out, q = reframe(a, pts, -2, 5)  # 2 rows of padding above, rows 0..5 of the film
    assert out.shape == (8, 4)
    np.testing.assert_array_equal(out[:2], 5)
    np.testing.assert_array_equal(out[2:], a[0:6])
    np.testing.assert_allclose(q, [[1.0, 5.0], [2.0, 10.0]])
    out, q = reframe(a, pts, 3, 12)  # crop 3 rows at the top, pad 3 below
    np.testing.assert_array_equal(out[:7], a[3:10])
    np.testing.assert_array_equal(out[7:], 5)
    np.testing.assert_allclose(q[:, 1], [0.0, 5.0])
    with pytest.raises(ValueError):
        reframe(a, pts, 5, 5)


def test_framing_limits_follow_the_spine():
    chain = _chain()  # centres y = 125, 195, ..., 1245; spacing 70
    r = level_rows(chain)
    assert r["T1"] == pytest.approx(125.0) and r["T3"] == pytest.approx(265.0) and r["L5"] == pytest.approx(1245.0)
    assert r["C4"] == pytest.approx(125.0 - 4 * 0.8 * 70.0)
    assert r["L4"] == pytest.approx(1175.0) and r["below_sacrum"] == pytest.approx(1245.0 + 4 * 70.0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, bottom = random_framing(chain, rng)
        assert r["C4"] <= top <= r["T3"] and r["L4"] <= bottom <= r["below_sacrum"]


def test_framing_matrix_hand_worked():
    from SpineAlignmentLib.training.framing import framing_matrix
    from SpineAlignmentLib.training.transforms import apply_to_points

    m = framing_matrix((512, 256), 100.0, 355.5)  # rows 100..355.5 fill the 512 rows: scale 2 about column 127.5
    q = apply_to_points(m, np.array([[127.5, 100.0], [127.5, 355.5], [137.5, 200.0]]))
    np.testing.assert_allclose(q, [[127.5, 0.0], [127.5, 511.0], [147.5, 200.0]])


def test_training_framing_cuts_landmarks_off_for_good():
    """RandFramingd moves the film's top and bottom along the spine; corners it cuts off stay invalid even after
    the affine augmentation, corners it keeps move with the image."""
    from SpineAlignmentLib.training.dataset import CachedSample
    from SpineAlignmentLib.training.framing import OUTSIDE, RandFramingd
    from SpineAlignmentLib.training.loop import LandmarkDataset
    from SpineAlignmentLib.training.transforms import build_train_transforms

    box = np.array([[118, 0], [138, 0], [118, 16], [138, 16]], float)  # 20 x 16 px vertebrae, 26 px apart
    chain = np.concatenate([box + [0, 40 + 26 * k] for k in range(17)])  # T1 top at row 40, L5 bottom at row 472
    img = np.zeros((512, 256), np.uint8)
    for x, y in chain:
        img[int(round(y)), int(round(x))] = 255
    d = RandFramingd(keys="image", prob=1.0)
    d.set_random_state(seed=1)
    cut = 0
    for _ in range(20):
        out = d({"image": img[None].astype(np.float32) / 255.0, "points": chain.astype(np.float32)})
        q = out["points"]
        inside = q[:, 0] > OUTSIDE / 2
        cut += (~inside).sum()
        assert (q[inside] >= 0).all() and (q[inside, 1] <= 511).all()
        # the image moved with the points: every kept corner's pixel is still bright
        vals = out["image"][0][np.round(q[inside, 1]).astype(int), np.round(q[inside, 0]).astype(int)]
        assert (vals > 0.2).mean() > 0.9
        # the order along the spine is kept and the frame is no wider than the scale allows
        assert np.all(np.diff(q[inside].reshape(-1, 2)[::4, 1]) > 0)
    assert cut > 0  # some framings cut T1..T2 or L5 off
    ds = LandmarkDataset([CachedSample("a", img, chain, None, chain)],
                         build_train_transforms(list(range(68)), seed=0, reframe=1.0))
    for _ in range(10):
        item = ds[0]
        p, v = item["points"].numpy(), item["valid"].numpy()
        assert (p[~v] < 0).any(axis=1).all() or (p[~v] > 255).any()
    # without reframe the transform chain is the one the shipped model was trained with
    names = [type(t).__name__ for t in build_train_transforms(list(range(68))).transforms]
    assert "RandFramingd" not in names and names[0] == "RandAffineKeypointsd"


def test_span_crop_shows_part_of_the_chain_and_moves_image_and_points_alike():
    """RandSpanCropd (train --crop): the film shows 30-80 % of the labelled span, zoomed to fill the input and
    centred on the kept points; the points it keeps move with the image (their pixels stay bright), the others
    go to OUTSIDE for good; unlabelled (NaN) points stay unlabelled; sometimes the first or the last level is
    kept, sometimes neither (the window is placed anywhere along the span)."""
    from SpineAlignmentLib.training.framing import OUTSIDE, RandSpanCropd, span_window

    box = np.array([[118, 0], [138, 0], [118, 16], [138, 16]], float)
    chain = np.concatenate([box + [0, 40 + 26 * k] for k in range(17)])
    chain[5] = np.nan  # one corner not labelled on this film
    img = np.zeros((512, 256), np.uint8)
    for x, y in chain[np.isfinite(chain).all(axis=1)]:
        img[int(round(y)), int(round(x))] = 255
    t = RandSpanCropd(keys="image", prob=1.0)
    t.set_random_state(seed=3)
    first = last = middle = 0
    for _ in range(40):
        out = t({"image": img[None].astype(np.float32) / 255.0, "points": chain.astype(np.float32)})
        q = out["points"]
        assert not np.isfinite(q[5]).all() or q[5, 0] == OUTSIDE  # never invented
        inside = np.isfinite(q).all(axis=1) & (q[:, 0] > OUTSIDE / 2)
        assert inside.sum() >= 4 * 2 and (~inside).sum() > 0
        vals = out["image"][0][np.round(q[inside, 1]).astype(int), np.round(q[inside, 0]).astype(int)]
        assert (vals > 0.2).mean() > 0.9
        # zoomed to fill: the kept points span most of the input height; centred on them in x
        assert np.ptp(q[inside, 1]) > 0.6 * 511 and abs(q[inside, 0].mean() - 127.5) < 1.0
        first += inside[0]
        last += inside[-1]
        middle += not inside[0] and not inside[-1]
    assert first and last and middle
    assert span_window(np.full((68, 2), np.nan), np.random.default_rng(0)) is None


# ---------------------------------------------------------------------------- naming figures

def test_level_shift_and_named_right_on_chains_one_level_off():
    truth = _chain()
    assert level_shift(truth, truth) == 0 and named_right(truth, truth)
    low = _shifted_by_one_level(truth, +1)  # T2..S1
    high = _shifted_by_one_level(truth, -1)  # C7..L4
    assert level_shift(low, truth) == 1 and not named_right(low, truth)
    assert level_shift(high, truth) == -1 and not named_right(high, truth)
    # one vertebra off in the middle (a double detection): no net shift, but not all named right
    mid = truth.copy().reshape(17, 4, 2)
    mid[8] = mid[9]
    assert level_shift(mid.reshape(-1, 2), truth) == 0 and not named_right(mid.reshape(-1, 2), truth)
    f = identification_figures([truth, low, high, mid.reshape(-1, 2)], [truth] * 4)
    assert f["n_images"] == 4 and f["all_named_right"] == 1 and f["all_named_right_pct"] == 25.0
    assert f["shift_counts"] == {"-2": 0, "-1": 1, "0": 2, "+1": 1, "+2": 0}
    assert f["misnamed_without_shift"] == 1


def test_end_vertebra_agreement_hand_worked():
    truth = [{"Cobb_MT": ("T5", "T11"), "Cobb_TLL": ("T11", "L4")}, {"Cobb_PT": ("T1", "T5")}]
    pred = [{"Cobb_MT": ("T5", "T11"), "Cobb_TLL": ("T12", "L4")}, {"Cobb_MT": ("T1", "T5")}]
    e = end_vertebra_agreement(pred, truth)
    # MT exact; TLL one level off at the top; PT not reported by the prediction (its MT is another region)
    assert (e["n_curves"], e["exact"], e["within_one"]) == (3, 1, 2)
    assert e["exact_pct"] == pytest.approx(100 / 3) and e["within_one_pct"] == pytest.approx(200 / 3)
    # a chain named a level off moves both ends: within one, not exact
    low = [{"Cobb_MT": ("T6", "T12")}]
    e = end_vertebra_agreement(low, [{"Cobb_MT": ("T5", "T11")}])
    assert (e["exact"], e["within_one"]) == (0, 1)


def test_warning_figures_hand_worked():
    warned = [True, True, False, False, True, False]
    right = [False, True, False, True, False, True]
    shifts = [1, 0, -1, 0, 0, 0]  # image 4: misnamed without a shift
    w = warning_figures(warned, right, shifts)
    assert (w["n_warned"], w["n_shifted"], w["n_misnamed"], w["n_named_right"]) == (3, 2, 3, 3)
    assert w["recall_shifted_pct"] == 50.0  # image 0 of 0 and 2
    assert w["recall_misnamed_pct"] == pytest.approx(200 / 3)  # images 0 and 4 of 0, 2, 4
    assert w["false_alarm_pct"] == pytest.approx(100 / 3)  # image 1 of 1, 3, 5
    assert w["precision_pct"] == pytest.approx(200 / 3)
    assert math.isnan(warning_figures([False], [True], [0])["recall_shifted_pct"])


def test_level_figures_of_result_files():
    """``spine-align evaluate`` figures from result dicts: identification, end vertebrae from the results' own
    Cobb curves, and the warning read from ``levels.uncertain``."""
    from SpineAlignmentLib.geometry.coronal import VERTEBRAE
    from SpineAlignmentLib.pipeline import measure

    ids = [f"{v}_{c}" for v in VERTEBRAE for c in ("TL", "TR", "BL", "BR")]
    truth_pts = coronal_spine(30.0)
    low = _shifted_by_one_level(truth_pts, +1)

    def result(points, levels=None):
        d = measure(dict(zip(ids, map(tuple, points))), "coronal-spine", image_size=(1400, 700)).to_dict()
        if levels is not None:
            d["levels"] = levels
        return d

    truths = [result(truth_pts), result(truth_pts)]
    preds = [result(truth_pts, {"uncertain": False}), result(low, {"uncertain": True})]
    f = level_figures(truths, preds)
    assert f["all_named_right"] == 1 and f["shift_counts"]["+1"] == 1
    n = len([k for k in truths[0]["parameters"] if k.startswith("Cobb_")])
    assert n >= 1 and f["end_vertebrae"]["n_curves"] == 2 * n
    assert f["end_vertebrae"]["exact"] == n  # the right chain agrees exactly, the shifted one not
    assert f["warning"]["recall_shifted_pct"] == 100.0 and f["warning"]["false_alarm_pct"] == 0.0
    assert level_figures([{"landmarks": {}}], [{"landmarks": {}}]) == {}


# ---------------------------------------------------------------------------- features and the model

def test_chain_features_see_a_vertebra_above_and_the_framing():
    """Ideal first-stage output for C7..L5 (18 vertebrae) with the chain T1..L5 decoded: the centre map is
    high one spacing above T1 (C7 is there) and empty below L5; margins and size trend are hand-worked."""
    spine = coronal_spine(0.0, n=18) * 0.3 + np.array([10.0, 30.0])  # 24 x 15 px boxes, 21 px apart
    pts = torch.tensor(spine.reshape(1, 72, 2), dtype=torch.float32)
    out = _vertebra_output(pts, 256, 128, 2, centre_peaks={0: 0.7})
    prob = torch.sigmoid(out[0, 0]).numpy()
    chain = spine[4:]  # T1..L5 (the C7 box left out)
    f = chain_features(prob, chain, 2, (0.0, 511.0))
    assert set(f) == set(FEATURES) - {"ident_high_vs_right", "ident_low_vs_right"}
    assert f["above1"] == pytest.approx(0.7, abs=0.02)  # C7's centre peak
    assert f["below1"] < 0.05 and f["below2"] < 0.05
    assert f["top_score"] == pytest.approx(1.0, abs=0.02)
    c = chain.reshape(-1, 4, 2).mean(1)
    s = np.linalg.norm(c[1] - c[0])
    assert f["margin_top"] == pytest.approx(c[0, 1] / s)
    assert f["margin_bottom"] == pytest.approx(min((511.0 - c[-1, 1]) / s, 8.0))
    assert f["width_ratio_ends"] == pytest.approx(0.0, abs=1e-9)  # equal boxes
    assert f["span_fraction"] == pytest.approx((c[-1, 1] - c[0, 1]) / 511.0)
    # identification probabilities: log-odds of the two alternatives against the named-right hypothesis
    top = np.array([0.5, 0.25, 0.25, 1e-3, 1e-3])  # above, first, inner, last, below
    bottom = np.array([1e-3, 1e-3, 0.2, 0.4, 0.4])
    g = chain_features(prob, chain, 2, (0.0, 511.0), end_probabilities=(top, bottom))
    assert g["ident_high_vs_right"] == pytest.approx(np.log(0.5 * 0.2) - np.log(0.25 * 0.4))
    assert g["ident_low_vs_right"] == pytest.approx(np.log(0.25 * 0.4) - np.log(0.25 * 0.4))


def _block(warn_below=0.5):
    # one feature: a vertebra above the chain makes "one level too low" likely
    return {"features": ["above1"], "mean": [0.5], "scale": [0.25], "coef": [[0.0], [-2.0], [2.0]],
            "intercept": [-1.0, 1.0, 0.0], "warn_below": warn_below}


def test_level_probabilities_hand_worked_and_the_warning():
    b = _block()
    p = level_probabilities_from_features({"above1": 1.0}, b)  # z = 2: logits (-1, -3, 4)
    e = np.exp([-1.0, -3.0, 4.0])
    np.testing.assert_allclose(p, e / e.sum())
    a = assess_levels({"above1": 1.0}, b)
    assert a["uncertain"] and a["alternative"] == {"shift": 1, "probability": pytest.approx(e[2] / e.sum(), abs=1e-4),
                                                  "top": "T2", "bottom": "S1"}
    assert a["confidence"] == pytest.approx(e[1] / e.sum(), abs=1e-4)
    w = level_warning(a)
    assert "level confidence 0.00 < 0.50" in w and "may be S1" in w and "T1 is not in the chain" in w
    ok = assess_levels({"above1": 0.0}, b)  # z = -2: logits (-1, 5, -4)
    assert not ok["uncertain"] and level_warning(ok) is None
    assert alternative_names(-1) == ("C7", "L4") and alternative_names(1) == ("T2", "S1")
    high = {**a, "alternative": {"shift": -1, "probability": 0.6, "top": "C7", "bottom": "L4"}}
    assert "the vertebra named T1 may be C7" in level_warning(high)


def test_a_chain_stretched_over_fewer_vertebrae_is_reported_incomplete():
    """A thoracic-only film: the first stage finds 12 vertebrae, and a 17-vertebra chain decoded on it holds
    5 members where the centre map is empty. The weakest-score floor flags it, whatever the level confidence,
    and the warning says how many vertebrae were found; a whole chain passes; a block without a floor never flags."""
    spine = coronal_spine(0.0, n=17) * 0.3 + np.array([10.0, 30.0])
    pts = torch.tensor(spine.reshape(1, 68, 2)[:, :48], dtype=torch.float32)  # centre peaks on 12 vertebrae only
    prob = torch.sigmoid(_vertebra_output(pts, 256, 128, 2)[0, 0]).numpy()
    f = chain_features(prob, spine, 2, (0.0, 511.0), score_floor=0.2)
    assert f["weakest_score"] < 0.05 and f["second_weakest_score"] < 0.05
    assert f["weak_vertebrae"] == 5
    assert f["spacing_irregularity"] == pytest.approx(0.0, abs=1e-6)  # evenly spaced: the floor, not the spacing, tells
    b = {**_block(), "vertebra_score_floor": 0.2}
    a = assess_levels({"above1": 0.0, **f}, b)  # the logistic alone would call it named right
    assert a["uncertain"] and a["incomplete"] and a["weak_vertebrae"] == 5
    w = level_warning(a)
    assert "5 of the 17 named vertebrae were not found clearly" in w and "below 0.20" in w and "only the thoracic" in w
    whole = chain_features(torch.sigmoid(_vertebra_output(torch.tensor(spine.reshape(1, 68, 2), dtype=torch.float32),
                                                          256, 128, 2)[0, 0]).numpy(), spine, 2, (0.0, 511.0),
                           score_floor=0.2)
    assert whole["weakest_score"] > 0.9 and whole["weak_vertebrae"] == 0
    ok = assess_levels({"above1": 0.0, **whole}, b)
    assert not ok["uncertain"] and "incomplete" not in ok
    assert not assess_levels({"above1": 0.0, **f}, _block())["uncertain"]  # fitted before the floor existed
    assert levels_may_be(a) == "incomplete (5 of 17 weak)" and levels_may_be(ok) == ""
    assert levels_may_be({**a, "incomplete": False}) in ("C7-L4", "T2-S1") and levels_may_be(None) == ""
    assert levels_line(a) == f"level confidence {a['confidence']:.2f} (incomplete (5 of 17 weak))"
    assert levels_line(ok) == f"level confidence {ok['confidence']:.2f}"
    high = {**a, "incomplete": False, "alternative": {"shift": -1, "probability": 0.6, "top": "C7", "bottom": "L4"}}
    assert levels_line(high).endswith("(uncertain: may be C7-L4)")


def test_fit_level_model_learns_a_separating_feature():
    from SpineAlignmentLib.training.level_confidence import film_record, _confidences, fit_level_model

    rng = np.random.default_rng(0)
    truth = _chain()
    recs = []
    for k, (shift, mu) in enumerate([(-1, -4.0), (0, 0.0), (1, 4.0)] * 60):
        pred = truth if shift == 0 else _shifted_by_one_level(truth, shift)
        recs.append(film_record(features={"x": mu + 0.3 * rng.normal(), "noise": rng.normal()}, pred=pred, truth=truth,
                               shift=level_shift(pred, truth), right=named_right(pred, truth), height=1500))
    block = fit_level_model(recs, ("x", "noise"))
    block["warn_below"] = 0.5
    conf, alt = _confidences(recs, block)
    shifts = np.array([r["shift"] for r in recs])
    assert np.all(conf[shifts == 0] > 0.5) and np.all(conf[shifts != 0] < 0.3)
    np.testing.assert_array_equal(alt[shifts != 0], shifts[shifts != 0])
    assert abs(block["coef"][1][1]) < 0.5  # the noise feature gets (almost) nothing


# ---------------------------------------------------------------------------- where the levels show

def _coronal_result(levels):
    from SpineAlignmentLib.geometry.coronal import VERTEBRAE
    from SpineAlignmentLib.pipeline import measure

    ids = [f"{v}_{c}" for v in VERTEBRAE for c in ("TL", "TR", "BL", "BR")]
    res = measure(dict(zip(ids, map(tuple, coronal_spine(30.0)))), "coronal-spine", image_size=(1400, 700))
    res.levels = levels
    return res


UNCERTAIN = {"confidence": 0.2, "shift_probabilities": {"-1": 0.7, "0": 0.2, "+1": 0.1},
             "alternative": {"shift": -1, "probability": 0.7, "top": "C7", "bottom": "L4"},
             "warn_below": 0.4, "uncertain": True}


def test_levels_in_result_json_summary_and_table(tmp_path):
    from SpineAlignmentLib.io.tables import summary_row
    from SpineAlignmentLib.result import Result
    from SpineAlignmentLib.slicerio.mrml import table_rows

    res = _coronal_result(UNCERTAIN)
    back = Result.read_json(res.write_json(tmp_path / "r.json"))
    assert back.levels == UNCERTAIN
    assert json.loads((tmp_path / "r.json").read_text())["levels"]["alternative"]["top"] == "C7"
    row = summary_row(res, "a.png")
    assert row["level_confidence"] == 0.2 and row["levels_may_be"] == "C7-L4"
    rows = table_rows(res)
    lv = [r for r in rows if r["id"] == "level_confidence"]
    assert len(lv) == 1 and lv[0]["value"] == 0.2 and "may be C7" in lv[0]["warning"]
    plain = _coronal_result(None)
    assert "levels" not in plain.to_dict() and math.isnan(summary_row(plain, "a.png")["level_confidence"])
    assert not [r for r in table_rows(plain) if r["id"] == "level_confidence"]


def test_overlay_labels_levels_and_keeps_the_panel_off_the_image(tmp_path):
    from PIL import Image

    from SpineAlignmentLib.io.overlay import render_overlay, vertebra_labels

    res = _coronal_result(UNCERTAIN)
    labels = vertebra_labels(res)
    assert [t for t, _, _ in labels][:2] == ["T1 (C7?)", "T2"] and labels[-1][0] == "L5 (L4?)"
    tl = res.landmarks["T1_TL"]
    assert labels[0][1] == pytest.approx(min(tl.x, res.landmarks["T1_BL"].x))
    assert [t for t, _, _ in vertebra_labels(_coronal_result(None))][0] == "T1"
    incomplete = {**UNCERTAIN, "incomplete": True, "weak_vertebrae": 5, "weakest_score": 0.05, "score_floor": 0.2}
    from SpineAlignmentLib.geometry.coronal import VERTEBRAE

    assert {t for t, _, _ in vertebra_labels(_coronal_result(incomplete))} == {f"{v}?" for v in VERTEBRAE}
    from SpineAlignmentLib.io.tables import summary_row

    assert summary_row(_coronal_result(incomplete), "a.png")["levels_may_be"] == "incomplete (5 of 17 weak)"
    # a horizontal ramp: the picture's image part must show the ramp right up to its top-left corner
    img = np.tile(np.linspace(0, 1, 700, dtype=np.float32), (1400, 1))
    png = np.asarray(Image.open(render_overlay(img, res, tmp_path / "o.png", max_size=700)).convert("L"), float)
    assert png.shape[0] == 700 and png.shape[1] > 350  # the values panel is a strip beside the 350 px image
    corner = png[5:40, 5:40]
    expected = np.linspace(0, 255, 350)[5:40]
    np.testing.assert_allclose(corner.mean(axis=0), expected, atol=12)  # not covered by the values box


# ---------------------------------------------------------------------------- the shipped model

def _sample():
    from test_inference import SAMPLE

    from SpineAlignmentLib.imaging import read_radiograph

    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} missing")
    return read_radiograph(SAMPLE)


def test_shipped_model_measures_its_level_confidence(shipped):
    from SpineAlignmentLib.inference import predict_landmarks

    block = shipped.metadata["levels"]
    assert block["features"] and len(block["coef"]) == 3 and 0.0 < block["warn_below"] < 1.0
    # the fit never saw a validation image: it was fitted on the training split only
    n_train = shipped.metadata["training"]["split"]["n_train"]
    assert block["fitted_on"].startswith(f"{n_train} training-split images")
    val = block["validation"]
    assert val["original"]["n_images"] == shipped.metadata["validation"]["n_images"]
    info: dict = {}
    lms, warns = predict_landmarks(_sample(), shipped, info=info)
    lv = info["levels"]
    assert 0.0 <= lv["confidence"] <= 1.0
    assert sum(lv["shift_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert lv["uncertain"] == (lv["confidence"] < block["warn_below"])
    assert any(w.startswith("Vertebra levels") for w in warns) == lv["uncertain"]


def test_shipped_model_warns_on_a_blank_image_and_on_partial_films(shipped):
    """Bad input: a film with only the thoracic or only the lumbar spine must not come back as 17 confidently
    named vertebrae; a blank image's levels are meaningless."""
    from SpineAlignmentLib.inference import predict_landmarks

    info: dict = {}
    _, warns = predict_landmarks(np.zeros((1500, 600), np.float32), shipped, info=info)
    assert info["levels"]["confidence"] == 0.0 and info["levels"]["uncertain"]
    assert any(w.startswith("Vertebra levels") for w in warns)
    rg = _sample()
    lms, _ = predict_landmarks(rg, shipped)
    y = lambda v: np.mean([lms[f"{v}_{c}"].y for c in ("TL", "TR", "BL", "BR")])
    pixels = np.asarray(rg.pixels, np.float32)
    for name, film in (("lumbar-only", pixels[int(y("T11")):]), ("thoracic-only", pixels[: int(y("T10"))])):
        info = {}
        _, warns = predict_landmarks(film, shipped, info=info)
        # the 17 names are stretched over fewer vertebrae: the chain is reported incomplete, with its weak members
        assert info["levels"]["uncertain"] and info["levels"]["incomplete"], (name, info["levels"])
        assert info["levels"]["weak_vertebrae"] >= 1 and info["levels"]["weakest_score"] < info["levels"]["score_floor"]
        assert any(w.startswith("Vertebra levels unreliable:") for w in warns), name


def test_analyze_command_reports_levels(tmp_path, capsys):
    from test_inference import SAMPLE

    from SpineAlignmentLib.cli import main

    if not SAMPLE.is_file():
        pytest.skip(f"{SAMPLE} missing")
    assert main(["analyze", "--protocol", "coronal-spine", "--out", str(tmp_path), str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "  levels: T1-L5, level confidence " in out
    res = json.loads((tmp_path / f"{SAMPLE.stem}.json").read_text())
    assert 0.0 <= res["levels"]["confidence"] <= 1.0 and res["levels"]["alternative"]["top"] in ("C7", "T2")
    import csv

    with open(tmp_path / "summary.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert float(row["level_confidence"]) == pytest.approx(res["levels"]["confidence"])
