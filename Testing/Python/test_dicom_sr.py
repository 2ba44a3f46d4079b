"""DICOM SR out (TID 1500, highdicom): content, round trip, validators, CLI, and identity kept out of other outputs."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.sr._concepts_dict import concepts
from test_geometry import _lumbar_image
from test_imaging import PATIENT_ID, PATIENT_NAME, write_dicom

from SpineAlignmentLib.batch import analyze_one
from SpineAlignmentLib.cli import main as cli_main
from SpineAlignmentLib.errors import SpineAlignmentError
from SpineAlignmentLib.imaging import read_radiograph
from SpineAlignmentLib.io import dicom_sr
from SpineAlignmentLib.io.dicom_sr import read_measurement_report, read_source_dataset, write_measurement_report
from SpineAlignmentLib.pipeline import measure, source_uids
from SpineAlignmentLib.protocols import PROTOCOL_IDS, get_protocol
from SpineAlignmentLib.result import Landmark, View

#: Hand-placed shoulder points (x right, y down) on a 300 x 400 film, 0.2 mm pixels, patient's left on image right.
SHOULDER = {
    "Clav_top_L": (300.0, 100.0), "Clav_top_R": (100.0, 110.0), "Clav_med_L": (220.0, 120.0),
    "Clav_lat_L": (320.0, 100.0), "Clav_med_R": (180.0, 122.0), "Clav_lat_R": (80.0, 104.0),
    "Cor_top_L": (310.0, 140.0), "Cor_top_R": (90.0, 150.0),
}


def _film(path, **tags):
    arr = (np.arange(300 * 400).reshape(300, 400) % 4096).astype(np.uint16)
    tags.setdefault("ImagerPixelSpacing", [0.2, 0.2])
    tags.setdefault("PatientOrientation", ["L", "F"])
    return write_dicom(path, arr, **tags)


def _shoulder_result(film):
    rg = read_radiograph(film)
    res = measure(SHOULDER, "coronal-shoulder", spacing_mm=rg.spacing_mm, calibration=rg.calibration,
                  image_size=rg.shape, patient_orientation=rg.patient_orientation, image=film.name,
                  model={"name": "test-model", "version": "1.2.3"})
    res.dicom = source_uids(rg)
    return res


@pytest.fixture
def shoulder(tmp_path):
    film = _film(tmp_path / "film.dcm")
    res = _shoulder_result(film)
    sr = write_measurement_report(res, read_source_dataset(film), tmp_path / "film_sr.dcm")
    return film, res, sr


def test_hand_worked_values_round_trip_through_the_sr(shoulder):
    film, res, sr = shoulder
    # hand-worked: CHD = |140 - 150| px * 0.2 mm = 2.0 mm; CA = atan(10/200)
    assert res.value("CHD") == pytest.approx(2.0)
    assert res.value("CA") == pytest.approx(math.degrees(math.atan2(10, 200)))
    back = read_measurement_report(sr)
    assert back.protocol == "coronal-shoulder"
    assert set(back.parameters) == set(res.parameters) == {"CA", "CTAD", "CHD", "RSH_bony"}
    for pid, m in res.parameters.items():
        b = back.parameters[pid]
        assert b.value == pytest.approx(m.value, rel=1e-12, abs=1e-12), pid  # DS keeps 15-16 digits
        assert (b.unit, b.calibration, b.landmarks, b.detail, b.warnings) == \
            (m.unit, m.calibration, m.landmarks, m.detail, m.warnings), pid
    # ImagerPixelSpacing without a magnification factor: the detector-plane label (definitions.md 7.4)
    assert back.parameters["CHD"].calibration == res.calibration == "detector-plane (magnified)"
    assert back.omitted == res.omitted and "RSH" in back.omitted
    assert back.warnings == res.warnings
    assert back.model == {"name": "test-model", "version": "1.2.3"}
    assert back.dicom == res.dicom
    assert back.software_version == res.software_version is not None
    used = {i for m in res.parameters.values() for i in m.landmarks}
    assert {k: (v.x, v.y) for k, v in back.landmarks.items()} == {k: SHOULDER[k] for k in used}


def test_content_codes_units_scoord_and_copied_patient_module(shoulder):
    film, res, sr = shoulder
    ds = pydicom.dcmread(sr)
    src = pydicom.dcmread(film)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    # the SR's purpose in a PACS: same patient and study as the film
    assert (str(ds.PatientName), ds.PatientID, ds.StudyInstanceUID) == (PATIENT_NAME, PATIENT_ID, src.StudyInstanceUID)
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == src.SOPInstanceUID
    groups = {g.ContentSequence[0].TextValue: g for item in ds.ContentSequence
              if item.ConceptNameCodeSequence[0].CodeValue == "126010" for g in item.ContentSequence}
    chd = groups["CHD"]
    num = next(i for i in chd.ContentSequence if i.ValueType == "NUM")
    name = num.ConceptNameCodeSequence[0]
    assert (name.CodeValue, name.CodingSchemeDesignator) == ("CHD", "99SPAL")
    unit = num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("mm", "UCUM")
    scoord = next(c for c in num.ContentSequence if c.ValueType == "SCOORD")
    assert scoord.GraphicType == "MULTIPOINT"
    # pixel centre (310, 140) -> DICOM pixel-corner origin (310.5, 140.5)
    assert list(scoord.GraphicData) == [310.5, 140.5, 90.5, 150.5]
    assert scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    site = next(i for i in num.ContentSequence if i.ValueType == "CODE").ConceptCodeSequence[0]
    assert (site.CodeValue, site.CodingSchemeDesignator) == ("8931003", "SCT")
    algo = next(i for i in chd.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "111001")
    assert algo.TextValue == "test-model"
    texts = {i.ConceptNameCodeSequence[0].CodeValue: i.TextValue for i in chd.ContentSequence if i.ValueType == "TEXT"}
    assert texts["CAL"] == "detector-plane (magnified)"
    ca = next(i for i in groups["CA"].ContentSequence if i.ValueType == "NUM")
    assert ca.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "deg"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99SPAL"


def test_standard_codes_are_those_of_ps3_16():
    """Every SCT/DCM/UCUM code in dicom_codes.json (SR and SEG) is in pydicom's PS3.16 dictionary with that meaning."""
    table = dicom_sr.code_table()
    entries = list(table["concepts"].values()) + list(table["finding_sites"].values()) + list(table["units"].values())
    entries += [s[k] for protocol, segs in table["segments"].items() if protocol != "comment"
                for s in segs for k in ("category", "type", "modifier") if s.get(k)]
    known: dict[tuple[str, str], set[str]] = {}
    for scheme, d in concepts.items():
        for by_code in d.values():
            for code, (m, _) in by_code.items():
                known.setdefault((scheme, code), set()).add(m.lower())
    for value, scheme, meaning in entries:
        if value == "{pixels}":  # UCUM annotation (unity), as highdicom writes for pixel counts
            continue
        assert meaning.lower() in known.get((scheme, value), set()), (value, scheme, meaning)


