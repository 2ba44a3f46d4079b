"""definitions.md §7.4 decision procedure as a pure function of tag values.

Every branch is also exercised through real DICOM files in test_imaging.py.
"""

from __future__ import annotations

import math

import pytest
from pydicom.dataset import Dataset

from SpineAlignmentLib.errors import CalibrationError, SpineAlignmentError
from SpineAlignmentLib.imaging.calibration import (
    ManualCalibration,
    has_mm,
    resolve_calibration,
    resolve_spacing,
    validate_spacing,
)

# (tags, manual, expected spacing (row, col) or None, expected label)
BRANCHES = {
    "manual-overrides-calibrated-tags": (
        {"PixelSpacing": [0.1, 0.1], "ImagerPixelSpacing": [0.2, 0.2], "PixelSpacingCalibrationType": "GEOMETRY"},
        (0.3, 0.25),
        (0.3, 0.25),
        "manual:user",
    ),
    "manual-marker": (
        {"ImagerPixelSpacing": [0.2, 0.2]},
        ManualCalibration.from_marker(25.0, 125.0, 100.0),  # 25 mm sphere measured 125 x 100 px
        (0.2, 0.25),
        "manual:marker",
    ),
    "ps-differs-fiducial": (
        {"PixelSpacing": [0.15, 0.16], "ImagerPixelSpacing": [0.2, 0.2], "PixelSpacingCalibrationType": "FIDUCIAL"},
        None,
        (0.15, 0.16),
        "calibrated:FIDUCIAL",
    ),
    "ps-differs-geometry": (
        {"PixelSpacing": [0.17, 0.17], "ImagerPixelSpacing": [0.2, 0.2], "PixelSpacingCalibrationType": "GEOMETRY"},
        None,
        (0.17, 0.17),
        "calibrated:GEOMETRY",
    ),
    "ps-differs-no-type": (
        {"PixelSpacing": [0.17, 0.17], "ImagerPixelSpacing": [0.2, 0.2]},
        None,
        (0.17, 0.17),
        "calibrated:unspecified",
    ),
    "ps-differs-with-ermf-still-uses-ps": (
        # Legacy cornerstoneTools would use IPS/ERMF here; §7.4 (and DICOM) use the calibrated PS.
        {"PixelSpacing": [0.17, 0.17], "ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.25},
        None,
        (0.17, 0.17),
        "calibrated:unspecified",
    ),
    "ips-with-ermf": (
        {"ImagerPixelSpacing": [0.2, 0.18], "EstimatedRadiographicMagnificationFactor": 1.25},
        None,
        (0.16, 0.144),
        "estimated(ERMF)",
    ),
    "ips-with-sid-sod": (
        {"ImagerPixelSpacing": [0.144, 0.144], "DistanceSourceToDetector": 1800.0, "DistanceSourceToPatient": 1500.0},
        None,
        (0.12, 0.12),
        "estimated(ERMF)",
    ),
    "ermf-wins-over-sid-sod": (
        {
            "ImagerPixelSpacing": [0.2, 0.2],
            "EstimatedRadiographicMagnificationFactor": 1.25,
            "DistanceSourceToDetector": 1800.0,
            "DistanceSourceToPatient": 1500.0,
        },
        None,
        (0.16, 0.16),
        "estimated(ERMF)",
    ),
    "ips-sid-without-sod": (
        {"ImagerPixelSpacing": [0.2, 0.2], "DistanceSourceToDetector": 1800.0},
        None,
        (0.2, 0.2),
        "detector-plane (magnified)",
    ),
    "ips-alone": (
        {"ImagerPixelSpacing": [0.139, 0.14]},
        None,
        (0.139, 0.14),
        "detector-plane (magnified)",
    ),
    "ps-equals-ips-with-ermf": (
        {"PixelSpacing": [0.2, 0.2], "ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.1},
        None,
        (0.2 / 1.1, 0.2 / 1.1),
        "estimated(ERMF)",
    ),
    "ps-equals-ips-within-tolerance": (
        {"PixelSpacing": [0.2000004, 0.2], "ImagerPixelSpacing": [0.2, 0.2]},
        None,
        (0.2, 0.2),
        "detector-plane (magnified)",
    ),
    "ps-only": (
        {"PixelSpacing": [0.3, 0.31]},
        None,
        (0.3, 0.31),
        "unknown-meaning",
    ),
    "nominal-scanned-only": (
        {"NominalScannedPixelSpacing": [0.254, 0.254]},
        None,
        (0.254, 0.254),
        "scanned-film",
    ),
    "nothing": ({}, None, None, "pixels-only"),
    "no-tags-at-all": (None, None, None, "pixels-only"),
}


@pytest.mark.parametrize("case", sorted(BRANCHES))
def test_every_branch_with_a_mapping(case):
    tags, manual, expected, label = BRANCHES[case]
    spacing, got_label = resolve_spacing(tags, manual)
    assert got_label == label
    if expected is None:
        assert spacing is None
    else:
        assert spacing == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("case", sorted(BRANCHES))
def test_every_branch_with_a_pydicom_dataset(case):
    """Same answers from an in-memory Dataset (DS values go through pydicom's DS type)."""
    tags, manual, expected, label = BRANCHES[case]
    ds = Dataset()
    for keyword, value in (tags or {}).items():
        setattr(ds, keyword, value)
    spacing, got_label = resolve_spacing(ds, manual)
    assert got_label == label
    if expected is None:
        assert spacing is None
    else:
        assert spacing == pytest.approx(expected, rel=1e-12)


def test_labels_that_carry_mm():
    assert has_mm("estimated(ERMF)") and has_mm("manual:user") and not has_mm("pixels-only")


def test_manual_where_and_description():
    cal = resolve_calibration(
        {"PixelSpacing": [0.17, 0.17], "ImagerPixelSpacing": [0.2, 0.2],
         "PixelSpacingCalibrationDescription": "sphere at mid-sagittal plane"}
    )
    assert cal.source == "PixelSpacing" and cal.description == "sphere at mid-sagittal plane"
    cal = resolve_calibration({}, ManualCalibration((0.1, 0.1), "ruler"))
    assert (cal.label, cal.source, cal.spacing_mm) == ("manual:ruler", "manual", (0.1, 0.1))


def test_magnification_is_reported():
    cal = resolve_calibration({"ImagerPixelSpacing": [0.15, 0.15], "EstimatedRadiographicMagnificationFactor": "1.5"})
    assert cal.magnification == 1.5
    assert cal.spacing_mm == pytest.approx((0.1, 0.1), rel=1e-12)


@pytest.mark.parametrize(
    "tags, label, expected, fragment",
    [
        # Unusable tags are ignored (and reported); the next branch applies.
        ({"PixelSpacing": [0.0, 0.1], "ImagerPixelSpacing": [0.2, 0.2]}, "detector-plane (magnified)", (0.2, 0.2),
         "PixelSpacing"),
        ({"PixelSpacing": [0.1]}, "pixels-only", None, "PixelSpacing"),
        ({"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 0.0},
         "detector-plane (magnified)", (0.2, 0.2), "EstimatedRadiographicMagnificationFactor"),
        ({"ImagerPixelSpacing": [0.2, 0.2], "DistanceSourceToDetector": 1000.0, "DistanceSourceToPatient": -5.0},
         "detector-plane (magnified)", (0.2, 0.2), "DistanceSourceToPatient"),
        # ERMF below 1 is applied as the procedure says, but flagged.
        ({"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 0.8},
         "estimated(ERMF)", (0.25, 0.25), "below 1"),
        # A "calibrated" spacing larger than the detector's is suspicious.
        ({"PixelSpacing": [0.3, 0.3], "ImagerPixelSpacing": [0.2, 0.2]}, "calibrated:unspecified", (0.3, 0.3),
         "larger than ImagerPixelSpacing"),
    ],
)
def test_odd_tag_values_warn(tags, label, expected, fragment):
    cal = resolve_calibration(tags)
    assert cal.label == label
    assert cal.spacing_mm == (pytest.approx(expected, rel=1e-12) if expected else None)
    assert any(fragment in w for w in cal.warnings), cal.warnings


def test_clean_tags_do_not_warn():
    assert resolve_calibration({"ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.2}).warnings == ()


@pytest.mark.parametrize("row, col", [(0, 0.1), (0.1, 0), (-0.1, 0.1), (0.1, -1), (math.nan, 0.1), (0.1, math.inf), (True, 0.1), (10.0, 0.1), (0.1, 1e300),
                                      ("abc", 0.1)])
def test_validate_spacing_refuses(row, col):
    with pytest.raises(CalibrationError) as err:
        validate_spacing(row, col)
    assert isinstance(err.value, SpineAlignmentError)
    assert "\n" not in str(err.value)


def test_validate_spacing_accepts_and_converts():
    assert validate_spacing("0.2", 0.25) == (0.2, 0.25)


@pytest.mark.parametrize("manual", [(0, 0.1), (-0.2, -0.2), (math.nan, 0.1), (0.1,), (0.1, 0.2, 0.3)])
def test_bad_manual_spacing_is_refused(manual):
    with pytest.raises(CalibrationError):
        resolve_spacing({"PixelSpacing": [0.1, 0.1]}, manual)


def test_bad_marker_is_refused():
    with pytest.raises(CalibrationError):
        ManualCalibration.from_marker(25.0, 0.0)
    with pytest.raises(CalibrationError):
        ManualCalibration((0.1, 0.1), "two words")
