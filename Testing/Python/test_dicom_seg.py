"""DICOM SEG out (highdicom): a label map on the film's grid, one segment per label, validated and read back."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from highdicom.color import CIELabColor
from test_dicom_sr import dciodvfy
from test_imaging import PATIENT_NAME, write_dicom

from SpineAlignmentLib.errors import SpineAlignmentError
from SpineAlignmentLib.io.dicom_seg import read_segmentation, segments_for, write_segmentation


def _film(path, rows=60, cols=80, **tags):
    arr = (np.arange(rows * cols).reshape(rows, cols) % 4096).astype(np.uint16)
    return write_dicom(path, arr, ImagerPixelSpacing=[0.2, 0.2], **tags)


def _clavicles(rows=60, cols=80):
    """Synthetic shoulder label map: 1 = patient-left clavicle (image right for L,F), 2 = patient-right."""
    lab = np.zeros((rows, cols), np.uint8)
    lab[10:15, 50:70] = 1
    lab[12:16, 5:25] = 2
    return lab


def test_label_map_round_trip_with_names_codes_colours_and_reference(tmp_path):
    film = _film(tmp_path / "film.dcm", PatientOrientation=["L", "F"])
    lab = _clavicles()
    seg = write_segmentation(lab, film, tmp_path / "film_seg.dcm", protocol="coronal-shoulder",
                             model={"name": "shoulder-clavicles", "version": "0.1.0"})
    back, segments = read_segmentation(seg)
    assert back.shape == lab.shape and np.array_equal(back, lab)
    assert [(s["label"], s["name"], s["type"][:2], s["modifier"][:2]) for s in segments] == [
        (1, "patient-left clavicle", ("51299004", "SCT"), ("7771000", "SCT")),
        (2, "patient-right clavicle", ("51299004", "SCT"), ("24028007", "SCT")),
    ]
    for s, spec in zip(segments, segments_for("coronal-shoulder")):
        expected = CIELabColor.from_rgb(*(round(255 * c) for c in spec.color)).value
        assert tuple(s["color_lab"]) == tuple(expected)
    ds, src = pydicom.dcmread(seg), pydicom.dcmread(film)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert (str(ds.PatientName), ds.StudyInstanceUID) == (PATIENT_NAME, src.StudyInstanceUID)
    assert list(ds.PatientOrientation) == ["L", "F"]
    item = ds.SegmentSequence[0]
    assert item.SegmentAlgorithmType == "AUTOMATIC" and item.SegmentAlgorithmName == "shoulder-clavicles"
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert int(ds.NumberOfFrames) == 2 and (ds.Rows, ds.Columns) == lab.shape
    dciodvfy(seg, kind="Segmentation")


def test_empty_and_hand_drawn_label_maps(tmp_path):
    film = _film(tmp_path / "film.dcm")  # no Patient Orientation: written empty (Type 2C)
    seg = write_segmentation(np.zeros((60, 80), np.int32), film, tmp_path / "empty_seg.dcm", protocol="coronal-shoulder")
    back, segments = read_segmentation(seg)
    assert not back.any() and [s["label"] for s in segments] == [1, 2]
    ds = pydicom.dcmread(seg)
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "MANUAL" and ds.PatientOrientation == ""
    dciodvfy(seg, kind="Segmentation")


@pytest.mark.parametrize("labels, message", [
    (np.zeros((60, 81), np.uint8), "the label map is"),
    (np.full((60, 80), 3, np.uint8), r"values \[3\] with no segment"),
    (np.zeros((60, 80), np.float32), "give integer labels"),
])
def test_bad_label_maps_get_one_sentence(tmp_path, labels, message):
    film = _film(tmp_path / "film.dcm")
    with pytest.raises(SpineAlignmentError, match=message):
        write_segmentation(labels, film, tmp_path / "x.dcm", protocol="coronal-shoulder")


def test_protocol_without_segments_and_non_dicom_source(tmp_path):
    film = _film(tmp_path / "film.dcm")
    with pytest.raises(SpineAlignmentError, match="has no segmentation labels; protocols with one: coronal-shoulder"):
        write_segmentation(_clavicles(), film, tmp_path / "x.dcm", protocol="coronal-spine")
    (tmp_path / "film.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(SpineAlignmentError, match="is not a DICOM file"):
        write_segmentation(_clavicles(), tmp_path / "film.png", tmp_path / "x.dcm", protocol="coronal-shoulder")
