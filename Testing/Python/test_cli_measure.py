"""`spine-align measure` end to end, and the bad-input messages of the foundation issue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spines import coronal_spine, lateral_spine, select
from SpineAlignmentLib.cli import main
from SpineAlignmentLib.errors import CalibrationError, LandmarkError
from SpineAlignmentLib.pipeline import measure
from SpineAlignmentLib.result import Landmark, Result


def _write(path, protocol, landmarks, **extra):
    data = {"protocol": protocol, "landmarks": {k: {"x": x, "y": y} for k, (x, y) in landmarks.items()}, **extra}
    path.write_text(json.dumps(data))
    return path


def test_single_file_prints_result_json(tmp_path, rng, capsys):
    pts = select(lateral_spine(rng), "sagittal-whole-spine")
    f = _write(tmp_path / "a.json", "sagittal-whole-spine", pts, spacing_mm=[0.2, 0.2], calibration="calibrated:FIDUCIAL")
    assert main(["measure", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == "spinealignment.result/1" and out["protocol"] == "sagittal-whole-spine"
    assert out["parameters"]["SVA"]["unit"] == "mm" and out["parameters"]["SVA"]["calibration"] == "calibrated:FIDUCIAL"
    expected = measure(pts, "sagittal-whole-spine", spacing_mm=(0.2, 0.2))
    for pid, m in expected.parameters.items():
        assert out["parameters"][pid]["value"] == pytest.approx(m.value, abs=1e-6)


def test_many_files_json_lines_in_input_order(tmp_path, rng, capsys):
    files = []
    for k in range(5):
        files.append(_write(tmp_path / f"s{k}.json", "sagittal-whole-spine", select(lateral_spine(rng, (-1) ** k), "sagittal-whole-spine")))
    assert main(["measure", *map(str, files[::-1]), "--spacing", "0.15", "0.15"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["image"] for x in lines] == [f.name for f in files[::-1]]
    assert all(x["calibration"] == "manual:user" and x["spacing_mm"] == [0.15, 0.15] for x in lines)


def test_one_bad_file_among_many_is_reported_and_the_rest_measured(tmp_path, rng, capsys):
    good = _write(tmp_path / "good.json", "coronal-spine", coronal_spine([0] * 17), image_size=[900, 800])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["measure", str(good), str(bad), str(good)]) == 2
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert len(lines) == 3 and lines[1]["schema"] == "spinealignment.error/1"
    assert "bad.json" in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize("content,needle", [
    ({"protocol": "coronal-spine", "landmarks": {"T13_TL": {"x": 1, "y": 2}}}, "T13_TL are not part of protocol"),
    ({"protocol": "coronal-spin", "landmarks": {}}, "Unknown protocol 'coronal-spin'"),
    ({"protocol": "coronal-spine", "landmarks": {"T1_TL": {"x": float("nan"), "y": 2}}}, "non-finite"),
    ({"protocol": "coronal-spine", "landmarks": {"T1_TL": {"x": 5, "y": 2}, "T1_TR": {"x": 5, "y": 2}}}, "both at (5, 2)"),
    ({"protocol": "coronal-spine", "landmarks": {"T1_TL": {"x": 5}}}, "not {\"x\": number"),
    ({"protocol": "coronal-spine", "spacing_mm": [0, 0.2], "landmarks": {}}, "not a positive finite number"),
    ({"protocol": "coronal-spine", "spacing_mm": [-0.1, 0.2], "landmarks": {}}, "not a positive finite number"),
])
def test_bad_landmark_files(tmp_path, capsys, content, needle):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(content))
    assert main(["measure", str(f)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "bad.json" in err or "Unknown protocol" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_duplicate_keys_refused(tmp_path, capsys):
    f = tmp_path / "dup.json"
    f.write_text('{"protocol": "coronal-spine", "landmarks": {"T1_TL": {"x": 1, "y": 2}, "T1_TL": {"x": 3, "y": 4}}}')
    assert main(["measure", str(f)]) == 2
    assert "'T1_TL' appears twice" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"protocol": "nope", "landmarks": {}}))
    with pytest.raises(Exception):
        main(["--debug", "measure", str(f)])


def test_spacing_zero_from_cli(tmp_path, capsys):
    f = _write(tmp_path / "a.json", "coronal-spine", coronal_spine([0] * 17))
    with pytest.raises(SystemExit) as exc:  # refused while the options are read, before any file
        main(["measure", str(f), "--spacing", "0", "0.2"])
    assert exc.value.code == 2 and "positive finite" in capsys.readouterr().err
    with pytest.raises(CalibrationError):
        measure({}, "coronal-spine", spacing_mm=(float("inf"), 1))


def test_missing_landmark_leaves_parameters_out_with_reason(rng):
    pts = select(lateral_spine(rng), "sagittal-whole-spine")
    del pts["C7c"]
    r = measure(pts, "sagittal-whole-spine")
    for pid in ("SVA", "SSA", "GT", "Barrey"):
        assert pid not in r.parameters and "C7c" in r.omitted[pid]
        assert any(w.startswith(f"{pid} left out") and "C7c" in w for w in r.warnings)
    assert "PI" in r.parameters and "cSVA" in r.parameters


def test_untrusted_landmark_not_used(rng):
    pts = {k: Landmark(x, y, 0.9) for k, (x, y) in select(lateral_spine(rng), "sagittal-whole-spine").items()}
    pts["S1_AS"] = Landmark(pts["S1_AS"].x, pts["S1_AS"].y, 0.1)
    r = measure(pts, "sagittal-whole-spine")
    assert "PI" not in r.parameters and "not trusted S1_AS" in r.omitted["PI"]
    assert any("S1_AS (0.10)" in w for w in r.warnings)
    assert measure(pts, "sagittal-whole-spine", min_confidence=0.05).value("PI") is not None


def test_result_json_round_trip(tmp_path, rng):
    pts = select(lateral_spine(rng), "sagittal-whole-spine")
    r = measure(pts, "sagittal-whole-spine", spacing_mm=(0.2, 0.3), calibration="estimated(ERMF)",
                image_size=(3000, 1200), patient_orientation="P,F")
    path = r.write_json(tmp_path / "r.json")
    back = Result.read_json(path)
    assert back.landmarks == r.landmarks
    assert back.spacing_mm == (0.2, 0.3) and back.calibration == "estimated(ERMF)"
    assert back.patient_orientation == ("P", "F")
    for pid, m in r.parameters.items():
        assert back.parameters[pid].value == pytest.approx(m.value, abs=1e-6)
        assert back.parameters[pid].construction == [type(c).from_dict(c.to_dict()) for c in m.construction]
    # re-measuring the written file reproduces the values
    again = measure(back.landmarks, back.protocol, spacing_mm=back.spacing_mm, calibration=back.calibration,
                    patient_orientation=back.patient_orientation)
    for pid, m in r.parameters.items():
        assert again.value(pid) == pytest.approx(m.value, abs=1e-3)


def test_lumbar_pair_through_cli(tmp_path, capsys):
    from test_geometry import _lumbar_image
    flex = _lumbar_image([0] * 6, [3, 0, 0, 0, 0, 0])
    ext = _lumbar_image([6, 0, 0, 0, 0, 0], [0] * 6)
    f = tmp_path / "pair.json"
    f.write_text(json.dumps({"protocol": "lumbar-dynamic", "views": {
        "flexion": {"image": "flex.dcm", "spacing_mm": [0.2, 0.2], "landmarks": {k: [x, y] for k, (x, y) in flex.items()}},
        "extension": {"image": "ext.dcm", "spacing_mm": [0.2, 0.2], "landmarks": {k: [x, y] for k, (x, y) in ext.items()}}}}))
    assert main(["measure", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameters"]["IROM_L1L2"]["value"] == pytest.approx(6.0)
    assert out["views"]["flexion"]["image"] == "flex.dcm"


def test_unknown_patient_orientation_refused():
    with pytest.raises(LandmarkError, match="must have exactly two values"):
        measure({}, "coronal-spine", patient_orientation="left")
    assert np.isfinite(1.0)


@pytest.mark.parametrize("argv, needle", [
    (["--min-confidence", "nan"], "not a finite number"),
    (["--min-confidence", "1.5"], "not a confidence between 0 and 1"),
    (["--min-curve", "inf"], "not a finite number"),
    (["--min-curve", "-3"], "not an angle between 0 and 90"),
    (["--spacing", "1e300", "0.2"], "positive finite number below 10"),
    (["--spacing", "nan", "0.2"], "positive finite"),
])
def test_numeric_options_are_validated(tmp_path, capsys, argv, needle):
    """Finding 6: `--min-confidence nan` and other impossible numbers are refused with exit status 2."""
    f = _write(tmp_path / "a.json", "coronal-spine", coronal_spine([0] * 17))
    with pytest.raises(SystemExit) as exc:
        main(["measure", str(f), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and "Traceback" not in err


def test_batch_numeric_options_are_validated(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["batch", str(tmp_path), "--protocol", "coronal-spine", "--out", str(tmp_path / "o"), "--min-confidence", "nan"])
    assert exc.value.code == 2 and "not a finite number" in capsys.readouterr().err


def test_several_files_go_on_past_bad_ones_and_exit_non_zero(tmp_path, capsys):
    """Finding 7: a calibration or protocol error in one file used to stop the run (only landmark errors went on)."""
    good = _write(tmp_path / "good.json", "coronal-spine", coronal_spine([0] * 17))
    zero = tmp_path / "zero.json"
    zero.write_text(json.dumps({"protocol": "coronal-spine", "spacing_mm": [0, 0.2], "landmarks": {}}))
    alien = tmp_path / "alien.json"
    alien.write_text(json.dumps({"protocol": "no-such-protocol", "landmarks": {}}))
    missing = tmp_path / "missing.json"
    assert main(["measure", str(zero), str(good), str(alien), str(missing), str(good)]) == 2
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["schema"] for line in lines] == ["spinealignment.error/1", "spinealignment.result/1",
                                                  "spinealignment.error/1", "spinealignment.error/1",
                                                  "spinealignment.result/1"]
    assert [Path(line["image"]).name for line in lines] == ["zero.json", "good.json", "alien.json", "missing.json",
                                                            "good.json"]
    assert "3 of 5 files failed" in err and "Traceback" not in err


# ---- finding 6: values from impossible input carry a warning, or are refused ------------------------


def test_points_outside_the_image_are_flagged_on_every_value_using_them():
    # the spine runs from y = 100 to y = 602 + 1800 shift on a 1024-row film: L-spine corners lie below the image
    lms = {k: (x, y + 260.0 * (int(k[1:].split("_")[0]) if k.startswith("L") else 0)) for k, (x, y) in coronal_spine([0] * 17).items()}
    assert max(y for _, y in lms.values()) > 1500
    inside = measure(lms, "coronal-spine", image_size=(3000, 800))
    assert not any("outside" in w for w in inside.warnings)
    res = measure(lms, "coronal-spine", image_size=(1024, 800))
    outside = sorted({k for k, (x, y) in lms.items() if y > 1024.5})
    assert outside and all(k.startswith("L") for k in outside)
    assert any(w.startswith(f"{len(outside)} landmark(s) lie outside the 1024 x 800 image") for w in res.warnings)
    flagged = {pid for pid, m in res.parameters.items() if any("outside the image" in w for w in m.warnings)}
    # the AASCE triple picks its curves from all 68 corners, so every value of it is flagged
    assert flagged == set(res.parameters) == {"AASCE_1", "AASCE_2", "AASCE_3"}
    assert sum("uses landmark(s) outside the image" in w for w in res.warnings) == 3


def test_degenerate_sacral_plate_is_refused_not_measured(rng):
    pts = select(lateral_spine(rng), "sagittal-whole-spine")
    x, y = pts["S1_PS"]
    pts["S1_AS"] = (x + 0.45, y)  # a 0.45 px sacral plate once gave SS -26.6 deg
    res = measure(pts, "sagittal-whole-spine", patient_orientation="A,F")
    for pid in ("SS", "PI"):
        assert pid not in res.parameters
        assert res.omitted[pid] == ("S1_PS and S1_AS are only 0.45 px apart, so the line through them has no "
                                    "meaningful direction; one of them is misplaced, move it")
    assert "PT" in res.parameters  # PT does not use the plate's direction
    # the same with a spacing: the distance is in mm
    res = measure(pts, "sagittal-whole-spine", patient_orientation="A,F", spacing_mm=(0.2, 0.2))
    assert "only 0.09 mm apart" in res.omitted["SS"]
    # and a degenerate coronal endplate leaves the Cobb curves and the AASCE triple out
    lms = coronal_spine([5.0 * np.sin(0.5 * i) for i in range(17)])
    lms["T9_TR"] = (lms["T9_TL"][0] + 0.3, lms["T9_TL"][1])
    res = measure(lms, "coronal-spine", image_size=(800, 800))
    assert not {"Cobb_PT", "Cobb_MT", "Cobb_TLL", "AASCE_1"} & set(res.parameters)
    assert "T9_TL and T9_TR are only 0.3 px apart" in res.omitted["Cobb_MT"] and "T9_TL" in res.omitted["AASCE_1"]


def test_orientation_contradicting_the_landmarks_is_refused(rng):
    pts = select(lateral_spine(rng), "sagittal-whole-spine")
    ok = measure(pts, "sagittal-whole-spine", patient_orientation="A,F")
    assert ok.frame["facing"] == "image-right" and 0 < ok.value("SS") < 60
    res = measure(pts, "sagittal-whole-spine", patient_orientation="P,F")  # once: SS 143 deg, PI 130 deg
    assert res.parameters == {}
    assert "Patient Orientation P,F says the patient faces image-left, but the vertebral corners" in res.omitted["SS"]
    assert any(w.startswith("No parameter computed: Patient Orientation P,F") for w in res.warnings)


@pytest.mark.parametrize("size", [[0, 0], [1024, 0], [True, True], [1024.5, 800], [10**9, 800]])
def test_impossible_image_size_is_refused(tmp_path, capsys, size):
    f = _write(tmp_path / "a.json", "coronal-spine", coronal_spine([0] * 17), image_size=size)
    assert main(["measure", str(f)]) == 2  # once: [0, 0] turned AASCE_3 into 0.0
    err = capsys.readouterr().err
    assert "is not an image size" in err and "a.json" in err and err.count("\n") == 1


@pytest.mark.parametrize("point", [[1e300, 1e300], [True, True], {"x": True, "y": 3}, [1, 2, True]])
def test_absurd_coordinates_are_refused(tmp_path, capsys, point):
    lms = {k: [x, y] for k, (x, y) in coronal_spine([0] * 17).items()}
    lms["T1_TL"] = point
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"protocol": "coronal-spine", "landmarks": lms}))
    assert main(["measure", str(f)]) == 2
    err = capsys.readouterr().err
    assert "T1_TL" in err and "a.json" in err and "Traceback" not in err


def test_another_protocols_file_is_refused(tmp_path, rng, capsys):
    """A sagittal-whole-spine file measured as lumbar-dynamic: one sentence, exit 2; among several, one error row."""
    sag = _write(tmp_path / "sag.json", "sagittal-whole-spine", select(lateral_spine(rng), "sagittal-whole-spine"))
    assert main(["measure", "--protocol", "lumbar-dynamic", str(sag)]) == 2
    err = capsys.readouterr().err
    assert "sag.json: landmarks are for protocol 'sagittal-whole-spine', not 'lumbar-dynamic'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    good = _write(tmp_path / "cor.json", "coronal-spine", coronal_spine([0] * 17), image_size=[900, 800])
    assert main(["measure", "--protocol", "coronal-spine", str(good), str(sag), str(good)]) == 2
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["schema"] for x in lines] == ["spinealignment.result/1", "spinealignment.error/1", "spinealignment.result/1"]
    assert lines[0]["parameters"] and "not 'coronal-spine'" in lines[1]["error"]
    # the same file with its own protocol is measured
    assert main(["measure", "--protocol", "sagittal-whole-spine", str(sag)]) == 0


def test_implausible_values_are_reported_with_a_warning_naming_their_landmarks():
    """Femoral heads placed off the pelvis: PI and PT outside the table's ranges keep their values and warn."""
    from SpineAlignmentLib.protocols import get_protocol

    pts = select(lateral_spine(np.random.default_rng(0)), "sagittal-whole-spine")  # a spine with plausible values
    good = measure(pts, "sagittal-whole-spine", spacing_mm=(0.2, 0.2))
    assert not any("plausible" in w for m in good.parameters.values() for w in m.warnings)
    moved = {**pts, "FH_1": (pts["FH_1"][0] - 150, pts["FH_1"][1]), "FH_2": (pts["FH_2"][0] - 150, pts["FH_2"][1])}
    res = measure(moved, "sagittal-whole-spine", spacing_mm=(0.2, 0.2))
    proto = get_protocol("sagittal-whole-spine")
    assert proto.parameter("PI").plausible == (20.0, 100.0) and proto.parameter("PT").plausible == (-15.0, 60.0)
    assert res.value("PI") < 20 and res.value("PT") < -15  # still reported
    for pid in ("PI", "PT"):
        (w,) = [w for w in res.parameters[pid].warnings if "plausible" in w]
        assert w.startswith(f"{pid} = {res.value(pid):.1f}° is outside the plausible range")
        assert w.endswith("S1_AS, S1_PS, FH_1, FH_2.")
    assert not [w for w in res.parameters["SS"].warnings if "plausible" in w]  # SS does not use the heads
    # a distance in pixels (no spacing) is not held to a range in mm
    px = measure({**moved, "C7c": (moved["C7c"][0] + 5000, moved["C7c"][1])}, "sagittal-whole-spine")
    assert px.parameters["SVA"].unit == "px" and not any("plausible" in w for w in px.parameters["SVA"].warnings)


def test_every_untrusted_landmark_is_named_as_the_cause(rng):
    pts = select(lateral_spine(rng), "sagittal-whole-spine")
    res = measure({k: (x, y, 0.01) for k, (x, y) in pts.items()}, "sagittal-whole-spine")
    assert not res.parameters
    reason = res.omitted["PI"]
    assert reason.startswith("no landmark is trusted (confidence below 0.3: OD, C2_AI")
    assert reason.index("trusted") < reason.index("which way")  # the cause first
    # some trusted: the frame comes from them, no such message
    some = {k: (x, y, 0.01 if k.startswith("C") else 0.9) for k, (x, y) in pts.items()}
    assert "PI" in measure(some, "sagittal-whole-spine").parameters
