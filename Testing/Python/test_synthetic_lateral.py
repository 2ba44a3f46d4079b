"""The synthetic lateral film generator (synthetic_lateral.py, a test tool): its landmarks give, through
``pipeline.measure``, exactly the parameters the generator was asked for; crops and shoulder shadows
hide landmarks instead of inventing them; facing direction and mirror images; identities of
definitions.md §1.5; bodies brighter than discs; dataset folders that read back exactly; speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

import reference_impl as ref
import synthetic_lateral as sl
from SpineAlignmentLib.imaging import read_radiograph
from SpineAlignmentLib.pipeline import measure
from SpineAlignmentLib.protocols import get_protocol
from SpineAlignmentLib.result import View, parse_landmarks

LATERAL = ("sagittal-whole-spine", "cervical-lateral")


def _measure(lms, meta, protocol=None, spacing=True):
    return measure(lms, protocol or meta["protocol"], spacing_mm=meta["spacing_mm"] if spacing else None,
                   calibration=sl.CALIBRATION if spacing else None, image_size=meta["image_size"])


def _facing(result):
    """The facing the pipeline found (a single lumbar view reports it per image)."""
    return result.frame.get("facing", result.frame.get("image"))


def _pair_result(pair):
    views = {role: View(parse_landmarks(lms), image_size=m["image_size"], spacing_mm=m["spacing_mm"],
                        calibration=sl.CALIBRATION) for role, (_, lms, m) in pair.items()}
    return measure(None, "lumbar-dynamic", views=views)


# ---------------------------------------------------------------- the generator's own parameters
@pytest.mark.parametrize("protocol", LATERAL)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("facing", [1, -1])
def test_measured_parameters_equal_the_generators(protocol, seed, facing):
    img, lms, meta = sl.lateral_film(protocol, seed, facing=facing, aspect=1.0 + 0.15 * seed)  # anisotropic too
    assert img.dtype == np.uint8 and img.shape == meta["image_size"]
    assert set(lms) == set(get_protocol(protocol).landmark_ids)  # uncropped: every landmark
    r = _measure(lms, meta)
    assert r.frame["facing"] == meta["facing"] and r.frame["source"] == "landmarks"
    compared = [k for k in meta["expected"] if k in r.parameters]
    assert len(compared) >= (10 if protocol == "sagittal-whole-spine" else 6)
    for k in compared:
        assert r.value(k) == pytest.approx(meta["expected"][k], abs=1e-6), k
    # plumb-line offsets from the generator's mm coordinates (a = anterior, definitions.md offset())
    w = meta["world_mm"]
    if protocol == "sagittal-whole-spine":
        assert r.value("SVA") == pytest.approx(w["C7c"][0] - w["S1_PS"][0], abs=1e-6)
        assert r.parameters["SVA"].unit == "mm" and r.parameters["SVA"].calibration == sl.CALIBRATION
    assert r.value("cSVA") == pytest.approx(w["C2c"][0] - w["C7_PS"][0], abs=1e-6)
    assert not [x for x in r.warnings if "outside" in x]


def test_a_pose_with_known_values_gives_them():
    pose = sl.Pose(PI=50.0, PT=12.0, LL=55.0, TK=35.0, CL=12.0, TL=0.0, CT=0.0, C0C2=15.0, RJD=40.0)
    _, lms, meta = sl.lateral_film("sagittal-whole-spine", 7, pose=pose)
    r = _measure(lms, meta)
    for k, v in {"PI": 50.0, "PT": 12.0, "SS": 38.0, "LL": 55.0, "GTK": 35.0, "CL": 12.0}.items():
        assert abs(r.value(k) - v) < 0.1, k
    # T1 slope follows by hand: SS - LL - (T12-L1 disc) + GTK = 38 - 55 - 0 + 35
    assert abs(r.value("T1S") - 18.0) < 0.1
    _, lms, meta = sl.lateral_film("cervical-lateral", 7, pose=pose)
    r = _measure(lms, meta)
    for k, v in {"C2C7": 12.0, "C0C2": 15.0, "RJD": 40.0, "T1S": 18.0}.items():
        assert abs(r.value(k) - v) < 0.1, k
    assert r.parameters["RJD"].unit == "mm"


def test_a_kyphotic_neck_and_a_retroverted_pelvis_keep_their_signs():
    pose = sl.Pose(PI=45.0, PT=-4.0, LL=30.0, CL=-12.0)
    _, lms, meta = sl.lateral_film("sagittal-whole-spine", 3, pose=pose, facing=-1)
    r = _measure(lms, meta)
    assert r.value("PT") == pytest.approx(-4.0, abs=1e-6) and r.value("SS") == pytest.approx(49.0, abs=1e-6)
    assert r.value("CL") == pytest.approx(-12.0, abs=1e-6)


# ---------------------------------------------------------------- identities (definitions.md §1.5)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("facing", [1, -1])
def test_identities_on_generated_landmarks(seed, facing):
    _, lms, meta = sl.lateral_film("sagittal-whole-spine", seed, facing=facing, aspect=1.2)
    r = _measure(lms, meta)
    v = r.value
    plane = ref.Plane(lms, facing, meta["spacing_mm"])
    ha = (plane["FH_1"] + plane["FH_2"]) / 2
    s1m = (plane["S1_AS"] + plane["S1_PS"]) / 2
    c7vt = ref.vt(s1m, plane["C7c"])
    assert v("PI") == pytest.approx(v("PT") + v("SS"), abs=1e-9)
    assert v("TPA") == pytest.approx(v("PT") + ref.vt(ha, plane["T1c"]), abs=1e-9)
    assert v("LPA") == pytest.approx(v("PT") + ref.vt(ha, plane["L1c"]), abs=1e-9)
    assert v("GT") == pytest.approx(v("PT") + c7vt, abs=1e-9)
    assert v("SSA") == pytest.approx(v("SS") + (90.0 - c7vt), abs=1e-9)
    # GTK = PTK + MTK - W(T5); W(T5) = kyph(T5 sup, T5 inf) = -(the generator's T5 wedge)
    wedge_t5 = sl.sample_anatomy(np.random.default_rng(seed)).wedge["T5"]
    assert v("GTK") == pytest.approx(v("PTK") + v("MTK") + wedge_t5, abs=1e-9)
    # and the independent implementation agrees on every parameter
    want = ref.sagittal(plane)
    for k, x in want.items():
        assert v(k) == pytest.approx(x, abs=1e-6), k


@pytest.mark.parametrize("seed", range(3))
def test_cervical_identity_and_reference(seed):
    _, lms, meta = sl.lateral_film("cervical-lateral", seed, facing=1)
    r = _measure(lms, meta)
    plane = ref.Plane(lms, 1, meta["spacing_mm"])
    c6c7 = ref.incl(plane["C6_PI"], plane["C6_AI"]) - ref.incl(plane["C7_PI"], plane["C7_AI"])
    assert r.value("C2C7") - r.value("C2C6") == pytest.approx(c6c7, abs=1e-9)
    for k, x in ref.cervical(plane).items():
        assert r.value(k) == pytest.approx(x, abs=1e-6), k


# ---------------------------------------------------------------- landmark definitions
def test_centres_are_the_mean_of_the_four_corners_and_the_dens_points():
    _, lms, meta = sl.lateral_film("sagittal-whole-spine", 4)
    w = {k: np.array(p) for k, p in meta["world_mm"].items()}
    for v in sl.CHAIN + ("S1",):
        assert np.allclose(w[f"{v}c"], np.mean([w[f"{v}_{c}"] for c in sl.CORNERS], axis=0), atol=1e-9)
    # the dens rises from C2's superior end plate: its centre OD below its tip DENS, both above the C2 body
    up = (w["C2_AS"] + w["C2_PS"]) / 2 - (w["C2_AI"] + w["C2_PI"]) / 2
    assert (w["DENS"] - w["OD"]) @ up > 0 and (w["OD"] - (w["C2_AS"] + w["C2_PS"]) / 2) @ up > 0
    # PNS anterior of OCC; HA below the sacral plate
    assert w["PNS"][0] > w["OCC"][0] and (w["FH_1"][1] + w["FH_2"][1]) / 2 < w["S1_PS"][1]
    _, lms, meta = sl.lateral_film("lumbar-dynamic", 4)
    for v in sl.LUMBAR:
        assert np.allclose(lms[f"{v}c"], np.mean([lms[f"{v}_{c}"] for c in sl.CORNERS], axis=0), atol=1e-9)


@pytest.mark.parametrize("facing", [1, -1])
def test_facing_direction_follows_the_anterior_corners(facing):
    for protocol in LATERAL + ("lumbar-dynamic",):
        _, lms, meta = sl.lateral_film(protocol, 11, facing=facing)
        ant_minus_post = np.mean([lms[f"{v}_AI"][0] - lms[f"{v}_PI"][0] for v in sl.LUMBAR + sl.CERVICAL
                                  if f"{v}_AI" in lms and f"{v}_PI" in lms])
        assert np.sign(ant_minus_post) == facing
        assert meta["facing"] == ("image-right" if facing > 0 else "image-left")
        # the film's Patient Orientation agrees with its corners (a contradiction would be refused)
        r = measure(lms, protocol, patient_orientation=",".join(meta["patient_orientation"]))
        if protocol == "lumbar-dynamic":  # a single lumbar view reports its facing per image
            assert r.frame == {"image": meta["facing"]} and r.parameters
        else:
            assert r.frame["facing"] == meta["facing"] and r.frame["source"] == "patient-orientation"


@pytest.mark.parametrize("protocol", LATERAL + ("lumbar-dynamic",))
def test_mirrored_film_is_the_same_vertebrae_facing_the_other_way(protocol):
    a_img, a_lms, a_meta = sl.lateral_film(protocol, 5, facing=1)
    b_img, b_lms, b_meta = sl.lateral_film(protocol, 5, facing=-1)
    cols = a_img.shape[1]
    assert np.array_equal(b_img, a_img[:, ::-1])
    assert set(a_lms) == set(b_lms)  # names never swap
    for k, (x, y) in a_lms.items():
        assert b_lms[k] == pytest.approx((cols - 1 - x, y), abs=1e-9)
    ra, rb = _measure(a_lms, a_meta), _measure(b_lms, b_meta)
    assert _facing(ra) == "image-right" and _facing(rb) == "image-left"
    assert set(ra.parameters) == set(rb.parameters) and ra.parameters
    for k in ra.parameters:
        assert rb.value(k) == pytest.approx(ra.value(k), abs=1e-9), k  # same values, same signs


def test_same_seed_same_film_and_different_seeds_differ():
    a = sl.lateral_film("cervical-lateral", 21)
    b = sl.lateral_film("cervical-lateral", 21)
    c = sl.lateral_film("cervical-lateral", 22)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0]) and a[1] != c[1]


# ---------------------------------------------------------------- crops and hidden landmarks
def _inside(xy, shape):
    rows, cols = shape
    return -0.5 <= xy[0] <= cols - 0.5 and -0.5 <= xy[1] <= rows - 0.5


@pytest.mark.parametrize("protocol,crop,gone", [
    ("sagittal-whole-spine", "femoral_heads", {"FH_1", "FH_2"}),
    ("lumbar-dynamic", "femoral_heads", set()),
    ("cervical-lateral", "c7", {"C7_AS", "C7_PS", "C7_AI", "C7_PI", "T1_AS", "T1_PS"}),
    ("sagittal-whole-spine", "t10", {"OD", "C2c", "C7c", "T1c", "T9c"}),
])
@pytest.mark.parametrize("seed", range(3))
def test_crops_hide_exactly_the_landmarks_outside_the_film(protocol, crop, gone, seed):
    img, lms, meta = sl.lateral_film(protocol, seed, crop=crop)
    every = meta["all_landmarks_px"]
    assert set(every) == set(get_protocol(protocol).landmark_ids)
    for k, xy in every.items():
        assert (k in lms) == _inside(xy, img.shape), k  # labelled exactly when inside the film
    assert gone <= set(meta["absent"]) and not gone & set(lms)
    assert all(reason == "outside the film" for reason in meta["absent"].values())
    if crop == "t10":  # the film starts just above T10: T10..S1 and the femoral heads, nothing higher
        assert {"T10c", "T11c", "T12c", "L1_AS", "S1_AS", "FH_1", "FH_2"} <= set(lms)
        assert not any(k.startswith(("C", "T1_", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "OD")) for k in lms)
        r = _measure(lms, meta)
        for p in ("PI", "PT", "SS", "LL"):
            assert r.value(p) == pytest.approx(meta["expected"][p], abs=1e-6)
    elif protocol == "sagittal-whole-spine":  # cut above the femoral heads, below the sacral plate
        assert {"S1_AS", "S1_PS", "L5c"} <= set(lms)
        r = _measure(lms, meta)
        assert "PI" not in r.parameters and "FH_1" in r.omitted["PI"]
        assert r.value("LL") == pytest.approx(meta["expected"]["LL"], abs=1e-6)
    if protocol == "cervical-lateral":
        assert {f"C{i}_{c}" for i in range(2, 6) for c in sl.CORNERS} <= set(lms)
        r = _measure(lms, meta)
        assert "C2C7" not in r.parameters and "C7" in r.omitted["C2C7"]
        # C6's lower corners stay unless the film edge, just above C7's upper end plate, cuts a tilted C6 too
        assert ("C2C6" in r.parameters) == ({"C6_AI", "C6_PI"} <= set(lms))


def test_shoulder_shadow_hides_c7_and_t1_inside_the_film():
    img, lms, meta = sl.lateral_film("sagittal-whole-spine", 9, hide=("C7", "T1"))
    hidden = {k for k, why in meta["absent"].items() if why == "hidden by the shoulder shadow"}
    assert hidden == {"C7_AI", "C7_PS", "C7_PI", "C7c", "T1_AS", "T1_PS", "T1c"}
    assert all(_inside(meta["all_landmarks_px"][k], img.shape) for k in hidden)  # in the film, but not labelled
    r = _measure(lms, meta)
    for pid in ("SVA", "CL", "T1S", "TPA"):
        assert pid not in r.parameters and pid in r.omitted
    # the shadow really covers C7: near white, with no body/disc contrast left (C3 above keeps its contrast)
    w = {k: np.array(p) for k, p in meta["points_px"].items()}

    def contrast(u, l):
        disc = np.mean([w[f"{u}_AI"], w[f"{u}_PI"], w[f"{l}_AS"], w[f"{l}_PS"]], axis=0)
        return _mean_at(img, w[f"{u}c"]) - _mean_at(img, disc)

    assert _mean_at(img, w["C7c"], 2) > 240 and abs(contrast("C7", "T1")) < 8
    assert contrast("C3", "C4") > 12


def test_unknown_crop_is_refused():
    with pytest.raises(ValueError, match="crop"):
        sl.lateral_film("cervical-lateral", 0, crop="femoral_heads")


# ---------------------------------------------------------------- lumbar flexion/extension pairs
def test_lumbar_pair_gives_the_range_of_motion_and_translation_that_were_set():
    irom = {"L1L2": 6.0, "L2L3": 9.0, "L3L4": 11.0, "L4L5": 13.5, "L5S1": 8.0}
    dst = {"L1L2": 1.0, "L2L3": 1.5, "L3L4": 2.0, "L4L5": 4.5, "L5S1": 0.5}
    pair = sl.lumbar_pair(3, irom=irom, dst=dst)
    for role in ("flexion", "extension"):
        img, lms, meta = pair[role]
        assert meta["role"] == role and len(lms) == 28 and set(lms) == set(get_protocol("lumbar-dynamic").landmark_ids)
    assert pair["flexion"][2]["facing"] == pair["extension"][2]["facing"]
    r = _pair_result(pair)
    for lv in irom:
        assert r.value(f"IROM_{lv}") == pytest.approx(irom[lv], abs=1e-6), lv
        assert r.value(f"dST_{lv}") == pytest.approx(dst[lv], abs=1e-6), lv
        assert r.parameters[f"dST_{lv}"].unit == "mm"
    for k, x in pair["flexion"][2]["pair_expected"].items():
        assert r.value(k) == pytest.approx(x, abs=1e-6), k
    for role in ("flexion", "extension"):  # the per-image segmental angles and translations too
        e = pair[role][2]["expected"]
        for lv in irom:
            for kind in ("SA", "ST", "ST_pct"):
                assert r.value(f"{kind}_{lv}_{role}") == pytest.approx(e[f"{kind}_{lv}"], abs=1e-6)


def test_lumbar_pair_mirrored_and_pixels_only_keeps_angles():
    pair = sl.lumbar_pair(8, facing=-1)
    r = _pair_result(pair)
    views = {role: View(parse_landmarks(lms), image_size=m["image_size"]) for role, (_, lms, m) in pair.items()}
    rp = measure(None, "lumbar-dynamic", views=views)  # no spacing: angles and % stay, distances in px
    for lv in ("L1L2", "L4L5", "L5S1"):
        assert rp.value(f"IROM_{lv}") == pytest.approx(r.value(f"IROM_{lv}"), abs=1e-9)
        assert rp.value(f"dST_pct_{lv}") == pytest.approx(r.value(f"dST_pct_{lv}"), abs=1e-9)
        assert rp.parameters[f"dST_{lv}"].unit == "px"


# ---------------------------------------------------------------- what a network sees
@pytest.mark.parametrize("protocol", LATERAL + ("lumbar-dynamic",))
def test_vertebral_bodies_are_brighter_than_the_discs(protocol):
    diffs = []
    for seed in range(4):
        img, lms, meta = sl.lateral_film(protocol, seed)
        w = {k: np.array(p) for k, p in meta["points_px"].items()}
        if protocol == "sagittal-whole-spine":
            pairs = [(f"{u}c", f"{l}c") for u, l in zip(sl.CHAIN[1:], sl.CHAIN[2:])]
        else:
            chain = sl.CERVICAL if protocol == "cervical-lateral" else sl.LUMBAR
            pairs = [(f"{u}c", f"{l}c") for u, l in zip(chain, chain[1:])]
        for upper, lower in pairs:
            u, l = upper[:-1], lower[:-1]
            # the disc's centre: the middle of the four corners facing it (the film's mapping is affine)
            disc_px = np.mean([w[f"{u}_AI"], w[f"{u}_PI"], w[f"{l}_AS"], w[f"{l}_PS"]], axis=0)
            body = _mean_at(img, w[upper])
            disc = _mean_at(img, disc_px)
            if body is not None and disc is not None:
                diffs.append(body - disc)
    diffs = np.array(diffs)
    assert len(diffs) >= 12
    assert np.mean(diffs > 0) >= 0.9 and np.median(diffs) > 12, diffs


def _mean_at(img, xy, r=1):
    x, y = int(round(xy[0])), int(round(xy[1]))
    if not (r <= x < img.shape[1] - r and r <= y < img.shape[0] - r):
        return None
    return float(img[y - r:y + r + 1, x - r:x + r + 1].mean())


def test_film_is_fast():
    sl.lateral_film("sagittal-whole-spine", 0)  # warm caches
    t = time.process_time()
    for seed in range(10):
        sl.lateral_film("sagittal-whole-spine", seed)
    per_film = (time.process_time() - t) / 10
    assert per_film < 0.1, f"{per_film * 1000:.0f} ms CPU per 512x256 film"


# ---------------------------------------------------------------- dataset folders
@pytest.mark.parametrize("protocol,fmt", [("sagittal-whole-spine", "png"), ("cervical-lateral", "nrrd"),
                                          ("lumbar-dynamic", "nrrd")])
def test_dataset_folder_reads_back_exactly(tmp_path, protocol, fmt):
    from SpineAlignmentLib.io.dataset import read_dataset

    n = 3
    sl.write_dataset(tmp_path, protocol, n, seed=4, image_format=fmt, crop_fraction=0.5, hide_fraction=0.5)
    report = read_dataset(tmp_path, protocol)
    bad = [f for f in report.findings if f.severity == "error" or f.check in
           ("unknown_ids", "duplicate_ids", "outside_image", "level_order", "facing", "wrong_protocol")]
    assert not bad, report.format_text()
    items = {it.image.name: it for it in report.items}
    # regenerate the same films in memory: the folder holds exactly them
    rng = np.random.default_rng(4)
    expected = []
    for i in range(n):
        crop = sl.CROPS[protocol][0] if rng.uniform() < 0.5 else None
        f = int(rng.choice([-1, 1]))
        patient = f"SYN{i:04d}"
        if protocol == "lumbar-dynamic":
            views = sl.lumbar_pair(rng, facing=f, crop=crop)
            expected += [(f"{patient}_{role[:4]}", patient, role, views[role]) for role in ("flexion", "extension")]
        else:
            hide = ("C7", "T1") if rng.uniform() < 0.5 and crop is None else ()
            expected.append((patient, patient, None,
                             sl.lateral_film(protocol, rng, facing=f, crop=crop, hide=hide)))
    assert sorted(items) == sorted(f"{stem}.{fmt}" for stem, *_ in expected)
    for stem, patient, role, (img, lms, meta) in expected:
        it = items[f"{stem}.{fmt}"]
        assert it.landmarks == lms and it.image_size == img.shape
        assert it.patient == patient and (it.pair, it.role) == ((patient, role) if role else (None, None))
        assert np.array_equal(read_radiograph(it.image).pixels.astype(np.uint8), img)
        if fmt == "nrrd":
            assert it.spacing_mm == pytest.approx(meta["spacing_mm"]) and it.calibration == sl.CALIBRATION
        else:
            assert it.spacing_mm is None and it.calibration == "pixels-only"
        r = measure(it.landmarks, protocol, spacing_mm=it.spacing_mm, calibration=it.calibration,
                    image_size=it.image_size)
        assert _facing(r) == meta["facing"]
        if fmt == "nrrd" and protocol == "cervical-lateral" and "C2C6" in r.parameters:
            assert r.value("C2C6") == pytest.approx(meta["expected"]["C2C6"], abs=1e-6)
    assert sum(report.summary["landmarks_present"].values()) == sum(len(e[3][1]) for e in expected)


def test_sixty_films_are_written_in_seconds(tmp_path):
    t = time.process_time()
    sl.write_dataset(tmp_path, "cervical-lateral", 60, seed=2)
    cpu = time.process_time() - t
    assert len(list(tmp_path.glob("*.png"))) == 60 and len(list(tmp_path.glob("SYN*.json"))) == 60
    assert cpu < 5.0, f"{cpu:.1f} s CPU for 60 films"


def test_command_line_writes_a_folder(tmp_path, capsys):
    assert sl.main([str(tmp_path / "d"), "--protocol", "lumbar-dynamic", "--n", "2", "--format", "nrrd"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d")
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["SYN0000_exte.json", "SYN0000_exte.nrrd", "SYN0000_flex.json", "SYN0000_flex.nrrd",
                     "SYN0001_exte.json", "SYN0001_exte.nrrd", "SYN0001_flex.json", "SYN0001_flex.nrrd",
                     "pairs.csv", "patients.csv"]
