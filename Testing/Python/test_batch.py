"""Batch runner: files per image, summary and failures tables, resume without loss or repeats, Dask."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from spines import coronal_spine

from SpineAlignmentLib import batch as batch_mod
from SpineAlignmentLib.batch import BatchEvent, BatchOptions, BatchRunner, BatchSummary, analyze_one
from SpineAlignmentLib.cli import main as cli_main
from SpineAlignmentLib.protocols import get_protocol
from SpineAlignmentLib.pipeline import measure
from SpineAlignmentLib.slicerio.geometry import ijk_to_ras_for_file
from SpineAlignmentLib.slicerio.markups_json import landmarks_from_markups_json

PROTO = "coronal-spine"
SIZE = (700, 800)  # rows, cols


def _make_study(root: Path, n: int = 4, corrupt: bool = True) -> tuple[Path, Path, dict[str, dict]]:
    images, marks = root / "images", root / "landmarks"
    images.mkdir()
    marks.mkdir()
    rng = np.random.default_rng(5)
    truth = {}
    for k in range(n):
        name = f"case{k:02d}"
        Image.fromarray(rng.integers(0, 255, SIZE, dtype=np.uint8)).save(images / f"{name}.png")
        lms = coronal_spine([12.0 * math.sin(0.4 * i + k) for i in range(17)])
        (marks / f"{name}.json").write_text(json.dumps({"protocol": PROTO, "landmarks": lms}))
        truth[name] = lms
    if corrupt:
        (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
        (marks / "broken.json").write_text(json.dumps({"protocol": PROTO, "landmarks": truth["case00"]}))
    return images, marks, truth


def _options(out: Path, marks: Path, **kw) -> BatchOptions:
    return BatchOptions(protocol=PROTO, out_dir=str(out), landmarks_dir=str(marks), **kw)


@pytest.fixture
def counted(monkeypatch):
    """Count real analyses (in-process executor)."""
    calls: list[str] = []
    real = batch_mod.analyze_one

    def wrapper(path, *a, **kw):
        calls.append(Path(path).name)
        return real(path, *a, **kw)

    monkeypatch.setattr(batch_mod, "analyze_one", wrapper)
    return calls


def test_every_image_gets_its_files_and_the_corrupt_one_is_recorded(tmp_path, counted):
    images, marks, truth = _make_study(tmp_path)
    out = tmp_path / "out"
    events = []
    summary = BatchRunner([images], _options(out, marks), callback=events.append).run()
    assert (summary.total, summary.done, summary.failed, summary.skipped) == (5, 4, 1, 0)
    assert [e.event for e in events][0] == BatchEvent.STARTED and events[-1].event == BatchEvent.FINISHED
    assert events[-1].fraction == 1.0
    for name, lms in truth.items():
        res = json.loads((out / f"{name}.json").read_text())
        assert res["image_size"] == list(SIZE) and res["calibration"] == "pixels-only"
        expected = measure(lms, PROTO, image_size=SIZE)
        assert res["parameters"]["AASCE_1"]["value"] == pytest.approx(expected.value("AASCE_1"), abs=1e-6)
        assert (out / f"{name}_overlay.png").stat().st_size > 1000
        assert Image.open(out / f"{name}_overlay.png").format == "PNG"
        back = landmarks_from_markups_json(out / f"{name}.mrk.json", ijk_to_ras_for_file(images / f"{name}.png"), PROTO)
        assert max(abs(back[k].x - x) + abs(back[k].y - y) for k, (x, y) in lms.items()) < 1e-5
    assert not list(out.glob("*.part"))
    with open(out / "failures.csv", newline="") as fh:
        failures = list(csv.DictReader(fh))
    assert [f["name"] for f in failures] == ["broken"]
    assert failures[0]["error"] == "RadiographError" and "broken.png" in failures[0]["reason"]
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["image"]).stem for r in rows] == sorted(truth)
    assert list(rows[0])[:8] == ["image", "protocol", "model", "calibration", "spacing_row_mm", "spacing_col_mm",
                                 "n_landmarks", "n_warnings"]
    assert {"Cobb_MT", "AASCE_1", "AASCE_2", "AASCE_3", "TK_T4_T12"} <= set(rows[0])
    assert rows[0]["TK_T4_T12"] == "NaN" and rows[0]["spacing_row_mm"] == "NaN"  # no paired lateral, no spacing
    assert float(rows[0]["AASCE_1"]) == pytest.approx(measure(truth["case00"], PROTO, image_size=SIZE).value("AASCE_1"))
    # every parameter cell is a plain number or NaN (numpy scalars once printed as "np.float64(...)")
    for row in rows:
        for pid in get_protocol(PROTO).parameter_ids:
            float(row[pid])
    assert sorted(counted) == sorted([f"{n}.png" for n in truth] + ["broken.png"])


def test_resume_after_cancel_and_kill_loses_nothing_and_repeats_nothing(tmp_path, counted):
    images, marks, truth = _make_study(tmp_path, n=5, corrupt=False)
    out = tmp_path / "out"
    opts = _options(out, marks)
    runner = BatchRunner([images], opts)

    def cancel_after_two(p):
        if p.event == BatchEvent.DONE and p.done == 2:
            runner.cancel()

    runner.callback = cancel_after_two
    first = runner.run()
    assert first.cancelled and first.done == 2
    assert counted == ["case00.png", "case01.png"]
    # a kill during case02: its overlay and a half-written result exist, but no result JSON
    (out / "case02_overlay.png").write_bytes(b"partial")
    (out / "case02.json.part").write_text("{")
    second = BatchRunner([images], opts).run()
    assert (second.done, second.skipped, second.failed, second.cancelled) == (3, 2, 0, False)
    assert counted == ["case00.png", "case01.png", "case02.png", "case03.png", "case04.png"]  # each exactly once
    with open(out / "summary.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 5  # the summary covers both runs
    # an output folder inside the input folder is not read as input
    nested = BatchRunner([images], _options(images / "results", marks, write_overlay=False)).run()
    assert nested.total == 5 and nested.done == 5
    assert BatchRunner([images], _options(images / "results", marks, write_overlay=False)).run().skipped == 5
    third = BatchRunner([images], opts).run()
    assert (third.done, third.skipped) == (0, 5) and len(counted) == 10


def test_failures_retried_unless_told_otherwise(tmp_path, counted):
    images, marks, truth = _make_study(tmp_path, n=1)
    out = tmp_path / "out"
    BatchRunner([images], _options(out, marks)).run()
    kept = BatchRunner([images], _options(out, marks), retry_failures=False).run()
    assert (kept.done, kept.skipped, kept.failed) == (0, 2, 0) and "broken" in kept.failures
    assert counted.count("broken.png") == 1
    # fix the file: the retry succeeds and the failure disappears from failures.csv
    Image.fromarray(np.zeros(SIZE, np.uint8)).save(images / "broken.png")
    fixed = BatchRunner([images], _options(out, marks)).run()
    assert (fixed.done, fixed.failed) == (1, 0)
    assert (out / "failures.csv").read_text().strip() == "image,name,error,reason"


def test_missing_landmarks_and_no_model_are_reasons(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_mod, "default_model", lambda protocol: None)  # a protocol without a model
    images, marks, truth = _make_study(tmp_path, n=1, corrupt=False)
    (marks / "case00.json").unlink()
    s = BatchRunner([images], _options(tmp_path / "o1", marks)).run()
    assert s.failed == 1 and "no landmark file case00.json" in s.failures["case00"]
    s = BatchRunner([images], BatchOptions(protocol="cervical-lateral", out_dir=str(tmp_path / "o2"))).run()
    assert s.failed == 1 and "has no model" in s.failures["case00"] and "--landmarks-dir" in s.failures["case00"]


def test_analyze_one_reusable_for_the_analyze_command(tmp_path):
    images, marks, truth = _make_study(tmp_path, n=1, corrupt=False)
    res = analyze_one(images / "case00.png", PROTO, tmp_path / "single", spacing=(0.2, 0.25),
                      landmarks_path=marks / "case00.json", write_overlay=False)
    assert res.calibration == "manual:user" and res.spacing_mm == (0.2, 0.25)
    assert sorted(p.name for p in (tmp_path / "single").iterdir()) == ["case00.json", "case00.mrk.json"]
    # a .mrk.json is a landmark source too (round trip through Slicer's file format)
    again = analyze_one(images / "case00.png", PROTO, None, spacing=(0.2, 0.25),
                        landmarks_path=tmp_path / "single" / "case00.mrk.json")
    assert again.value("AASCE_2") == pytest.approx(res.value("AASCE_2"), abs=1e-6)


def test_cli_batch(tmp_path, capsys):
    images, marks, truth = _make_study(tmp_path, n=2)
    out = tmp_path / "out"
    code = cli_main(["-q", "batch", "--protocol", PROTO, "--out", str(out), "--landmarks-dir", str(marks),
                     "--no-overlay", "--progress", "jsonl", str(images)])
    assert code == 1  # one failure
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["done"], summary["failed"]) == (2, 1)
    events = [json.loads(line)["event"] for line in captured.err.splitlines() if line.startswith("{")]
    assert events[0] == "started" and events[-1] == "finished" and events.count("done") == 2


def test_dask_local_cluster_with_two_workers(tmp_path):
    distributed = pytest.importorskip("distributed", reason="needs dask.distributed (the 'batch' extra)")
    images, marks, truth = _make_study(tmp_path, n=4)
    out = tmp_path / "out"
    # processes=False: two worker threads in this process; starting worker processes costs more than the test
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        summary = BatchRunner([images], _options(out, marks, write_overlay=False), scheduler=client).run()
        workers = len(client.scheduler_info()["workers"])
    assert workers == 2
    assert (summary.done, summary.failed) == (4, 1)
    assert all((out / f"{n}.json").is_file() and (out / f"{n}.mrk.json").is_file() for n in truth)


def test_local_process_pool_with_two_workers(tmp_path):
    images, marks, truth = _make_study(tmp_path, n=2)
    events = []
    summary = BatchRunner([images], _options(tmp_path / "out", marks, write_overlay=False), workers=2,
                          callback=events.append).run()
    assert (summary.done, summary.failed) == (2, 1)
    assert "broken" in summary.failures
    assert sum(e.event == BatchEvent.SUBMITTED for e in events) == 3


def test_model_path_goes_through_pipeline_detect(tmp_path, monkeypatch):
    """Without landmark files the image goes to pipeline.detect (what pipeline.analyze uses) with the chosen
    model and options, and is measured with the film's calibration."""
    import SpineAlignmentLib.pipeline as pipeline
    from SpineAlignmentLib.result import Landmark

    images, marks, truth = _make_study(tmp_path, n=1, corrupt=False)
    seen = {}

    def fake_detect(radiograph, protocol, *, model=None, flip_tta=False):
        seen.update(model=model, flip_tta=flip_tta, shape=radiograph.shape, calibration=radiograph.calibration)
        return pipeline.Detection({k: Landmark(*xy) for k, xy in truth["case00"].items()}, ["model says hi"],
                                  {"name": "fake-model", "version": "0.0.1"})

    monkeypatch.setattr(pipeline, "detect", fake_detect)
    monkeypatch.setattr(batch_mod, "default_model", lambda protocol: "fake-model")
    s = BatchRunner([images], BatchOptions(protocol=PROTO, out_dir=str(tmp_path / "out"), flip_tta=True,
                                           spacing=(0.3, 0.3), write_overlay=False)).run()
    assert s.done == 1, s.failures
    assert seen == {"model": None, "flip_tta": True, "shape": SIZE, "calibration": "manual:user"}
    res = json.loads((tmp_path / "out" / "case00.json").read_text())
    assert res["model"] == {"name": "fake-model", "version": "0.0.1"} and res["image"] == "case00.png"
    assert "model says hi" in res["warnings"] and res["calibration"] == "manual:user"
    expected = measure(truth["case00"], PROTO, image_size=SIZE, spacing_mm=(0.3, 0.3))
    assert res["parameters"]["AASCE_1"]["value"] == pytest.approx(expected.value("AASCE_1"), abs=1e-5)
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["model"] == "fake-model"


