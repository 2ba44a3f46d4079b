"""Vertebra identification (which detected vertebra is T1, which L5): geometry, decoding, packaging, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SpineAlignmentLib.models.levels import FIRST, LAST, LEVEL_CLASSES, LevelClassifier, make_identifier, neighbour_vertebrae
from SpineAlignmentLib.models.refine import FLIP_CORNERS, RoiSpec, resize_for_rois
from SpineAlignmentLib.models.registry import load_model, sha256_file

from test_inference import _vertebra_output
from test_models import TINY_ARGS, assert_corrupt_stage_named, tiny_model_folder

LEVEL_ARGS = {"size": 32, "channels": [4, 8, 8], "num_res_units": 1, "dropout": None}


def test_neighbour_vertebrae_hand_worked():
    # three 10 x 6 boxes, centres 10 px apart straight down, the last shifted 2 px right
    box = np.array([[0, 0], [10, 0], [0, 6], [10, 6]], float)
    q = np.stack([box, box + [0, 10], box + [2, 20]])
    np.testing.assert_allclose(neighbour_vertebrae(q, -1), box - [0, 10])  # C7: T1 moved by T1 - T2
    np.testing.assert_allclose(neighbour_vertebrae(q, -2), box - [0, 20])
    np.testing.assert_allclose(neighbour_vertebrae(q, 1), box + [4, 30])  # S1: L5 moved by L5 - L4 = (2, 10)
    np.testing.assert_allclose(neighbour_vertebrae(q, 2), box + [6, 40])


def test_label_candidates_hand_worked():
    from SpineAlignmentLib.training.levels import label_candidates
    from SpineAlignmentLib.models.levels import ABOVE, BELOW, INNER

    box = np.array([[0, 0], [10, 0], [0, 6], [10, 6]], float)  # height 6
    ref = np.stack([box + [0, 10 * k] for k in range(5)])  # centres y = 3, 13, ..., 43
    cand = np.stack([box - [0, 10],      # C7: above the first centre, not near any -> ABOVE
                     box + [1, 1],       # T1 moved 1.4 px (< 0.5 x 6) -> FIRST
                     box + [0, 25],      # between two levels, 5 px from both -> not used
                     box + [0, 20],      # exact third vertebra -> INNER
                     box + [0, 42],      # 2 px below the last -> LAST
                     box + [0, 55]])     # below -> BELOW
    np.testing.assert_array_equal(label_candidates(cand, ref), [ABOVE, FIRST, -1, INNER, LAST, BELOW])


def test_identify_callback_chooses_t1_to_l5_when_c7_is_stronger():
    """18 vertebra-like centres, C7 stronger than L5: the plain rule takes C7..L4; probabilities of
    'first' on T1 and 'last' on L5 (given per candidate, in the decoder's candidate order) fix it."""
    from test_hygiene import coronal_spine

    from SpineAlignmentLib.models.vertebra import decode_vertebrae

    spine = coronal_spine(20.0) * 0.3 + np.array([10.0, 20.0])
    q = spine.reshape(17, 4, 2)
    c7 = q[0] - (q[1] - q[0])
    pts = torch.tensor(np.concatenate([c7[None], q]).reshape(1, 72, 2), dtype=torch.float32)
    out = _vertebra_output(pts, 256, 128, 2, centre_peaks={0: 0.95, 17: 0.6})
    plain, _ = decode_vertebrae(out, 2)
    np.testing.assert_allclose(plain[0], pts[0, :68].numpy(), atol=0.5)  # shifted by a level
    seen = []

    def identify(i, corners):
        seen.append(len(corners))
        yc = corners.mean(1)[:, 1]
        t1, l5 = np.argmin(np.abs(yc - q[0].mean(0)[1])), np.argmin(np.abs(yc - q[16].mean(0)[1]))
        first, last = np.full(len(corners), 0.01), np.full(len(corners), 0.01)
        first[t1], last[l5] = 0.98, 0.98
        return first, last

    fixed, _ = decode_vertebrae(out, 2, identify=identify, min_extra_score=0.3)
    np.testing.assert_allclose(fixed[0], spine, atol=0.5)
    assert seen == [18]  # 17 + the one extra candidate above the score floor
    # with no weight on identification the decoder is the plain top-17 rule
    np.testing.assert_allclose(decode_vertebrae(out, 2, identify=identify, anchor_weight=0.0)[0], plain)


def test_level_probabilities_sum_to_one_and_mirror_back():
    """Batch item 1 (flip TTA) holds mirrored candidates: mirrored back, they give the same patches."""
    from test_hygiene import coronal_spine

    torch.manual_seed(0)
    net = LevelClassifier(**LEVEL_ARGS).eval()
    spec = RoiSpec(32, 4.0)
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (300, 150)).astype(np.float32)
    q = (coronal_spine(15.0) * 0.3 + [20.0, 20.0]).reshape(17, 4, 2)
    identity = lambda xy: xy  # network input == original pixels here
    ident = make_identifier(net, spec, identity, 150, image=image)
    first, last = ident(0, q)
    assert first.shape == last.shape == (17,) and np.all((first > 0) & (first < 1))
    mirrored = q[:, list(FLIP_CORNERS)].copy()
    mirrored[..., 0] = 149 - mirrored[..., 0]
    f2, l2 = ident(1, mirrored)
    np.testing.assert_allclose(f2, first, atol=1e-5)
    np.testing.assert_allclose(l2, last, atol=1e-5)
    from SpineAlignmentLib.models.levels import level_probabilities

    p = level_probabilities(net, *resize_for_rois(image, 30.0, spec), q, spec)
    assert p.shape == (17, len(LEVEL_CLASSES)) and np.allclose(p.sum(1), 1.0)
    assert level_probabilities(net, image, (1.0, 1.0), np.zeros((0, 4, 2)), spec).shape == (0, 5)


