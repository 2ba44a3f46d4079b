"""User model folders beside the shipped ones: search order, name clashes, and every entry point finds them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_models import tiny_model_folder

from SpineAlignmentLib import cli
from SpineAlignmentLib.batch import default_model
from SpineAlignmentLib.errors import ModelError
from SpineAlignmentLib.models.registry import (
    find_model,
    list_models,
    load_model,
    model_search_path,
    shipped_models_dir,
    user_models_dir,
)

SHIPPED = "coronal-spine-landmarks"


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """$SPINEALIGN_MODELS = A:B:A (B holds a tiny coronal model), per-user folder with two copies of the shipped model."""
    src = shipped_models_dir() / SHIPPED
    if not (src / "metadata.json").is_file():
        pytest.skip(f"shipped model {src} not present")
    a, b, user = tmp_path / "A", tmp_path / "B", tmp_path / "user"
    a.mkdir()
    tiny_model_folder(b, "tiny-coronal")
    shutil.copytree(src, user / SHIPPED)  # same name as the shipped model: the user's wins
    shutil.copytree(src, user / "my-coronal")
    md = json.loads((user / "my-coronal" / "metadata.json").read_text())
    md["name"], md["version"] = "my-coronal", "2.0.0"
    (user / "my-coronal" / "metadata.json").write_text(json.dumps(md))
    monkeypatch.setenv("SPINEALIGN_MODELS", os.pathsep.join([str(a), str(b), str(a)]))
    monkeypatch.setenv("SPINEALIGN_USER_MODELS", str(user))
    return a, b, user


def test_search_order_and_name_clash(folders):
    a, b, user = folders
    assert model_search_path() == [a, b, user, shipped_models_dir()]  # A given twice is searched once
    coronal = list_models("coronal-spine")
    assert [(m["name"], Path(m["folder"])) for m in coronal] == [("tiny-coronal", b / "tiny-coronal"),
                                                                  (SHIPPED, user / SHIPPED),
                                                                  ("my-coronal", user / "my-coronal")]
    assert coronal[1]["hidden"] == [str(shipped_models_dir() / SHIPPED)] and coronal[0]["hidden"] == []
    assert find_model(SHIPPED) == user / SHIPPED and find_model("tiny-coronal") == b / "tiny-coronal"
    assert default_model("coronal-spine") == "tiny-coronal"  # the first model of the protocol in the path
    assert default_model("lumbar-dynamic") is None
    m = load_model("my-coronal")
    assert (m.name, m.version, m.folder) == ("my-coronal", "2.0.0", user / "my-coronal")
    with pytest.raises(ModelError, match="Model 'nope' not found in .*A.*B.*user.*installed: "):
        load_model("nope")
    with pytest.raises(ModelError, match="not found"):
        find_model("../A")  # a path is not a model name


def test_models_command_says_where_each_model_lives(folders, capsys):
    a, b, user = folders
    assert cli.main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["search_path"][:3] == [str(a), str(b), str(user)]
    rows = {r["name"]: r for r in data["models"]}
    assert rows["my-coronal"]["folder"] == str(user / "my-coronal") and rows["my-coronal"]["version"] == "2.0.0"
    assert rows[SHIPPED]["hides"] == [str(shipped_models_dir() / SHIPPED)]
    assert rows["tiny-coronal"]["folder"] == str(b / "tiny-coronal")
    assert cli.main(["models", "--protocol", "coronal-shoulder"]) == 0
    out = capsys.readouterr().out
    assert "tiny-coronal" not in out and "my-coronal" not in out
    assert cli.main(["models", "--protocol", "coronal-spine"]) == 0
    out = capsys.readouterr().out
    assert f"note: hides {shipped_models_dir() / SHIPPED}" in out and f"my-coronal  2.0.0  (coronal-spine)" in out
    assert cli.main(["models", "--protocol", "no-such"]) == 2


def test_analyze_and_batch_use_a_user_model_by_name(folders, tmp_path):
    """A model in $SPINEALIGN_MODELS, by name and as the protocol's default (a tiny network: fast)."""
    film = tmp_path / "film.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 90), dtype=np.uint8)).save(film)
    out = tmp_path / "out"
    assert cli.main(["analyze", "--protocol", "coronal-spine", "--model", "tiny-coronal", "--out", str(out),
                     str(film)]) == 0
    res = json.loads((out / "film.json").read_text())
    assert res["model"] == {"name": "tiny-coronal", "version": "0.0.1"} and len(res["landmarks"]) == 68
    bout = tmp_path / "batch"
    assert cli.main(["batch", "--protocol", "coronal-spine", "--no-overlay", "--out", str(bout), str(film)]) == 0
    again = json.loads((bout / "film.json").read_text())
    assert again["model"]["name"] == "tiny-coronal"  # no --model: the first coronal model of the path
    assert again["landmarks"] == res["landmarks"]  # the same weights give the same points


def test_per_user_default_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SPINEALIGN_USER_MODELS")
    monkeypatch.delenv("SPINEALIGN_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert user_models_dir() == tmp_path / ".spinealignment" / "models"
    tiny_model_folder(tmp_path / ".spinealignment" / "models", "mine", protocol="cervical-lateral")
    assert [m["name"] for m in list_models("cervical-lateral")] == ["mine"]
    monkeypatch.setenv("SPINEALIGN_USER_MODELS", "")  # switched off
    assert user_models_dir() is None and list_models("cervical-lateral") == []
    assert model_search_path() == [shipped_models_dir()]
