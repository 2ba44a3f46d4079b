"""Radiograph I/O: synthetic DICOM files written with pydicom, PNG/JPEG/TIFF/NRRD round trips, the info command."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from SpineAlignmentLib import cli
from SpineAlignmentLib.errors import CalibrationError, RadiographError
from SpineAlignmentLib.imaging import (
    ManualCalibration,
    direction_vector,
    image_axes,
    parse_patient_orientation,
    read_radiograph,
)

DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
CT = "1.2.840.10008.5.1.4.1.1.2"
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-4711"


def write_dicom(path, arr, *, photometric="MONOCHROME2", bits_stored=None, sop_class=DX, modality="DX",
                frames=None, **tags):
    """Write a Part 10 file with proper file meta; ``arr`` is (rows, cols), (frames, rows, cols) or (rows, cols, 3)."""
    arr = np.asarray(arr)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.StudyDescription = "Spine Jane Doe"
    ds.Manufacturer = "TestVendor"
    if arr.ndim == 3 and photometric in ("RGB", "YBR_FULL"):
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        rows, cols = arr.shape[:2]
    else:
        ds.SamplesPerPixel = 1
        rows, cols = arr.shape[-2:]
        if arr.ndim == 3:
            ds.NumberOfFrames = arr.shape[0] if frames is None else frames
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    bits = arr.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(arr.dtype, np.signedinteger) else 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = arr.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def ramp(rows=6, cols=5, dtype=np.uint16, maximum=4095):
    return (np.arange(rows * cols).reshape(rows, cols) * 97 % (maximum + 1)).astype(dtype)


# ---------------------------------------------------------------- §7.4 through real files

# tags, manual spacing, expected spacing, expected label
FILE_BRANCHES = [
    ({"PixelSpacing": [0.1, 0.1], "ImagerPixelSpacing": [0.2, 0.2]}, (0.3, 0.25), (0.3, 0.25), "manual:user"),
    ({"PixelSpacing": [0.15, 0.16], "ImagerPixelSpacing": [0.2, 0.2], "PixelSpacingCalibrationType": "FIDUCIAL"},
     None, (0.15, 0.16), "calibrated:FIDUCIAL"),
    ({"PixelSpacing": [0.17, 0.17], "ImagerPixelSpacing": [0.2, 0.2], "PixelSpacingCalibrationType": "GEOMETRY"},
     None, (0.17, 0.17), "calibrated:GEOMETRY"),
    ({"PixelSpacing": [0.17, 0.17], "ImagerPixelSpacing": [0.2, 0.2]}, None, (0.17, 0.17), "calibrated:unspecified"),
    ({"ImagerPixelSpacing": [0.2, 0.18], "EstimatedRadiographicMagnificationFactor": 1.25}, None, (0.16, 0.144),
     "estimated(ERMF)"),
    ({"ImagerPixelSpacing": [0.144, 0.144], "DistanceSourceToDetector": 1800, "DistanceSourceToPatient": 1500},
     None, (0.12, 0.12), "estimated(ERMF)"),
    ({"ImagerPixelSpacing": [0.139, 0.14]}, None, (0.139, 0.14), "detector-plane (magnified)"),
    ({"PixelSpacing": [0.2, 0.2], "ImagerPixelSpacing": [0.2, 0.2], "EstimatedRadiographicMagnificationFactor": 1.1},
     None, (0.2 / 1.1, 0.2 / 1.1), "estimated(ERMF)"),
    ({"PixelSpacing": [0.3, 0.31]}, None, (0.3, 0.31), "unknown-meaning"),
    ({"NominalScannedPixelSpacing": [0.254, 0.254]}, None, (0.254, 0.254), "scanned-film"),
    ({}, None, None, "pixels-only"),
]


@pytest.mark.parametrize("tags, manual, expected, label", FILE_BRANCHES, ids=[b[3] + f"-{i}" for i, b in
                                                                               enumerate(FILE_BRANCHES)])
def test_calibration_branches_from_dicom_files(tmp_path, tags, manual, expected, label):
    path = write_dicom(tmp_path / "cal.dcm", ramp(), **tags)
    rg = read_radiograph(path, spacing=manual)
    assert rg.calibration == label
    if expected is None:
        assert rg.spacing_mm is None
    else:
        assert rg.spacing_mm == pytest.approx(expected, rel=1e-12)


def test_calibrated_cr_ignores_simpleitk_style_imager_spacing(tmp_path):
    """The case SimpleITK gets wrong (definitions.md §7.3): CR with a calibrated Pixel Spacing."""
    path = write_dicom(tmp_path / "cr.dcm", ramp(), sop_class=CR, modality="CR",
                       PixelSpacing=[0.1, 0.1], ImagerPixelSpacing=[0.125, 0.125], PixelSpacingCalibrationType="GEOMETRY")
    rg = read_radiograph(path)
    assert (rg.spacing_mm, rg.calibration, rg.modality) == ((0.1, 0.1), "calibrated:GEOMETRY", "CR")
    assert rg.warnings == []


# ---------------------------------------------------------------- pixels

def test_monochrome2_16bit_pixels_equal_raw(tmp_path):
    arr = ramp(maximum=4095)
    rg = read_radiograph(write_dicom(tmp_path / "m2.dcm", arr, bits_stored=12))
    assert rg.raw.dtype == np.uint16 and np.array_equal(rg.raw, arr)
    assert rg.pixels.dtype == np.float32 and np.array_equal(rg.pixels, arr.astype(np.float32))
    assert rg.shape == (6, 5) and rg.metadata["bits_stored"] == 12


def test_monochrome1_8bit_is_inverted(tmp_path):
    arr = np.array([[0, 10, 128], [200, 254, 255]], dtype=np.uint8)
    rg = read_radiograph(write_dicom(tmp_path / "m1.dcm", arr, photometric="MONOCHROME1"))
    assert np.array_equal(rg.raw, arr)  # stored values untouched
    assert rg.pixels.tolist() == [[255.0, 245.0, 127.0], [55.0, 1.0, 0.0]]
    assert rg.metadata["display"]["inverted"] is True


def test_monochrome1_12bit_inverts_within_bits_stored(tmp_path):
    arr = np.array([[0, 1000], [4000, 4095]], dtype=np.uint16)
    rg = read_radiograph(write_dicom(tmp_path / "m1.dcm", arr, photometric="MONOCHROME1", bits_stored=12))
    assert rg.pixels.tolist() == [[4095.0, 3095.0], [95.0, 0.0]]
    assert np.array_equal(rg.raw, arr)


def test_rescale_applied_raw_kept(tmp_path):
    arr = np.array([[0, 100], [1000, 4095]], dtype=np.uint16)
    rg = read_radiograph(write_dicom(tmp_path / "rs.dcm", arr, bits_stored=12, RescaleSlope=2, RescaleIntercept=-100))
    assert rg.pixels.tolist() == [[-100.0, 100.0], [1900.0, 8090.0]]
    assert np.array_equal(rg.raw, arr)


def test_window_applied_with_exact_values(tmp_path):
    # LINEAR window (PS3.3 C.11.2.1.2.1): c' = 127.5, w' = 100, output range [0, 255]
    arr = np.array([[50, 100], [128, 200]], dtype=np.uint8)
    rg = read_radiograph(write_dicom(tmp_path / "w.dcm", arr, WindowCenter=128, WindowWidth=101))
    # 50 <= 77.5 -> 0; 200 > 177.5 -> 255; 100 -> ((100-127.5)/100+0.5)*255 = 57.375; 128 -> 0.505*255
    np.testing.assert_allclose(rg.pixels, [[0.0, 57.375], [128.775, 255.0]], rtol=0, atol=1e-4)
    assert np.array_equal(rg.raw, arr)
    assert rg.metadata["display"]["voi"] == "window"


def test_rescale_then_window_then_monochrome1(tmp_path):
    # Rescale 2x-100: output range [-100, 410]; window c=100, w=201 -> c'=99.5, w'=200.
    # raw 100 -> 100 -> ((100-99.5)/200+0.5)*510-100 = 156.275; inverted: (-100+410)-156.275 = 153.725
    arr = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    rg = read_radiograph(write_dicom(tmp_path / "rw1.dcm", arr, photometric="MONOCHROME1", RescaleSlope=2,
                                     RescaleIntercept=-100, WindowCenter=100, WindowWidth=201))
    # raw 0 -> -100 (below) -> -100 -> 410; 200 -> 300 (above 199.5) -> 410 -> -100; 255 -> 410 -> -100
    np.testing.assert_allclose(rg.pixels, [[410.0, 153.725], [-100.0, -100.0]], rtol=0, atol=1e-4)
    assert np.array_equal(rg.raw, arr)


def test_signed_16bit_with_rescale(tmp_path):
    arr = np.array([[-1000, 0], [1, 2047]], dtype=np.int16)
    rg = read_radiograph(write_dicom(tmp_path / "s.dcm", arr, bits_stored=12, RescaleSlope=1, RescaleIntercept=1024))
    assert rg.raw.dtype == np.int16 and np.array_equal(rg.raw, arr)
    assert rg.pixels.tolist() == [[24.0, 1024.0], [1025.0, 3071.0]]


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["RLE", "JPEG2000Lossless"])
def test_compressed_transfer_syntaxes_round_trip(tmp_path, syntax):
    from pydicom.pixels import get_encoder

    if not get_encoder(syntax).is_available:
        pytest.skip(f"no {syntax.name} encoder installed (pip install 'SpineAlignmentLib[dicom]')")
    arr = ramp(rows=72, cols=64, maximum=4095)  # JPEG 2000's default 6 resolutions need >= 32 px
    plain = write_dicom(tmp_path / "plain.dcm", arr, bits_stored=12, photometric="MONOCHROME1",
                        ImagerPixelSpacing=[0.2, 0.2])
    ds = pydicom.dcmread(plain)
    ds.compress(syntax)
    ds.save_as(tmp_path / "c.dcm")
    rg = read_radiograph(tmp_path / "c.dcm")
    assert rg.metadata["transfer_syntax_uid"] == str(syntax)
    assert np.array_equal(rg.raw, arr)
    assert np.array_equal(rg.pixels, (4095 - arr).astype(np.float32))
    assert rg.calibration == "detector-plane (magnified)"


def test_secondary_capture_scanned_film(tmp_path):
    arr = ramp(dtype=np.uint8, maximum=255)
    rg = read_radiograph(write_dicom(tmp_path / "sc.dcm", arr, sop_class=SC, modality="OT",
                                     NominalScannedPixelSpacing=[0.1, 0.1]))
    assert (rg.calibration, rg.spacing_mm, rg.warnings) == ("scanned-film", (0.1, 0.1), [])
    assert rg.metadata["sop_class"] == "Secondary Capture Image Storage"


def test_non_projection_modality_is_accepted_with_a_warning(tmp_path):
    rg = read_radiograph(write_dicom(tmp_path / "ct.dcm", ramp(), sop_class=CT, modality="CT",
                                     PixelSpacing=[0.7, 0.7]))
    assert rg.calibration == "unknown-meaning"
    assert len(rg.warnings) == 1 and "not a projection radiograph" in rg.warnings[0]


# ---------------------------------------------------------------- orientation

def test_orientation_from_the_file(tmp_path):
    rg = read_radiograph(write_dicom(tmp_path / "o.dcm", ramp(), PatientOrientation=["L", "F"]))
    assert rg.patient_orientation == ("L", "F")
    assert direction_vector(rg.patient_orientation, "H") == (0.0, -1.0)
    assert direction_vector(rg.patient_orientation, "L") == (1.0, 0.0)
    assert direction_vector(rg.patient_orientation, "A") is None
    assert rg.info()["orientation"]["image_right"] == "patient left"


def test_orientation_argument_overrides_the_file_with_a_warning(tmp_path):
    rg = read_radiograph(write_dicom(tmp_path / "o.dcm", ramp(), PatientOrientation=["L", "F"]),
                         patient_orientation="R,F")
    assert rg.patient_orientation == ("R", "F")
    assert any("file says L,F" in w for w in rg.warnings)


def test_orientation_unknown_without_tag_or_argument(tmp_path):
    assert read_radiograph(write_dicom(tmp_path / "o.dcm", ramp())).patient_orientation is None


@pytest.mark.parametrize("text, expected", [
    ("L\\F", ("L", "F")), ("L,F", ("L", "F")), ("a, f", ("A", "F")), (("P", "F"), ("P", "F")),
    ("FL\\A", ("FL", "A")), ("", None), (None, None),
])
def test_parse_patient_orientation(text, expected):
    assert parse_patient_orientation(text) == expected


@pytest.mark.parametrize("text", ["L,R", "L", "L,F,H", "X,F", "LR,F", "LL,F", "ABCD,F", "H,FA"])
def test_parse_patient_orientation_refuses(text):
    with pytest.raises(RadiographError):
        parse_patient_orientation(text)


def test_image_axes_lateral_facing_left():
    axes = image_axes("P,F")  # image +x is posterior: the patient faces image left
    assert (axes.image_left, axes.image_up, axes.oblique) == ("A", "H", False)
    assert direction_vector("P,F", "A") == (-1.0, 0.0)


# ---------------------------------------------------------------- metadata and patient data

def test_metadata_has_no_patient_data_by_default(tmp_path):
    rg = read_radiograph(write_dicom(tmp_path / "p.dcm", ramp(), ViewPosition="PA", BodyPartExamined="SPINE"))
    text = json.dumps(rg.metadata)
    for secret in ("Doe", "Jane", PATIENT_ID, "19700101"):
        assert secret not in text
    assert rg.metadata["view_position"] == "PA" and rg.metadata["manufacturer"] == "TestVendor"
    assert rg.metadata["modality"] == "DX" and rg.metadata["rows"] == 6


def test_patient_data_only_when_asked(tmp_path):
    rg = read_radiograph(write_dicom(tmp_path / "p.dcm", ramp()), include_patient_data=True)
    assert rg.metadata["patient_name"] == PATIENT_NAME and rg.metadata["patient_id"] == PATIENT_ID
    assert rg.metadata["study_description"] == "Spine Jane Doe"


# ---------------------------------------------------------------- refusals

def _refused(path, *fragments, **kwargs):
    with pytest.raises(RadiographError) as err:
        read_radiograph(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_multi_frame_refused(tmp_path):
    path = write_dicom(tmp_path / "mf.dcm", np.stack([ramp(), ramp()]))
    _refused(path, "multi-frame", "2 frames")


def test_colour_refused(tmp_path):
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", sop_class=SC, modality="OT")
    _refused(path, "colour", "RGB")


def test_no_pixel_data_refused(tmp_path):
    path = write_dicom(tmp_path / "np.dcm", ramp())
    ds = pydicom.dcmread(path)
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    ds.save_as(path)
    _refused(path, "no pixel data")


@pytest.mark.parametrize("compress", [False, True], ids=["native", "RLE"])
def test_truncated_file_refused(tmp_path, compress):
    path = write_dicom(tmp_path / "full.dcm", ramp(rows=40, cols=30))
    if compress:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    _refused(cut, "truncated")


def test_header_only_file_refused(tmp_path):
    data = write_dicom(tmp_path / "full.dcm", ramp()).read_bytes()
    cut = tmp_path / "head.dcm"
    cut.write_bytes(data[:200])  # preamble, DICM and part of the file meta
    _refused(cut, "truncated")


def test_text_file_named_dcm_refused(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("this is not an image\n" * 20)
    _refused(path, "not a DICOM file")


def test_missing_file_and_folder_refused(tmp_path):
    _refused(tmp_path / "absent.dcm", "not found")
    _refused(tmp_path, "folder")


def test_zero_or_negative_manual_spacing_refused(tmp_path):
    path = write_dicom(tmp_path / "z.dcm", ramp())
    for bad in [(0.0, 0.1), (-0.2, 0.2)]:
        with pytest.raises(CalibrationError):
            read_radiograph(path, spacing=bad)


# ---------------------------------------------------------------- PNG / JPEG / TIFF / NRRD

def test_png_without_spacing_is_pixels_only(tmp_path):
    arr = ramp(rows=7, cols=9, dtype=np.uint8, maximum=255)
    Image.fromarray(arr).save(tmp_path / "a.png")
    rg = read_radiograph(tmp_path / "a.png")
    assert np.array_equal(rg.raw, arr) and rg.pixels.dtype == np.float32
    assert (rg.spacing_mm, rg.calibration, rg.patient_orientation, rg.modality) == (None, "pixels-only", None, None)
    assert rg.metadata["format"] == "png"


def test_png_with_spacing_and_orientation(tmp_path):
    arr = ramp(rows=7, cols=9, dtype=np.uint16, maximum=65535)
    Image.fromarray(arr).save(tmp_path / "a16.png")
    rg = read_radiograph(tmp_path / "a16.png", spacing=(0.2, 0.25), patient_orientation=("L", "F"))
    assert rg.raw.dtype == np.uint16 and np.array_equal(rg.raw, arr)
    assert (rg.spacing_mm, rg.calibration, rg.patient_orientation) == ((0.2, 0.25), "manual:user", ("L", "F"))
    rg = read_radiograph(tmp_path / "a16.png", spacing=ManualCalibration((0.1, 0.1), "ruler"))
    assert rg.calibration == "manual:ruler"


def test_gray_rgb_png_accepted_colour_refused(tmp_path):
    gray = ramp(rows=4, cols=4, dtype=np.uint8, maximum=255)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "gray_rgb.png")
    assert np.array_equal(read_radiograph(tmp_path / "gray_rgb.png").raw, gray)
    colour = np.stack([gray, gray, 255 - gray], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    _refused(tmp_path / "colour.png", "colour")


def test_jpeg_grayscale(tmp_path):
    arr = np.full((16, 16), 120, dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    rg = read_radiograph(tmp_path / "a.jpg", spacing=(0.5, 0.5))
    assert rg.shape == (16, 16) and rg.metadata["format"] == "jpeg"
    assert np.abs(rg.pixels - 120).max() <= 1  # lossy, but a flat image survives


def test_multipage_tiff_refused_and_truncated_png_refused(tmp_path):
    frames = [Image.fromarray(ramp(dtype=np.uint8, maximum=255)) for _ in range(2)]
    frames[0].save(tmp_path / "two.tif", save_all=True, append_images=frames[1:])
    _refused(tmp_path / "two.tif", "2 frames")
    Image.fromarray(ramp(rows=64, cols=64, dtype=np.uint8, maximum=255)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _refused(tmp_path / "cut.png", "cannot be read")


def test_tiff_16bit(tmp_path):
    arr = ramp(rows=5, cols=6, dtype=np.uint16, maximum=60000)
    Image.fromarray(arr).save(tmp_path / "a.tif")
    rg = read_radiograph(tmp_path / "a.tif")
    assert np.array_equal(rg.raw, arr) and rg.metadata["format"] == "tiff"


def test_nrrd_round_trip(tmp_path):
    import SimpleITK as sitk

    arr = ramp(rows=8, cols=5, dtype=np.uint16, maximum=4095)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.3))  # ITK order (x = col, y = row)
    sitk.WriteImage(img, str(tmp_path / "a.nrrd"))
    rg = read_radiograph(tmp_path / "a.nrrd")
    assert np.array_equal(rg.raw, arr) and rg.shape == (8, 5)
    # Header spacing is recorded in (row, col) order but not trusted without --spacing.
    assert rg.metadata["file_spacing_mm"] == pytest.approx([0.3, 0.5])
    assert (rg.spacing_mm, rg.calibration) == (None, "pixels-only")
    assert any("--spacing" in w for w in rg.warnings)
    rg = read_radiograph(tmp_path / "a.nrrd", spacing=(0.3, 0.5))
    assert (rg.spacing_mm, rg.calibration) == ((0.3, 0.5), "manual:user")


def test_nrrd_volume_refused(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.uint8)), str(tmp_path / "v.nrrd"))
    _refused(tmp_path / "v.nrrd", "volume")


# ---------------------------------------------------------------- spine-align info

def test_info_command_json(tmp_path, capsys):
    path = write_dicom(tmp_path / "i.dcm", ramp(), photometric="MONOCHROME1", bits_stored=12,
                       ImagerPixelSpacing=[0.2, 0.2], EstimatedRadiographicMagnificationFactor=1.25,
                       PatientOrientation=["L", "F"])
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    info = json.loads(out)
    assert info["size"] == [6, 5]
    assert info["spacing_mm"] == pytest.approx([0.16, 0.16])
    assert info["calibration"] == "estimated(ERMF)"
    assert info["patient_orientation"] == "L,F"
    assert (info["modality"], info["photometric"], info["bits_allocated"], info["bits_stored"]) == \
        ("DX", "MONOCHROME1", 16, 12)
    assert info["transfer_syntax"] == "Explicit VR Little Endian"
    for secret in ("Doe", "Jane", PATIENT_ID, "19700101"):
        assert secret not in out


def test_info_command_png_with_spacing(tmp_path, capsys):
    Image.fromarray(ramp(dtype=np.uint8, maximum=255)).save(tmp_path / "a.png")
    code = cli.main(["info", str(tmp_path / "a.png"), "--spacing", "0.2", "0.3", "--patient-orientation", "R,F"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (info["spacing_mm"], info["calibration"], info["patient_orientation"]) == ([0.2, 0.3], "manual:user", "R,F")
    assert info["orientation"]["image_right"] == "patient right"


@pytest.mark.parametrize("make, extra, fragment", [
    (lambda p: (p.write_text("hello\n"), p)[1], [], "not a DICOM file"),
    (lambda p: write_dicom(p, np.stack([ramp(), ramp()])), [], "multi-frame"),
    (lambda p: write_dicom(p, ramp()), ["--spacing", "0", "0.1"], "spacing"),
    (lambda p: write_dicom(p, ramp()), ["--spacing", "-1", "-1"], "spacing"),
    (lambda p: write_dicom(p, ramp()), ["--patient-orientation", "L,R"], "orientation"),
], ids=["text", "multiframe", "zero-spacing", "negative-spacing", "bad-orientation"])
def test_info_command_bad_input_one_line_no_traceback(tmp_path, capsys, make, extra, fragment):
    path = make(tmp_path / "bad.dcm")
    code = cli.main(["info", str(path), *extra])
    captured = capsys.readouterr()
    assert code != 0
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0]
    assert "Traceback" not in captured.err


def test_voi_lut_sequence_then_monochrome1(tmp_path):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [256, 0, 10]  # 256 entries, first stored value 0, 10-bit output
    item.add_new(0x00283006, "US", [4 * v for v in range(256)])  # LUT Data: output = 4 * stored value
    arr = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    path = write_dicom(tmp_path / "voi.dcm", arr, VOILUTSequence=[item], WindowCenter=10, WindowWidth=2)
    rg = read_radiograph(path)
    # The VOI LUT wins over the window (only one VOI transform applies).
    assert rg.pixels.tolist() == [[0.0, 400.0], [800.0, 1020.0]]
    assert rg.metadata["display"]["voi"] == "lut"
    path1 = write_dicom(tmp_path / "voi1.dcm", arr, photometric="MONOCHROME1", VOILUTSequence=[item])
    # MONOCHROME1 inverts within the LUT's 10-bit output range [0, 1023].
    assert read_radiograph(path1).pixels.tolist() == [[1023.0, 623.0], [223.0, 3.0]]


def _datasets_dir():
    import os
    from pathlib import Path

    env = os.environ.get("SPINEALIGN_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


@pytest.mark.dataset
def test_reads_an_aasce_jpeg_as_pixels_only():
    images = _datasets_dir() / "aasce-train" / "images"
    if not images.is_dir():
        pytest.skip(f"AASCE training images not found at {images} (set SPINEALIGN_DATASETS)")
    first = sorted(images.glob("*.jpg"))[0]
    rg = read_radiograph(first)
    with Image.open(first) as im:
        width, height = im.size
    assert rg.shape == (height, width)
    assert (rg.calibration, rg.spacing_mm, rg.patient_orientation) == ("pixels-only", None, None)


def test_dicom_without_preamble_is_read(tmp_path):
    """Old archives hold bare datasets (no preamble, no file meta); they are read if they hold an image."""
    from pydicom.dataset import Dataset

    arr = ramp(rows=4, cols=5)
    ds = Dataset()
    ds.Modality, ds.SOPClassUID = "CR", CR
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.PixelData = arr.tobytes()
    path = tmp_path / "bare"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    rg = read_radiograph(path)
    assert np.array_equal(rg.raw, arr)
    assert (rg.calibration, rg.metadata["transfer_syntax"]) == ("detector-plane (magnified)", "Implicit VR Little Endian")