def tiny_vertebra_model_folder(root, name="tiny-vertebra"):
    """A tiny random first stage with the vertebra representation (15 output channels)."""
    folder = tiny_model_folder(root, name)
    args = {**TINY_ARGS, "out_channels": 15}
    torch.manual_seed(0)
    from SpineAlignmentLib.models.network import SpineLandmarkNet

    torch.save({k: v.half() for k, v in SpineLandmarkNet(**args).state_dict().items()}, folder / "model.pt")
    md = json.loads((folder / "metadata.json").read_text())
    md["network"]["args"] = args
    md["weights"]["sha256"] = sha256_file(folder / "model.pt")
    md["network_data_format"]["outputs"]["pred"]["num_channels"] = 15
    md["decoding"] = {"method": "vertebra-centres", "window": 3, "refine_radius": 2, "low_confidence": 0.3}
    (folder / "metadata.json").write_text(json.dumps(md))
    return folder


def add_tiny_identification(folder, anchor_weight=2.0):
    torch.manual_seed(2)
    net = LevelClassifier(**LEVEL_ARGS)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, folder / "levels.pt")
    md = json.loads((folder / "metadata.json").read_text())
    md["identification"] = {
        "network": {"class": "SpineAlignmentLib.models.levels.LevelClassifier", "args": LEVEL_ARGS, "stride": 8},
        "weights": {"file": "levels.pt", "sha256": sha256_file(folder / "levels.pt"), "dtype": "float16"},
        "roi": {"size": 32, "extent": 4.0}, "classes": list(LEVEL_CLASSES),
        "decoding": {"anchor_weight": anchor_weight, "extra": 3, "min_extra_score": 0.0}}
    (folder / "metadata.json").write_text(json.dumps(md))


