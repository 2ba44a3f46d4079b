"""Shoulder model: clavicle masks -> keypoints (hand-worked), label-side handling, seg.nrrd, training, export, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from shoulders import clavicle_mask, synthetic_film, write_dataset
from SpineAlignmentLib.inference.clavicles import clavicle_keypoints
from SpineAlignmentLib.protocols import get_protocol

RIGHT_IS_LEFT = ((1.0, 0.0), (0.0, -1.0))  # u_left, u_sup of a film with the patient's left on the image right


# ------------------------------------------------------------------ keypoint rule (definitions.md §4.1)
def test_horizontal_bar_keypoints_hand_worked():
    # bar from x=100 to x=200 at y=50, half width 5: the mask spans x 95..205, y 45..55
    m = clavicle_mask((120, 300), (100, 50), (200, 50), 5.0)
    kp = clavicle_keypoints(m, "L", *RIGHT_IS_LEFT)
    # top: the row y=45 holds only the pixel x=100..200 span's centre column run -> centroid x=150
    assert kp.top == pytest.approx((150.0, 45.0), abs=0.01)
    # end caps: pixels within 3 % of the length (110 px -> 3.3 px) + 0.5 px of each extreme, centroid on the axis
    assert kp.lateral[1] == pytest.approx(50.0, abs=1e-6) and kp.medial[1] == pytest.approx(50.0, abs=1e-6)
    assert 201.5 < kp.lateral[0] < 204.5 and 95.5 < kp.medial[0] < 98.5
    assert kp.lateral[0] - 150 == pytest.approx(150 - kp.medial[0], abs=1e-6)  # symmetric bar
    assert kp.confidence == pytest.approx(1.0) and kp.component_share == 1.0


def test_side_decides_which_end_is_lateral():
    m = clavicle_mask((120, 300), (100, 50), (200, 50), 5.0)
    left = clavicle_keypoints(m, "L", *RIGHT_IS_LEFT)
    right = clavicle_keypoints(m, "R", *RIGHT_IS_LEFT)
    assert left.lateral == pytest.approx(right.medial) and left.medial == pytest.approx(right.lateral)


def test_tilted_bar_gives_its_tilt_and_mirror_gives_the_same_keypoints_mirrored():
    # patient-left clavicle (image right), lateral end 20 px higher over 100 px: tilt atan(20/100) = 11.31 deg
    m = clavicle_mask((140, 320), (150, 80), (250, 60), 6.0)
    kp = clavicle_keypoints(m, "L", *RIGHT_IS_LEFT)
    dx, dy = kp.lateral[0] - kp.medial[0], kp.medial[1] - kp.lateral[1]
    assert math.degrees(math.atan2(dy, dx)) == pytest.approx(math.degrees(math.atan2(20, 100)), abs=0.3)
    # the mirrored film (patient's left on the image left), the same clavicle: keypoints mirror exactly
    mm = m[:, ::-1]
    kpm = clavicle_keypoints(mm, "L", (-1.0, 0.0), (0.0, -1.0))
    w = m.shape[1] - 1
    for a, b in ((kp.top, kpm.top), (kp.medial, kpm.medial), (kp.lateral, kpm.lateral)):
        assert b[0] == pytest.approx(w - a[0], abs=1e-6) and b[1] == pytest.approx(a[1], abs=1e-6)


def test_anisotropic_pixels_are_handled_in_mm():
    # the same physical bar sampled at 0.5 mm rows x 0.25 mm columns: a 10 deg bar in mm is not 10 deg in pixels
    rows, cols = 200, 400
    yy, xx = np.mgrid[0:rows, 0:cols]
    xmm, ymm = xx * 0.25, yy * 0.5
    a = np.array([20.0, 60.0])
    d = np.array([math.cos(math.radians(10)), -math.sin(math.radians(10))])
    t = np.clip((xmm - a[0]) * d[0] + (ymm - a[1]) * d[1], 0, 60)
    m = np.hypot(xmm - (a[0] + t * d[0]), ymm - (a[1] + t * d[1])) <= 2.0
    kp = clavicle_keypoints(m, "L", *RIGHT_IS_LEFT, spacing=(0.5, 0.25))
    dx = (kp.lateral[0] - kp.medial[0]) * 0.25
    dy = (kp.medial[1] - kp.lateral[1]) * 0.5
    assert math.degrees(math.atan2(dy, dx)) == pytest.approx(10.0, abs=0.5)


def test_clavicle_cut_by_the_film_edge_is_named():
    m = clavicle_mask((120, 300), (150, 50), (320, 60), 6.0)  # the lateral end runs off the right edge
    kp = clavicle_keypoints(m, "L", *RIGHT_IS_LEFT)
    assert kp.cut_ends == ("lateral",)
    assert clavicle_keypoints(m, "R", *RIGHT_IS_LEFT).cut_ends == ("medial",)  # the same bar read as a right clavicle
    whole = clavicle_mask((120, 300), (150, 60), (250, 50), 6.0)
    assert clavicle_keypoints(whole, "L", *RIGHT_IS_LEFT).cut_ends == ()
    high = clavicle_mask((120, 300), (150, 3), (250, 3), 6.0)  # its top row is the film's first row
    assert "top" in clavicle_keypoints(high, "L", *RIGHT_IS_LEFT).cut_ends


def test_confidence_drops_for_blobs_and_split_masks():
    yy, xx = np.mgrid[0:100, 0:100]
    blob = np.hypot(xx - 50, yy - 50) < 15
    assert clavicle_keypoints(blob, "L", *RIGHT_IS_LEFT).confidence < 0.05
    bar = clavicle_mask((100, 300), (50, 50), (250, 50), 5.0)
    split = bar.copy()
    split[:, 140:160] = False  # two halves: the largest holds about half of the pixels
    kp = clavicle_keypoints(split, "L", *RIGHT_IS_LEFT)
    assert 0.4 < kp.component_share < 0.6 and kp.confidence < 0.6
    assert clavicle_keypoints(np.zeros((50, 50), bool), "L", *RIGHT_IS_LEFT) is None


# ------------------------------------------------------------------ sides and the label map
class _RightHalfIsLabel1:
    """A stand-in network: label 1 wherever the input's column is in its right half, label 0 elsewhere."""

    def __call__(self, x):
        import torch

        b, _, h, w = x.shape
        logits = torch.zeros(b, 3, h, w)
        logits[:, 1, :, w // 2:] = 10.0
        logits[:, 0, :, : w // 2] = 10.0
        return logits


def test_mirrored_film_is_segmented_mirrored_and_labels_swapped_back():
    from SpineAlignmentLib.inference.segment import label_map, segment_array

    segs = get_protocol("coronal-shoulder").segments
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    plain = label_map(segment_array(img, _RightHalfIsLabel1(), (64, 64), segs))
    assert (plain[:, 40:] == 1).all() and (plain[:, :20] == 0).all()
    mirrored = label_map(segment_array(img, _RightHalfIsLabel1(), (64, 64), segs, mirrored=True))
    # run on the mirrored film: its right half is the film's left half; labels swap 1 -> 2 on the way back
    assert (mirrored[:, :20] == 2).all() and (mirrored[:, 40:] == 0).all()


def test_segmentation_nrrd_round_trip_keeps_grid_and_names(tmp_path):
    from SpineAlignmentLib.io.masks import read_segmentation_nrrd, write_segmentation_nrrd

    segs = get_protocol("coronal-shoulder").segments
    lab = np.zeros((30, 50), np.uint8)
    lab[5:10, 30:45] = 1
    lab[6:12, 3:20] = 2
    m = np.array([[-0.3, 0.0, 0.0, 12.5], [0.0, -0.25, 0.0, -7.0], [0.0, 0.0, 1.0, 40.0], [0, 0, 0, 1]])
    path = write_segmentation_nrrd(tmp_path / "x.seg.nrrd", lab, segs, m)
    back, mm, names = read_segmentation_nrrd(path)
    assert (back == lab).all() and np.allclose(mm, m) and names == {1: "clavicle_L", 2: "clavicle_R"}
    header = path.read_bytes()[:2000].decode("latin-1")
    assert "Segment0_Name:=patient-left clavicle" in header and "Segment1_LabelValue:=2" in header


# ------------------------------------------------------------------ training, export and the CLI on synthetic films
@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A tiny segmentation run on synthetic films (a test tool, not a model)."""
    import torch

    from SpineAlignmentLib.training.segmentation import SegConfig, train_segmentation

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("shoulders")
    data = write_dataset(root / "data", 24, seed=3, size=128)
    # flips off: a flip moves the synthetic side cue (brightness) to the other label; the flip is tested apart
    cfg = SegConfig(data=str(data), out=str(root / "run"), input_shape=(128, 128), crop_rows=128, batch_size=4,
                    epochs=40, lr=1e-2, flip_prob=0.0, val_every=20, val_fraction=1 / 6, test_fraction=1 / 6,
                    spacing_mm=0.7, net={"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1})
    metrics = train_segmentation(cfg, progress=False)
    return root, data, cfg, metrics


def test_training_learns_the_synthetic_clavicles_and_logs_per_side_metrics(synthetic_run):
    root, _, _, metrics = synthetic_run
    rows = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 41))
    assert rows[-1]["train_loss"] < 0.2 * rows[0]["train_loss"]
    assert "val_iou_clavicle_L_mean" in rows[19] and "val_iou_clavicle_L_mean" not in rows[18]  # every 20 epochs
    for side in ("L", "R"):
        assert rows[-1][f"val_iou_clavicle_{side}_mean"] > 0.8  # an all-background guess scores 0
        assert f"val_dice_clavicle_{side}_mean" in rows[-1]
    assert "val_CA_mae" in rows[-1] and "val_kp_err_px_mean" in rows[-1]
    split = json.loads((root / "run" / "split.json").read_text())
    assert len(split["val"]) == 4 and len(split["test"]) == 4 and not set(split["val"]) & set(split["train"])


def test_resume_continues_from_the_checkpoint(synthetic_run):
    import torch

    from SpineAlignmentLib.training.segmentation import SegConfig, train_segmentation

    root, data, cfg, _ = synthetic_run
    state = torch.load(root / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 39 and "optimizer" in state and "rng" in state
    more = SegConfig(**{**state["config"], "epochs": 41})
    train_segmentation(more, resume=True, progress=False)
    rows = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 41 and rows[-2]["epoch"] == 40


def test_flip_augmentation_swaps_left_and_right_labels():
    from SpineAlignmentLib.training.segmentation import build_seg_transforms

    segs = get_protocol("coronal-shoulder").segments
    lab = np.zeros((1, 32, 32), np.float32)
    lab[0, 5:8, 20:30] = 1  # patient-left clavicle on the image right
    img = np.zeros((1, 32, 32), np.float32)
    flipped = 0
    for seed in range(8):
        tf = build_seg_transforms(segs, 32, 1.0, seed)
        tf.transforms = tf.transforms[:1]  # the flip only
        out = np.asarray(tf({"image": img, "label": lab})["label"])
        if out[0, 5:8, 2:12].max() > 0:
            flipped += 1
            assert set(np.unique(out)) == {0, 2}  # mirrored to the image left and renamed patient-right
        else:
            assert set(np.unique(out)) == {0, 1}
    assert 0 < flipped < 8


@pytest.fixture(scope="module")
def exported(synthetic_run, tmp_path_factory):
    from SpineAlignmentLib.cli import main as cli

    root, data, _, _ = synthetic_run
    models = tmp_path_factory.mktemp("models")
    # the one export command: the run folder says it needs the segmentation exporter
    assert cli(["export", "--run", str(root / "run"), "--data", str(data), "--out", str(models / "syn-clavicles"),
                "--version", "0.0.1", "--no-progress"]) == 0
    return models


def test_export_writes_a_valid_model_with_both_splits_measured(exported):
    from SpineAlignmentLib.models.registry import load_model, read_metadata

    md = read_metadata(exported / "syn-clavicles")
    assert md["decoding"]["method"] == "mask-keypoints" and md["landmarks"][0] == "Clav_top_L"
    assert md["validation"]["n_images"] == 4 and md["validation"]["test"]["n_images"] == 4
    assert "Cor_top_L" in md["not_detected"]["landmarks"]
    assert md["validation"]["metrics"]["iou_clavicle_L_mean"] > 0.8
    card = (exported / "syn-clavicles" / "README.md").read_text()
    assert "IoU patient-left clavicle" in card and "coracoid" in card
    model = load_model("syn-clavicles", folder=exported / "syn-clavicles")
    assert model.network.training is False


def test_analyze_cli_writes_masks_on_the_input_grid_and_measures(exported, tmp_path, monkeypatch):
    from PIL import Image

    from SpineAlignmentLib.cli import main
    from SpineAlignmentLib.io.masks import read_segmentation_nrrd
    from SpineAlignmentLib.slicerio.geometry import ijk_to_ras_for_file

    monkeypatch.setenv("SPINEALIGN_MODELS", str(exported))
    rng = np.random.default_rng(11)
    img, masks, _ = synthetic_film(rng, 128)
    film = tmp_path / "film.png"
    Image.fromarray(img).save(film)
    out = tmp_path / "out"
    rc = main(["analyze", "--protocol", "coronal-shoulder", "--model", "syn-clavicles", "--save-masks", "--markups",
               "--spacing", "0.7", "0.7", "--patient-orientation", "L,F", "--out", str(out), str(film)])
    assert rc == 0
    res = json.loads((out / "film.json").read_text())
    assert res["masks"]["file"] == "film.seg.nrrd" and res["masks"]["labels"] == {"1": "clavicle_L", "2": "clavicle_R"}
    labels, m, _ = read_segmentation_nrrd(out / "film.seg.nrrd")
    assert labels.shape == img.shape and np.allclose(m, ijk_to_ras_for_file(film))
    for side, value in (("L", 1), ("R", 2)):
        inter = np.logical_and(labels == value, masks[side]).sum()
        assert inter / np.logical_or(labels == value, masks[side]).sum() > 0.7
    assert {"CA", "CTAD", "RSH_bony"} <= set(res["parameters"])
    assert "CHD" in res["omitted"] and res["parameters"]["RSH_bony"]["unit"] == "mm"
    assert res["parameters"]["RSH_bony"]["calibration"] == "manual:user"
    assert (out / "film_overlay.png").is_file() and (out / "film.mrk.json").is_file()


def test_hidden_clavicle_leaves_the_other_side_and_omits_both_side_parameters(exported, monkeypatch):
    from SpineAlignmentLib.imaging.radiograph import Radiograph
    from SpineAlignmentLib.pipeline import analyze

    monkeypatch.setenv("SPINEALIGN_MODELS", str(exported))
    img, _, _ = synthetic_film(np.random.default_rng(5), 128, drop="L")
    rg = Radiograph(pixels=img.astype(np.float32), raw=img, spacing_mm=(0.7, 0.7), calibration="manual:user",
                    patient_orientation=("L", "F"))
    res = analyze(rg, "coronal-shoulder", model="syn-clavicles")
    assert "Clav_top_R" in res.landmarks and "Clav_top_L" not in res.landmarks
    assert not {"CA", "CTAD", "RSH_bony"} & set(res.parameters)
    assert "Clav_top_L" in res.omitted["CA"]
    assert any(w.startswith("No patient-left clavicle found") for w in res.warnings)


def test_blank_film_gives_no_values_and_unknown_orientation_warns(exported, monkeypatch):
    from SpineAlignmentLib.imaging.radiograph import Radiograph
    from SpineAlignmentLib.pipeline import analyze

    monkeypatch.setenv("SPINEALIGN_MODELS", str(exported))
    rg = Radiograph(pixels=np.full((128, 128), 7.0, np.float32), raw=np.full((128, 128), 7.0), spacing_mm=None, calibration="pixels-only",
                    patient_orientation=None)
    res = analyze(rg, "coronal-shoulder", model="syn-clavicles")
    assert not res.parameters
    assert any("blank" in w for w in res.warnings)
    assert any("Patient Orientation is unknown" in w for w in res.warnings)


def test_segmentation_node_in_mrml_keeps_labels_names_and_grid(exported, monkeypatch):
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package has no MRML classes (install slicer-core)")
    from SpineAlignmentLib.imaging.radiograph import Radiograph
    from SpineAlignmentLib.pipeline import analyze
    from SpineAlignmentLib.slicerio.mrml import create_analysis, make_volume_node, segmentation_to_labels

    monkeypatch.setenv("SPINEALIGN_MODELS", str(exported))
    img, _, _ = synthetic_film(np.random.default_rng(9), 128)
    rg = Radiograph(pixels=img.astype(np.float32), raw=img, spacing_mm=(0.7, 0.7), calibration="manual:user",
                    patient_orientation=("L", "F"))
    res = analyze(rg, "coronal-shoulder", model="syn-clavicles")
    scene = slicer.vtkMRMLScene()
    m = np.array([[-0.7, 0, 0, 30.0], [0, -0.7, 0, 12.0], [0, 0, 1.0, -4.0], [0, 0, 0, 1]])
    vol = make_volume_node(scene, img.astype(np.float32), m, "film")
    analysis = create_analysis(scene, vol, res)
    node = analysis.segmentation_node
    seg = node.GetSegmentation()
    names = sorted(seg.GetSegment(seg.GetNthSegmentID(i)).GetName() for i in range(seg.GetNumberOfSegments()))
    assert names == ["patient-left clavicle", "patient-right clavicle"]
    assert (segmentation_to_labels(node, vol) == res.segmentation.array).all()


def test_dicom_film_gets_a_seg_of_its_masks_beside_the_sr(exported, tmp_path, monkeypatch):
    from test_imaging import write_dicom

    from SpineAlignmentLib.cli import main
    from SpineAlignmentLib.io.dicom_seg import read_segmentation

    monkeypatch.setenv("SPINEALIGN_MODELS", str(exported))
    img, _, _ = synthetic_film(np.random.default_rng(21), 128)
    film = write_dicom(tmp_path / "film.dcm", img.astype(np.uint16) * 16, ImagerPixelSpacing=[0.7, 0.7],
                       PatientOrientation=["L", "F"])
    out = tmp_path / "out"
    assert main(["analyze", "--protocol", "coronal-shoulder", "--model", "syn-clavicles", "--dicom-sr",
                 "--save-masks", "--out", str(out), str(film)]) == 0
    res = json.loads((out / "film.json").read_text())
    assert res["masks"]["dicom_seg"] == "film_seg.dcm" and res["masks"]["file"] == "film.seg.nrrd"
    labels, segments = read_segmentation(out / "film_seg.dcm")
    from SpineAlignmentLib.io.masks import read_segmentation_nrrd

    nrrd_labels, _, _ = read_segmentation_nrrd(out / "film.seg.nrrd")
    assert (labels == nrrd_labels).all() and {s["label"] for s in segments} <= {1, 2}
    assert (out / "film_sr.dcm").is_file()


# ------------------------------------------------------------------ the shipped model
SHIPPED = "coronal-shoulder-clavicles"


@pytest.fixture(scope="module")
def shipped():
    from SpineAlignmentLib.models.registry import load_model, models_dir

    if not (models_dir() / SHIPPED).is_dir():
        pytest.skip(f"{SHIPPED} is not installed in {models_dir()}")
    return load_model(SHIPPED)


def test_shipped_model_card_and_metadata_say_what_it_measured(shipped):
    md = shipped.metadata
    assert md["weights"]["size_bytes"] < 25e6 and md["weights"]["dtype"] == "float16"
    val, test = md["validation"]["metrics"], md["validation"]["test"]["metrics"]
    assert val["n_images"] == md["training"]["split"]["n_val"] and test["n_images"] == md["training"]["split"]["n_test"]
    assert not set(md["training"]["split"]["val_images"]) & set(md["training"]["split"]["test_images"])
    assert "research use only" in md["license"]["training_data"]
    card = (shipped.folder / "README.md").read_text()
    assert f"{val['iou_clavicle_L_mean']:.3f}" in card and f"{test['CTAD_mae']:.2f}" in card
    assert "coracoid" in card and "Cor_top_L" in md["not_detected"]["landmarks"]


def test_shipped_model_on_an_ap_spine_film_leaves_out_what_the_film_cuts_off(shipped):
    from SpineAlignmentLib.imaging import read_radiograph
    from SpineAlignmentLib.pipeline import analyze
    from conftest import REPO

    # the bundled AP spine sample shows both clavicles, their lateral ends cut by the film's top corners
    rg = read_radiograph(REPO / "Resources" / "SampleData" / "aasce-sample-AP.jpg")
    res = analyze(rg, "coronal-shoulder", model=shipped)
    # the lateral ends are where the film stops (or the mask is unsure there): no shoulder height from them
    assert "RSH_bony" not in res.parameters and "not trusted" in res.omitted["RSH_bony"]
    assert any("reaches the film's edge" in w or "is uncertain" in w for w in res.warnings)
    assert any("Patient Orientation is unknown" in w for w in res.warnings)


def test_shipped_model_on_a_held_out_jsrt_film(shipped):
    from conftest import datasets_dir
    from SpineAlignmentLib.imaging import read_radiograph
    from SpineAlignmentLib.pipeline import analyze
    from SpineAlignmentLib.training.segmentation import discover, read_label_map

    data = datasets_dir() / "jsrt-clavicles"
    if not (data / "images").is_dir():
        pytest.skip(f"JSRT clavicle data not found at {data} (set SPINEALIGN_DATASETS)")
    name = shipped.metadata["training"]["split"]["test_images"][0]
    items = {n: (p, m) for n, p, m in discover(data, get_protocol("coronal-shoulder").segments)[0]}
    path, masks = items[name]
    rg = read_radiograph(path, spacing=(0.35, 0.35), patient_orientation="L,F")
    res = analyze(rg, "coronal-shoulder", model=shipped)
    ref = read_label_map(rg.shape, masks)
    row = [r for r in shipped.metadata["validation"]["per_image"]["test"] if r["image"] == name][0]
    for seg in get_protocol("coronal-shoulder").segments:
        pred, truth = res.segmentation.array == seg.value, ref == seg.value
        iou = np.logical_and(pred, truth).sum() / np.logical_or(pred, truth).sum()
        assert iou == pytest.approx(row[f"iou_{seg.id}"], abs=0.005)  # the card's per-film figure, reproduced
    assert res.parameters["RSH_bony"].calibration == "manual:user"