def test_summary_cells_are_plain_numbers_for_numpy_values(tmp_path):
    """Values computed from model output are numpy scalars; the CSV holds plain numbers, never 'np.float64(...)'."""
    from SpineAlignmentLib.io.tables import write_summary_csv

    path = write_summary_csv(tmp_path / "s.csv", [{"image": "a.png", "Cobb_MT": np.float64(33.5), "AASCE_1": np.float32(2.25),
                                                   "AASCE_2": float("nan")}], PROTO)
    with open(path, newline="") as fh:
        row = next(csv.DictReader(fh))
    assert (row["Cobb_MT"], row["AASCE_1"], row["AASCE_2"], row["Cobb_PT"]) == ("33.5", "2.25", "NaN", "NaN")


# ---- issue 15: a study's results never mix stale or misplaced outputs ------------------------------


def test_version_option_and_version_in_results_and_summary(tmp_path, capsys):
    import SpineAlignmentLib
    import tomllib

    repo = Path(__file__).resolve().parents[2]
    version = (repo / "SpineAlignmentLib" / "VERSION").read_text().strip()
    assert SpineAlignmentLib.__version__ == version and version.count(".") == 2
    # one place: the package metadata reads the same file, and the Slicer extension installs it
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"] and "version" not in pyproject["project"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"file": "SpineAlignmentLib/VERSION"}
    assert "${SPINEALIGNMENT_SOURCE_ROOT}/SpineAlignmentLib/VERSION" in (repo / "SpineAlignment" / "CMakeLists.txt").read_text()
    with pytest.raises(SystemExit) as exc:
        cli_main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"spine-align (SpineAlignmentLib) {version}"
    images, marks, truth = _make_study(tmp_path, n=1, corrupt=False)
    BatchRunner([images], _options(tmp_path / "out", marks, write_overlay=False)).run()
    assert json.loads((tmp_path / "out" / "case00.json").read_text())["software_version"] == version
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["software_version"] == version


