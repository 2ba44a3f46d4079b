"""The researcher's loop for the protocols without public data, on synthetic lateral films (a test tool:
never shipped, never a clinical model): dataset check -> train -> export -> analyze -> corrected .mrk.json ->
dataset again -> retrain. Each lateral protocol's network is trained for a short while and must beat the
trivial baseline (every landmark at its mean position over the training films) by a wide margin."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from SpineAlignmentLib.cli import main as cli
from SpineAlignmentLib.io.dataset import read_dataset
from SpineAlignmentLib.training.generic import GenericConfig, mirrors_for_facing, split_items, train_generic

from synthetic_lateral import write_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: small and quick: the synthetic films are simple; these settings train in well under a minute on 2 cores
FAST = dict(input_shape=None, input_rows=128, epochs=50, refine_epochs=6, batch_size=8, roi_size=32, val_every=10,
            lr=3e-3, warmup_epochs=1, threads=2, val_fraction=0.25,
            net={"stem_channels": [8, 16], "channels": [16, 32, 64], "num_res_units": 1, "features": 32},
            refine_net={"stem_channels": [8, 16], "channels": [16, 32], "num_res_units": 1, "features": 16})


def _mean_shape_errors(protocol: str, train, val) -> np.ndarray:
    """Errors (px) of the trivial baseline: each landmark at its mean position over the training films,
    in coordinates relative to the film size, facing-normalised like the model's films."""
    from SpineAlignmentLib.protocols import get_protocol

    proto = get_protocol(protocol)

    def rel(it):
        rows, cols = it.image_size
        out = {}
        m = mirrors_for_facing(proto, it.landmarks, it.patient_orientation)
        for k, (x, y) in it.landmarks.items():
            out[k] = ((cols - 1 - x) / cols if m else x / cols, y / rows)
        return out, m

    sums: dict[str, list] = {}
    for it in train:
        for k, v in rel(it)[0].items():
            sums.setdefault(k, []).append(v)
    mean = {k: np.mean(v, axis=0) for k, v in sums.items()}
    errs = []
    for it in val:
        rows, cols = it.image_size
        m = mirrors_for_facing(proto, it.landmarks, it.patient_orientation)
        for k, (x, y) in it.landmarks.items():
            if k in mean:
                px = mean[k][0] * cols
                px = cols - 1 - px if m else px
                errs.append(np.hypot(px - x, mean[k][1] * rows - y))
    return np.asarray(errs)


@pytest.mark.parametrize("protocol,n,epochs", [("sagittal-whole-spine", 40, 50), ("cervical-lateral", 40, 50),
                                               ("lumbar-dynamic", 30, 50)])
def test_generic_trainer_learns_each_lateral_protocol(tmp_path, protocol, n, epochs):
    data = write_dataset(tmp_path / "data", protocol, n, seed=1)
    cfg = GenericConfig(protocol=protocol, data=str(data), out=str(tmp_path / "run"), seed=0, **{**FAST, "epochs": epochs})
    res = train_generic(cfg, progress=False)
    report = read_dataset(data, protocol)
    train, val = split_items(report.items, cfg)
    baseline = float(np.median(_mean_shape_errors(protocol, train, val)))
    model = res["final"]["median_error_px"]
    assert model < 0.5 * baseline, (model, baseline)
    assert res["final"]["n_points"] > 0
    # the run folder says what was trained on and what was skipped
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert not set(split["train_patients"]) & set(split["val_patients"])
    assert (tmp_path / "run" / "dataset.json").exists()


