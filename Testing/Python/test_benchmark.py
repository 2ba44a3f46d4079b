"""The benchmark script's ``--record``: measured figures go into the model's metadata and card, tied to the weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_models import add_tiny_refiner, tiny_model_folder

from SpineAlignmentLib.models.registry import load_model, sha256_file

SCRIPT = Path(__file__).with_name("benchmark_inference.py")


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_inference", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINEALIGN_MODELS", str(tmp_path / "models"))
    folder = tiny_model_folder(tmp_path / "models")
    img = tmp_path / "images" / "a.png"
    img.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 90), dtype=np.uint8)).save(img)
    return folder, img


def test_record_writes_figures_card_and_drops_them_for_new_weights(tiny, capsys):
    folder, img = tiny
    bench = _script()
    args = ["--model", "tiny-coronal", "--images", str(img.parent), "--repeat", "2", "--batch", "2", "--threads", "1"]
    assert bench.main(args + ["--record"]) == 0
    md = json.loads((folder / "metadata.json").read_text())
    b = md["benchmark"]
    assert b["weights_sha256"] == {"model.pt": sha256_file(folder / "model.pt")}
    plain = b["plain"]
    assert plain["seconds_per_image_median"] > 0 and plain["peak_rss_mb"] > 0 and plain["images_per_minute"] > 0
    # No machine path is recorded: the image folder becomes a placeholder.
    assert str(img.parent) not in json.dumps(b) and "--images DIR" in plain["command"]
    assert "--record" not in plain["command"]
    assert "flip_tta" not in b
    card = (folder / "README.md").read_text()
    assert "## Speed" in card and f"peak RSS {plain['peak_rss_mb']} MB" in card
    load_model("tiny-coronal")  # the metadata is still valid

    assert bench.main(args + ["--record", "--flip-tta"]) == 0
    b2 = json.loads((folder / "metadata.json").read_text())["benchmark"]
    assert b2["plain"] == plain and b2["flip_tta"]["command"].endswith("--threads 1 --flip-tta")

    # New weights in any stage (here a second stage is added to unchanged first-stage weights): the
    # figures measured without it are dropped, not carried over.
    add_tiny_refiner(folder)
    assert bench.main(args + ["--record"]) == 0
    b3 = json.loads((folder / "metadata.json").read_text())["benchmark"]
    assert b3["weights_sha256"] == {"model.pt": sha256_file(folder / "model.pt"),
                                    "refine.pt": sha256_file(folder / "refine.pt")}
    assert "flip_tta" not in b3 and b3["plain"] != plain
    assert "recorded in" in capsys.readouterr().out