@pytest.fixture
def tiny_vertebra(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINEALIGN_MODELS", str(tmp_path))
    return tiny_vertebra_model_folder(tmp_path)


def test_identification_loads_and_runs_in_predict(tiny_vertebra):
    from SpineAlignmentLib.inference.predict import predict_array

    img = np.random.default_rng(1).uniform(0, 1, (300, 150)).astype(np.float32)
    plain = load_model("tiny-vertebra")
    assert plain.levels is None
    base, _ = predict_array(img, plain)
    add_tiny_identification(tiny_vertebra, anchor_weight=0.0)
    m = load_model("tiny-vertebra")
    assert m.levels_roi == RoiSpec(32, 4.0) and not m.levels.training
    # weight 0: the identification network is run but the choice is the plain top-17 rule
    np.testing.assert_allclose(predict_array(img, m)[0], base)
    for tta in (False, True):
        pts, conf = predict_array(img, m, flip_tta=tta)
        assert pts.shape == (68, 2) and np.all(np.isfinite(pts)) and np.all((conf >= 0) & (conf <= 1))


def test_corrupt_identification_weights_name_file_and_checksum(tiny_vertebra):
    add_tiny_identification(tiny_vertebra)
    assert_corrupt_stage_named(tiny_vertebra, "identification")


def test_levels_training_resume_export_and_command_line(tmp_path, capsys):
    """One epoch with end-to-end validation on the first stage's output, resume, export into a model, CLI."""
    from test_training import _synthetic_dataset

    from SpineAlignmentLib.cli import main
    from SpineAlignmentLib.training.export import _identification_entry
    from SpineAlignmentLib.training.levels import LevelsConfig, train_levels

    _synthetic_dataset(tmp_path / "data")
    stage1 = tiny_vertebra_model_folder(tmp_path / "models")
    out = tmp_path / "levels"
    cfg = LevelsConfig(data=str(tmp_path / "data"), out=str(out), stage1=str(stage1), patch_size=32, epochs=1,
                       images_per_batch=2, val_fraction=0.34, threads=1, warmup_epochs=0, framings=2,
                       net={k: v for k, v in LEVEL_ARGS.items() if k != "size"})
    last = train_levels(cfg, progress=False)
    split = json.loads((out / "split.json").read_text())
    assert last["n_images"] == len(split["val"]) > 0 and 0.0 <= last["identity_ok"] <= 1.0
    assert sum(last["shift_counts"].values()) == last["n_images"] and last["end_vertebrae"]["n_curves"] >= 0
    # candidates were mined on each training film and on 2 re-framed copies of it (shifted back to its rows)
    mined = np.load(out / "stage1_train_candidates_framed2.npz")
    assert sorted(mined.files) == sorted(split["train"])
    assert all(len(mined[n]) >= 3 * 17 for n in mined.files)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert {"train_ce", "train_acc", "val_patch_acc", "val_identity_ok", "val_base_identity_ok", "val_smape_pct"} <= set(rows[0])
    assert set(rows[0]["val_patch_acc_by_class"]) == set(LEVEL_CLASSES)
    before = torch.load(out / "last.pt", weights_only=False)["model"]
    cfg.epochs = 2
    train_levels(cfg, resume=True, progress=False)
    after = torch.load(out / "last.pt", weights_only=False)
    assert after["epoch"] == 1 and any(not torch.equal(before[k], after["model"][k]) for k in before)
    # packaged into the first stage's folder, the model validates, loads and predicts with it
    md = json.loads((stage1 / "metadata.json").read_text())
    md["identification"] = _identification_entry(out, "last.pt", stage1, fp16=True)
    (stage1 / "metadata.json").write_text(json.dumps(md))
    m = load_model(stage1.name, folder=stage1)
    assert m.levels is not None and md["identification"]["training"]["epochs_run"] == 2
    # a first stage that is not vertebra-centres is refused with a clear message
    from SpineAlignmentLib.errors import SpineAlignmentError

    with pytest.raises(SpineAlignmentError, match="vertebra-centres"):
        train_levels(LevelsConfig(data=str(tmp_path / "data"), out=str(tmp_path / "bad"), threads=1, epochs=1,
                                  stage1=str(tiny_model_folder(tmp_path / "m2")), val_fraction=0.34,
                                  patch_size=32, net=cfg.net), progress=False)
    rc = main(["-q", "train", "--stage", "levels", "--stage1", str(stage1), "--data", str(tmp_path / "data"),
               "--out", str(tmp_path / "cli"), "--epochs", "1", "--threads", "1", "--val-fraction", "0.34",
               "--max-images", "4", "--no-progress"])
    assert rc == 0 and "identity_ok" in json.loads(capsys.readouterr().out)
