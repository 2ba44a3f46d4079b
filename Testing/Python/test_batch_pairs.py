"""Batch over pairs of films (``batch --pairs MANIFEST.csv``): lumbar flexion + extension and a coronal film with its
paired lateral; one result per pair, per-film markups and overlays, resume, stale results and bad manifest rows."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from spines import coronal_spine, lateral_spine
from test_geometry import _lumbar_image

from SpineAlignmentLib import batch as batch_mod
from SpineAlignmentLib.batch import BatchOptions, BatchRunner
from SpineAlignmentLib.cli import main as cli_main
from SpineAlignmentLib.errors import ManifestError
from SpineAlignmentLib.pairbatch import read_manifest
from SpineAlignmentLib.pipeline import measure
from SpineAlignmentLib.result import Result
from SpineAlignmentLib.slicerio.geometry import ijk_to_ras_for_file
from SpineAlignmentLib.slicerio.markups_json import landmarks_from_markups_json

LUMBAR = "lumbar-dynamic"
SIZE = (400, 700)  # rows, cols of the lumbar films
#: Hand-worked pair: flexion L1 tilted 6 deg anterior end down and shifted 5 px anterior over a flat L2;
#: extension L1 tilted 8 deg anterior end up (facing left). Boxes 40 x 25 px (test_geometry._lumbar_image).
FLEX = _lumbar_image([-6, 0, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0])
EXT = _lumbar_image([8, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], facing=-1)
#: IROM = SA(extension) - SA(flexion) = 8 - (-6); the translation of L1's posterior-inferior corner over L2's
#: posterior-superior corner, anterior positive: flexion 5 - 25 sin 6 deg, extension 25 sin 8 deg (px).
IROM_L1L2 = 14.0
T_FLEX = 5 - 25 * math.sin(math.radians(6))
T_EXT = 25 * math.sin(math.radians(8))


def _png(path: Path, size=SIZE, seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)).save(path)
    return path


def _landmarks(path: Path, protocol: str, lms: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"protocol": protocol, "landmarks": lms}))
    return path


def _manifest(path: Path, rows: list[tuple], header=("pair", "role", "image", "landmarks")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _lumbar_study(root: Path) -> tuple[Path, Path]:
    """Pairs P1 (flexion landmarks in a mirrored --landmarks-dir tree, extension landmarks from the manifest
    column) and P2 (the same films' landmarks swapped between roles: IROM of the opposite sign)."""
    marks = root / "marks"
    for pair in ("P1", "P2"):
        _png(root / "films" / pair / "flexion.png", seed=1)
        _png(root / "films" / pair / "extension.png", seed=2)
    _landmarks(marks / "P1" / "flexion.json", LUMBAR, FLEX)
    _landmarks(root / "films" / "P1" / "extension-landmarks.json", LUMBAR, EXT)
    _landmarks(marks / "P2" / "flexion.json", LUMBAR, EXT)
    _landmarks(root / "films" / "P2" / "extension-landmarks.json", LUMBAR, FLEX)
    manifest = _manifest(root / "pairs.csv", [
        ("P1", "flexion", "films/P1/flexion.png", ""),
        ("P1", "extension", "films/P1/extension.png", "films/P1/extension-landmarks.json"),
        ("P2", "flexion", "films/P2/flexion.png", ""),
        ("P2", "extension", "films/P2/extension.png", "films/P2/extension-landmarks.json"),
    ])
    return manifest, marks


def _opts(out: Path, marks: Path | None, protocol=LUMBAR, **kw) -> BatchOptions:
    return BatchOptions(protocol=protocol, out_dir=str(out), landmarks_dir=str(marks) if marks else None,
                        spacing=(0.2, 0.2), **kw)


@pytest.fixture
def counted(monkeypatch):
    """Count films whose landmarks are read (in-process executor)."""
    calls: list[str] = []
    real = batch_mod.film_landmarks

    def wrapper(path, *a, **kw):
        calls.append(f"{Path(path).parent.name}/{Path(path).name}")
        return real(path, *a, **kw)

    monkeypatch.setattr(batch_mod, "film_landmarks", wrapper)
    import SpineAlignmentLib.pairbatch as pb
    monkeypatch.setattr(pb, "film_landmarks", wrapper)
    return calls


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_lumbar_pairs_one_result_per_pair_with_hand_worked_irom_and_dst(tmp_path, counted):
    manifest, marks = _lumbar_study(tmp_path)
    out = tmp_path / "out"
    s = BatchRunner([], _opts(out, marks), pairs=manifest).run()
    assert (s.total, s.done, s.failed, s.skipped) == (2, 2, 0, 0), s.failures
    res = json.loads((out / "P1.json").read_text())
    assert set(res["views"]) == {"flexion", "extension"} and res["landmarks"] == {}
    p = res["parameters"]
    assert p["IROM_L1L2"]["value"] == pytest.approx(IROM_L1L2, abs=1e-5)
    assert p["SA_L1L2_flexion"]["value"] == pytest.approx(-6.0, abs=1e-5)
    assert p["SA_L1L2_extension"]["value"] == pytest.approx(8.0, abs=1e-5)
    assert p["ST_L1L2_flexion"]["value"] == pytest.approx(T_FLEX * 0.2, abs=1e-5)
    assert p["dST_L1L2"]["value"] == pytest.approx((T_FLEX - T_EXT) * 0.2, abs=1e-5)
    assert p["dST_pct_L1L2"]["value"] == pytest.approx(100 * (T_FLEX - T_EXT) / 40, abs=1e-4)
    assert p["dST_L1L2"]["unit"] == "mm" and p["dST_L1L2"]["calibration"] == "manual:user"
    for lv in ("L2L3", "L3L4", "L4L5", "L5S1"):
        assert p[f"IROM_{lv}"]["value"] == pytest.approx(0.0, abs=1e-5)
    # P2 has the two films' landmarks swapped: every difference changes sign
    p2 = json.loads((out / "P2.json").read_text())["parameters"]
    assert p2["IROM_L1L2"]["value"] == pytest.approx(-IROM_L1L2, abs=1e-5)
    assert p2["dST_L1L2"]["value"] == pytest.approx((T_EXT - T_FLEX) * 0.2, abs=1e-5)
    # the result is the protocols.md pair format: measured again from its own JSON, the same values
    again = measure(None, LUMBAR, views=Result.from_dict(res).views)
    assert again.value("IROM_L1L2") == pytest.approx(res["parameters"]["IROM_L1L2"]["value"], abs=1e-5)
    for role, pts in (("flexion", FLEX), ("extension", EXT)):
        view = res["views"][role]
        assert view["image"] == f"{role}.png" and view["image_size"] == list(SIZE)
        assert view["spacing_mm"] == [0.2, 0.2] and view["calibration"] == "manual:user"
        # one markups file and one overlay per film; the markups map back to the film's pixels
        film = tmp_path / "films" / "P1" / f"{role}.png"
        back = landmarks_from_markups_json(out / f"P1_{role}.mrk.json", ijk_to_ras_for_file(film), LUMBAR)
        assert max(abs(back[k].x - x) + abs(back[k].y - y) for k, (x, y) in pts.items()) < 1e-5
        assert Image.open(out / f"P1_{role}_overlay.png").format == "PNG"
    assert res["fingerprint"]["films"]["flexion"]["image"] == "films/P1/flexion.png"
    assert res["fingerprint"]["films"]["flexion"]["landmarks_file"]["name"] == "flexion.json"
    assert res["fingerprint"]["films"]["extension"]["landmarks_file"]["name"] == "extension-landmarks.json"
    rows = _rows(out / "summary.csv")
    assert [r["image"] for r in rows] == ["P1", "P2"]
    assert rows[0]["n_landmarks"] == str(2 * len(FLEX)) and rows[0]["calibration"] == "manual:user"
    assert float(rows[0]["IROM_L1L2"]) == pytest.approx(IROM_L1L2, abs=1e-5)
    assert float(rows[1]["IROM_L1L2"]) == pytest.approx(-IROM_L1L2, abs=1e-5)
    assert _rows(out / "failures.csv") == []
    assert sorted(counted) == ["P1/extension.png", "P1/flexion.png", "P2/extension.png", "P2/flexion.png"]
    assert not list(out.glob("*.part"))


def test_pairs_resume_stale_and_kept_aside(tmp_path, counted):
    manifest, marks = _lumbar_study(tmp_path)
    out = tmp_path / "out"
    BatchRunner([], _opts(out, marks, write_overlay=False), pairs=manifest).run()
    assert len(counted) == 4
    # a kill while P2 was being written: its result JSON is absent, so only P2 runs again
    (out / "P2.json").unlink()
    again = BatchRunner([], _opts(out, marks, write_overlay=False), pairs=manifest).run()
    assert (again.done, again.skipped, again.stale) == (1, 1, {}) and counted[4:] == ["P2/flexion.png",
                                                                                       "P2/extension.png"]
    assert len(_rows(out / "summary.csv")) == 2  # the summary covers both runs
    same = BatchRunner([], _opts(out, marks, write_overlay=False), pairs=manifest).run()
    assert (same.done, same.skipped) == (0, 2) and len(counted) == 6
    # a corrected landmark file of one film: that pair only, and it says why
    moved = dict(EXT, L1_AS=(EXT["L1_AS"][0], EXT["L1_AS"][1] + 1.0))
    _landmarks(tmp_path / "films" / "P1" / "extension-landmarks.json", LUMBAR, moved)
    fixed = BatchRunner([], _opts(out, marks, write_overlay=False), pairs=manifest).run()
    assert (fixed.done, fixed.skipped, fixed.stale) == (1, 1, {"films changed": 1})
    # the manifest now gives P2 another extension film: P2 is stale, P1 is not
    _png(tmp_path / "films" / "P2" / "extension-2.png", seed=3)
    rows = [r for r in csv.reader(open(manifest, encoding="utf-8"))]
    rows[4][2] = "films/P2/extension-2.png"
    _manifest(manifest, [tuple(r) for r in rows[1:]])
    swapped = BatchRunner([], _opts(out, marks, write_overlay=False), pairs=manifest).run()
    assert (swapped.done, swapped.skipped, swapped.stale) == (1, 1, {"films changed": 1})
    assert json.loads((out / "P2.json").read_text())["views"]["extension"]["image"] == "extension-2.png"
    # another spacing makes every pair stale; a pair whose re-analysis fails keeps its old result aside
    (tmp_path / "films" / "P1" / "extension-landmarks.json").write_text("{ not json")
    s = BatchRunner([], _opts(out, marks, write_overlay=False, min_confidence=0.5), pairs=manifest).run()
    assert (s.done, s.failed) == (1, 1) and "extension-landmarks.json" in s.failures["P1"]
    assert not (out / "P1.json").exists() and (out / "P1.json.stale").is_file()
    assert [r["image"] for r in _rows(out / "summary.csv")] == ["P2"]
    assert [r["name"] for r in _rows(out / "failures.csv")] == ["P1"]


def test_bad_manifest_rows_are_named_in_failures_and_the_good_pair_goes_on(tmp_path, counted):
    manifest, marks = _lumbar_study(tmp_path)
    rows = [
        ("P1", "flexion", "films/P1/flexion.png", ""),
        ("P1", "extension", "films/P1/extension.png", "films/P1/extension-landmarks.json"),
        ("P3", "flexion", "films/P2/flexion.png", ""),
        ("P3", "lateral", "films/P2/extension.png", ""),  # not a role of lumbar-dynamic
        ("P4", "flexion", "films/P4/flexion.png", ""),  # no such film
        ("P4", "extension", "films/P2/extension.png", ""),
        ("P5", "flexion", "films/P2/flexion.png", ""),  # one film only
        ("P6", "flexion", "films/P2/flexion.png", ""),
        ("P6", "flexion", "films/P1/flexion.png", ""),  # given twice
        ("P6", "extension", "films/P2/extension.png", ""),
        ("", "flexion", "films/P2/flexion.png", ""),  # no pair ID
        ("P7", "flexion", "films/P2/flexion.png", "marks/none.json"),  # no such landmark file
        ("P7", "extension", "films/P2/extension.png", ""),
    ]
    _manifest(manifest, rows)
    out = tmp_path / "out"
    s = BatchRunner([], _opts(out, marks, write_overlay=False), pairs=manifest).run()
    assert (s.total, s.done, s.failed) == (7, 1, 6)
    failures = {r["name"]: r for r in _rows(out / "failures.csv")}
    assert set(failures) == {"P3", "P4", "P5", "P6", "pairs-line12", "P7"}
    assert failures["P3"]["image"] == "pairs.csv lines 4, 5" and failures["P3"]["error"] == "ManifestError"
    assert failures["P3"]["reason"] == ("pairs.csv: line 5: role 'lateral' is not a film of lumbar-dynamic; use "
                                        "flexion or extension.")
    assert failures["P4"]["reason"].startswith("pairs.csv: line 6: image films/P4/flexion.png not found")
    assert failures["P5"]["reason"] == ("pairs.csv: pair P5 has only its flexion film (line 8); add a row for its "
                                        "extension film.")
    assert failures["P6"]["reason"] == "pairs.csv: lines 9 and 10 both give the flexion film of pair P6; keep one."
    assert failures["pairs-line12"]["reason"].startswith("pairs.csv: line 12 has no pair ID")
    assert "landmark file marks/none.json not found" in failures["P7"]["reason"]
    assert sorted(counted) == ["P1/extension.png", "P1/flexion.png"]  # the bad pairs never start
    # fixed manifest: the earlier row failures go (the pairs run), the result of P1 is re-used
    _manifest(manifest, rows[:2] + [("P5", "extension", "films/P2/extension.png",
                                     "films/P2/extension-landmarks.json")] + [rows[6]])
    fixed = BatchRunner([], _opts(out, marks, write_overlay=False), pairs=manifest).run()
    assert (fixed.done, fixed.skipped, fixed.failed) == (1, 1, 0), fixed.failures
    assert {r["name"] for r in _rows(out / "failures.csv")} == {"P3", "P4", "P6", "pairs-line12", "P7"}  # not re-run


def test_coronal_film_with_its_paired_lateral(tmp_path, capsys):
    ap = coronal_spine([0, 2, 4, 6, 8, 10, 8, 4, 0, -4, -8, -12, -10, -6, -2, 0, 0])
    lat_all = lateral_spine(np.random.default_rng(5))
    lat = {k: (float(v[0]), float(v[1])) for k, v in lat_all.items()
           if k in {"T4_AS", "T4_PS", "T12_AI", "T12_PI", "L1_AS", "L1_PS", "L5_AI", "L5_PI"}}
    _png(tmp_path / "S1" / "ap.png", size=(800, 800))
    _png(tmp_path / "S1" / "lat.png", size=(2000, 1600))
    _png(tmp_path / "S2" / "ap.png", size=(800, 800))
    _png(tmp_path / "S2" / "lat.png", size=(2000, 1600))
    _landmarks(tmp_path / "S1" / "ap.json", "coronal-spine", ap)
    _landmarks(tmp_path / "S1" / "lat.json", "coronal-spine", lat)
    _landmarks(tmp_path / "S2" / "ap.json", "coronal-spine", ap)
    manifest = _manifest(tmp_path / "pairs.csv", [
        ("S1", "coronal", "S1/ap.png", "S1/ap.json", "L,F"), ("S1", "lateral", "S1/lat.png", "S1/lat.json", "A,F"),
        ("S2", "coronal", "S2/ap.png", "S2/ap.json", "L,F"), ("S2", "lateral", "S2/lat.png", "", ""),  # no landmarks
    ], header=("pair", "role", "image", "landmarks", "patient_orientation"))
    out = tmp_path / "out"
    s = BatchRunner([], _opts(out, None, protocol="coronal-spine", write_overlay=False), pairs=manifest).run()
    assert (s.done, s.failed) == (1, 1)
    assert "the paired lateral's landmarks (T4_AS, T4_PS" in s.failures["S2"] and "S2/lat.png" in s.failures["S2"]
    res = json.loads((out / "S1.json").read_text())
    expected = measure(ap, "coronal-spine", spacing_mm=(0.2, 0.2), image_size=(800, 800), patient_orientation="L,F",
                       calibration="manual:user",
                       paired_lateral={"landmarks": lat, "spacing_mm": (0.2, 0.2), "patient_orientation": "A,F"})
    for pid in ("TK_T4_T12", "LL_L1_L5", "Cobb_MT", "AASCE_1"):
        assert res["parameters"][pid]["value"] == pytest.approx(expected.value(pid), abs=1e-5), pid
    assert res["image"] == "ap.png" and res["paired_lateral"]["image"] == "lat.png"
    assert res["paired_lateral"]["image_size"] == [2000, 1600] and set(res["paired_lateral"]["landmarks"]) == set(lat)
    # the result file re-measures to the same values (spine-align measure reads paired_lateral)
    assert res["paired_lateral"]["patient_orientation"] == ["A", "F"] and res["patient_orientation"] == ["L", "F"]
    capsys.readouterr()
    assert cli_main(["-q", "measure", str(out / "S1.json")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["parameters"]["TK_T4_T12"]["value"] == pytest.approx(res["parameters"]["TK_T4_T12"]["value"])
    back = landmarks_from_markups_json(out / "S1_lateral.mrk.json", ijk_to_ras_for_file(tmp_path / "S1" / "lat.png"),
                                       "coronal-spine")
    assert set(back) == set(lat)


def test_a_model_finds_a_films_landmarks_through_the_single_film_route(tmp_path, monkeypatch):
    """With no landmark file a film goes to pipeline.detect (as a single film does) with the model and options."""
    import SpineAlignmentLib.pipeline as pipeline
    from SpineAlignmentLib.result import Landmark

    manifest, marks = _lumbar_study(tmp_path)
    seen = []
    by_film = {"P1/flexion.png": FLEX, "P2/flexion.png": EXT}

    def fake_detect(radiograph, protocol, *, model=None, flip_tta=False):
        key = f"{radiograph.path.parent.name}/{radiograph.path.name}"
        seen.append((key, model, flip_tta, radiograph.calibration))
        return pipeline.Detection({k: Landmark(*xy, 0.9) for k, xy in by_film[key].items()}, [],
                                  {"name": "fake-lumbar", "version": "0.1.0"})

    monkeypatch.setattr(pipeline, "detect", fake_detect)
    monkeypatch.setattr(batch_mod, "default_model", lambda protocol: "fake-lumbar")
    out = tmp_path / "out"
    s = BatchRunner([], _opts(out, None, flip_tta=True, write_overlay=False), pairs=manifest).run()
    assert s.done == 2, s.failures
    assert sorted(seen) == [("P1/flexion.png", None, True, "manual:user"), ("P2/flexion.png", None, True,
                                                                             "manual:user")]
    res = json.loads((out / "P1.json").read_text())
    assert res["parameters"]["IROM_L1L2"]["value"] == pytest.approx(IROM_L1L2, abs=1e-5)
    assert res["model"] == {"name": "fake-lumbar", "version": "0.1.0"}
    assert res["fingerprint"]["model"]["name"] == "fake-lumbar" and res["fingerprint"]["flip_tta"] is True
    assert res["views"]["flexion"]["landmarks"]["L1_AS"]["confidence"] == 0.9


def test_pairs_with_two_worker_processes(tmp_path):
    manifest, marks = _lumbar_study(tmp_path)
    s = BatchRunner([], _opts(tmp_path / "out", marks, write_overlay=False), pairs=manifest, workers=2).run()
    assert (s.done, s.failed) == (2, 0), s.failures
    assert json.loads((tmp_path / "out" / "P2.json").read_text())["parameters"]["IROM_L1L2"]["value"] == \
        pytest.approx(-IROM_L1L2, abs=1e-5)


def test_lumbar_pair_dicom_sr_references_both_films(tmp_path):
    from test_imaging import write_dicom

    from SpineAlignmentLib.io.dicom_sr import read_measurement_report

    arr = (np.arange(SIZE[0] * SIZE[1]).reshape(SIZE) % 4096).astype(np.uint16)
    for role, o in (("flexion", ["A", "F"]), ("extension", ["P", "F"])):
        write_dicom(tmp_path / f"{role}.dcm", arr, ImagerPixelSpacing=[0.2, 0.2], PatientOrientation=o)
        _landmarks(tmp_path / f"{role}.json", LUMBAR, FLEX if role == "flexion" else EXT)
    manifest = _manifest(tmp_path / "pairs.csv", [("K1", "flexion", "flexion.dcm", "flexion.json"),
                                                  ("K1", "extension", "extension.dcm", "extension.json")])
    out = tmp_path / "out"
    s = BatchRunner([], BatchOptions(protocol=LUMBAR, out_dir=str(out), write_dicom_sr=True, write_overlay=False),
                    pairs=manifest).run()
    assert s.done == 1, s.failures
    back = read_measurement_report(out / "K1_sr.dcm")
    assert back.value("IROM_L1L2") == pytest.approx(IROM_L1L2, abs=1e-9)
    res = json.loads((out / "K1.json").read_text())
    for role in ("flexion", "extension"):
        assert back.views[role].dicom["sop_instance_uid"] == res["views"][role]["dicom"]["sop_instance_uid"]
    assert res["parameters"]["dST_L1L2"]["calibration"] == "detector-plane (magnified)"


@pytest.mark.parametrize("content, expected", [
    (b"pair;role;image\nP1;flexion;a.png\n", "the first row must name the columns pair, role, image"),
    (b"\xff\xfe\x00garbage", "is not UTF-8 text"),
    (b"pair,role,image\n", "lists no films"),
    (b'pair,role,image\n"P1,flexion,a.png\n', "not a CSV file"),
])
def test_a_manifest_that_cannot_be_read_is_one_sentence_and_exit_2(tmp_path, capsys, content, expected):
    manifest = tmp_path / "pairs.csv"
    manifest.write_bytes(content)
    with pytest.raises(ManifestError, match=expected):
        read_manifest(manifest)
    rc = cli_main(["batch", "--pairs", str(manifest), "--protocol", LUMBAR, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {manifest}: ") and expected in err[0]
    assert "Traceback" not in err[0] and not (tmp_path / "out" / "summary.csv").exists()


def test_cli_pairs_argument_errors(tmp_path, capsys):
    manifest, marks = _lumbar_study(tmp_path)
    cases = [
        (["--pairs", str(tmp_path)], "is a folder, not a file"),
        (["--pairs", str(tmp_path / "none.csv")], "file not found"),
        (["--pairs", str(manifest), str(tmp_path / "films")], "not both"),
        ([], "give image files or folders to analyse, or --pairs MANIFEST.csv"),
    ]
    for extra, expected in cases:
        rc = cli_main(["batch", "--protocol", LUMBAR, "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and expected in err[0], (extra, err)
    rc = cli_main(["batch", "--pairs", str(manifest), "--protocol", "sagittal-whole-spine", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "measures one film" in err[0]
    rc = cli_main(["-q", "batch", "--pairs", str(manifest), "--protocol", LUMBAR, "--out", str(tmp_path / "o"),
                   "--landmarks-dir", str(marks), "--spacing", "0.2", "0.2", "--no-overlay"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and (summary["done"], summary["failed"]) == (2, 0)


def test_each_film_shows_its_own_values_and_the_differences_undrawn():
    from SpineAlignmentLib.io.overlay import _panel_lines
    from SpineAlignmentLib.pairs import film_result, measure_pair
    from SpineAlignmentLib.result import Landmark, View

    views = {r: View({k: Landmark(*p) for k, p in pts.items()}, image=f"{r}.png", image_size=SIZE,
                     spacing_mm=(0.2, 0.2), calibration="manual:user") for r, pts in (("flexion", FLEX),
                                                                                       ("extension", EXT))}
    result = measure_pair(LUMBAR, views)
    flexion = film_result(result, "flexion")
    assert set(flexion.landmarks) == set(FLEX) and flexion.image == "flexion.png"
    assert "SA_L1L2_flexion" in flexion.parameters and "SA_L1L2_extension" not in flexion.parameters
    assert flexion.parameters["SA_L1L2_flexion"].construction  # drawn on its film
    assert flexion.value("IROM_L1L2") == pytest.approx(IROM_L1L2) and not flexion.parameters["IROM_L1L2"].construction
    lines = _panel_lines(flexion)
    assert "IROM_L1L2 = 14.0°" in lines and not any(line.startswith("not computed") for line in lines)
    with pytest.raises(Exception, match="not 'lateral'"):
        film_result(result, "lateral")