def test_every_parameter_has_a_concept_a_unit_and_a_legal_code():
    for pid in PROTOCOL_IDS:
        for p in get_protocol(pid).parameters:
            value, scheme, meaning = dicom_sr.concept_for(p.id, pid)
            assert len(value) <= 16 and len(meaning) <= 64 and scheme in ("SCT", "99SPAL"), p.id
            dicom_sr._unit(p.unit)


def test_lumbar_pair_references_each_film(tmp_path):
    films, views = {}, {}
    for role, pts in (("flexion", _lumbar_image([0] * 6, [4, 0, 0, 0, 0, 0])),
                      ("extension", _lumbar_image([10, 0, 0, 0, 0, 0], [0] * 6, facing=-1))):
        films[role] = _film(tmp_path / f"{role}.dcm", PatientOrientation=["A", "F"] if role == "flexion" else ["P", "F"])
        rg = read_radiograph(films[role])
        views[role] = View({k: Landmark(*p) for k, p in pts.items()}, image=films[role].name, image_size=rg.shape,
                           spacing_mm=rg.spacing_mm, calibration=rg.calibration, dicom=source_uids(rg))
    res = measure(None, "lumbar-dynamic", views=views)
    assert res.value("IROM_L1L2") == pytest.approx(10.0, abs=1e-9)
    sources = {r: read_source_dataset(f) for r, f in films.items()}
    sr = write_measurement_report(res, sources, tmp_path / "pair_sr.dcm")
    back = read_measurement_report(sr)
    assert set(back.parameters) == set(res.parameters)
    for pid, m in res.parameters.items():
        assert back.parameters[pid].value == pytest.approx(m.value, abs=1e-12), pid
    assert back.value("IROM_L1L2") == pytest.approx(10.0, abs=1e-9)
    for role in ("flexion", "extension"):
        assert back.views[role].dicom["sop_instance_uid"] == sources[role].SOPInstanceUID
        for k, lm in back.views[role].landmarks.items():
            assert (lm.x, lm.y) == pytest.approx((views[role].landmarks[k].x, views[role].landmarks[k].y))
    if shutil.which("dciodvfy"):
        dciodvfy(sr)
    with pytest.raises(SpineAlignmentError, match="one source DICOM for each"):
        write_measurement_report(res, sources["flexion"], tmp_path / "x.dcm")