def test_resume_reuses_only_results_with_the_same_fingerprint(tmp_path, counted):
    """Finding 1: other options (spacing, orientation, min confidence, a corrected landmark file, another
    software version) re-analyse; the same options re-use; --force re-runs everything."""
    images, marks, truth = _make_study(tmp_path, n=3, corrupt=False)
    out = tmp_path / "out"
    first = BatchRunner([images], _options(out, marks, write_overlay=False)).run()
    assert first.done == 3 and len(counted) == 3
    fp = json.loads((out / "case00.json").read_text())["fingerprint"]
    assert fp["protocol"] == PROTO and fp["landmarks_dir"] == str(marks.resolve()) and fp["model"] is None
    assert fp["landmarks_file"]["name"] == "case00.json" and len(fp["landmarks_file"]["sha256"]) == 64
    same = BatchRunner([images], _options(out, marks, write_overlay=False)).run()
    assert (same.done, same.skipped, same.stale) == (0, 3, {}) and len(counted) == 3
    # another spacing: every result is stale and re-analysed, the new values are in mm
    events = []
    spaced = BatchRunner([images], _options(out, marks, write_overlay=False, spacing=(0.2, 0.2)),
                         callback=events.append).run()
    assert (spaced.done, spaced.skipped) == (3, 0) and len(counted) == 6
    assert spaced.stale == {"spacing_mm None -> [0.2, 0.2]": 3}
    assert "3 of them had a result made differently: 3 spacing_mm None -> [0.2, 0.2]" in events[0].message
    assert json.loads((out / "case01.json").read_text())["calibration"] == "manual:user"
    assert not list(out.glob("*.stale"))  # the set-aside results are gone once the new ones exist
    # a corrected landmark file re-analyses that image only
    lms = dict(truth["case01"], T1_TL=[truth["case01"]["T1_TL"][0] + 3.0, truth["case01"]["T1_TL"][1]])
    (marks / "case01.json").write_text(json.dumps({"protocol": PROTO, "landmarks": lms}))
    corrected = BatchRunner([images], _options(out, marks, write_overlay=False, spacing=(0.2, 0.2))).run()
    assert (corrected.done, corrected.skipped) == (1, 2) and counted[-1] == "case01.png"
    assert corrected.stale == {"landmarks_file changed": 1}
    # min confidence and orientation are part of the fingerprint too
    oriented = BatchRunner([images], _options(out, marks, write_overlay=False, spacing=(0.2, 0.2),
                                              patient_orientation="L,F", min_confidence=0.5)).run()
    assert oriented.done == 3 and set(oriented.stale) == {"min_confidence 0.3 -> 0.5, patient_orientation None -> 'L,F'"}
    # a result written by an older software version is stale
    data = json.loads((out / "case02.json").read_text())
    data["fingerprint"]["software_version"] = "0.0.1"
    (out / "case02.json").write_text(json.dumps(data))
    opts = _options(out, marks, write_overlay=False, spacing=(0.2, 0.2), patient_orientation="L,F", min_confidence=0.5)
    older = BatchRunner([images], opts).run()
    assert (older.done, older.skipped) == (1, 2) and "software_version '0.0.1' -> " in next(iter(older.stale))
    n = len(counted)
    forced = BatchRunner([images], opts, force=True).run()
    assert (forced.done, forced.skipped, forced.stale) == (3, 0, {"--force": 3}) and len(counted) == n + 3