def test_the_whole_loop_on_synthetic_whole_spine_films(tmp_path, capsys, monkeypatch):
    """dataset check -> train -> export into a user models folder -> analyze finds it by name -> the corrected
    .mrk.json of one film goes back into the dataset -> retrain (resume-free, from scratch) -> export v1.1.0."""
    protocol = "sagittal-whole-spine"
    data = write_dataset(tmp_path / "data", protocol, 24, seed=2)
    assert cli(["dataset", "check", str(data), "--protocol", protocol]) == 0
    run = tmp_path / "runs" / "a"
    fast = {**FAST, "epochs": 10, "refine_epochs": 2}
    train_generic(GenericConfig(protocol=protocol, data=str(data), out=str(run), seed=0, **fast), progress=False)
    models = tmp_path / "models"
    monkeypatch.setenv("SPINEALIGN_MODELS", str(models))
    assert cli(["export", "--run", str(run), "--out", str(models / "my-lateral"), "--version", "1.0.0"]) == 0
    md = json.loads((models / "my-lateral" / "metadata.json").read_text())
    assert md["protocol"] == protocol and md["decoding"]["facing"]["normalised_to"] == "image-right"
    assert md["validation"]["n_images"] == len(json.loads((run / "split.json").read_text())["val"])
    assert md["validation"]["median_error_px"] > 0
    assert "median landmark error" in (models / "my-lateral" / "README.md").read_text()

    # a new film (not in the dataset) is pre-placed by the user's model, found by name
    new = tmp_path / "new"
    write_dataset(new, protocol, 1, seed=99)
    film = next(p for p in new.iterdir() if p.suffix == ".png")
    out = tmp_path / "out"
    assert cli(["analyze", str(film), "--protocol", protocol, "--model", "my-lateral", "--out", str(out), "--markups"]) == 0
    result = json.loads((out / f"{film.stem}.json").read_text())
    assert result["model"] == {"name": "my-lateral", "version": "1.0.0"}
    assert len(result["landmarks"]) == 45
    mrk = out / f"{film.stem}.mrk.json"
    assert mrk.exists()

    # the user drags the points to where they belong (here: the generator's exact points) and exports film +
    # corrected markups into the dataset, as the module's "Export for training" does
    from SpineAlignmentLib.slicerio.geometry import ijk_to_ras_for_file
    from SpineAlignmentLib.slicerio.markups_json import landmarks_from_markups_json, write_markups_json

    truth = json.loads((new / f"{film.stem}.json").read_text())["landmarks"]
    predicted = landmarks_from_markups_json(mrk, ijk_to_ras_for_file(film), protocol)
    assert set(predicted) >= set(truth)
    shutil.copy(film, data / film.name)
    write_markups_json(data / f"{film.stem}.mrk.json", {k: (v["x"], v["y"]) for k, v in truth.items()},
                       ijk_to_ras_for_file(data / film.name), protocol=protocol)
    report = read_dataset(data, protocol)
    item = next(it for it in report.items if it.image.name == film.name)
    for lid, v in truth.items():
        assert item.landmarks[lid] == pytest.approx((v["x"], v["y"]), abs=1e-3)
    run2 = tmp_path / "runs" / "b"
    train_generic(GenericConfig(protocol=protocol, data=str(data), out=str(run2), seed=0, **fast), progress=False)
    assert film.name in json.loads((run2 / "split.json").read_text())["train"] + json.loads((run2 / "split.json").read_text())["val"]
    assert cli(["export", "--run", str(run2), "--out", str(models / "my-lateral"), "--version", "1.1.0"]) == 0
    assert json.loads((models / "my-lateral" / "metadata.json").read_text())["version"] == "1.1.0"


def test_a_stopped_run_resumes_where_it_stopped(tmp_path):
    """--time-limit stops after an epoch; --resume continues both stages to the end with the run's settings."""
    import torch

    data = write_dataset(tmp_path / "data", "cervical-lateral", 12, seed=3)
    fast = {**FAST, "epochs": 3, "refine_epochs": 2}
    cfg = GenericConfig(protocol="cervical-lateral", data=str(data), out=str(tmp_path / "run"), seed=0,
                        **{**fast, "time_limit_min": 0.0})
    first = train_generic(cfg, progress=False)
    assert first["stopped"] == "time limit" and first["stage"] == 1 and first["epoch"] == 1
    again = GenericConfig(protocol="cervical-lateral", data=str(data), out=str(tmp_path / "run"), epochs=3,
                          refine_epochs=2, time_limit_min=1000.0)
    done = train_generic(again, resume=True, progress=False)
    assert "final" in done
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["stage"] == 1] == [1, 2, 3]  # no epoch run twice, none skipped
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ck["stage"] == 2 and ck["epoch"] == 1 and ck["config"]["roi_size"] == FAST["roi_size"]


def test_lumbar_pairs_pre_placed_by_a_trained_user_model_through_batch_pairs(tmp_path, monkeypatch):
    """A lumbar flexion/extension model trained on the researcher's pairs is found by name by
    ``batch --pairs``: every film of every pair gets its 28 landmarks from the model (no landmark file),
    each pair one result with its per-level motion, and the points are as good as the run's own validation."""
    protocol = "lumbar-dynamic"
    data = write_dataset(tmp_path / "data", protocol, 30, seed=1)
    run = tmp_path / "run"
    train_generic(GenericConfig(protocol=protocol, data=str(data), out=str(run), seed=0, **FAST), progress=False)
    models = tmp_path / "models"
    monkeypatch.setenv("SPINEALIGN_MODELS", str(models))
    assert cli(["export", "--run", str(run), "--out", str(models / "my-lumbar")]) == 0
    val = set(json.loads((run / "split.json").read_text())["val"])
    rows = [line.split(",") for line in (data / "pairs.csv").read_text().splitlines()[1:]]
    pairs = sorted({p for p, _, img in rows if img in val})
    assert len(pairs) >= 3
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("pair,role,image\n" + "".join(f"{p},{r},{data / img}\n" for p, r, img in rows if p in pairs))
    out = tmp_path / "out"
    assert cli(["batch", "--protocol", protocol, "--pairs", str(manifest), "--model", "my-lumbar", "--out", str(out)]) == 0
    errors = []
    for p in pairs:
        res = json.loads((out / f"{p}.json").read_text())
        assert res["model"] == {"name": "my-lumbar", "version": "1.0.0"}
        for role, view in res["views"].items():
            img = next(i for q, r, i in rows if q == p and r == role)
            truth = json.loads((data / Path(img).with_suffix(".json").name).read_text())["landmarks"]
            assert set(view["landmarks"]) == set(truth)  # all 28, from the model
            errors += [np.hypot(view["landmarks"][k]["x"] - v["x"], view["landmarks"][k]["y"] - v["y"])
                       for k, v in truth.items()]
        assert any(k.startswith("IROM_") for k in res["parameters"]), res["parameters"].keys()
    exported = json.loads((models / "my-lumbar" / "metadata.json").read_text())["validation"]["median_error_px"]
    # the export measured the same validation films with the same model through pipeline.analyze: the pair route
    # places exactly the same points
    assert float(np.median(errors)) == pytest.approx(exported, abs=1e-6)


