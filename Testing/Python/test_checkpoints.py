"""Checkpoints never run code: every loader refuses a pickle that carries a payload, and plain checkpoints round-trip.

A run folder can come from anyone. The malicious ``last.pt`` below pickles
``os.system`` with a command that creates a marker file; if any loader unpickled
it with ``weights_only=False`` the marker would exist after the call.
"""

from __future__ import annotations

import json
import os
import random
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from SpineAlignmentLib.cli import main
from SpineAlignmentLib.errors import SpineAlignmentError
from SpineAlignmentLib.training.checkpoint import load_checkpoint, plain, restore_rng, rng_state, save_checkpoint


class _Payload:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _malicious(path: Path, marker: Path) -> Path:
    """A checkpoint-looking file whose unpickling creates ``marker``."""
    torch.save({"model": {}, "epoch": 0, "config": {}, "hook": _Payload(f"touch {shlex.quote(str(marker))}")}, path)
    return path


@pytest.fixture
def evil_run(tmp_path):
    """A run folder (config.json, split.json, metrics.jsonl) whose last.pt and best.pt carry the payload."""
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "PWNED"
    (run / "config.json").write_text(json.dumps({"protocol": "coronal-spine"}))
    (run / "split.json").write_text(json.dumps({"train": [], "val": []}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")
    for name in ("last.pt", "best.pt"):
        _malicious(run / name, marker)
    return run, marker


def _refused(call, marker: Path):
    with pytest.raises(SpineAlignmentError, match="refused to load"):
        call()
    assert not marker.exists(), "the checkpoint's payload ran"


def test_the_payload_would_run_with_weights_only_false(evil_run):
    """The fixture is a real attack: the unsafe load runs it (so the tests below can fail)."""
    run, marker = evil_run
    torch.load(run / "last.pt", weights_only=False)
    assert marker.exists()


def test_resume_of_every_trainer_refuses_the_payload(evil_run):
    from SpineAlignmentLib.training.generic import GenericConfig
    from SpineAlignmentLib.training.segmentation import SegConfig
    from SpineAlignmentLib.training.loop import open_run
    from SpineAlignmentLib.training.trainer import TrainConfig

    run, marker = evil_run
    for cfg in (TrainConfig(data="x", out=str(run)), GenericConfig(data="x", out=str(run), protocol="sagittal-whole-spine"),
                SegConfig(data="x", out=str(run))):
        _refused(lambda: open_run(cfg, resume=True), marker)


def test_init_from_refuses_the_payload(evil_run):
    from SpineAlignmentLib.training.trainer import init_weights_from

    run, marker = evil_run
    _refused(lambda: init_weights_from(torch.nn.Linear(2, 2), run / "last.pt"), marker)


def test_every_export_refuses_the_payload(evil_run, tmp_path):
    from SpineAlignmentLib.training import export, export_generic, export_segmentation

    run, marker = evil_run
    out = tmp_path / "model"
    _refused(lambda: export.export(run, tmp_path, out, name="m", version="1.0.0"), marker)
    _refused(lambda: export._refinement_entry(run, "last.pt", out, False, 1), marker)
    _refused(lambda: export._identification_entry(run, "last.pt", out, False), marker)
    _refused(lambda: export_generic.export_run(run, out), marker)
    _refused(lambda: export_segmentation.export_segmentation(run, tmp_path, out, name="m", version="1.0.0"), marker)
    _refused(lambda: export_segmentation.run_lineage(run), marker)


def test_model_registry_refuses_the_payload_even_with_a_matching_checksum(tmp_path):
    """A model folder whose metadata carries the malicious file's own SHA-256 (the checksum proves nothing)."""
    from SpineAlignmentLib.models.registry import ModelError, _load_network, sha256_file

    marker = tmp_path / "PWNED"
    w = _malicious(tmp_path / "model.pt", marker)
    net = {"class": "SpineAlignmentLib.models.network.SpineLandmarkNet", "args": {"in_channels": 1, "out_channels": 1}}
    with pytest.raises(ModelError, match="cannot be read"):
        _load_network(net, {"file": "model.pt", "sha256": sha256_file(w)}, tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("command", [["train", "--protocol", "coronal-spine", "--resume"], ["export"]])
def test_command_line_refuses_the_payload_in_one_sentence(evil_run, tmp_path, capsys, command):
    run, marker = evil_run
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    args = command + (["--data", str(data), "--out", str(run)] if command[0] == "train" else
                      ["--run", str(run), "--data", str(data), "--out", str(tmp_path / "m")])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_a_damaged_checkpoint_is_one_sentence(tmp_path, content):
    p = tmp_path / "last.pt"
    p.write_bytes(content)
    with pytest.raises(SpineAlignmentError, match=r"last\.pt: is not a readable PyTorch training checkpoint"):
        load_checkpoint(p)


def test_a_checkpoint_that_is_not_a_dict_is_refused(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "last.pt")
    with pytest.raises(SpineAlignmentError, match="holds a list, not a dict"):
        load_checkpoint(tmp_path / "last.pt")


def test_plain_round_trip_with_numpy_values_and_rng_state(tmp_path):
    """What the trainers store (numpy metrics, the RNG states, optimiser state) survives weights_only=True."""
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    np.random.normal()  # leaves a cached Gaussian in the NumPy state
    payload = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
               "metrics": {"err": np.float32(1.5), "n": np.int64(4), "per": np.array([1.0, 2.0])},
               "config": {"input_shape": (512, 192), "lr": 1e-3, "name": None}, "rng": rng_state()}
    expect = (random.random(), np.random.random(), np.random.normal(), torch.rand(1).item())
    save_checkpoint(tmp_path / "last.pt", payload)
    back = load_checkpoint(tmp_path / "last.pt")
    assert back["epoch"] == 3 and back["metrics"]["err"] == 1.5 and back["metrics"]["n"] == 4
    assert isinstance(back["metrics"]["err"], float) and back["config"]["input_shape"] == (512, 192)
    torch.testing.assert_close(back["metrics"]["per"], torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(back["model"]["weight"], net.state_dict()["weight"])
    opt2 = torch.optim.AdamW(net.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    restore_rng(back["rng"])
    assert (random.random(), np.random.random(), np.random.normal(), torch.rand(1).item()) == expect
    assert not (tmp_path / "last.pt.tmp").exists()


def test_plain_refuses_what_weights_only_cannot_load():
    with pytest.raises(TypeError, match="cannot hold a PosixPath"):
        plain({"where": Path("/tmp")})


def test_init_states_reads_every_kind_of_weights_the_same_way_for_every_trainer(tmp_path):
    """``--init-from`` of either trainer: a two-stage run checkpoint gives its first stage (and its second on
    request), a one-stage checkpoint its model, a model folder's bare weights the refine.pt beside them."""
    from SpineAlignmentLib.training.checkpoint import init_states

    a, b = {"w": torch.ones(2)}, {"w": torch.zeros(3)}
    save_checkpoint(tmp_path / "two.pt", {"stage": 2, "stage1": a, "model": b, "epoch": 4})
    first, second = init_states(tmp_path / "two.pt")
    assert torch.equal(first["w"], a["w"]) and torch.equal(second["w"], b["w"])
    assert init_states(tmp_path / "two.pt", second=False)[1] is None
    save_checkpoint(tmp_path / "one.pt", {"model": a, "epoch": 1})
    first, second = init_states(tmp_path / "one.pt")
    assert torch.equal(first["w"], a["w"]) and second is None
    folder = tmp_path / "model"
    folder.mkdir()
    save_checkpoint(folder / "model.pt", a)
    save_checkpoint(folder / "refine.pt", b)
    first, second = init_states(folder / "model.pt")
    assert torch.equal(first["w"], a["w"]) and torch.equal(second["w"], b["w"])
    assert init_states(folder / "model.pt", second=False)[1] is None