def test_stale_result_not_in_summary_and_kept_aside_when_reanalysis_fails(tmp_path):
    images, marks, truth = _make_study(tmp_path, n=2, corrupt=False)
    out = tmp_path / "out"
    BatchRunner([images], _options(out, marks, write_overlay=False)).run()
    (marks / "case00.json").write_text("{ not json")  # re-analysis of case00 will fail
    s = BatchRunner([images], _options(out, marks, write_overlay=False, min_confidence=0.9)).run()
    assert (s.done, s.failed) == (1, 1) and "case00" in s.failures
    assert not (out / "case00.json").exists() and (out / "case00.json.stale").is_file()  # kept, not a result
    with open(out / "summary.csv", newline="") as fh:
        assert [Path(r["image"]).name for r in csv.DictReader(fh)] == ["case01.png"]


def test_model_fingerprint_has_name_version_and_every_weights_sha256():
    from SpineAlignmentLib.batch import batch_fingerprint, model_fingerprint
    from SpineAlignmentLib.models.registry import list_models, weights_checksums

    models = list_models(PROTO)
    if not models:
        pytest.skip("no packaged model for coronal-spine")
    md = models[0]
    fp = model_fingerprint(md["name"])
    assert fp == {"name": md["name"], "version": md["version"], "weights": weights_checksums(md)}
    assert all(len(v) == 64 for v in fp["weights"].values()) and len(fp["weights"]) >= 1
    full = batch_fingerprint(BatchOptions(protocol=PROTO, out_dir="o", flip_tta=True))
    assert full["model"] == fp and full["flip_tta"] is True and full["landmarks_dir"] is None
    assert batch_fingerprint(BatchOptions(protocol=PROTO, out_dir="o", flip_tta=False)) != full