def test_init_from_starts_both_stages_from_a_runs_weights(tmp_path, capsys):
    """--init-from a finished run's last.pt: both stages start from its weights (with lr 0 they end there too);
    weights of another design are one sentence before any epoch; --neck on a table that is not the T1..L5 corner
    chain is refused before any epoch."""
    import torch

    from SpineAlignmentLib.errors import SpineAlignmentError
    from SpineAlignmentLib.training.checkpoint import load_checkpoint
    from SpineAlignmentLib.training.neck import neck_applies
    from SpineAlignmentLib.protocols import get_protocol

    data = write_dataset(tmp_path / "data", "sagittal-whole-spine", 8, seed=2)
    tiny = {**FAST, "epochs": 1, "refine_epochs": 1, "val_every": 1}
    base = dict(protocol="sagittal-whole-spine", data=str(data), seed=0, family="levels")
    train_generic(GenericConfig(out=str(tmp_path / "a"), **base, **tiny), progress=False)
    src = load_checkpoint(tmp_path / "a" / "last.pt")
    train_generic(GenericConfig(out=str(tmp_path / "b"), init_from=str(tmp_path / "a" / "last.pt"), **base,
                                **{**tiny, "lr": 0.0}), progress=False)
    got = load_checkpoint(tmp_path / "b" / "last.pt")
    for mine, theirs in ((got["stage1"], src["stage1"]), (got["model"], src["model"])):
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k].float(), theirs[k].float()) for k in mine)
    # a model folder's model.pt (float16, with the refine.pt beside it, as the export stores them) starts both
    # stages as well
    from SpineAlignmentLib.training.weights import save_weights

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    save_weights(src["stage1"], tmp_path / "models" / "tiny" / "model.pt", True)
    save_weights(src["model"], tmp_path / "models" / "tiny" / "refine.pt", True)
    train_generic(GenericConfig(out=str(tmp_path / "f"), init_from=str(tmp_path / "models" / "tiny" / "model.pt"),
                                **base, **{**tiny, "lr": 0.0}), progress=False)
    got = load_checkpoint(tmp_path / "f" / "last.pt")
    for mine, theirs in ((got["stage1"], src["stage1"]), (got["model"], src["model"])):
        assert all(torch.allclose(mine[k].float(), theirs[k].float(), atol=2e-3, rtol=2e-3) for k in mine)
    # validation films that the starting weights trained on are refused before any epoch (split.json beside them)
    with pytest.raises(SpineAlignmentError, match=r"validation films .* are training films of the weights of --init-from"):
        train_generic(GenericConfig(out=str(tmp_path / "g"), init_from=str(tmp_path / "a" / "last.pt"),
                                    **{**base, **tiny, "val_fraction": 0.6}), progress=False)
    assert not (tmp_path / "g" / "metrics.jsonl").exists()
    torch.save({"model": {"head.weight": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(SpineAlignmentError, match=r"other.pt: its first-stage weights do not fit this run's network"):
        train_generic(GenericConfig(out=str(tmp_path / "c"), init_from=str(tmp_path / "other.pt"), **base, **tiny),
                      progress=False)
    assert not (tmp_path / "c" / "metrics.jsonl").exists()
    assert neck_applies(get_protocol("coronal-spine").landmark_ids)
    assert not neck_applies(get_protocol("sagittal-whole-spine").landmark_ids)
    with pytest.raises(SpineAlignmentError, match=r"--neck builds cervical vertebrae above T1 .* drop --neck"):
        train_generic(GenericConfig(out=str(tmp_path / "d"), neck=0.5, **base, **tiny), progress=False)
    assert not (tmp_path / "d" / "metrics.jsonl").exists()
    # the coronal vertebra network's re-framing is not an option of the own-data trainers: said, not ignored
    assert cli(["train", "--protocol", "sagittal-whole-spine", "--data", str(data), "--out", str(tmp_path / "e"),
                "--trainer", "levels", "--reframe", "0.5"]) == 2
    assert "--reframe is an option of the coronal vertebra network" in capsys.readouterr().err
