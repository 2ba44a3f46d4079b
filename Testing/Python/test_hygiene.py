"""Label hygiene on hand-made corner arrays: each known error is found, fixed or excluded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SpineAlignmentLib.training.hygiene import check_labels, run_hygiene, summarise, write_report


def coronal_spine(curve_deg: float = 0.0, n: int = 17) -> np.ndarray:
    """(4n, 2) corners of a smooth coronal spine; each vertebra tilted along a C-curve.

    Vertebrae are 80 px wide, 50 px tall, 70 px apart; ``curve_deg`` is the tilt
    range from top to bottom (a scoliotic spine tilts its vertebrae).
    """
    pts = []
    tilts = np.linspace(-curve_deg / 2, curve_deg / 2, n)
    x = 300.0
    for k in range(n):
        t = np.radians(tilts[k])
        c = np.array([x, 100.0 + 70.0 * k])
        x += 70.0 * np.tan(t)  # centre line follows the tilt
        right = np.array([np.cos(t), -np.sin(t)])  # tilted lateral axis
        down = np.array([np.sin(t), np.cos(t)])  # tilted axial axis
        for a, l in ((-25, -40), (-25, 40), (25, -40), (25, 40)):  # TL, TR, BL, BR
            pts.append(c + a * down + l * right)
    return np.array(pts)


def test_clean_spine_has_no_findings():
    r = check_labels(coronal_spine(), "clean.jpg", (1400, 600))
    assert r.findings == []
    assert not r.excluded and not r.fixed


def test_strongly_tilted_vertebrae_are_not_flagged():
    # At 70 deg of total curve the end vertebrae tilt 35 deg: TR is then above TL in raw y,
    # which a naive y-sort would "fix" wrongly; the local spine frame must accept it.
    p = coronal_spine(curve_deg=70.0)
    assert p[4 * 16 + 1, 1] < p[4 * 16, 1] - 20  # L5_TR really is higher than L5_TL in the image
    assert check_labels(p, "scoliosis.jpg").findings == []


@pytest.mark.parametrize("swap", [(0, 1), (2, 3), (0, 2), (1, 3), (0, 3)])
def test_swapped_corners_are_fixed(swap):
    clean = coronal_spine(curve_deg=30.0)
    bad = clean.copy()
    v = 6
    i, j = 4 * v + swap[0], 4 * v + swap[1]
    bad[[i, j]] = bad[[j, i]]
    r = check_labels(bad, "swap.jpg")
    assert [(f.check, f.vertebra, f.action) for f in r.findings] == [("corner_order", v, "fixed")]
    assert "swap.jpg" == r.findings[0].file
    np.testing.assert_allclose(r.points, clean)
    assert r.fixed and not r.excluded


def test_vertebrae_out_of_order_are_resorted():
    clean = coronal_spine()
    bad = clean.reshape(17, 4, 2).copy()
    bad = np.concatenate([bad[1:], bad[:1]])  # the top vertebra stored last (seen in AASCE files)
    r = check_labels(bad.reshape(-1, 2), "order.jpg")
    assert [f.check for f in r.findings] == ["vertebra_order"]
    assert r.findings[0].action == "fixed"
    np.testing.assert_allclose(r.points, clean)


def test_misplaced_corner_excludes_the_image():
    bad = coronal_spine()
    bad[4 * 9 + 3] += np.array([150.0, 10.0])  # BR of the 10th vertebra dragged far right
    r = check_labels(bad, "misplaced.jpg")
    assert r.excluded
    assert any(f.check == "misplaced_point" and f.vertebra == 9 for f in r.findings)


def test_duplicated_vertebra_is_excluded_for_spacing():
    bad = coronal_spine()
    bad[4 * 16:4 * 17] = bad[4 * 15:4 * 16] + 2.0  # L5 annotated on top of L4
    r = check_labels(bad, "dup.jpg")
    assert r.excluded
    assert any("gap" in f.detail for f in r.findings)


def test_non_finite_and_outside_and_shape():
    p = coronal_spine()
    q = p.copy()
    q[5, 0] = np.nan
    assert [f.check for f in check_labels(q, "nan.jpg").findings] == ["non_finite"]
    r = check_labels(p, "small.jpg", image_shape=(600, 600))  # spine runs to y ~ 1245
    assert [f.check for f in r.findings] == ["outside_image"] and r.excluded
    assert check_labels(p[:10], "short.jpg").findings[0].check == "shape"


def test_report_lists_every_finding_with_file(tmp_path):
    clean = coronal_spine()
    swapped = clean.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    far = clean.copy()
    far[20] += 400.0
    results = run_hygiene([("a.jpg", clean, None), ("b.jpg", swapped, None), ("c.jpg", far, None)])
    s = write_report(results, tmp_path / "hygiene.json")
    assert s == summarise(results)
    assert (s["images_checked"], s["images_fixed"], s["images_excluded"]) == (3, 1, 1)
    rep = json.loads((tmp_path / "hygiene.json").read_text())
    assert {f["file"] for f in rep["findings"]} == {"b.jpg", "c.jpg"}