def test_worker_result_missing_where_the_client_expects_it_is_a_loud_failure(tmp_path, monkeypatch, caplog):
    """Finding 3 (client side): a worker reporting "done" without the result at the client's path is a failure."""
    images, marks, truth = _make_study(tmp_path, n=1, corrupt=False)

    def lying_task(item, options, fingerprint=None):
        return {"status": "done", "item": item, "seconds": 0.0, "result_path": "/elsewhere/case00.json", "cwd": "/elsewhere"}

    monkeypatch.setattr(batch_mod, "_task", lying_task)
    s = BatchRunner([images], _options(tmp_path / "out", marks, write_overlay=False)).run()
    assert (s.done, s.failed) == (0, 1)
    assert "is not at" in s.failures["case00"] and "/elsewhere/case00.json" in s.failures["case00"]
    assert "same absolute paths" in caplog.text


def test_dask_worker_processes_with_relative_out_under_a_changed_cwd(tmp_path, monkeypatch):
    """Finding 3: workers started in another working directory write where the client looks."""
    distributed = pytest.importorskip("distributed", reason="needs dask.distributed (the 'batch' extra)")
    images, marks, truth = _make_study(tmp_path, n=2, corrupt=False)
    (tmp_path / "workers").mkdir()
    (tmp_path / "client").mkdir()
    monkeypatch.chdir(tmp_path / "workers")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        monkeypatch.chdir(tmp_path / "client")
        rel_images = Path("..") / "images"
        summary = BatchRunner([rel_images], BatchOptions(protocol=PROTO, out_dir="out", landmarks_dir="../landmarks",
                                                         write_overlay=False), scheduler=client).run()
    assert (summary.done, summary.failed) == (2, 0), summary.failures
    assert sorted(p.name for p in (tmp_path / "client" / "out").glob("case*.json")) == [
        "case00.json", "case00.mrk.json", "case01.json", "case01.mrk.json"]
    assert not (tmp_path / "workers" / "out").exists()
    with open(tmp_path / "client" / "out" / "summary.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_markups_keep_confidence_and_model_through_batch_landmarks_dir(tmp_path):
    """Finding 2: a film whose untrusted corner left the AASCE triple out does not get it back from its .mrk.json."""
    from SpineAlignmentLib.result import Landmark
    from SpineAlignmentLib.slicerio.markups_json import markups_landmarks, read_markups_json

    images, marks, truth = _make_study(tmp_path, n=1, corrupt=False)
    model = {"name": "coronal-spine-landmarks", "version": "1.1.0"}
    lms = {k: Landmark(x, y, 0.1 if k == "T7_TL" else 0.9) for k, (x, y) in truth["case00"].items()}
    predicted = measure(lms, PROTO, image_size=SIZE, model=model)
    assert "AASCE_1" not in predicted.parameters and "Cobb_MT" not in predicted.parameters
    first = tmp_path / "model_run"
    first.mkdir()
    (first / "case00.json").write_text(predicted.to_json())
    analyze_one(images / "case00.png", PROTO, first, landmarks_path=first / "case00.json", write_overlay=False)
    mrk = first / "case00.mrk.json"
    points = {p.id: p for p in read_markups_json(mrk)}
    assert points["T7_TL"].provenance == {"confidence": 0.1, "at": [pytest.approx(lms["T7_TL"].x),
                                                                     pytest.approx(lms["T7_TL"].y)], "model": model}
    assert points["T7_TL"].description == get_protocol(PROTO).landmark("T7_TL").description
    back, back_model = markups_landmarks(mrk, ijk_to_ras_for_file(images / "case00.png"), PROTO)
    assert back["T7_TL"].confidence == 0.1 and back["T1_TL"].confidence == 0.9 and back_model == model
    # batch --landmarks-dir with the .mrk.json files: untrusted stays untrusted, the model is named
    (marks / "case00.json").unlink()
    (marks / "case00.mrk.json").write_text(mrk.read_text())
    BatchRunner([images], _options(tmp_path / "again", marks, write_overlay=False)).run()
    again = json.loads((tmp_path / "again" / "case00.json").read_text())
    assert "AASCE_1" not in again["parameters"] and "Cobb_MT" not in again["parameters"]
    assert "not trusted T7_TL" in again["omitted"]["AASCE_1"] and again["model"] == model
    # a point the user moved is the user's: trusted, and the triple comes back
    data = json.loads(mrk.read_text())
    cp = next(c for c in data["markups"][0]["controlPoints"] if c["id"] == "T7_TL")
    cp["position"][1] += 0.5  # LPS mm of a 1 mm/px PNG: half a pixel up or down
    (marks / "case00.mrk.json").write_text(json.dumps(data))
    moved, _ = markups_landmarks(marks / "case00.mrk.json", ijk_to_ras_for_file(images / "case00.png"), PROTO)
    assert moved["T7_TL"].confidence is None and moved["T8_TL"].confidence == 0.9
    BatchRunner([images], _options(tmp_path / "again", marks, write_overlay=False)).run()
    assert "AASCE_1" in json.loads((tmp_path / "again" / "case00.json").read_text())["parameters"]


def _colliding_study(root: Path) -> dict[str, dict]:
    """IM0001.png in p1/, p2/ and p2/sub/, each with its own landmarks (by relative path)."""
    rng = np.random.default_rng(9)
    truth = {}
    for k, rel in enumerate(("p1/IM0001.png", "p2/IM0001.png", "p2/sub/IM0001.png")):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, SIZE, dtype=np.uint8)).save(root / rel)
        truth[rel] = coronal_spine([(6.0 + 4 * k) * math.sin(0.4 * i + k) for i in range(17)])
    return truth


