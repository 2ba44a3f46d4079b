"""Model registry: schema validation, checksums, clear errors, network export round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from SpineAlignmentLib.errors import ModelError
from SpineAlignmentLib.models.landmarks import protocol_landmark_ids
from SpineAlignmentLib.models.network import SpineLandmarkNet
from SpineAlignmentLib.models.registry import (
    list_models, load_model, models_dir, read_metadata, resolve_model, sha256_file, validate_metadata)

SHIPPED = "coronal-spine-landmarks"
TINY_ARGS = {"in_channels": 1, "out_channels": 68, "stem_channels": [4, 8], "channels": [8, 8, 16], "num_res_units": 1}


def tiny_model_folder(root: Path, name: str = "tiny-coronal", protocol: str = "coronal-spine") -> Path:
    """A complete, valid model folder with a tiny random network (no training needed)."""
    folder = root / name
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = SpineLandmarkNet(**TINY_ARGS)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, folder / "model.pt")
    ids = list(protocol_landmark_ids("coronal-spine"))
    md = {
        "schema": "spinealignment.model-metadata/1", "name": name, "version": "0.0.1",
        "changelog": {"0.0.1": "test"}, "task": "test", "description": "tiny test network", "protocol": protocol,
        "authors": "tests", "license": {"weights": "Apache-2.0", "training_data": "none"},
        "pytorch_version": torch.__version__, "monai_version": "1.6.1",
        "network": {"class": "SpineAlignmentLib.models.network.SpineLandmarkNet", "args": TINY_ARGS, "stride": 2},
        "weights": {"file": "model.pt", "sha256": sha256_file(folder / "model.pt"), "dtype": "float16"},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [128, 64], "dtype": "float32",
                                 "value_range": [0, 1], "resize": "letterbox-centred",
                                 "intensity": {"method": "percentile-minmax", "low_percentile": 0.5, "high_percentile": 99.5}}},
            "outputs": {"pred": {"type": "heatmap", "format": "logits", "num_channels": 68}}},
        "landmarks": ids,
        "decoding": {"method": "local-soft-argmax", "window": 3, "confidence_radius": 3.0, "low_confidence": 0.3},
        "training": {"data": {"name": "none", "license": "none", "citation": "none", "n_images": 1}, "recipe": {},
                     "split": {"seed": 0, "n_train": 1, "n_val": 1, "val_images": ["a.jpg"]},
                     "label_hygiene": {"images_checked": 0, "images_fixed": 0, "images_excluded": 0}, "epochs_run": 0},
        "validation": {"split": "none", "n_images": 1, "mean_error_px": 0.0, "smape_pct": 0.0, "cmae_deg": 0.0,
                       "command": "none"},
    }
    (folder / "metadata.json").write_text(json.dumps(md))
    return folder


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINEALIGN_MODELS", str(tmp_path))
    return tiny_model_folder(tmp_path)


def test_tiny_model_loads_and_predicts_shapes(tiny):
    m = load_model("tiny-coronal")
    assert m.landmark_ids == protocol_landmark_ids("coronal-spine")
    assert m.input_shape == (128, 64) and m.stride == 2 and not m.network.training
    with torch.no_grad():
        out = m.network(torch.zeros(1, 1, 128, 64))
    assert out.shape == (1, 68, 64, 32) and out.dtype == torch.float32


def test_corrupt_weights_name_file_and_checksum(tiny):
    expected = json.loads((tiny / "metadata.json").read_text())["weights"]["sha256"]
    data = bytearray((tiny / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tiny / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        load_model("tiny-coronal")
    msg = str(e.value)
    assert str(tiny / "model.pt") in msg and expected in msg and "corrupted" in msg


def test_missing_weights_name_file_and_checksum(tiny):
    expected = json.loads((tiny / "metadata.json").read_text())["weights"]["sha256"]
    (tiny / "model.pt").unlink()
    with pytest.raises(ModelError, match="missing") as e:
        load_model("tiny-coronal")
    assert str(tiny / "model.pt") in str(e.value) and expected in str(e.value)


def test_invalid_metadata_is_refused(tiny):
    md = json.loads((tiny / "metadata.json").read_text())
    md["weights"]["sha256"] = "not-a-checksum"
    (tiny / "metadata.json").write_text(json.dumps(md))
    with pytest.raises(ModelError, match="weights/sha256"):
        load_model("tiny-coronal")
    assert "tiny-coronal" not in [m["name"] for m in list_models()]  # an invalid folder is not offered


def test_unknown_model_and_protocol_mismatch(tiny, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model("no-such-model")
    tiny_model_folder(tmp_path, "tiny-lateral", protocol="sagittal-whole-spine")
    # $SPINEALIGN_MODELS comes before the shipped folder: its models first, and the default
    shipped = {m["name"] for m in list_models() if Path(m["folder"]).parent == models_dir()}
    assert [m["name"] for m in list_models("coronal-spine")][:1] == ["tiny-coronal"]
    assert [m["name"] for m in list_models()] == ["tiny-coronal", "tiny-lateral", *sorted(shipped)]
    assert resolve_model(None, "coronal-spine").name == "tiny-coronal"
    with pytest.raises(ModelError, match="not 'coronal-spine'"):
        resolve_model("tiny-lateral", "coronal-spine")


def test_network_export_round_trip(tmp_path):
    """torch.export (the successor of TorchScript) with a dynamic batch size, saved and reloaded."""
    torch.manual_seed(1)
    net = SpineLandmarkNet(**TINY_ARGS).eval()
    x = torch.rand(2, 1, 128, 64)
    with torch.no_grad():
        ref = net(x)
    batch = torch.export.Dim("batch", min=1, max=16)
    ep = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(ep, tmp_path / "net.pt2")
    loaded = torch.export.load(tmp_path / "net.pt2").module()
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), ref.numpy(), atol=1e-5)
        x1 = torch.rand(1, 1, 128, 64)
        np.testing.assert_allclose(loaded(x1).numpy(), net(x1).numpy(), atol=1e-5)


# ---------------------------------------------------------------- the shipped model

@pytest.fixture
def shipped(monkeypatch):
    monkeypatch.delenv("SPINEALIGN_MODELS", raising=False)
    folder = models_dir() / SHIPPED
    if not (folder / "metadata.json").is_file():
        pytest.skip(f"shipped model {folder} not present")
    return folder


def test_shipped_metadata_is_valid_and_complete(shipped):
    md = read_metadata(shipped)
    validate_metadata(md)
    assert md["name"] == SHIPPED and md["protocol"] == "coronal-spine"
    assert md["landmarks"] == list(protocol_landmark_ids("coronal-spine"))
    files = [md["weights"]] + ([md["refinement"]["weights"]] if "refinement" in md else [])
    for w in files:
        assert sha256_file(shipped / w["file"]) == w["sha256"]
    assert sum((shipped / w["file"]).stat().st_size for w in files) < 25 * 1024 * 1024
    assert md["validation"]["n_images"] == md["training"]["split"]["n_val"] - md["training"]["split"].get("n_val_excluded", 0)
    # the validation split is patient-disjoint from training
    assert md["training"]["split"]["n_train"] > md["validation"]["n_images"] > 50
    assert (shipped / "README.md").is_file() and "PDDL" in (shipped / "README.md").read_text()


def test_shipped_model_loads(shipped):
    m = load_model(SHIPPED)
    assert m.landmark_ids == protocol_landmark_ids("coronal-spine")
    assert SHIPPED in [x["name"] for x in list_models("coronal-spine")]


REFINER_ARGS = {"in_channels": 1, "out_channels": 4, "stem_channels": [4, 8], "channels": [8, 8, 16], "num_res_units": 1}


def add_tiny_refiner(folder: Path) -> None:
    """Give a tiny model folder a second stage (random ROI network) in its metadata."""
    torch.manual_seed(1)
    net = SpineLandmarkNet(**REFINER_ARGS)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, folder / "refine.pt")
    md = json.loads((folder / "metadata.json").read_text())
    md["refinement"] = {
        "network": {"class": "SpineAlignmentLib.models.network.SpineLandmarkNet", "args": REFINER_ARGS, "stride": 2},
        "weights": {"file": "refine.pt", "sha256": sha256_file(folder / "refine.pt"), "dtype": "float16"},
        "roi": {"size": 32, "extent": 1.8}, "iterations": 2}
    (folder / "metadata.json").write_text(json.dumps(md))


def test_second_stage_loads_and_runs_in_predict(tiny):
    from SpineAlignmentLib.inference.predict import predict_array
    from SpineAlignmentLib.models.refine import RoiSpec

    plain = load_model("tiny-coronal")
    assert plain.refiner is None and plain.roi is None
    add_tiny_refiner(tiny)
    m = load_model("tiny-coronal")
    assert m.roi == RoiSpec(32, 1.8) and not m.refiner.training
    img = np.random.default_rng(0).uniform(0, 1, (300, 150)).astype(np.float32)
    coarse, c0 = predict_array(img, m, refine=False)
    fine, c1 = predict_array(img, m)
    assert fine.shape == coarse.shape == (68, 2) and np.all(np.isfinite(fine))
    assert not np.allclose(fine, coarse)  # the second stage moved the corners
    np.testing.assert_array_equal(c0, c1)  # confidence comes from the first stage
    np.testing.assert_array_equal(predict_array(img, plain)[0], coarse)


def assert_corrupt_stage_named(folder: Path, stage: str) -> None:
    """Flip a byte of the weights of metadata ``stage`` ("refinement", "identification"): loading
    must fail with a message naming the file and its expected SHA-256."""
    w = json.loads((folder / "metadata.json").read_text())[stage]["weights"]
    data = bytearray((folder / w["file"]).read_bytes())
    data[len(data) // 3] ^= 0x55
    (folder / w["file"]).write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        load_model(folder.name)
    assert str(folder / w["file"]) in str(e.value) and w["sha256"] in str(e.value)


def test_corrupt_second_stage_weights_name_file_and_checksum(tiny):
    add_tiny_refiner(tiny)
    assert_corrupt_stage_named(tiny, "refinement")


def test_one_card_writer_gives_every_kind_of_model_the_same_frame(tmp_path):
    """``training.card.write_card`` writes the card of the shipped vertebra network, the shipped segmentation model
    and an own-data landmark model from their metadata alone: the same title, usage, weights (every file's SHA-256)
    and limitations, and each kind's own measured section; the shipped cards are exactly what it writes."""
    from conftest import REPO
    from SpineAlignmentLib.models.registry import weights_checksums
    from SpineAlignmentLib.training.card import write_card

    shipped = REPO / "Resources" / "Models"
    kinds = {shipped / "coronal-spine-landmarks": "## Vertebra levels",
             shipped / "coronal-shoulder-clavicles": "| IoU patient-left clavicle (mean) |",
             tiny_model_folder(tmp_path / "own"): "## Validation (measured by the export, end to end)"}
    for folder, own_section in kinds.items():
        md = json.loads((folder / "metadata.json").read_text())
        out = tmp_path / "cards" / md["name"]
        out.mkdir(parents=True)
        text = write_card(md, out).read_text()
        assert text.startswith(f"# {md['name']} {md['version']}\n")
        assert f"spine-align analyze --protocol {md['protocol']} --model {md['name']} " in text
        assert f"analyze(read_radiograph(\"film.dcm\"), \"{md['protocol']}\", model=\"{md['name']}\")" in text
        for file, sha in weights_checksums(md).items():
            assert f"weights `{file}`" in text and sha in text, (md["name"], file)
        assert own_section in text and "## Limitations" in text and "not a medical device" in text
        assert text.count("## Limitations") == 1
        if folder.parent == shipped:  # the shipped card has not drifted from its metadata
            assert (folder / "README.md").read_text() == text, md["name"]
    # the speed section comes from the benchmark block, for any kind (own-data included)
    md = json.loads((tmp_path / "own" / "tiny-coronal" / "metadata.json").read_text())
    # an own-data card says how its second stage places its ROIs
    for rotate, words in ((True, "one ROI per level (turned along the spine): "), (False, "one ROI per level (upright): ")):
        two = {**md, "landmark_refinement": {"network": md["network"], "weights": md["weights"],
                                             "roi": {"size": 64, "fraction": 0.1, "rotate": rotate}}}
        assert f"- Second stage, {words}" in write_card(two, tmp_path / "cards" / "tiny-coronal").read_text()
    md["benchmark"] = {"summary": "End to end: median 0.1 s per image."}
    assert "## Speed and memory\n\nEnd to end: median 0.1 s per image." in write_card(md, tmp_path / "cards" / "tiny-coronal").read_text()