def test_a_different_film_is_refused(tmp_path, shoulder):
    film, res, _ = shoulder
    other = _film(tmp_path / "other.dcm")
    with pytest.raises(SpineAlignmentError, match="not the image the result was measured on"):
        write_measurement_report(res, read_source_dataset(other), tmp_path / "x.dcm")


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install -y dicom3tools dcmtk; see README set-up)")
    return path


def dciodvfy(path, kind="ComprehensiveSR", allowed=("99SPAL", "DICOMDIR")):
    """dicom3tools' IOD validator: no error; its only warnings name ``allowed`` (the private scheme, and the
    DICOMDIR hints of a test film without study date, time and ID)."""
    out = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert kind in text, text
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert errors == [], text
    warnings = [line for line in text.splitlines() if line.startswith("Warning")]
    assert all(any(a in w for a in allowed) for w in warnings), warnings


def test_dciodvfy_reports_no_error(shoulder, tmp_path):
    dciodvfy(shoulder[2])
    res = _shoulder_result(shoulder[0])
    res.model = None  # hand-placed landmarks: the library is the algorithm
    dciodvfy(write_measurement_report(res, read_source_dataset(shoulder[0]), tmp_path / "manual_sr.dcm"))


#: A real film's warning (AASCE) and other texts outside ASCII: degrees, "≥", an ellipsis, accented names.
NON_ASCII = "A second curve … (L4-L5, 10.8°) is smaller than the main one; Cobb ≥ 10° (é)"


def test_non_ascii_texts_give_a_valid_utf8_sr_and_seg(tmp_path):
    """Warnings with °, ≥, … and a patient name with é: UTF-8 declared, 0 dciodvfy errors, no warning but 99SPAL."""
    from SpineAlignmentLib.io.dicom_seg import write_segmentation

    film = _film(tmp_path / "film.dcm", PatientName="Müller^Zoë", StudyDate="20240102", StudyTime="101500",
                 StudyID="S1", ReferringPhysicianName="", AccessionNumber="A1")
    res = _shoulder_result(film)
    res.warnings.append(NON_ASCII)
    res.parameters["CA"].warnings.append("angle 10.8° ≥ 5° — check the clavicle ends")
    res.omitted["RSH"] = "needs the acromion (é)"
    sr = write_measurement_report(res, read_source_dataset(film), tmp_path / "film_sr.dcm")
    ds = pydicom.dcmread(sr)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Zoë"
    dciodvfy(sr, allowed=("99SPAL",))
    back = read_measurement_report(sr)
    assert NON_ASCII in back.warnings
    assert back.parameters["CA"].warnings == res.parameters["CA"].warnings
    assert back.omitted["RSH"] == "needs the acromion (é)"
    lab = np.zeros((300, 400), np.uint8)
    lab[90:110, 250:330] = 1
    seg = write_segmentation(lab, film, tmp_path / "film_seg.dcm", protocol="coronal-shoulder")
    assert pydicom.dcmread(seg).SpecificCharacterSet == "ISO_IR 192"
    dciodvfy(seg, kind="Segmentation", allowed=("99SPAL",))
    # an all-ASCII report keeps the default repertoire (DCMTK's checker warns on ISO_IR 192)
    plain = write_measurement_report(_shoulder_result(_film(tmp_path / "plain.dcm")), read_source_dataset(
        tmp_path / "plain.dcm"), tmp_path / "plain_sr.dcm")
    assert "SpecificCharacterSet" not in pydicom.dcmread(plain)


def test_concept_meanings_are_whole_words_within_64_characters():
    value, scheme, meaning = dicom_sr.concept_for("RSH_bony", "coronal-shoulder")
    assert (value, scheme, meaning) == ("RSH_bony", "99SPAL", "Radiographic shoulder height, bony surrogate")
    for pid in PROTOCOL_IDS:
        for p in get_protocol(pid).parameters:
            _, scheme, meaning = dicom_sr.concept_for(p.id, pid)
            assert scheme != "99SPAL" or meaning.count("(") == meaning.count(")") and p.title.startswith(meaning.rstrip(".")), p.id