def _check_values(out: Path, names: dict[str, str], truth: dict[str, dict]) -> None:
    for rel, name in names.items():
        res = json.loads((out / f"{name}.json").read_text())
        assert res["parameters"]["AASCE_1"]["value"] == pytest.approx(
            measure(truth[rel], PROTO, image_size=SIZE).value("AASCE_1"), abs=1e-6), rel


def test_colliding_stems_get_stable_names_and_landmarks_dir_finds_them(tmp_path):
    """Finding 4: IM0001 in several folders once got hashed output names that --landmarks-dir then looked for."""
    import shutil

    from SpineAlignmentLib.batch import collect_inputs, make_items

    study = tmp_path / "study"
    truth = _colliding_study(study)
    items = make_items(collect_inputs([study]))
    names = {Path(i.image).relative_to(study).as_posix(): i.name for i in items}
    assert names == {"p1/IM0001.png": "p1__IM0001", "p2/IM0001.png": "p2__IM0001", "p2/sub/IM0001.png": "sub__IM0001"}
    shutil.copytree(study, tmp_path / "moved" / "elsewhere")  # the names do not depend on where the study lives
    assert sorted(i.name for i in make_items(collect_inputs([tmp_path / "moved"]))) == sorted(names.values())
    # one stem in one folder with two extensions, and a file already named like a composed name: hash, still unique
    extra = make_items([Path("a/x.png"), Path("a/x.tif"), Path("b/x.png"), Path("a__x.png")])
    assert len({i.name for i in extra}) == 4 and extra[2].name == "b__x" and extra[0].name.startswith("a__x-")

    def run(marks: Path, out: str) -> BatchSummary:
        return BatchRunner([study], _options(tmp_path / out, marks, write_overlay=False, write_markups=False)).run()

    # landmark files named by the output rule (e.g. an earlier batch's output folder)
    flat = tmp_path / "flat"
    flat.mkdir()
    for rel, name in names.items():
        (flat / f"{name}.json").write_text(json.dumps({"protocol": PROTO, "landmarks": truth[rel]}))
    s = run(flat, "o1")
    assert (s.done, s.failed) == (3, 0), s.failures
    _check_values(tmp_path / "o1", names, truth)
    # a landmark tree mirroring the input tree
    mirror = tmp_path / "mirror"
    for rel in names:
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).with_suffix(".json").write_text(json.dumps({"protocol": PROTO, "landmarks": truth[rel]}))
    shutil.move(str(mirror / "p2" / "sub"), str(mirror / "sub"))  # the tree below the distinguishing folder
    s = run(mirror, "o2")
    assert (s.done, s.failed) == (3, 0), s.failures
    _check_values(tmp_path / "o2", names, truth)
    # files named anything, matched by their "image" field (a path); a bare "IM0001.png" names three films: unused
    byimage = tmp_path / "byimage"
    byimage.mkdir()
    for k, rel in enumerate(names):
        (byimage / f"set{k}.json").write_text(json.dumps({"protocol": PROTO, "image": rel, "landmarks": truth[rel]}))
    (byimage / "stray.json").write_text(json.dumps({"protocol": PROTO, "image": "IM0001.png", "landmarks": {}}))
    s = run(byimage, "o3")
    assert (s.done, s.failed) == (3, 0), s.failures
    _check_values(tmp_path / "o3", names, truth)
    (byimage / "set0.json").unlink()
    s = run(byimage, "o4")
    assert s.failed == 1 and "no landmark file p1__IM0001.json or p1__IM0001.mrk.json" in s.failures["p1__IM0001"]


