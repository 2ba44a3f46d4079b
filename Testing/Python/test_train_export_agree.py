"""``train`` and ``export`` report the same validation figures for the same run, and ``export`` shows its
progress over the films it measures (issue 24, item 8: quiet where asked, loud where needed).

A tiny generic model on synthetic lateral films (a test tool, never a clinical model): two epochs per stage at
64 rows, so it knows little and often picks the wrong facing direction -- which is where the trainer's old
validation (facing taken from the labels) and the export's (facing chosen by the network, as for a new film)
parted.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from SpineAlignmentLib.cli import main as cli

from synthetic_lateral import write_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = dict(input_shape=None, input_rows=64, epochs=2, refine_epochs=2, batch_size=4, roi_size=32, lr=3e-3,
            warmup_epochs=1, threads=1, val_fraction=0.3,
            net={"stem_channels": [8, 8], "channels": [8, 16, 16], "num_res_units": 1, "features": 8},
            refine_net={"stem_channels": [8, 8], "channels": [8, 16], "num_res_units": 1, "features": 8})


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity (Python writes them; no other JSON reader takes them)."""
    def refuse(token):
        raise ValueError(f"{token} in the output")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import torch

    from SpineAlignmentLib.training.generic import GenericConfig, train_generic

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("agree")
    # lumbar-dynamic: pairs of films per patient; NRRD films carry a spacing, so the mm figure is compared too
    data = write_dataset(root / "data", "lumbar-dynamic", 5, seed=1, image_format="nrrd")
    run = root / "run"
    result = train_generic(GenericConfig(protocol="lumbar-dynamic", data=str(data), out=str(run), seed=0, **TINY),
                           progress=False)
    return root, run, result