def test_dcmtk_reads_the_content_tree(shoulder):
    """DCMTK's SR reader checks the relationship constraints of the Comprehensive SR IOD."""
    exe = _tool("dsrdump")
    out = subprocess.run([exe, "-Ee", str(shoulder[2])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "W:" not in out.stderr and "E:" not in out.stderr, out.stderr
    assert 'NUM:(,,"Coracoid height difference")="2.0" (mm,UCUM,"mm")' in out.stdout


def test_batch_writes_sr_and_other_outputs_carry_no_identity(tmp_path):
    (tmp_path / "in").mkdir()
    film = _film(tmp_path / "in" / "film.dcm")
    lm_dir = tmp_path / "lms"
    lm_dir.mkdir()
    (lm_dir / "film.json").write_text(json.dumps({"protocol": "coronal-shoulder",
                                                  "landmarks": {k: list(v) for k, v in SHOULDER.items()}}))
    out = tmp_path / "out"
    rc = cli_main(["batch", str(tmp_path / "in"), "--protocol", "coronal-shoulder", "--out", str(out),
                   "--landmarks-dir", str(lm_dir), "--dicom-sr", "--progress", "none"])
    assert rc == 0
    back = read_measurement_report(out / "film_sr.dcm")
    assert back.value("CHD") == pytest.approx(2.0)
    result = json.loads((out / "film.json").read_text())
    src = pydicom.dcmread(film)
    assert result["dicom"]["sop_instance_uid"] == src.SOPInstanceUID
    assert result["dicom"]["study_instance_uid"] == src.StudyInstanceUID
    # identity stays out of everything except the SR
    for f in out.iterdir():
        if f.name.endswith("_sr.dcm"):
            continue
        data = f.read_bytes()
        for secret in (PATIENT_NAME, PATIENT_ID, "Doe", "19700101", "Spine Jane Doe"):
            assert secret.encode() not in data, (f.name, secret)


def test_mixed_folder_keeps_every_films_results(tmp_path, capsys):
    """--dicom-sr over DICOM and PNG films: the PNG gets its JSON, markups and overlay and one warning, exit 0."""
    from PIL import Image

    (tmp_path / "in").mkdir()
    _film(tmp_path / "in" / "film.dcm")
    Image.fromarray((np.arange(300 * 400).reshape(300, 400) % 251).astype(np.uint8)).save(tmp_path / "in" / "photo.png")
    lm_dir = tmp_path / "lms"
    lm_dir.mkdir()
    for stem in ("film", "photo"):
        (lm_dir / f"{stem}.json").write_text(json.dumps({"protocol": "coronal-shoulder",
                                                         "landmarks": {k: list(v) for k, v in SHOULDER.items()}}))
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "--protocol", "coronal-shoulder", "--out", str(out),
            "--landmarks-dir", str(lm_dir), "--dicom-sr", "--progress", "none"]
    assert cli_main(args) == 0
    assert len((out / "failures.csv").read_text().splitlines()) <= 1  # no failure row
    assert (out / "film_sr.dcm").is_file() and not (out / "photo_sr.dcm").exists()
    for f in ("photo.json", "photo.mrk.json", "photo_overlay.png"):
        assert (out / f).is_file(), f
    photo = json.loads((out / "photo.json").read_text())
    assert photo["parameters"]["CA"]["value"] == pytest.approx(math.degrees(math.atan2(10, 200)))
    sr_warnings = [w for w in photo["warnings"] if "DICOM SR" in w]
    assert sr_warnings == ["photo.png: is not a DICOM file, so no DICOM SR can reference it; "
                           "its other outputs are written."]
    assert not any("DICOM SR" in w for w in json.loads((out / "film.json").read_text())["warnings"])
    capsys.readouterr()
    assert cli_main(args) == 0  # resume: both films complete, nothing re-analysed
    assert json.loads(capsys.readouterr().out)["skipped"] == 2


def test_non_dicom_input_gets_one_sentence(tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "film.png"
    Image.fromarray(np.zeros((50, 60), np.uint8)).save(png)
    with pytest.raises(SpineAlignmentError, match=r"film.png: is not a DICOM file.*leave out --dicom-sr"):
        analyze_one(png, "coronal-shoulder", tmp_path / "o", landmarks_path=None, write_dicom_sr=True)
    rc = cli_main(["analyze", str(png), "--protocol", "coronal-spine", "--out", str(tmp_path / "o2"), "--dicom-sr"])
    assert rc == 2
    assert "is not a DICOM file, so no DICOM SR can reference it" in capsys.readouterr().err


def test_reader_refuses_other_files(tmp_path, shoulder):
    with pytest.raises(SpineAlignmentError, match="not a TID 1500"):
        read_measurement_report(shoulder[0])
    with pytest.raises(SpineAlignmentError, match="not a DICOM file"):
        (tmp_path / "x.txt").write_text("hello")
        read_source_dataset(tmp_path / "x.txt")