def test_landmarks_dir_matches_dicom_films_by_sop_instance_uid(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from test_imaging import write_dicom

    images = tmp_path / "images"
    marks = tmp_path / "marks"
    marks.mkdir()
    truth = {}
    for k, folder in enumerate(("d1", "d2")):
        (images / folder).mkdir(parents=True)
        write_dicom(images / folder / "IM0002", np.zeros(SIZE, np.uint16))
        uid = str(pydicom.dcmread(images / folder / "IM0002", stop_before_pixels=True).SOPInstanceUID)
        truth[folder] = coronal_spine([(5.0 + 5 * k) * math.sin(0.3 * i) for i in range(17)])
        (marks / f"reading-{k}.json").write_text(json.dumps({"protocol": PROTO, "dicom": {"sop_instance_uid": uid},
                                                               "landmarks": truth[folder]}))
    s = BatchRunner([images], _options(tmp_path / "out", marks, write_overlay=False, write_markups=False)).run()
    assert (s.done, s.failed) == (2, 0), s.failures
    for folder in ("d1", "d2"):
        res = json.loads((tmp_path / "out" / f"{folder}__IM0002.json").read_text())
        assert res["parameters"]["AASCE_2"]["value"] == pytest.approx(
            measure(truth[folder], PROTO, image_size=SIZE).value("AASCE_2"), abs=1e-6)
        assert res["fingerprint"]["landmarks_file"]["name"] == f"reading-{('d1', 'd2').index(folder)}.json"


SHOULDER = {"Clav_top_L": (700.0, 300.0), "Clav_top_R": (300.0, 320.0), "Clav_med_L": (540.0, 330.0),
            "Clav_lat_L": (760.0, 300.0), "Clav_med_R": (460.0, 330.0), "Clav_lat_R": (240.0, 310.0),
            "Cor_top_L": (690.0, 350.0), "Cor_top_R": (310.0, 356.0)}


def test_summary_has_unit_and_calibration_per_value_and_landmark_file_spacing_is_used(tmp_path):
    """Finding 5: CHD 5.09 (mm) and -3.0 (px) once shared one column with no unit; a landmark file's own
    spacing_mm and image_size were ignored, and a spacing from a file was labelled manual:user."""
    images, marks = tmp_path / "images", tmp_path / "marks"
    images.mkdir()
    marks.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros(SIZE, np.uint8)).save(images / f"{name}.png")
    (marks / "a.json").write_text(json.dumps({"protocol": "coronal-shoulder", "landmarks": SHOULDER,
                                              "spacing_mm": [0.35, 0.35], "image_size": list(SIZE)}))
    (marks / "b.json").write_text(json.dumps({"protocol": "coronal-shoulder", "landmarks": SHOULDER}))
    (marks / "c.json").write_text(json.dumps({"protocol": "coronal-shoulder", "landmarks": SHOULDER,
                                              "image_size": [SIZE[0] // 2, SIZE[1] // 2]}))
    s = BatchRunner([images], BatchOptions(protocol="coronal-shoulder", out_dir=str(tmp_path / "out"),
                                           landmarks_dir=str(marks), patient_orientation="L,F",
                                           write_overlay=False)).run()
    assert (s.done, s.failed) == (2, 1)
    assert "image_size [350, 400] is not the size of c.png (700 x 800)" in s.failures["c"]
    with open(tmp_path / "out" / "summary.csv", newline="") as fh:
        rows = {Path(r["image"]).stem: r for r in csv.DictReader(fh)}
    a, b = rows["a"], rows["b"]
    assert (a["calibration"], a["CHD_unit"], a["CHD_calibration"]) == ("manual:file", "mm", "manual:file")
    assert (b["calibration"], b["CHD_unit"], b["CHD_calibration"]) == ("pixels-only", "px", "")
    assert float(b["CHD"]) == pytest.approx(6.0) and float(a["CHD"]) == pytest.approx(6.0 * 0.35)
    assert (a["CA_unit"], a["CA_calibration"]) == ("deg", "") and float(a["CA"]) == pytest.approx(float(b["CA"]))
    assert (a["RSH"], a["RSH_unit"], a["RSH_calibration"]) == ("NaN", "", "")  # not computed: no unit
    header = list(a)
    assert header[header.index("CHD"):header.index("CHD") + 3] == ["CHD", "CHD_unit", "CHD_calibration"]


def test_measure_labels_a_spacing_from_the_file_manual_file(tmp_path, capsys):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"protocol": "coronal-shoulder", "landmarks": SHOULDER, "spacing_mm": [0.35, 0.35],
                             "patient_orientation": "L,F"}))
    assert cli_main(["measure", str(f)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["calibration"] == "manual:file" and res["parameters"]["CHD"]["calibration"] == "manual:file"
    assert cli_main(["measure", str(f), "--spacing", "0.2", "0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"] == "manual:user"


def test_measure_reads_a_markups_file_back_with_its_provenance(tmp_path, capsys):
    """Finding 2 (measure): an untrusted corner in a .mrk.json stays untrusted when `measure` re-measures it."""
    from SpineAlignmentLib.result import Landmark

    images, marks, truth = _make_study(tmp_path, n=1, corrupt=False)
    model = {"name": "coronal-spine-landmarks", "version": "1.1.0"}
    lms = {k: Landmark(x, y, 0.1 if k == "T7_TL" else 0.9) for k, (x, y) in truth["case00"].items()}
    (marks / "case00.json").write_text(measure(lms, PROTO, image_size=SIZE, model=model).to_json())
    analyze_one(images / "case00.png", PROTO, tmp_path / "o", landmarks_path=marks / "case00.json", write_overlay=False)
    mrk = tmp_path / "o" / "case00.mrk.json"
    assert cli_main(["measure", str(mrk)]) == 2
    assert "give the film it was placed on with --image" in capsys.readouterr().err
    assert cli_main(["measure", str(mrk), "--image", str(images / "case00.png"), "--protocol", PROTO,
                     "--spacing", "0.2", "0.2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == model and res["landmarks"]["T7_TL"]["confidence"] == 0.1
    assert "AASCE_1" not in res["parameters"] and "not trusted T7_TL" in res["omitted"]["AASCE_1"]
    assert res["calibration"] == "manual:user" and res["image_size"] == list(SIZE)


def test_a_name_set_on_the_package_reaches_the_modules_that_call_it(tmp_path, monkeypatch):
    """The tests above replace ``batch.analyze_one``, ``default_model``, ``_task`` and ``film_landmarks`` on the package;
    the code calling them lives in its modules, which must see the replacement (and get the original back)."""
    from SpineAlignmentLib.batch import analysis, landmarks, pairs, resume, runner, workers

    real_default, real_task = resume.default_model, runner._task
    opts = BatchOptions(protocol=PROTO, out_dir=str(tmp_path))

    def fake_default(protocol):
        return "no-such-model"

    with monkeypatch.context() as m:
        m.setattr(batch_mod, "default_model", fake_default)
        assert resume.default_model is fake_default and landmarks.default_model is fake_default
        assert resume.batch_fingerprint(opts)["model"] == {"name": "no-such-model", "version": None, "weights": None}
        m.setattr(batch_mod, "_task", len)
        assert runner._task is len and workers._task is len
        other = object()  # a module holding another object under the name is left alone
        m.setattr(pairs, "film_landmarks", other)
        m.setattr(batch_mod, "film_landmarks", print)
        assert analysis.film_landmarks is print and landmarks.film_landmarks is print and pairs.film_landmarks is other
    assert resume.default_model is real_default and landmarks.default_model is real_default
    assert runner._task is real_task and workers._task is real_task and batch_mod._task is real_task
    assert pairs.film_landmarks is landmarks.film_landmarks is analysis.film_landmarks is batch_mod.film_landmarks
