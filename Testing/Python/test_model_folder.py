"""The frame every export shares (training.model_folder): refusing another model's folder, keeping the changelog
and the speed figures of the same weights, the card from the metadata, the finished folder loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from SpineAlignmentLib.errors import ModelError, SpineAlignmentError
from SpineAlignmentLib.training.card import write_card
from SpineAlignmentLib.training.model_folder import changelog, finish_folder, open_folder, write_metadata

SHIPPED = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "coronal-shoulder-clavicles"


def test_open_folder_refuses_another_models_folder(tmp_path):
    assert open_folder(tmp_path / "new", "mine") == {} and (tmp_path / "new").is_dir()
    (tmp_path / "new" / "metadata.json").write_text(json.dumps({"name": "mine", "changelog": {"1.0.0": "a"}}))
    assert open_folder(tmp_path / "new", "mine")["changelog"] == {"1.0.0": "a"}  # a re-export reads what was there
    with pytest.raises(SpineAlignmentError, match=r"already holds model 'mine'; choose another --out"):
        open_folder(tmp_path / "new", "other")
    (tmp_path / "new" / "metadata.json").write_text("{not json")
    with pytest.raises(SpineAlignmentError, match=r"metadata.json is not readable JSON"):
        open_folder(tmp_path / "new", "mine")


def test_changelog_keeps_earlier_versions():
    old = {"changelog": {"1.0.0": "first", "1.1.0": "second"}}
    assert changelog(old, "1.2.0", "third", "default") == {"1.0.0": "first", "1.1.0": "second", "1.2.0": "third"}
    assert changelog(old, "1.1.0", None, "default")["1.1.0"] == "second"  # re-exporting a version keeps its line
    assert changelog({}, "1.0.0", None, "default") == {"1.0.0": "default"}
    assert old["changelog"] == {"1.0.0": "first", "1.1.0": "second"}  # the old metadata is not changed


def test_finish_folder_keeps_speed_figures_of_the_same_weights_only(tmp_path):
    out = tmp_path / "clav"
    shutil.copytree(SHIPPED, out)
    old = open_folder(out, "coronal-shoulder-clavicles")
    assert old["benchmark"]["weights_sha256"]  # the shipped folder carries its measured speed
    md = {k: v for k, v in old.items() if k != "benchmark"}
    (out / "README.md").unlink()
    got = finish_folder(dict(md), out, old)
    assert got["benchmark"] == old["benchmark"]  # same weights: the figures still hold
    assert json.loads((out / "metadata.json").read_text())["benchmark"] == old["benchmark"]
    card = (out / "README.md").read_text()
    write_card(got, tmp_path)
    assert card == (tmp_path / "README.md").read_text()  # the card is the one writer's, from the metadata alone
    other = {**old, "benchmark": {**old["benchmark"], "weights_sha256": {"model.pt": "0" * 64}}}
    assert "benchmark" not in finish_folder(dict(md), out, other)  # other weights: their speed is not these weights'


def test_write_metadata_refuses_metadata_that_breaks_the_schema(tmp_path):
    md = json.loads((SHIPPED / "metadata.json").read_text())
    del md["weights"]
    with pytest.raises(ModelError):
        write_metadata(md, tmp_path)
    assert not (tmp_path / "metadata.json").exists()
