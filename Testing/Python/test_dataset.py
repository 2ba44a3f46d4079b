"""The training-dataset format (SpineAlignmentLib.io.dataset) and ``spine-align dataset``: real files in tmp folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from spines import coronal_spine, lateral_spine, select

from SpineAlignmentLib import cli
from SpineAlignmentLib.io.dataset import (
    DatasetError,
    order_problems,
    read_dataset,
    spine_level,
    write_labelled_image,
)
from SpineAlignmentLib.slicerio.geometry import ijk_to_ras_for_file, ijk_to_ras_from_geometry
from SpineAlignmentLib.slicerio.markups_json import markups_dict, write_markups_json

SAG = "sagittal-whole-spine"
COR = "coronal-spine"
LUMBAR = "lumbar-dynamic"


def film(rows=2000, cols=1600, seed=0):
    """A cheap film (a ramp; PNG compresses it, so writing stays fast)."""
    return ((np.arange(cols)[None, :] + np.arange(rows)[:, None] + seed) % 200).astype(np.uint8)


def checks(report, name):
    """``{check: severity}`` of the findings on files whose name starts with ``name``."""
    return {f.check: f.severity for f in report.findings if f.path.name.startswith(name)}


def test_spine_level_and_order_are_read_from_ids():
    assert [spine_level(i) for i in ("C2_AI", "C7c", "T1_AS", "T12_PI", "L1_TL", "L5c", "S1_PS")] == \
        [1, 6, 7, 18, 20, 24, 26]
    assert [spine_level(i) for i in ("OD", "FH_1", "DENS", "Clav_top_L", "T14_AS")] == [None] * 5
    up = (0.0, -1.0)
    good = {"L1_AS": (10, 100), "L1_AI": (10, 130), "L2_AS": (10, 140), "L2c": (10, 155)}
    assert order_problems(good, up) == []
    swapped = {"L1c": (10, 150), "L2c": (10, 100)}
    assert order_problems(swapped, up) == ["L1 lies below L2"]
    # a film shown upside down (head at the image bottom) is in order along its own u_sup
    assert order_problems(swapped, (0.0, 1.0)) == []
    assert order_problems({"L3_AS": (0, 200), "L3_PI": (5, 100)}, up) == \
        ["the superior corners of L3 lie below its inferior corners"]


def test_written_films_read_back_with_the_same_pixels(tmp_path, rng):
    right = select(lateral_spine(rng, +1), SAG)
    left = select(lateral_spine(rng, -1), SAG)
    d = tmp_path / "ds"
    write_labelled_image(d, film(), right, SAG, name="right", patient="P1")
    write_labelled_image(d, film(seed=1), left, SAG, name="left", patient="P1")
    write_labelled_image(d, film(seed=2).astype(np.float32), left, SAG, name="mm", spacing_mm=(0.2, 0.15),
                         calibration="calibrated:GEOMETRY", patient_orientation="P,F")
    assert sorted(p.name for p in d.iterdir()) == ["left.json", "left.png", "mm.json", "mm.nrrd", "patients.csv",
                                                   "right.json", "right.png"]
    rep = read_dataset(d, SAG)
    assert rep.findings == []
    items = {it.image.name: it for it in rep.items}
    assert set(items) == {"right.png", "left.png", "mm.nrrd"}
    assert items["right.png"].landmarks == right
    assert items["mm.nrrd"].landmarks == left
    assert items["right.png"].image_size == (2000, 1600)
    assert items["right.png"].spacing_mm is None and items["right.png"].calibration == "pixels-only"
    assert items["mm.nrrd"].spacing_mm == (0.2, 0.15) and items["mm.nrrd"].calibration == "calibrated:GEOMETRY"
    assert items["mm.nrrd"].patient_orientation == ("P", "F")
    assert items["right.png"].patient == items["left.png"].patient == "P1"
    assert items["mm.nrrd"].patient == "mm.nrrd"  # default: each film its own patient
    s = rep.summary
    assert (s["images"], s["usable_images"], s["patients"], s["errors"], s["warnings"]) == (3, 3, 2, 0, 0)
    assert s["facing"] == {"image-right": 1, "image-left": 2}
    assert s["calibration"] == {"calibrated:GEOMETRY": 1, "pixels-only": 2}
    assert s["landmarks_present"]["FH_1"] == 3 and len(s["landmarks_present"]) == 45
    # the NRRD keeps the spacing in its header too (ITK order x, y)
    import SimpleITK as sitk

    assert sitk.ReadImage(str(d / "mm.nrrd")).GetSpacing() == (0.15, 0.2)
    # writing the same name again replaces the label file and the patients.csv row, never duplicates
    moved = dict(right, OD=(right["OD"][0] + 3.0, right["OD"][1]))
    write_labelled_image(d, film(), moved, SAG, name="right", patient="P2")
    rep = read_dataset(d, SAG, check_images=False)
    assert {it.image.name: it for it in rep.items}["right.png"].landmarks["OD"] == moved["OD"]
    assert (d / "patients.csv").read_text().splitlines() == ["image,patient", "left.png,P1", "right.png,P2"]
    assert len(rep.items) == 3


def test_markups_labels_map_through_the_image_geometry(tmp_path, rng):
    """A .mrk.json in LPS mm beside an NRRD with origin, anisotropic spacing and a rotated direction."""
    import SimpleITK as sitk

    lms = select(lateral_spine(rng, -1), SAG)
    d = tmp_path / "ds"
    d.mkdir()
    img = sitk.GetImageFromArray(film())
    th = np.radians(20.0)
    img.SetOrigin((-120.0, 40.0))
    img.SetSpacing((0.15, 0.2))
    img.SetDirection((np.cos(th), -np.sin(th), np.sin(th), np.cos(th)))
    sitk.WriteImage(img, str(d / "oblique.nrrd"))
    m = ijk_to_ras_for_file(d / "oblique.nrrd")
    assert np.allclose(m, ijk_to_ras_from_geometry((-120.0, 40.0), (0.15, 0.2), img.GetDirection()))
    write_markups_json(d / "oblique.mrk.json", lms, m, protocol=SAG)
    # a PNG film with its points in RAS (Slicer's default geometry for PNG: origin 0, spacing 1)
    Image.fromarray(film(seed=3)).save(d / "plain.png")
    data = markups_dict(lms, ijk_to_ras_for_file(d / "plain.png"), protocol=SAG, coordinate_system="RAS")
    (d / "plain.mrk.json").write_text(json.dumps(data))
    rep = read_dataset(d, SAG)
    # the NRRD header's spacing is not taken on its own (it may be detector-plane): said, not used
    assert [(f.path.name, f.check) for f in rep.findings] == [("oblique.nrrd", "spacing")]
    assert {it.image.name: it.spacing_mm for it in rep.items} == {"oblique.nrrd": None, "plain.png": None}
    for it in rep.items:
        assert set(it.landmarks) == set(lms)
        err = max(np.hypot(it.landmarks[k][0] - v[0], it.landmarks[k][1] - v[1]) for k, v in lms.items())
        assert err < 1e-4, it.image.name
    assert rep.summary["facing"] == {"image-left": 2}


def _dicom(path, rows, cols, **tags):
    from hostile_corpus import dicom_dataset, write_dicom

    ds = dicom_dataset(rows, cols, **tags)
    arr = (np.arange(rows * cols, dtype=np.uint32) % 4000).astype(np.uint16).reshape(rows, cols)
    return write_dicom(path, ds, arr.tobytes())


def test_a_bad_dataset_names_every_file_and_keeps_the_good_ones(tmp_path, rng):
    d = tmp_path / "ds"
    lms = select(lateral_spine(rng, +1), SAG)
    write_labelled_image(d, film(), lms, SAG, name="a_good")
    # a film labelled for another protocol
    write_labelled_image(d, film(500, 700), coronal_spine([0.0] * 17), COR, name="b_coronal")
    # most landmarks missing (warning) and nearly all missing (error)
    few = {k: lms[k] for k in ("C2c", "C3c", "C4c", "C5c", "C6c", "C7c", "T1c", "T2c")}
    write_labelled_image(d, film(), few, SAG, name="c_few")
    write_labelled_image(d, film(), {k: lms[k] for k in ("C2c", "C3c")}, SAG, name="d_two")
    # an image without labels, a label file without image
    Image.fromarray(film(64, 64)).save(d / "e_unlabelled.png")
    (d / "f_orphan.json").write_text(json.dumps({"protocol": SAG, "landmarks": {"OD": [1, 2]}}))
    # a corrupt image in the middle (truncated PNG)
    write_labelled_image(d, film(), lms, SAG, name="g_corrupt")
    data = (d / "g_corrupt.png").read_bytes()
    (d / "g_corrupt.png").write_bytes(data[: len(data) // 3])
    # duplicates and an unknown ID in a .mrk.json; a point outside the image
    Image.fromarray(film()).save(d / "h_dup.png")
    m = markups_dict(lms, ijk_to_ras_for_file(d / "h_dup.png"), protocol=SAG)
    cps = m["markups"][0]["controlPoints"]
    cps.append(dict(cps[0]))  # OD twice
    cps.append(dict(cps[1], id="XYZ", label="XYZ"))
    (d / "h_dup.mrk.json").write_text(json.dumps(m))
    write_labelled_image(d, film(), dict(lms, FH_2=(1700.0, 900.0)), SAG, name="i_outside")
    # T12 and L1 names swapped: implausible order along the spine
    swapped = dict(lms)
    for a, b in (("T12c", "L1c"), ("T12_AI", "L1_AS"), ("T12_PI", "L1_PS")):
        swapped[a], swapped[b] = lms[b], lms[a]
    write_labelled_image(d, film(), swapped, SAG, name="j_order")
    # an extension-less DICOM film with scaled landmarks: its own calibration, detector-plane
    sub = d / "study1"
    sub.mkdir()
    _dicom(sub / "IM0001", 500, 400)
    small = {k: (v[0] / 4, v[1] / 4) for k, v in lms.items()}
    write_labelled_image(sub, np.zeros((500, 400), np.uint8), small, SAG, name="IM0001")
    (sub / "IM0001.png").unlink()
    (sub / "IM0001.json").write_text((sub / "IM0001.json").read_text().replace('"IM0001.png"', '"IM0001"'))
    # a non-image file without an extension is not a film
    (d / "LICENSE").write_text("text")

    rep = read_dataset(d, SAG)
    usable = sorted(it.image.name for it in rep.items)
    assert usable == ["IM0001", "a_good.png", "c_few.png", "h_dup.png", "i_outside.png"]
    assert checks(rep, "b_coronal") == {"wrong_protocol": "error"}
    # centres only: too few landmarks, and no anterior/posterior corner pair to tell the facing
    assert checks(rep, "c_few") == {"missing_landmarks": "warning", "facing": "warning"}
    assert checks(rep, "d_two") == {"missing_landmarks": "error"}
    assert checks(rep, "e_unlabelled") == {"no_labels": "warning"}
    assert checks(rep, "f_orphan") == {"orphan_labels": "warning"}
    assert checks(rep, "g_corrupt") == {"unreadable_image": "error"}
    assert checks(rep, "h_dup") == {"duplicate_ids": "warning", "unknown_ids": "warning"}
    assert checks(rep, "i_outside") == {"outside_image": "warning"}
    assert checks(rep, "j_order") == {"level_order": "error"}
    assert checks(rep, "IM0001") == {}
    assert checks(rep, "LICENSE") == {}
    items = {it.image.name: it for it in rep.items}
    assert "OD" not in items["h_dup.png"].landmarks and "C2_AI" in items["h_dup.png"].landmarks
    assert "FH_2" not in items["i_outside.png"].landmarks and len(items["i_outside.png"].landmarks) == 44
    dcm = items["IM0001"]
    assert dcm.image_size == (500, 400) and dcm.spacing_mm == (0.15, 0.15)
    assert dcm.calibration == "detector-plane (magnified)" and dcm.patient == "study1/IM0001"
    msg = {f.path.name: f.message for f in rep.findings}
    assert "g_corrupt.png" in msg["g_corrupt.png"] and "replace or remove" in msg["g_corrupt.png"]
    assert "T12 lies below L1" in msg["j_order.json"]
    assert rep.summary["images"] == 10 and rep.summary["usable_images"] == 5
    # the same folder read with headers only misses the truncated pixel stream, nothing else
    fast = read_dataset(d, SAG, check_images=False)
    assert sorted(it.image.name for it in fast.items) == sorted(usable + ["g_corrupt.png"])


def test_pairs_and_patients_tables(tmp_path, rng):
    lms = {k: v for k, v in select(lateral_spine(rng, +1), LUMBAR).items()}
    d = tmp_path / "ds"
    assert len(lms) >= 10
    write_labelled_image(d, film(), lms, LUMBAR, name="p1_flex", patient="P1", pair="p1", role="flexion")
    write_labelled_image(d, film(), lms, LUMBAR, name="p1_ext", patient="P1", pair="p1", role="extension")
    with pytest.raises(Exception, match="role 'standing'"):
        write_labelled_image(d, film(), lms, LUMBAR, name="x", pair="p1", role="standing")
    assert (d / "pairs.csv").read_text().splitlines() == ["pair,role,image", "p1,flexion,p1_flex.png",
                                                          "p1,extension,p1_ext.png"]
    with open(d / "pairs.csv", "a") as fh:
        fh.write("p2,standing,p1_flex.png\np3,flexion,missing.png\n")
    rep = read_dataset(d, LUMBAR)
    items = {it.image.name: it for it in rep.items}
    assert (items["p1_ext.png"].pair, items["p1_ext.png"].role) == ("p1", "extension")
    assert items["p1_flex.png"].patient == "P1" and rep.summary["pairs"] == 1
    assert {f.check for f in rep.findings} == {"pair_role", "table_image"}
    assert all(f.severity == "warning" and f.path.name == "pairs.csv" for f in rep.findings)


def test_write_refuses_unknown_ids_and_folder_names(tmp_path):
    with pytest.raises(Exception, match="XYZ is not a landmark of 'sagittal-whole-spine'"):
        write_labelled_image(tmp_path, film(64, 64), {"XYZ": (1, 2)}, SAG, name="a")
    with pytest.raises(Exception, match="plain file stem"):
        write_labelled_image(tmp_path, film(64, 64), {"OD": (1, 2)}, SAG, name="../a")


def test_missing_folder_is_one_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "nope", SAG)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is not a folder"):
        read_dataset(tmp_path / "file", SAG)


def test_dataset_check_command(tmp_path, rng, capsys):
    lms = select(lateral_spine(rng, -1), SAG)
    d = tmp_path / "ds"
    write_labelled_image(d, film(), lms, SAG, name="one")
    Image.fromarray(film(64, 64)).save(d / "two.png")
    assert cli.main(["dataset", "check", str(d), "--protocol", SAG]) == 0
    out = capsys.readouterr().out
    assert "Images: 2, usable: 1, errors: 0, warnings: 1" in out and "[no_labels]" in out
    assert "Facing: image-left 1" in out
    assert cli.main(["dataset", "check", str(d), "--protocol", SAG, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["usable_images"] == 1 and data["findings"][0]["check"] == "no_labels"
    assert data["images"][0]["facing"] == "image-left" and data["images"][1]["usable"] is False
    # nothing usable for the wrong protocol: exit 2, one sentence
    assert cli.main(["dataset", "check", str(d), "--protocol", COR]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no usable film for 'coronal-spine'" in err and len(err.splitlines()) == 1
    assert cli.main(["dataset", "check", str(tmp_path / "nope"), "--protocol", SAG]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ AASCE -> dataset format


def _aasce_layout(root, rng, n=4):
    """A small AASCE-layout folder: JPEG films with labels/<name>.mat (68 corners), two films per patient."""
    import scipy.io

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    truth = {}
    for i in range(n):
        name = f"sunhl-1th-02-Jan-2017-{100 + i // 2} {'AB'[i % 2]} AP.jpg"
        pts = coronal_spine(list(rng.uniform(-8, 8, 17)), x0=200 + 10 * i, y0=60)
        Image.fromarray(film(700, 420, seed=i)).save(root / "images" / name, quality=95)
        scipy.io.savemat(root / "labels" / f"{name}.mat", {"p2": np.array(list(pts.values()))})
        truth[name] = pts
    return truth


def test_import_aasce_synthetic(tmp_path, rng, capsys):
    src = tmp_path / "aasce"
    truth = _aasce_layout(src, rng)
    out = tmp_path / "dataset"
    assert cli.main(["dataset", "import-aasce", str(src), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["written"], summary["patients"], summary["excluded"]) == (4, 2, {})
    rep = read_dataset(out, COR)
    assert rep.findings == [] and len(rep.items) == 4
    for it in rep.items:
        name = it.image.name
        assert it.landmarks == truth[name]  # the 68 corners, in protocol order, exact
        assert (it.image.read_bytes() == (src / "images" / name).read_bytes())  # copied, not re-encoded
        assert it.patient == name.split("-")[-1].split()[0]  # AASCE patient key: "100", "101"
    # the train/val split of 'spine-align train' (patient-held-out) and --limit
    val = tmp_path / "val"
    assert cli.main(["dataset", "import-aasce", str(src), "--out", str(val), "--split", "val",
                     "--val-fraction", "0.5"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert (v["written"], v["patients"]) == (2, 1)
    train = tmp_path / "train"
    assert cli.main(["dataset", "import-aasce", str(src), "--out", str(train), "--split", "train",
                     "--val-fraction", "0.5", "--limit", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 1
    val_patients = {it.patient for it in read_dataset(val, COR).items}
    assert val_patients.isdisjoint({it.patient for it in read_dataset(train, COR).items})


def test_import_aasce_refuses_the_repository_and_the_source(tmp_path, rng, capsys):
    from SpineAlignmentLib.training.dataset import repository_root

    src = tmp_path / "aasce"
    _aasce_layout(src, rng, n=2)
    for out in (repository_root() / "runs" / "aasce-dataset", src / "converted"):
        assert cli.main(["dataset", "import-aasce", str(src), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "write the dataset to a folder outside it" in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_import_aasce_real_films(aasce_dir, tmp_path, capsys):
    from SpineAlignmentLib.training.dataset import load_samples, patient_id

    out = tmp_path / "aasce3"
    assert cli.main(["dataset", "import-aasce", str(aasce_dir), "--out", str(out), "--limit", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["written"] == 3
    rep = read_dataset(out, COR)
    assert len(rep.items) == 3 and rep.findings == []
    samples = {s.name: s for s in load_samples(aasce_dir)[0][:3]}
    for it in rep.items:
        s = samples[it.image.name]
        ids = [k for k in it.landmarks]
        assert np.array_equal(np.array([it.landmarks[k] for k in ids]), s.points)  # after label hygiene
        assert it.image_size == s.image_shape and it.calibration == "pixels-only"
        assert it.patient == patient_id(s.name)
    assert rep.summary["landmarks_present"]["L5_BR"] == 3


def test_a_pair_result_names_both_films(tmp_path, rng):
    """One lumbar pair result (views.flexion / views.extension, as analyze writes it) labels two films."""
    from SpineAlignmentLib.result import Landmark, Result, View

    flex = select(lateral_spine(rng, +1), LUMBAR)
    ext = select(lateral_spine(rng, +1), LUMBAR)
    d = tmp_path / "ds"
    d.mkdir()
    Image.fromarray(film()).save(d / "a_flex.png")
    Image.fromarray(film(seed=5)).save(d / "a_ext.png")
    views = {role: View({k: Landmark(*v) for k, v in lms.items()}, image=f"/elsewhere/{name}", image_size=(2000, 1600))
             for role, lms, name in (("flexion", flex, "a_flex.png"), ("extension", ext, "a_ext.png"))}
    Result(LUMBAR, views=views).write_json(d / "pair_a.json")
    rep = read_dataset(d, LUMBAR)
    assert rep.findings == []
    items = {it.image.name: it for it in rep.items}
    assert (items["a_flex.png"].role, items["a_ext.png"].role) == ("flexion", "extension")
    assert items["a_flex.png"].landmarks == flex and items["a_ext.png"].landmarks == ext
    assert items["a_flex.png"].labels == items["a_ext.png"].labels == d / "pair_a.json"