def test_the_last_validation_row_is_the_exported_figure(tiny_run, capsys):
    root, run, result = tiny_run
    rows = [_strict_json(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    assert last["final"] is True and last["stage"] == 2 and last["epoch"] == TINY["refine_epochs"]
    assert cli(["-q", "export", "--run", str(run), "--out", str(root / "models" / "tiny-lumbar")]) == 0
    printed = _strict_json(capsys.readouterr().out)
    card = json.loads((root / "models" / "tiny-lumbar" / "metadata.json").read_text())["validation"]
    # the same measurement of the same weights on the same films: equal to the last bit, not approximately
    assert printed["median_error_px"] == card["median_error_px"] == last["val_median_error_px"]
    assert card["mean_error_px"] == last["val_mean_error_px"]
    n_val = len(json.loads((run / "split.json").read_text())["val"])
    assert last["val_n_images"] == card["n_images"] == n_val >= 2
    assert card["median_error_mm"] == last["val_median_error_mm"] and math.isfinite(card["median_error_mm"])
    assert card["n_points"] == last["val_n_points"] > 0
    assert result["final"]["median_error_px"] == card["median_error_px"]
    # val_predictions.json holds the points the export measured: their pooled median is the card's
    preds = json.loads((run / "val_predictions.json").read_text())
    truth = {p.stem: json.loads(p.read_text())["landmarks"] for p in (root / "data").glob("*.json")}
    errs = [math.hypot(xy[0] - truth[name.rsplit(".", 1)[0]][k]["x"], xy[1] - truth[name.rsplit(".", 1)[0]][k]["y"])
            for name, pts in preds.items() for k, xy in pts.items() if k in truth[name.rsplit(".", 1)[0]]]
    assert len(preds) == n_val and float(np.median(errs)) == pytest.approx(card["median_error_px"], abs=1e-9)


def test_every_row_is_strict_json_and_validated_rows_say_their_median(tiny_run):
    _, run, result = tiny_run
    rows = [_strict_json(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    validated = [r for r in rows if "val_median_error_px" in r]
    # stage 1: both epochs; stage 2: the first epoch (the last one's figure is the final row)
    assert [(r["stage"], r["epoch"]) for r in validated] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["val_median_error_px"] > 0 and r["val_time_s"] >= 0 for r in validated)
    _strict_json(json.dumps(result))


def test_export_shows_its_progress_unless_asked_not_to(tiny_run, capsys):
    root, run, _ = tiny_run
    n_val = len(json.loads((run / "split.json").read_text())["val"])
    out = root / "models" / "progress"
    assert cli(["export", "--run", str(run), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "measuring calibration films" in err and "measuring validation films" in err and f"0/{n_val}" in err
    for quiet in (["-q", "export"], ["export", "--no-progress"]):
        assert cli([*quiet, "--run", str(run), "--out", str(out)]) == 0
        err = capsys.readouterr().err
        assert "measuring" not in err and "%|" not in err, (quiet, err)


def test_train_prints_no_nan_or_infinity_without_validation_films(tmp_path):
    """A run with no validation film has no validation figure: the summary says nothing rather than
    Infinity (the stage-1 'best' of a run never validated) or NaN. (The command line keeps a validation
    split, --val-fraction is strictly between 0 and 1; the library takes 0.)"""
    from SpineAlignmentLib.training.generic import GenericConfig, train_generic

    data = write_dataset(tmp_path / "data", "lumbar-dynamic", 3, seed=2)
    cfg = GenericConfig(protocol="lumbar-dynamic", data=str(data), out=str(tmp_path / "run"), epochs=1, refine_epochs=0,
                        val_fraction=0.0, input_shape=(128, 64), threads=1, batch_size=2)
    printed = _strict_json(json.dumps(train_generic(cfg, progress=False), allow_nan=False))
    assert printed["stage1"] == {} and "final" not in printed
    rows = [_strict_json(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and not any(k.startswith("val_") for k in rows[0])


def test_coronal_export_measures_with_a_bar(tmp_path, capsys):
    """The specialised coronal model's export measures the validation films end to end with a bar on stderr."""
    from test_models import tiny_model_folder
    from test_training import _synthetic_dataset

    from SpineAlignmentLib.models.registry import load_model
    from SpineAlignmentLib.training.dataset import load_samples
    from SpineAlignmentLib.training.export import evaluate_end_to_end

    names = _synthetic_dataset(tmp_path / "data", n=2)
    model = load_model("tiny-coronal", folder=tiny_model_folder(tmp_path / "models"))
    samples, _ = load_samples(tmp_path / "data")
    points = {s.name: s.points for s in samples}
    quiet = evaluate_end_to_end(model, tmp_path / "data", names, points, {}, flip_tta=False)
    assert "measuring" not in capsys.readouterr().err
    loud = evaluate_end_to_end(model, tmp_path / "data", names, points, {}, flip_tta=False, progress=True)
    assert "measuring validation films" in capsys.readouterr().err
    assert loud["n_images"] == quiet["n_images"] == 2 and loud["mean_error_px"] == quiet["mean_error_px"]


@pytest.mark.parametrize("flags, shown", [([], True), (["-q"], False), (["--no-progress"], False)])
@pytest.mark.parametrize("protocol, target", [("coronal-spine", "export"),
                                              ("coronal-shoulder", "export_segmentation")])
def test_coronal_and_segmentation_export_entry_passes_quiet_on(tmp_path, monkeypatch, flags, shown, protocol, target):
    """``python -m SpineAlignmentLib.training.export``: -q and --no-progress silence the bars of both exports."""
    import importlib

    from SpineAlignmentLib.training import export as export_module

    seen = {}

    def fake(*args, progress=None, **kw):
        seen["progress"] = progress
        return {"validation": {}}

    monkeypatch.setattr(importlib.import_module(f"SpineAlignmentLib.training.{target}"), target, fake)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"protocol": protocol}))
    assert export_module.main(["--run", str(tmp_path / "run"), "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                               "--threads", "1", *flags]) == 0
    assert seen["progress"] is shown
