"""Geometry of every parameter: hand-worked values, identities, mirror and spacing invariance,
and agreement with an independent implementation (reference_impl.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference_impl as ref
from spines import cervical_spine, coronal_spine, lateral_spine, select
from SpineAlignmentLib.geometry.primitives import wrap180
from SpineAlignmentLib.pipeline import measure

D = math.degrees


# ---------------------------------------------------------------- hand-worked sagittal
def _hand_sagittal():
    """A patient facing image-right (+x); y downwards; 1 px = 1 mm unless spacing is given."""
    return {
        "S1_PS": (100.0, 500.0), "S1_AS": (140.0, 520.0),        # sacral plate: 40 right, 20 down
        "FH_1": (150.0, 600.0), "FH_2": (160.0, 600.0),          # HA = (155, 600)
        "L1_PS": (90.0, 300.0), "L1_AS": (130.0, 300.0),         # horizontal L1 endplate
        "L4_PS": (95.0, 420.0), "L4_AS": (135.0, 410.0),         # anterior end 10 px higher
        "C7c": (130.0, 100.0), "T1c": (125.0, 130.0), "L1c": (110.0, 310.0),
        "C2_PI": (160.0, 20.0), "C2_AI": (200.0, 30.0),          # anterior end lower
        "C7_PI": (100.0, 90.0), "C7_AI": (140.0, 90.0), "C7_PS": (102.0, 70.0),
        "C2c": (180.0, 0.0), "OD": (185.0, -30.0),
        "T1_PS": (100.0, 120.0), "T1_AS": (140.0, 130.0),
        "T5_PS": (90.0, 200.0), "T5_AS": (130.0, 195.0), "T5_PI": (92.0, 220.0), "T5_AI": (130.0, 225.0),
        "T12_PI": (85.0, 290.0), "T12_AI": (125.0, 280.0),
    }


def test_sagittal_hand_worked():
    r = measure(_hand_sagittal(), "sagittal-whole-spine", patient_orientation="A,F")
    v = r.value
    # SS: plate rises 20 px over 40 px toward posterior -> atan(20/40)
    assert v("SS") == pytest.approx(D(math.atan2(20, 40)), abs=1e-9)  # 26.565°
    # PT: HA (155,600) to S1m (120,510): 35 posterior over 90 up -> + because HA anterior
    assert v("PT") == pytest.approx(D(math.atan2(35, 90)), abs=1e-9)  # 21.251°
    assert v("PI") == pytest.approx(26.56505117707799 + 21.25050550713324, abs=1e-9)
    # LL: L1 horizontal (phi 0), sacral plate phi = -26.565 -> lordosis +26.565
    assert v("LL") == pytest.approx(26.56505117707799, abs=1e-9)
    # L4SL: L4 phi = atan2(10, 40) = 14.036 -> 14.036 + 26.565
    assert v("L4SL") == pytest.approx(D(math.atan2(10, 40)) + 26.56505117707799, abs=1e-9)
    assert v("SVA") == pytest.approx(30.0) and r.parameters["SVA"].unit == "px"
    assert r.parameters["SVA"].calibration == "pixels-only"
    assert v("cSVA") == pytest.approx(78.0)
    # CL: C2 inferior phi = atan2(-10, 40) = -14.036; C7 inferior 0 -> lord = -14.036 (kyphotic)
    assert v("CL") == pytest.approx(-D(math.atan2(10, 40)), abs=1e-9)
    assert v("T1S") == pytest.approx(D(math.atan2(10, 40)), abs=1e-9)
    # GTK: T1 sup phi -14.036, T12 inf phi +14.036 -> kyph = -(-14.036 - 14.036) = 28.07
    assert v("GTK") == pytest.approx(2 * D(math.atan2(10, 40)), abs=1e-9)
    assert v("PTK") == pytest.approx(D(math.atan2(10, 40)) - D(math.atan2(5, 38)), abs=1e-9)
    assert v("MTK") == pytest.approx(D(math.atan2(10, 40)) - D(math.atan2(5, 40)), abs=1e-9)
    # TPA = PT + vtilt(HA, T1c): T1c is 30 px posterior, 470 px up
    assert v("TPA") == pytest.approx(21.25050550713324 + D(math.atan2(-30, 470)), abs=1e-9)
    assert v("LPA") == pytest.approx(21.25050550713324 + D(math.atan2(-45, 290)), abs=1e-9)
    c7vt = D(math.atan2(10, 410))  # C7c relative to S1m (120, 510)
    assert v("GT") == pytest.approx(21.25050550713324 + c7vt, abs=1e-9)
    assert v("SSA") == pytest.approx(26.56505117707799 + 90 - c7vt, abs=1e-9)
    assert v("Barrey") == pytest.approx(30.0 / 55.0)
    assert v("OD_HA") == pytest.approx(D(math.atan2(30, 630)), abs=1e-9)
    assert r.frame == {"source": "patient-orientation", "facing": "image-right"}
    assert not r.omitted and len(r.parameters) == 18


def test_sagittal_spacing_labels_mm_and_anisotropic_angles():
    pts = _hand_sagittal()
    r = measure(pts, "sagittal-whole-spine", spacing_mm=(0.5, 0.25), calibration="calibrated:GEOMETRY")
    assert r.parameters["SVA"].unit == "mm"
    assert r.parameters["SVA"].calibration == "calibrated:GEOMETRY"
    assert r.value("SVA") == pytest.approx(30.0 * 0.25)
    # SS measured in mm space: plate 40 px * 0.25 = 10 mm along, 20 px * 0.5 = 10 mm down -> 45°
    assert r.value("SS") == pytest.approx(45.0, abs=1e-9)
    assert r.parameters["SS"].calibration is None


# ---------------------------------------------------------------- random spines: independent implementation
@pytest.mark.parametrize("facing", [+1, -1])
@pytest.mark.parametrize("spacing", [None, (0.3, 0.15), (0.2, 0.2)])
def test_sagittal_matches_independent_implementation(rng, facing, spacing):
    for _ in range(40):
        pts = select(lateral_spine(rng, facing), "sagittal-whole-spine")
        r = measure(pts, "sagittal-whole-spine", spacing_mm=spacing)
        expected = ref.sagittal(ref.Plane(pts, facing, spacing or (1.0, 1.0)))
        assert r.frame["source"] == "landmarks"
        for pid, val in expected.items():
            assert r.value(pid) == pytest.approx(val, abs=1e-6), pid


@pytest.mark.parametrize("facing", [+1, -1])
def test_cervical_matches_independent_implementation(rng, facing):
    for _ in range(40):
        pts = cervical_spine(rng, facing)
        r = measure(pts, "cervical-lateral", spacing_mm=(0.14, 0.12))
        expected = ref.cervical(ref.Plane(pts, facing, (0.14, 0.12)))
        for pid, val in expected.items():
            assert r.value(pid) == pytest.approx(val, abs=1e-6), pid
        assert r.parameters["RJD"].unit == "mm"


# ---------------------------------------------------------------- identities (definitions.md §1.5)
@pytest.mark.parametrize("facing", [+1, -1])
def test_identities(rng, facing):
    from SpineAlignmentLib.geometry.frame import lateral_frame
    from SpineAlignmentLib.geometry.primitives import kyph, phi, vtilt

    for _ in range(100):
        spacing = tuple(rng.uniform(0.1, 0.4, 2))
        pts = select(lateral_spine(rng, facing), "sagittal-whole-spine")
        r = measure(pts, "sagittal-whole-spine", spacing_mm=spacing)
        v = r.value
        mm = {k: np.array([x * spacing[1], y * spacing[0]]) for k, (x, y) in pts.items()}
        fi, _ = lateral_frame(mm, None)
        f = fi.frame
        ha = (mm["FH_1"] + mm["FH_2"]) / 2
        s1m = (mm["S1_AS"] + mm["S1_PS"]) / 2
        c7vt = vtilt(f, s1m, mm["C7c"])
        assert v("PI") == pytest.approx(v("PT") + v("SS"), abs=1e-9)
        assert v("TPA") == pytest.approx(v("PT") + vtilt(f, ha, mm["T1c"]), abs=1e-9)
        assert v("LPA") == pytest.approx(v("PT") + vtilt(f, ha, mm["L1c"]), abs=1e-9)
        assert v("GT") == pytest.approx(v("PT") + c7vt, abs=1e-9)
        assert v("PI") == pytest.approx(v("GT") + (v("SS") - c7vt), abs=1e-9)  # PI = GT + C7ST
        assert v("SSA") == pytest.approx(v("SS") + (90.0 - c7vt), abs=1e-9)     # SSA = SS + ST
        w_t5 = kyph(phi(f, mm["T5_PS"], mm["T5_AS"]), phi(f, mm["T5_PI"], mm["T5_AI"]))
        assert wrap180(v("GTK") - (v("PTK") + v("MTK") - w_t5)) == pytest.approx(0.0, abs=1e-9)


def test_cervical_identities(rng):
    from SpineAlignmentLib.geometry.frame import lateral_frame
    from SpineAlignmentLib.geometry.primitives import lord, phi

    for facing in (+1, -1):
        for _ in range(50):
            pts = cervical_spine(rng, facing)
            r = measure(pts, "cervical-lateral")
            mm = {k: np.array(p) for k, p in pts.items()}
            f = lateral_frame(mm, None)[0].frame
            c67 = lord(phi(f, mm["C6_PI"], mm["C6_AI"]), phi(f, mm["C7_PI"], mm["C7_AI"]))
            assert wrap180(r.value("C2C7") - r.value("C2C6") - c67) == pytest.approx(0.0, abs=1e-9)
            cervical_tilt = r.value("T1S") - r.value("CT")
            assert r.value("T1S") == pytest.approx(r.value("CT") + cervical_tilt)


# ---------------------------------------------------------------- mirror invariance
def _mirror(pts, width=2000.0):
    return {k: (width - x, y) for k, (x, y) in pts.items()}


@pytest.mark.parametrize("protocol,maker", [("sagittal-whole-spine", lambda r: select(lateral_spine(r), "sagittal-whole-spine")),
                                            ("cervical-lateral", cervical_spine)])
def test_lateral_mirror_invariance(rng, protocol, maker):
    for _ in range(20):
        pts = maker(rng)
        a = measure(pts, protocol, spacing_mm=(0.2, 0.1))
        b = measure(_mirror(pts), protocol, spacing_mm=(0.2, 0.1))
        assert a.frame["facing"] != b.frame["facing"]
        assert set(a.parameters) == set(b.parameters)
        for pid in a.parameters:
            assert b.value(pid) == pytest.approx(a.value(pid), abs=1e-9), pid


def test_anisotropic_spacing_equals_prescaled_pixels(rng):
    """Measuring pixels with spacing (r, c) equals measuring physically scaled pixels with spacing (1, 1)."""
    pts = select(lateral_spine(rng), "sagittal-whole-spine")
    a = measure(pts, "sagittal-whole-spine", spacing_mm=(0.3, 0.1))
    b = measure({k: (x * 0.1, y * 0.3) for k, (x, y) in pts.items()}, "sagittal-whole-spine", spacing_mm=(1.0, 1.0))
    for pid in a.parameters:
        assert b.value(pid) == pytest.approx(a.value(pid), abs=1e-9), pid
    # and an anisotropic image measured without spacing gives different (wrong) angles
    c = measure(pts, "sagittal-whole-spine")
    assert abs(c.value("SS") - a.value("SS")) > 0.5


# ---------------------------------------------------------------- cervical hand-worked
def test_cervical_hand_worked():
    pts = {
        "OCC": (0.0, 100.0), "PNS": (80.0, 100.0),                     # horizontal McGregor line
        "C2_PI": (30.0, 140.0), "C2_AI": (50.0, 140.0),
        "C2_PS": (30.0, 110.0), "C2_AS": (50.0, 110.0),
        "T1_PS": (30.0, 400.0), "T1_AS": (50.0, 410.0), "DENS": (40.0, 95.0),
        "C7_PS": (30.0, 330.0), "C7_AS": (50.0, 335.0), "C7_PI": (30.0, 350.0), "C7_AI": (50.0, 350.0),
        "C6_PI": (30.0, 300.0), "C6_AI": (50.0, 305.0),
    }
    r = measure(pts, "cervical-lateral", spacing_mm=(0.5, 0.5))
    assert r.value("RJD") == pytest.approx(40 * 0.5)                    # 40 px below the line
    assert r.value("C0C2") == pytest.approx(0.0, abs=1e-9)
    assert r.value("C2C7") == pytest.approx(0.0, abs=1e-9)
    assert r.value("C2C6") == pytest.approx(D(math.atan2(5, 20)), abs=1e-9)  # C6 anterior end lower -> lordotic
    assert r.value("C7S") == pytest.approx(D(math.atan2(5, 20)), abs=1e-9)
    assert r.value("T1S") == pytest.approx(D(math.atan2(10, 20)), abs=1e-9)
    assert r.value("cSVA") == pytest.approx((40 - 30) * 0.5)             # C2 centroid x=40 vs C7_PS x=30
    # CT: T1m (40, 405) to dens (40, 95): straight up -> 0
    assert r.value("CT") == pytest.approx(0.0, abs=1e-9)
    # CCA at PNS (80,100): to OCC straight posterior; to C7c (40, 341.25)
    assert r.value("CCA") == pytest.approx(D(math.atan2(241.25, 40)), abs=1e-9)
    # facing from corners: anterior corners at larger x
    assert r.frame["facing"] == "image-right"


# ---------------------------------------------------------------- shoulder
def test_shoulder_hand_worked_and_mirror():
    pts = {
        "Clav_top_L": (700.0, 300.0), "Clav_top_R": (300.0, 320.0),
        "Clav_med_L": (540.0, 330.0), "Clav_lat_L": (760.0, 300.0),
        "Clav_med_R": (460.0, 330.0), "Clav_lat_R": (240.0, 310.0),
        "Cor_top_L": (690.0, 350.0), "Cor_top_R": (310.0, 356.0),
    }
    r = measure(pts, "coronal-shoulder", spacing_mm=(0.35, 0.35), patient_orientation="L,F")
    assert r.value("CA") == pytest.approx(D(math.atan2(20, 400)), abs=1e-9)
    assert r.value("CTAD") == pytest.approx(D(math.atan2(30, 220)) - D(math.atan2(20, 220)), abs=1e-9)
    assert r.value("CHD") == pytest.approx(6 * 0.35)
    assert r.value("RSH_bony") == pytest.approx(10 * 0.35)
    assert r.parameters["CHD"].unit == "mm" and r.parameters["CHD"].calibration == "manual:user"
    assert "RSH" not in r.parameters and "RSH" in r.omitted
    assert not r.warnings
    # mirrored image with the opposite orientation: identical values, no side warning
    m = measure(_mirror(pts, 1000.0), "coronal-shoulder", spacing_mm=(0.35, 0.35), patient_orientation="R,F")
    for pid in r.parameters:
        assert m.value(pid) == pytest.approx(r.value(pid), abs=1e-9)
    assert not m.warnings
    # mirrored image with the original orientation: sides look swapped -> warning
    w = measure(_mirror(pts, 1000.0), "coronal-shoulder", patient_orientation="L,F")
    assert any("swapped" in x for x in w.warnings)
    # soft tissue points give RSH
    s = measure({**pts, "ST_L": (760.0, 250.0), "ST_R": (240.0, 262.0)}, "coronal-shoulder", spacing_mm=(0.35, 0.35))
    assert s.value("RSH") == pytest.approx(12 * 0.35)


# ---------------------------------------------------------------- lumbar dynamic
def _lumbar_image(angles: list[float], shifts: list[float], facing: int = 1) -> dict[str, tuple[float, float]]:
    """L1..L5 + S1 as 40x25 px boxes with given per-vertebra tilt (deg, + = anterior end up) and anterior shift."""
    out = {}
    y = 100.0
    for k, v in enumerate(["L1", "L2", "L3", "L4", "L5", "S1"]):
        t = math.radians(angles[k])
        e = np.array([facing * math.cos(t), -math.sin(t)])  # posterior -> anterior direction in the image
        ps = np.array([500.0 + facing * shifts[k], y])
        out[f"{v}_PS"] = tuple(ps)
        out[f"{v}_AS"] = tuple(ps + 40 * e)
        if v != "S1":
            down = np.array([facing * math.sin(t), math.cos(t)])
            out[f"{v}_PI"] = tuple(ps + 25 * down)
            out[f"{v}_AI"] = tuple(ps + 25 * down + 40 * e)
        y += 35.0
    return {k: (float(a), float(b)) for k, (a, b) in out.items()}


def test_lumbar_pair_hand_worked():
    from SpineAlignmentLib.result import View

    flex = _lumbar_image([0, 0, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0])
    ext = _lumbar_image([10, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], facing=-1)
    views = {"flexion": View({k: __import__("SpineAlignmentLib.result", fromlist=["Landmark"]).Landmark(*p) for k, p in flex.items()}, spacing_mm=(0.2, 0.2), calibration="estimated(ERMF)"),
             "extension": View({k: __import__("SpineAlignmentLib.result", fromlist=["Landmark"]).Landmark(*p) for k, p in ext.items()}, spacing_mm=(0.2, 0.2), calibration="estimated(ERMF)")}
    r = measure(None, "lumbar-dynamic", views=views)
    # extension: L1 tilted anterior-up by 10° over a flat L2 -> segmental lordosis +10; flexion 0
    assert r.value("SA_L1L2_extension") == pytest.approx(10.0, abs=1e-9)
    assert r.value("IROM_L1L2") == pytest.approx(10.0, abs=1e-9)
    assert r.value("IROM_L2L3") == pytest.approx(0.0, abs=1e-9)
    # flexion: L1 shifted 4 px anterior -> T = 4 px = 0.8 mm, 10 % of 40 px depth
    assert r.value("ST_L1L2_flexion") == pytest.approx(0.8)
    t_ext = 25 * math.sin(math.radians(10))  # extension L1_PI lies 25·sin10° px anterior of L2_PS
    assert r.value("dST_L1L2") == pytest.approx((4 - t_ext) * 0.2)
    assert r.value("dST_pct_L1L2") == pytest.approx(100 * (4 - t_ext) / 40)
    assert r.parameters["dST_L1L2"].calibration == "estimated(ERMF)"
    assert len([p for p in r.parameters if p.startswith(("IROM", "dST"))]) == 15


def test_lumbar_single_image_static_only():
    r = measure(_lumbar_image([5, 0, 0, 0, 0, -10], [0, 0, 0, 0, 0, 0]), "lumbar-dynamic")
    assert r.value("SA_L5S1") == pytest.approx(10.0, abs=1e-9)  # S1 anterior end 10° lower
    assert "IROM_L1L2" in r.omitted and r.parameters["ST_L5S1"].unit == "px"


# ---------------------------------------------------------------- coronal Cobb
THETAS = [0, 5, 10, 15, 20, 15, 10, 0, -10, -20, -25, -20, -10, 0, 10, 12, 8]


def test_cobb_curves_hand_worked():
    pts = coronal_spine(THETAS)
    r = measure(pts, "coronal-spine", patient_orientation="L,F", image_size=(900, 800))
    mt, pt, tll = r.parameters["Cobb_MT"], r.parameters["Cobb_PT"], r.parameters["Cobb_TLL"]
    # major: T5 (+20) to T11 (-25) = 45°, convex to the patient's left (image right)
    assert mt.value == pytest.approx(45.0, abs=1e-9)
    assert (mt.detail["upper_end"], mt.detail["lower_end"]) == ("T5", "T11")
    assert mt.detail["convex"] == "left" and mt.detail["major"] is True
    assert pt.value == pytest.approx(20.0, abs=1e-9)
    assert (pt.detail["upper_end"], pt.detail["lower_end"], pt.detail["convex"]) == ("T1", "T5", "right")
    assert tll.value == pytest.approx(37.0, abs=1e-9)
    assert (tll.detail["upper_end"], tll.detail["lower_end"], tll.detail["convex"]) == ("T11", "L4", "right")
    assert mt.landmarks == ("T5_TL", "T5_TR", "T11_BL", "T11_BR")
    # unknown side: same magnitudes, convexity 'unknown', image side kept
    u = measure(pts, "coronal-spine", image_size=(900, 800))
    assert u.value("Cobb_MT") == pytest.approx(45.0) and u.parameters["Cobb_MT"].detail["convex"] == "unknown"
    assert u.parameters["Cobb_MT"].detail["convex_image_side"] == "image-right"


def test_cobb_mirror_invariance_and_absent_curves():
    pts = coronal_spine(THETAS)
    mirrored = {}
    for k, (x, y) in pts.items():
        v, c = k.split("_")
        mirrored[f"{v}_{ {'TL': 'TR', 'TR': 'TL', 'BL': 'BR', 'BR': 'BL'}[c] }"] = (1000.0 - x, y)
    a = measure(pts, "coronal-spine", patient_orientation="L,F", image_size=(900, 1000))
    b = measure(mirrored, "coronal-spine", patient_orientation="R,F", image_size=(900, 1000))
    for pid in ("Cobb_PT", "Cobb_MT", "Cobb_TLL", "AASCE_1", "AASCE_2", "AASCE_3"):
        assert b.value(pid) == pytest.approx(a.value(pid), abs=1e-9), pid
    assert b.parameters["Cobb_MT"].detail["convex"] == a.parameters["Cobb_MT"].detail["convex"] == "left"
    straight = measure(coronal_spine([1, 0, -1, 0, 1, 0, 0, 1, 0, -1, 0, 0, 1, 0, 0, -1, 0]), "coronal-spine", image_size=(900, 800))
    assert not any(p.startswith("Cobb_") for p in straight.parameters)
    assert set(straight.omitted) >= {"Cobb_PT", "Cobb_MT", "Cobb_TLL"}
    assert "absent" not in straight.parameters


def test_cobb_above_90_degrees_not_clipped():
    thetas = [0, 20, 40, 60, 50, 30, 0, -20, -40, -50, -45, -30, -10, 0, 0, 0, 0]
    r = measure(coronal_spine(thetas), "coronal-spine", image_size=(900, 800))
    assert r.value("Cobb_MT") == pytest.approx(110.0, abs=1e-9)
    assert r.value("AASCE_1") > 90.0


def test_aasce_needs_image_size():
    r = measure(coronal_spine(THETAS), "coronal-spine")
    assert "AASCE_1" not in r.parameters and "image_size" in r.omitted["AASCE_1"]
    assert "Cobb_MT" in r.parameters


def test_paired_lateral_kyphosis_lordosis():
    lat = {"T4_PS": (100, 100), "T4_AS": (140, 100), "T12_PI": (100, 400), "T12_AI": (140, 390),
           "L1_PS": (100, 420), "L1_AS": (140, 425), "L5_PI": (100, 600), "L5_AI": (140, 610)}
    r = measure(coronal_spine(THETAS), "coronal-spine", image_size=(900, 800),
                paired_lateral={"landmarks": lat, "patient_orientation": "A,F"})
    assert r.value("TK_T4_T12") == pytest.approx(D(math.atan2(10, 40)), abs=1e-9)
    assert r.value("LL_L1_L5") == pytest.approx(-D(math.atan2(5, 40)) + D(math.atan2(10, 40)), abs=1e-9)


# ---------------------------------------------------------------- the table's landmark lists are exact
def test_each_parameter_needs_only_its_listed_landmarks(rng):
    """Every parameter is computed from exactly the landmarks the protocol table lists for it,
    so 'which parameters depend on this point' (live update in Slicer) can be read from the table."""
    from SpineAlignmentLib.protocols import get_protocol

    sets = {
        "sagittal-whole-spine": (select(lateral_spine(rng), "sagittal-whole-spine"), "A,F"),
        "cervical-lateral": (cervical_spine(rng), "A,F"),
        "coronal-shoulder": ({"Clav_top_L": (700.0, 300.0), "Clav_top_R": (300.0, 320.0), "Clav_med_L": (540.0, 330.0),
                              "Clav_lat_L": (760.0, 300.0), "Clav_med_R": (460.0, 330.0), "Clav_lat_R": (240.0, 310.0),
                              "Cor_top_L": (690.0, 350.0), "Cor_top_R": (310.0, 356.0), "ST_L": (760.0, 250.0),
                              "ST_R": (240.0, 262.0)}, "L,F"),
    }
    for protocol, (pts, orientation) in sets.items():
        for spec in get_protocol(protocol).parameters:
            subset = {k: pts[k] for k in spec.landmarks}
            r = measure(subset, protocol, patient_orientation=orientation)
            assert spec.id in r.parameters, (protocol, spec.id, r.omitted.get(spec.id))
            assert set(r.parameters[spec.id].landmarks) <= set(spec.landmarks)
