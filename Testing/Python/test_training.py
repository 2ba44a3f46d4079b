"""Training pieces: keypoint transforms, patient split, losses, and a one-iteration run with resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from scipy import ndimage

from SpineAlignmentLib.models.landmarks import flip_permutation, protocol_landmark_ids
from SpineAlignmentLib.models.network import SpineLandmarkNet
from SpineAlignmentLib.training.dataset import patient_id, patient_split
from SpineAlignmentLib.training.losses import DsntLoss, wing_loss
from SpineAlignmentLib.training.transforms import RandAffineKeypointsd, affine_matrix, apply_to_points, warp_image

IDS = protocol_landmark_ids("coronal-spine")


# ---------------------------------------------------------------- keypoint transforms

def _dots(shape, points):
    """One image per point with a 3x3 bright square on it (so bilinear warps keep a clear blob)."""
    imgs = np.zeros((len(points),) + shape, np.float32)
    for k, (x, y) in enumerate(points):
        imgs[k, int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 1.0
    return imgs


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_affine_moves_dots_with_keypoints(seed):
    shape = (128, 64)
    pts = np.array([[20.0, 30.0], [44.0, 30.0], [20.0, 90.0], [44.0, 96.0]])
    t = RandAffineKeypointsd("image", "points", flip_permutation=[0, 1, 2, 3], prob=1.0, rotate_deg=15.0,
                             scale_range=(0.8, 1.2), flip_prob=0.0)
    t.set_random_state(seed)
    d = t({"image": _dots(shape, pts), "points": pts})
    assert not np.allclose(d["points"], pts)  # it did move them
    for k in range(len(pts)):
        com = np.array(ndimage.center_of_mass(d["image"][k]))[::-1]  # (x, y)
        np.testing.assert_allclose(com, d["points"][k], atol=0.35)
    assert d["valid"].all()


def test_flip_swaps_left_right_corners():
    shape = (128, 64)
    pts = np.array([[20.0, 30.0], [44.0, 32.0], [21.0, 50.0], [45.0, 52.0]])  # TL, TR, BL, BR
    t = RandAffineKeypointsd("image", "points", flip_permutation=flip_permutation(IDS[:4]), prob=0.0, flip_prob=1.0)
    d = t({"image": _dots(shape, pts), "points": pts})
    # mirrored: the old TR (x=44) becomes the new TL at x = 63 - 44 = 19, and so on
    np.testing.assert_allclose(d["points"], [[19.0, 32.0], [43.0, 30.0], [18.0, 52.0], [42.0, 50.0]])
    assert d["points"][0, 0] < d["points"][1, 0] and d["points"][2, 0] < d["points"][3, 0]
    # the image channel of old point 1 (TR) now has its dot where the new TL is
    com = np.array(ndimage.center_of_mass(d["image"][1]))[::-1]
    np.testing.assert_allclose(com, d["points"][0], atol=1e-6)


def test_affine_matrix_hand_worked():
    # 90 deg counter-clockwise about the centre of a 5x5 image: (4, 2) (right middle) -> (2, 0) (top middle)
    m = affine_matrix((5, 5), angle_deg=90.0)
    np.testing.assert_allclose(apply_to_points(m, [[4.0, 2.0]]), [[2.0, 0.0]], atol=1e-12)
    img = np.zeros((1, 5, 5), np.float32)
    img[0, 2, 4] = 1.0
    out = warp_image(img, m)
    assert out[0, 0, 2] == pytest.approx(1.0)


def test_flip_permutation_is_an_involution():
    perm = flip_permutation(IDS)
    assert perm[:4] == [1, 0, 3, 2]
    assert [perm[p] for p in perm] == list(range(len(IDS)))


# ---------------------------------------------------------------- patient split

def test_patient_id():
    assert patient_id("sunhl-1th-02-Jan-2017-162 A AP.jpg") == "162"
    assert patient_id("sunhl-1th-22-Nov-2016-142 A AP (2).jpg") == "142"
    assert patient_id("sunhl-1th-30-Dec-2016-159 A AP2.jpg") == "159"
    assert patient_id("sunhl-1th-20-Jul-2016-coronal12.jpg") == patient_id("sunhl-1th-20-Jul-2016-coronal3.jpg")


def test_patient_split_keeps_patients_together():
    names = [f"x-{p} {v} AP.jpg" for p in range(40) for v in "ABC"[: 1 + p % 3]] + [f"x-coronal{i}.jpg" for i in range(5)]
    train, val = patient_split(names, 0.25, seed=3)
    assert set(train) | set(val) == set(names) and not set(train) & set(val)
    assert not {patient_id(n) for n in train} & {patient_id(n) for n in val}
    assert 0.2 * len(names) <= len(val) <= 0.35 * len(names)
    assert all("coronal" not in n for n in val)  # unknown-patient group stays in training
    assert patient_split(names, 0.25, seed=3) == (train, val)  # fixed seed, same split


def test_a_validation_list_splits_every_trainer_the_same_way(tmp_path):
    """--val-list: one line a name, a run's split.json or a model folder's metadata.json give the same split; a
    list naming none of the films is one sentence."""
    from SpineAlignmentLib.errors import SpineAlignmentError
    from SpineAlignmentLib.training.dataset import split_names

    names = [f"x-{p} {v} AP.jpg" for p in range(6) for v in "AB"]
    val = ["x-2 A AP.jpg", "x-2 B AP.jpg", "x-5 A AP.jpg"]
    (tmp_path / "v.txt").write_text("\n".join(val + ["not-in-the-dataset.jpg"]) + "\n")
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": val}))
    (tmp_path / "metadata.json").write_text(json.dumps({"training": {"split": {"val_images": val}}}))
    for f in ("v.txt", "split.json", "metadata.json"):
        train, v = split_names(names, 0.2, 0, str(tmp_path / f))
        assert v == sorted(val) and train == sorted(set(names) - set(val)), f
    assert split_names(names, 0.25, 3) == patient_split(names, 0.25, 3)  # no list: the patient split
    (tmp_path / "none.txt").write_text("other.jpg\n")
    with pytest.raises(SpineAlignmentError, match=r"None of the images named in .*none.txt is in DATA; check --val-list"):
        split_names(names, 0.2, 0, str(tmp_path / "none.txt"), "DATA")


def test_a_run_refuses_to_validate_on_films_its_starting_weights_trained_on(tmp_path):
    """--stage1 and --init-from: the validation films must be among the earlier weights' own validation films (read
    from a model folder's metadata.json, or the split.json beside a run's checkpoint)."""
    from test_models import tiny_model_folder

    from SpineAlignmentLib.errors import SpineAlignmentError
    from SpineAlignmentLib.training.dataset import check_validation_unseen

    folder = tiny_model_folder(tmp_path)  # its validation films: a.jpg
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    (run / "split.json").write_text(json.dumps({"train": ["b.jpg", "c.jpg"], "val": ["a.jpg"]}))
    names = ["a.jpg", "b.jpg", "c.jpg"]
    for source in (str(folder), str(folder / "model.pt"), str(run / "last.pt")):
        check_validation_unseen(source, names, ["a.jpg"], "the first stage")  # the same films: fine
        with pytest.raises(SpineAlignmentError, match=r"^1 of this run's 2 validation films \(b.jpg, ...\) are training "
                                                      r"films of the first stage .*; validate on its validation films: "
                                                      r"--val-list .*(metadata|split).json\.$"):
            check_validation_unseen(source, names, ["a.jpg", "b.jpg"], "the first stage")
        check_validation_unseen(source, ["d.jpg", "e.jpg"], ["e.jpg"], "the first stage")  # another dataset


# ---------------------------------------------------------------- losses

def test_wing_loss_values():
    e = torch.tensor([0.0, 2.0, 10.0, 20.0])
    w = wing_loss(e, w=10.0, eps=2.0)
    c = 10 - 10 * np.log(1 + 5)
    np.testing.assert_allclose(w.numpy(), [0.0, 10 * np.log(2), 10 * np.log(6), 20 - c], rtol=1e-6)


def test_dsnt_loss_prefers_the_right_heatmap():
    loss = DsntLoss(stride=2, sigma=1.5)
    target = torch.tensor([[[30.5, 20.5]]])
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    good = -((xx * 2 + 0.5 - 30.5) ** 2 + (yy * 2 + 0.5 - 20.5) ** 2) / 18.0
    bad = -((xx * 2 + 0.5 - 40.5) ** 2 + (yy * 2 + 0.5 - 20.5) ** 2) / 18.0
    valid = torch.ones(1, 1, dtype=torch.bool)
    lg, pg = loss(good[None, None], target, valid)
    lb, pb = loss(bad[None, None], target, valid)
    assert pg["err_px"] < 0.05 and pb["err_px"] == pytest.approx(10.0, abs=0.05)
    assert float(lg) < float(lb)
    # a point outside the image (valid False) contributes nothing
    l0, _ = loss(bad[None, None], target, torch.zeros(1, 1, dtype=torch.bool))
    assert float(l0) == 0.0


# ---------------------------------------------------------------- a tiny end-to-end run

def _synthetic_dataset(root, n=6):
    from test_hygiene import coronal_spine

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    from SpineAlignmentLib.geometry.aasce import aasce_triple

    rng = np.random.default_rng(0)
    names, angles = [], []
    for i in range(n):
        name = f"synth-{100 + i // 2} {'AB'[i % 2]} AP.jpg"
        pts = coronal_spine(curve_deg=rng.uniform(0, 30)) * 0.5 + rng.uniform(-5, 5, 2)
        img = np.full((700, 320), 30, np.uint8)
        for v in pts.reshape(17, 4, 2):
            x0, y0 = v.min(0).astype(int)
            x1, y1 = v.max(0).astype(int)
            img[y0:y1, x0:x1] = 200
        Image.fromarray(img).save(root / "images" / name, quality=95)
        scipy.io.savemat(root / "labels" / (name + ".mat"), {"p2": pts})
        names.append(name)
        angles.append(aasce_triple(pts, img.shape[0]).angles)
    # The dataset's reference triple, as its authors wrote it: labels/filenames.csv and labels/angles.csv.
    (root / "labels" / "filenames.csv").write_text("".join(f"{n}\n" for n in names))
    (root / "labels" / "angles.csv").write_text("".join(",".join(f"{v:.6f}" for v in a) + "\n" for a in angles))
    return names


def test_one_iteration_training_and_resume(tmp_path):
    from SpineAlignmentLib.training.trainer import TrainConfig, train

    _synthetic_dataset(tmp_path / "data")
    out = tmp_path / "run"
    cfg = TrainConfig(data=str(tmp_path / "data"), out=str(out), input_shape=(128, 64), epochs=1, batch_size=4,
                      val_fraction=0.34, threads=1, warmup_epochs=0,
                      net={"stem_channels": [4, 8], "channels": [8, 8, 16], "num_res_units": 1})
    best = train(cfg, progress=False)
    assert np.isfinite(best["mean_error_px"])
    for f in ("config.json", "split.json", "hygiene.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert (out / f).is_file(), f
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train_patients"]) & set(split["val_patients"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert {"val_mean_error_px", "val_mean_error_pct_width", "val_smape_pct", "val_cmae_deg"} <= set(rows[0])
    before = torch.load(out / "last.pt", weights_only=False)["model"]
    cfg.epochs = 2
    train(cfg, resume=True, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    after = torch.load(out / "last.pt", weights_only=False)
    assert after["epoch"] == 1
    assert any(not torch.equal(before[k], after["model"][k]) for k in before)
    # fine-tuning from these weights on a split that validates on their training films is refused before any epoch
    from SpineAlignmentLib.errors import SpineAlignmentError

    with pytest.raises(SpineAlignmentError, match=r"are training films of the weights of --init-from .*split.json"):
        train(TrainConfig(data=cfg.data, out=str(tmp_path / "ft"), input_shape=(128, 64), epochs=1, val_fraction=0.67,
                          threads=1, init_from=str(out / "last.pt"), net=cfg.net), progress=False)
    assert not (tmp_path / "ft" / "metrics.jsonl").exists()


def test_vertebra_loss_is_lower_for_the_right_output():
    from test_hygiene import coronal_spine
    from test_inference import _vertebra_output

    from SpineAlignmentLib.models.vertebra import VertebraLoss

    pts = torch.tensor(coronal_spine(20.0) * 0.35, dtype=torch.float32)[None]
    good = _vertebra_output(pts, 256, 128, 2)
    shifted = _vertebra_output(pts + torch.tensor([6.0, 0.0]), 256, 128, 2)
    loss = VertebraLoss(stride=2)
    valid = torch.ones(1, 68, dtype=torch.bool)
    lg, pg = loss(good, pts, valid)
    ls, ps = loss(shifted, pts, valid)
    assert float(lg) < float(ls)
    # (offsets are supervised on 3x3 pixels; this "ideal" output only fills the centre pixel)
    assert pg["err_px"] < 1e-4 and ps["err_px"] > 5.0
    assert torch.isfinite(lg)


def test_train_command_line(tmp_path, capsys):
    from SpineAlignmentLib.cli import main

    _synthetic_dataset(tmp_path / "data")
    (tmp_path / "val.txt").write_text("synth-101 A AP.jpg\nsynth-101 B AP.jpg\n")  # the vertebra network takes a list too
    rc = main(["-q", "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--epochs", "1",
               "--input-size", "128", "64", "--batch-size", "4", "--threads", "1", "--val-list", str(tmp_path / "val.txt"),
               "--no-progress"])
    assert rc == 0
    best = json.loads(capsys.readouterr().out)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["val"] == ["synth-101 A AP.jpg", "synth-101 B AP.jpg"] and len(split["train"]) == 4
    assert best["epoch"] == 1 and best["n_images"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["input_shape"] == [128, 64]
    assert main(["-q", "train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")]) == 2
    # the one export command picks the coronal vertebra exporter from the run folder (its last checkpoint)
    models = tmp_path / "models"
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(models / "my-coronal"), "--no-progress"]) == 0
    shown = json.loads(capsys.readouterr().out)
    md = json.loads((models / "my-coronal" / "metadata.json").read_text())
    assert shown["model"] == md["name"] == "my-coronal" and md["decoding"]["method"] == "vertebra-centres"
    # a film on which the one-epoch network misses a vertebra is named, not measured (it used to stop the export)
    short = md["validation"].get("films_not_all_found", [])
    assert md["validation"]["n_images"] + len(short) == len(split["val"]) and set(short) <= set(split["val"])
    assert "last.pt" in md["training"]["recipe"]["checkpoint"]
    # licences are recorded by the own-data landmark card only: one sentence, exit 2
    assert main(["export", "--run", str(tmp_path / "run"), "--out", str(models / "x"), "--license-data", "CC0"]) == 2
    assert "drop --license-weights/--license-data" in capsys.readouterr().err


def test_refiner_training_resume_and_command_line(tmp_path, capsys):
    """Second stage: one epoch, end-to-end validation on the first stage's predictions, resume, CLI."""
    from test_models import tiny_model_folder

    from SpineAlignmentLib.cli import main
    from SpineAlignmentLib.training.refiner import RefinerConfig, train_refiner

    _synthetic_dataset(tmp_path / "data")
    stage1 = tiny_model_folder(tmp_path / "models")
    out = tmp_path / "refine"
    tiny_net = {"stem_channels": [4, 8], "channels": [8, 8, 16], "num_res_units": 1, "features": 8}
    cfg = RefinerConfig(data=str(tmp_path / "data"), out=str(out), stage1=str(stage1), patch_size=32, epochs=1,
                        images_per_batch=2, val_fraction=0.34, threads=1, warmup_epochs=0, net=tiny_net)
    last = train_refiner(cfg, progress=False)
    split = json.loads((out / "split.json").read_text())
    assert last["n_images"] == len(split["val"]) > 0 and np.isfinite(last["mean_error_px"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    assert {"val_smape_pct", "val_cmae_deg", "val_coarse_mean_error_px", "train_err_px"} <= set(rows[0])
    # the first stage's validation predictions are cached and reused
    assert set(np.load(out / "stage1_val.npz").files) == set(split["val"])
    before = torch.load(out / "last.pt", weights_only=False)["model"]
    cfg.epochs = 2
    train_refiner(cfg, resume=True, progress=False)
    after = torch.load(out / "last.pt", weights_only=False)
    assert after["epoch"] == 1 and any(not torch.equal(before[k], after["model"][k]) for k in before)
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    # the command line trains the same stage (default network size; one image only to keep it quick)
    rc = main(["-q", "train", "--stage", "refine", "--stage1", str(stage1), "--data", str(tmp_path / "data"),
               "--out", str(tmp_path / "cli"), "--epochs", "1", "--threads", "1", "--val-fraction", "0.34",
               "--max-images", "4", "--no-progress"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["n_images"] > 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["stage1"] == str(stage1)


def test_init_from_adds_head_channels_as_quiet_copies_of_the_centre_map(tmp_path):
    from SpineAlignmentLib.training.trainer import NEW_CHANNEL_BIAS_SHIFT, init_weights_from

    args = {"stem_channels": [4, 8], "channels": [8, 8, 16], "num_res_units": 1, "features": 8}
    torch.manual_seed(0)
    old = SpineLandmarkNet(out_channels=15, **args)
    torch.save({"model": old.state_dict(), "epoch": 3}, tmp_path / "run.pt")  # a run checkpoint
    torch.save({k: v.half() for k, v in old.state_dict().items()}, tmp_path / "model.pt")  # a packaged model
    for src in ("run.pt", "model.pt"):
        torch.manual_seed(1)
        new = SpineLandmarkNet(out_channels=17, **args)
        partial = init_weights_from(new, tmp_path / src)
        assert partial == ["head.weight", "head.bias"]
        tol = 0 if src == "run.pt" else 1e-3
        o, n = old.state_dict(), new.state_dict()
        for k in o:
            if not k.startswith("head."):
                torch.testing.assert_close(n[k], o[k].float(), atol=tol, rtol=tol)
        torch.testing.assert_close(n["head.weight"][:, :15], o["head.weight"], atol=tol, rtol=tol)
        for c in (15, 16):
            torch.testing.assert_close(n["head.weight"][:, c], o["head.weight"][:, 0], atol=tol, rtol=tol)
            torch.testing.assert_close(n["head.bias"][c], o["head.bias"][0] - NEW_CHANNEL_BIAS_SHIFT, atol=tol, rtol=tol)


def test_midline_tilt_term_hand_worked():
    """The refiner's optional tilt term: a vertebra rotated by 10 degrees about its centre has a
    mid-line angle error of 10 degrees; a shifted one has none; the term enters the loss with its weight."""
    from SpineAlignmentLib.training.losses import _midline_angle_error_deg

    q = torch.tensor([[[40.0, 50.0], [80.0, 50.0], [40.0, 70.0], [80.0, 70.0]]])  # TL, TR, BL, BR
    c = q.mean(1, keepdim=True)
    t = np.radians(10.0)
    rot = torch.tensor([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], dtype=torch.float32)
    turned = (q - c) @ rot.T + c
    assert float(_midline_angle_error_deg(turned, q)[0]) == pytest.approx(10.0, abs=1e-4)
    assert float(_midline_angle_error_deg(q + 7.0, q)[0]) == pytest.approx(0.0, abs=1e-4)
    assert float(_midline_angle_error_deg(-(q - c) + c, q)[0]) == pytest.approx(180.0, abs=1e-4)  # upside down
    logits = torch.randn(1, 4, 32, 32)
    valid = torch.ones(1, 4, dtype=torch.bool)
    plain_loss, plain = DsntLoss(2, tilt_weight=0.0)(logits, q, valid)
    tilt_loss, parts = DsntLoss(2, tilt_weight=0.5)(logits, q, valid)
    assert "tilt_deg" not in plain and parts["tilt_deg"] >= 0
    assert float(tilt_loss) == pytest.approx(float(plain_loss) + 0.5 * parts["tilt_deg"], rel=1e-5)


def _coronal_points(thetas):
    from spines import coronal_spine

    pts = coronal_spine(thetas)
    return np.array([pts[i] for i in IDS])


S_CURVE = [0, 3, 7, 11, 14, 12, 7, 2, -3, -8, -12, -15, -13, -9, -5, -2, 0]


def test_midline_tilt_metric_hand_worked():
    """One vertebra of a synthetic S spine drawn 10 degrees more tilted (image-right end higher, so its
    mid-line angle in image axes, y down, is 10 degrees lower) gives -10 there and 0 elsewhere;
    the per-image figure is its mean absolute value over the 17 vertebrae."""
    from SpineAlignmentLib.geometry.aasce import aasce_triple
    from SpineAlignmentLib.training.metrics import landmark_metrics, midline_tilt_errors, rotate_vertebrae, vertebra_widths

    truth = _coronal_points(S_CURVE)
    turned = list(S_CURVE)
    turned[5] += 10
    pred = _coronal_points(turned)
    err = midline_tilt_errors(pred, truth)
    assert err[5] == pytest.approx(-10.0, abs=1e-9)
    np.testing.assert_allclose(np.delete(err, 5), 0.0, atol=1e-9)
    turns = np.linspace(-20.0, 20.0, 17)
    rotated = rotate_vertebrae(truth, turns)  # about each centroid: same centres, same edge lengths
    np.testing.assert_allclose(midline_tilt_errors(rotated, truth), turns, atol=1e-9)
    np.testing.assert_allclose(rotated.reshape(-1, 4, 2).mean(1), truth.reshape(-1, 4, 2).mean(1), atol=1e-9)
    np.testing.assert_allclose(vertebra_widths(rotated), vertebra_widths(truth), atol=1e-9)
    mirrored = truth.reshape(-1, 4, 2)[:, [1, 0, 3, 2]].reshape(-1, 2)  # left and right corners swapped
    np.testing.assert_allclose(np.abs(midline_tilt_errors(mirrored, truth)), 180.0, atol=1e-9)
    ref = np.array(aasce_triple(truth, 1200.0).angles)
    m = landmark_metrics([pred, truth], [truth, truth], [1200.0, 1200.0], [ref, ref])
    assert m["midline_tilt_mae_deg"] == pytest.approx(10.0 / 34.0, abs=1e-9)
    assert landmark_metrics([truth], [truth], [1200.0], [ref])["midline_tilt_mae_deg"] == 0.0


def test_triple_sensitivity_measures_the_chance_part_of_smape():
    """With no turn the SMAPE is that of the predictions (0 for the reference's own corners, every repeat);
    small random turns make it positive and spread, reproducibly for a seed, more for larger turns."""
    from SpineAlignmentLib.geometry.aasce import aasce_triple
    from SpineAlignmentLib.training.metrics import landmark_metrics, triple_sensitivity

    spines = [_coronal_points(S_CURVE), _coronal_points([0.6 * t for t in S_CURVE]), _coronal_points(S_CURVE[::-1])]
    heights = [1200.0] * 3
    refs = [np.array(aasce_triple(p, h).angles) for p, h in zip(spines, heights)]
    still = triple_sensitivity(spines, heights, refs, tilt_sd_deg=0.0, repeats=3)
    assert still["smape_pct_mean"] == still["smape_pct_max"] == 0.0 and still["smape_pct_sd"] == 0.0
    end_turned = [t - (2 if k == 5 else 0) for k, t in enumerate(S_CURVE[::-1])]  # an end vertebra 2 deg more tilted
    off = [spines[0], spines[1], _coronal_points(end_turned)]
    base = landmark_metrics(off, spines, heights, refs)["smape_pct"]
    assert base > 0 and triple_sensitivity(off, heights, refs, tilt_sd_deg=0.0, repeats=2)["smape_pct_mean"] == \
        pytest.approx(base, abs=1e-9)
    small = triple_sensitivity(spines, heights, refs, tilt_sd_deg=0.25, repeats=12, seed=3)
    assert small == triple_sensitivity(spines, heights, refs, tilt_sd_deg=0.25, repeats=12, seed=3)
    assert 0.0 < small["smape_pct_min"] <= small["smape_pct_mean"] <= small["smape_pct_max"] < 5.0
    assert small["smape_pct_sd"] > 0.0 and small["repeats"] == 12
    large = triple_sensitivity(spines, heights, refs, tilt_sd_deg=2.0, repeats=12, seed=3)
    assert large["smape_pct_mean"] > small["smape_pct_mean"]


def test_export_of_a_two_stage_run_measures_its_pass_selection(tmp_path):
    """Export end to end: the metadata validates and loads, the texts follow the run's input size, and the
    refinement pass count carries the figures of its alternatives, measured by the export itself."""
    from test_models import tiny_model_folder

    from SpineAlignmentLib.training.export import export
    from SpineAlignmentLib.training.refiner import RefinerConfig, train_refiner
    from SpineAlignmentLib.training.trainer import TrainConfig, train

    _synthetic_dataset(tmp_path / "data")
    tiny_net = {"stem_channels": [4, 8], "channels": [8, 8, 16], "num_res_units": 1, "features": 8}
    train(TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "s1"), input_shape=(128, 64), epochs=1,
                      batch_size=4, val_fraction=0.34, threads=1, warmup_epochs=0, net=tiny_net), progress=False)
    train_refiner(RefinerConfig(data=str(tmp_path / "data"), out=str(tmp_path / "ref"),
                                stage1=str(tiny_model_folder(tmp_path / "models")), patch_size=32, epochs=1,
                                images_per_batch=2, val_fraction=0.34, threads=1, warmup_epochs=0, net=tiny_net),
                  progress=False)
    out = tmp_path / "export" / "tiny-two-stage"
    md = export(tmp_path / "s1", tmp_path / "data", out, name="tiny-two-stage", version="0.1.0", checkpoint="last.pt",
                refiner_run=tmp_path / "ref", change="test export")
    assert "input 128x64" in md["description"] and "whole image at 128x64" in md["network"]["coarse_to_fine"]
    sel = md["refinement"]["training"]["selection"]
    assert sel.startswith(f"The number of passes was chosen on the validation split ({md['validation']['n_images']} images")
    assert "first stage alone SMAPE" in sel and "1 pass (exported)" in sel and "2 passes SMAPE" in sel
    assert md["refinement"]["iterations"] == 1  # the alternative was measured, not kept
    mean_px = [float(x) for x in __import__("re").findall(r"mean error ([0-9.]+) px", sel)]
    assert len(mean_px) == 3 and mean_px[1] == pytest.approx(md["validation"]["mean_error_px"], abs=0.05)
    assert "mid-line tilt MAE" in sel
    v = md["validation"]
    assert 0.0 <= v["midline_tilt_mae_deg"] <= 180.0 and 0.0 <= v["flip_tta"]["midline_tilt_mae_deg"] <= 180.0
    sens = v["smape_sensitivity"]  # the synthetic dataset carries angles.csv, so the sensitivity is measured
    assert sens["repeats"] == 20 and sens["smape_pct_min"] <= sens["smape_pct_mean"] <= sens["smape_pct_max"]
    card = (out / "README.md").read_text()
    assert sel in card and f"gives {sens['smape_pct_mean']:.2f} +- {sens['smape_pct_sd']:.2f} %" in card
    # Naming figures and the level confidence, measured by the export (fitted on the training split only).
    ident = v["identification"]
    assert ident["n_images"] == v["n_images"] and sum(ident["shift_counts"].values()) == v["n_images"]
    assert v["end_vertebrae"]["n_curves"] >= 0
    lv = md["levels"]
    n_train = md["training"]["split"]["n_train"]
    assert lv["fitted_on"].startswith(f"{n_train} training-split images as they are, 3 re-framed copies")
    assert lv["training"]["n_images"] == 5 * n_train and 0.0 <= lv["warn_below"] <= 1.0  # as is, 3 re-framed, 1 neck
    assert lv["validation"]["original"]["n_images"] == v["n_images"]
    assert lv["validation"]["reframed"]["n_images"] == 3 * v["n_images"]
    assert set(lv["validation"]["partial"]) == {"thoracic-only", "lumbar-only"}
    assert "## Vertebra levels" in card and lv["command"] in card
    from SpineAlignmentLib.models.registry import load_model

    m = load_model("tiny-two-stage", folder=out)
    assert m.input_shape == (128, 64) and m.refiner is not None and m.metadata["changelog"]["0.1.0"] == "test export"

    # Speed figures recorded for exactly these weights survive a re-export; figures of other weights do not.
    from SpineAlignmentLib.models.registry import weights_checksums

    def reexport_with(bench):
        meta = json.loads((out / "metadata.json").read_text())
        (out / "metadata.json").write_text(json.dumps({**meta, "benchmark": bench}))
        return export(tmp_path / "s1", tmp_path / "data", out, name="tiny-two-stage", version="0.1.0",
                      checkpoint="last.pt", refiner_run=tmp_path / "ref")

    same = {"weights_sha256": weights_checksums(md), "summary": "measured on these weights"}
    assert reexport_with(same).get("benchmark") == same
    assert "measured on these weights" in (out / "README.md").read_text()
    other = {"weights_sha256": {**weights_checksums(md), "refine.pt": "0" * 64}, "summary": "other weights"}
    assert "benchmark" not in reexport_with(other)

    # The diagnosis script on the exported model: its end-to-end figures are the export's own.
    import diagnose_coronal

    assert diagnose_coronal.main(["--data", str(tmp_path / "data"), "--model", str(out), "--repeats", "2",
                                  "--threads", "1", "--json", str(tmp_path / "diag.json")]) == 0
    diag = json.loads((tmp_path / "diag.json").read_text())
    assert diag["n_images"] == v["n_images"]
    for k in ("smape_pct", "cmae_deg", "midline_tilt_mae_deg", "median_error_px"):
        assert diag["end_to_end"][k] == pytest.approx(v[k], abs=1e-9)
    assert diag["smape_sensitivity"] == sens
    assert [c["sd_deg"] for c in diag["tilt_noise_curve"]] == list(diagnose_coronal.NOISE_SD_DEG)
    assert diag["refiner_bounds"]["refined from the first stage (shipped)"] == diag["end_to_end"]
