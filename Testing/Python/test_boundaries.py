"""Issue 26: the newer inputs at their boundaries (dataset check, markups, pairs, DICOM sources, models).

The command-line behaviour of every case is in the hostile corpus (``hostile_corpus.build_boundary_cases``,
run by ``test_reliability.py``); these tests pin the library-level values behind it.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import hostile_corpus as hc
from SpineAlignmentLib.errors import LandmarkError

PROTO = hc.PROTO


def test_dataset_check_records_each_hostile_file_and_keeps_the_good_films(tmp_path):
    from SpineAlignmentLib.io.dataset import read_dataset

    for k in range(2):
        hc.png_gray(tmp_path / f"good{k}.png", 700, 800, seed=k)
        hc._json(tmp_path / f"good{k}.json", {"protocol": PROTO, "landmarks": hc.coronal_landmarks(k)})
    hc.png_gray(tmp_path / "va.png", 700, 800)
    hc._json(tmp_path / "va.json", {"views": [1, 2]})
    hc.png_gray(tmp_path / "vs.png", 700, 800)
    hc._json(tmp_path / "vs.json", {"views": "flexion"})
    hc.png_gray(tmp_path / "cp.png", 700, 800)
    hc._json(tmp_path / "cp.mrk.json", hc._mrk(5))
    hc.png_header_only(tmp_path / "bomb.png", 20000, 20000)
    hc._json(tmp_path / "bomb.json", {"protocol": PROTO, "landmarks": hc.coronal_landmarks()})
    (tmp_path / "patients.csv").write_text("image,patient\ngood0.png," + "x" * 200_000 + "\n", encoding="utf-8")

    report = read_dataset(tmp_path, PROTO, check_images=False)
    assert sorted(p.name for p in (i.image for i in report.items)) == ["good0.png", "good1.png"]
    by_file = {f.path.name: f for f in report.findings}
    assert "field 'views' must be an object, not an array" in by_file["va.json"].message
    assert "field 'views' must be an object, not a string" in by_file["vs.json"].message
    assert "'controlPoints' is not a list" in by_file["cp.mrk.json"].message
    assert "header announces" in by_file["bomb.png"].message and by_file["bomb.png"].severity == "error"
    assert by_file["patients.csv"].check == "unreadable_table" and "field larger than field limit" in \
        by_file["patients.csv"].message


def _mrk_file(tmp_path, points, **markup):
    p = tmp_path / "case.mrk.json"
    p.write_text(json.dumps(hc._mrk(points, **markup)).replace('"NAN"', "NaN"), encoding="utf-8")
    return p


@pytest.mark.parametrize("change, words", [
    (lambda pts: pts[0].update(position=[1e308, 1.0, 0.0]), "far outside any film"),
    (lambda pts: pts[0].update(position=["NAN", 1.0, 0.0]), "not a finite number"),
    (lambda pts: pts[0].update(position=[True, True, True]), "no 3-number 'position'"),
    (lambda pts: pts[0].update(position=["1", "2", "3"]), "no 3-number 'position'"),
    (lambda pts: pts.append(dict(pts[3], position=[-10.0, -20.0, 0.0])), "placed twice"),
    (lambda pts: pts[0].update(position=[pts[0]["position"][0], pts[0]["position"][1], 3.0]), "off the film's plane"),
])
def test_markups_positions_that_cannot_be_a_films_point_are_refused(tmp_path, change, words):
    from SpineAlignmentLib.slicerio.geometry import ijk_to_ras_for_file
    from SpineAlignmentLib.slicerio.markups_json import markups_landmarks

    film = hc.png_gray(tmp_path / "case.png", 700, 800)
    lms = hc.coronal_landmarks()
    pts = [{"id": k, "label": k, "position": [-x, -y, 0.0]} for k, (x, y) in lms.items()]
    good, _ = markups_landmarks(_mrk_file(tmp_path, pts), ijk_to_ras_for_file(film), PROTO)
    assert len(good) == len(lms) and good["T1_TL"].x == pytest.approx(lms["T1_TL"][0])
    change(pts)
    with pytest.raises(LandmarkError, match=words):
        markups_landmarks(_mrk_file(tmp_path, pts), ijk_to_ras_for_file(film), PROTO)


@pytest.mark.parametrize("markup, words", [({"coordinateUnits": "um"}, "coordinateUnits is 'um'"),
                                           ({"type": "Curve"}, "'Curve' markup, not a point list")])
def test_markups_of_other_units_or_kinds_are_refused(tmp_path, markup, words):
    from SpineAlignmentLib.slicerio.markups_json import read_markups_json

    with pytest.raises(LandmarkError, match=words):
        read_markups_json(_mrk_file(tmp_path, [{"id": "T1_TL", "position": [1.0, 2.0, 0.0]}], **markup))


def test_a_pair_of_one_film_is_refused_for_every_caller():
    from SpineAlignmentLib.pairs import measure_pair
    from SpineAlignmentLib.result import View, parse_landmarks

    flex = parse_landmarks(hc.lumbar_landmarks(1))
    with pytest.raises(LandmarkError, match="one film given twice"):
        measure_pair("lumbar-dynamic", {"flexion": View(flex), "extension": View(parse_landmarks(hc.lumbar_landmarks(1)))})
    result = measure_pair("lumbar-dynamic", {"flexion": View(flex),
                                             "extension": View(parse_landmarks(hc.lumbar_landmarks(2, -1)))})
    assert any(k.startswith("IROM_") and abs(m.value) > 0.1 for k, m in result.parameters.items())


@pytest.mark.parametrize("tags, words", [
    ({"SpecificCharacterSet": "ISO_IR 999"}, "Specific Character Set 'ISO_IR 999' is not a DICOM character set"),
    ({"StudyDate": "notadate"}, "StudyDate 'notadate' is not a DICOM date"),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.481.5"}, "is not a DICOM image storage class"),
    ({"PatientName": "A\\B\\C"}, "PatientName holds 3 names"),
    ({"SOPInstanceUID": "not a uid!"}, "SOPInstanceUID 'not a uid!' is not a valid DICOM UID"),
    ({"StudyInstanceUID": ""}, "it has no StudyInstanceUID, which a report must reference"),
    ({"SeriesInstanceUID": None}, "it has no SeriesInstanceUID, which a report must reference"),
    ({}, None),
])
def test_dicom_sources_a_report_cannot_carry_are_named(tmp_path, tags, words):
    from SpineAlignmentLib.io.dicom_sr import check_source

    ds = hc.dicom_dataset(StudyInstanceUID="1.2.3.4", SeriesInstanceUID="1.2.3.4.5", PatientName="Doe^J")
    for k, v in tags.items():
        setattr(ds, k, v)
    path = hc.write_dicom(tmp_path / "x.dcm", ds, b"\0" * 64 * 48 * 2)
    problem = check_source(path)
    if words is None:
        assert problem is None
    else:
        assert problem.startswith(str(path)) and words in problem and "\n" not in problem


def test_odd_dicom_source_keeps_its_other_outputs_and_a_rerun_keeps_the_result(tmp_path, capsys):
    from SpineAlignmentLib.cli import main

    images, marks, out = tmp_path / "img", tmp_path / "lm", tmp_path / "out"
    images.mkdir()
    marks.mkdir()
    ds = hc.dicom_dataset(700, 800, StudyInstanceUID="1.2.3.4", SeriesInstanceUID="1.2.3.4.5", StudyDate="notadate")
    hc.write_dicom(images / "film.dcm", ds, (np.arange(700 * 800) % 4000).astype(np.uint16).tobytes())
    hc._json(marks / "film.json", {"protocol": PROTO, "landmarks": hc.coronal_landmarks()})
    argv = ["batch", str(images), "--protocol", PROTO, "--out", str(out), "--landmarks-dir", str(marks), "--dicom-sr",
            "--progress", "none"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["failures.csv", "film.json", "film.mrk.json", "film_overlay.png",
                                                     "summary.csv"]
    result = json.loads((out / "film.json").read_text())
    assert any("StudyDate 'notadate'" in w for w in result["warnings"]) and result["parameters"]
    capsys.readouterr()
    assert main(argv) == 0  # complete without an SR: kept, not analysed again
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 1


def test_models_env_naming_no_folder_is_reported_once(tmp_path, monkeypatch, caplog):
    from SpineAlignmentLib.models import registry

    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setattr(registry, "_REPORTED_MISSING", set())
    with caplog.at_level(logging.WARNING, logger="SpineAlignmentLib.models.registry"):
        registry.model_search_path()
        registry.list_models()
        registry.model_search_path()
    said = [r.getMessage() for r in caplog.records if "nowhere" in r.getMessage()]
    assert len(said) == 1 and "not an existing folder" in said[0]


def test_another_protocols_model_under_this_protocols_name_is_named(tmp_path, monkeypatch):
    from SpineAlignmentLib.errors import ModelError
    from SpineAlignmentLib.models import registry

    folder = tmp_path / "coronal-spine-landmarks"
    folder.mkdir()
    for f in (hc.REPO / "Resources" / "Models" / "coronal-shoulder-clavicles").iterdir():
        (folder / f.name).symlink_to(f)
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path))
    problems = registry.model_problems(PROTO)
    assert len(problems) == 1 and "a model for protocol 'coronal-shoulder', not 'coronal-spine'" in problems[0]
    with pytest.raises(ModelError, match="hides the 'coronal-spine' model"):
        registry.resolve_model(None, PROTO)
    assert registry.model_problems("coronal-shoulder") == []


def test_training_arguments_are_refused_by_the_parser(capsys):
    from SpineAlignmentLib.cli import main

    for extra, words in ((["--batch-size", "0"], "--batch-size: '0' is less than 1"),
                         (["--input-size", "100", "100"], "'100' is not a multiple of 64"),
                         (["--lr", "nan"], "--lr: 'nan' is not a finite number")):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--data", "nowhere", "--out", "nowhere", *extra])
        assert exc.value.code == 2 and words in capsys.readouterr().err


def test_crop_is_refused_for_the_coronal_vertebra_trainer_and_out_of_range(tmp_path, capsys):
    """--crop belongs to the own-data trainers: with the vertebra network it is one sentence and exit 2 before any
    film is read, not silently ignored; a probability outside [0, 1] is refused by the parser."""
    from SpineAlignmentLib.cli import main

    data = tmp_path / "films"
    data.mkdir()
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--trainer", "vertebra", "--crop", "0.3"])
    err = capsys.readouterr().err
    assert rc == 2 and "--crop is an option of the own-data trainers" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--crop", "1.5"])
    assert exc.value.code == 2 and "--crop" in capsys.readouterr().err
