"""'Write DICOM SR' from the scene (slicerio.dicom_out and the module logic), on real MRML and real DICOM files:
when it can be used and why not, SR values equal to the scene's (also after a drag), a pair referencing both films,
the SEG of a segmentation, and the module's logic.writeDicomReport."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install 'SpineAlignmentLib[slicer]')")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML classes (install slicer-core)", allow_module_level=True)

from test_batch_pairs import EXT, FLEX, IROM_L1L2, T_EXT, T_FLEX  # noqa: E402
from test_dicom_sr import SHOULDER  # noqa: E402
from test_imaging import write_dicom  # noqa: E402
from test_mrml import module_with_stubs, oblique_ijk_to_ras, scene  # noqa: E402,F401 (fixtures)
from test_mrml_pairs import _move  # noqa: E402

from SpineAlignmentLib.errors import RadiographError, SpineAlignmentError  # noqa: E402
from SpineAlignmentLib.io.dicom_seg import read_segmentation  # noqa: E402
from SpineAlignmentLib.io.dicom_sr import read_measurement_report  # noqa: E402
from SpineAlignmentLib.pipeline import measure  # noqa: E402
from SpineAlignmentLib.protocols import get_protocol  # noqa: E402
from SpineAlignmentLib.slicerio import mrml  # noqa: E402
from SpineAlignmentLib.slicerio.dicom_out import (  # noqa: E402
    DICOM_UIDS_ATTRIBUTE,
    dicom_report_problem,
    write_dicom_report,
)
from SpineAlignmentLib.slicerio.pairs import create_pair_analysis  # noqa: E402


def _film(path, rows, cols, **tags):
    """A DICOM DX film (0.2 mm imager pixels) and its SOP Instance UID."""
    arr = (np.arange(rows * cols).reshape(rows, cols) % 4096).astype(np.uint16)
    write_dicom(path, arr, ImagerPixelSpacing=[0.2, 0.2], **tags)
    import pydicom

    return path, str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _dicom_volume(scene, database, path, uid, shape, matrix, name):
    """A volume as Slicer's DICOM module loads it: the instance UIDs attribute, the file in the database."""
    volume = mrml.make_volume_node(scene, np.zeros(shape, np.float32), matrix, name)
    volume.SetAttribute(DICOM_UIDS_ATTRIBUTE, uid)
    database[uid] = str(path)
    return volume


def test_shoulder_film_sr_and_seg_follow_the_scene(scene, tmp_path):
    database: dict[str, str] = {}
    path, uid = _film(tmp_path / "film.dcm", 300, 400, PatientOrientation=["L", "F"])
    volume = _dicom_volume(scene, database, path, uid, (300, 400), oblique_ijk_to_ras(), "film")
    # why not, before there is something to write
    assert dicom_report_problem(None, database.get) == "Run Apply first: there is no result to write."
    empty = mrml.create_empty_analysis(scene, volume, "coronal-shoulder", spacing_mm=(0.2, 0.2),
                                       calibration="detector-plane (magnified)", patient_orientation="L,F")
    assert dicom_report_problem(empty, database.get).startswith("No parameter is computed yet")
    empty.cleanup()
    res = measure(SHOULDER, "coronal-shoulder", spacing_mm=(0.2, 0.2), calibration="detector-plane (magnified)",
                  image_size=(300, 400), patient_orientation="L,F", image="film.dcm")
    analysis = mrml.create_analysis(scene, volume, res, observe=True)
    # a hand-drawn segmentation of both clavicles (label values of the protocol's segments)
    labels = np.zeros((300, 400), np.uint8)
    labels[95:106, 222:320] = 1
    labels[100:112, 80:178] = 2
    analysis.segmentation_node = mrml.add_segmentation(scene, volume, labels, get_protocol("coronal-shoulder").segments)
    assert dicom_report_problem(analysis, database.get) == ""
    assert "not loaded from DICOM" in dicom_report_problem(analysis, None)  # no database to resolve the UID
    written = write_dicom_report(analysis, tmp_path / "out", file_for_instance=database.get)
    assert sorted(written) == ["seg", "sr"] and written["sr"].name == "film_sr.dcm"
    back = read_measurement_report(written["sr"])
    assert back.dicom["sop_instance_uid"] == uid
    assert back.value("CHD") == pytest.approx(2.0, abs=1e-9)  # hand-worked: |140 - 150| px * 0.2 mm
    assert back.value("CA") == pytest.approx(math.degrees(math.atan2(10, 200)), abs=1e-9)
    assert back.parameters["CHD"].calibration == "detector-plane (magnified)"
    seg_labels, segments = read_segmentation(written["seg"])
    assert (seg_labels == labels).all() and {s["label"] for s in segments} == {1, 2}
    # a drag re-measures the scene; the next report has the new value
    _move(analysis, "Cor_top_R", (90.0, 155.0))
    assert analysis.result.value("CHD") == pytest.approx(3.0, abs=1e-6)  # |140 - 155| px * 0.2 mm
    again = read_measurement_report(write_dicom_report(analysis, tmp_path / "out2", file_for_instance=database.get)["sr"])
    assert again.value("CHD") == pytest.approx(3.0, abs=1e-6)
    assert again.landmarks["Cor_top_R"].y == pytest.approx(155.0, abs=1e-4)
    analysis.cleanup()


def test_a_film_not_from_dicom_or_of_another_size_is_refused(scene, tmp_path):
    database: dict[str, str] = {}
    res = measure(SHOULDER, "coronal-shoulder", image_size=(300, 400))
    plain = mrml.make_volume_node(scene, np.zeros((300, 400), np.float32), np.eye(4), "png film")
    analysis = mrml.create_analysis(scene, plain, res)
    problem = dicom_report_problem(analysis, database.get)
    assert problem.startswith("A DICOM SR references its film by UID, and the input volume was not loaded from DICOM")
    with pytest.raises(SpineAlignmentError, match="was not loaded from DICOM"):
        write_dicom_report(analysis, tmp_path, file_for_instance=database.get)
    path, uid = _film(tmp_path / "small.dcm", 200, 300)
    other = _dicom_volume(scene, database, path, uid, (300, 400), np.eye(4), "other")
    analysis = mrml.create_analysis(scene, other, res)
    with pytest.raises(RadiographError, match="is 200 x 300 pixels but the volume shown is 300 x 400"):
        write_dicom_report(analysis, tmp_path, file_for_instance=database.get)


def test_lumbar_pair_sr_references_both_films(scene, tmp_path):
    database: dict[str, str] = {}
    volumes, films = {}, {}
    for role, o, m in (("flexion", ["A", "F"], np.diag([0.2, 0.2, 1.0, 1.0])), ("extension", ["P", "F"],
                                                                                oblique_ijk_to_ras())):
        path, uid = _film(tmp_path / f"{role}.dcm", 400, 700, PatientOrientation=o)
        volumes[role] = _dicom_volume(scene, database, path, uid, (400, 700), m, role)
        films[role] = {"spacing_mm": (0.2, 0.2), "calibration": "detector-plane (magnified)", "image": path.name}
    pair = create_pair_analysis(scene, volumes, "lumbar-dynamic", films=films,
                                landmarks={"flexion": FLEX, "extension": EXT})
    assert pair.result.value("IROM_L1L2") == pytest.approx(IROM_L1L2, abs=1e-6)
    ext = pair.analyses["extension"]
    assert dicom_report_problem(ext, database.get) == ""
    sr = write_dicom_report(ext, tmp_path / "out", file_for_instance=database.get)["sr"]
    back = read_measurement_report(sr)
    assert back.value("IROM_L1L2") == pytest.approx(IROM_L1L2, abs=1e-6)
    assert back.value("dST_L1L2") == pytest.approx((T_FLEX - T_EXT) * 0.2, abs=1e-6)
    for role in ("flexion", "extension"):
        assert back.views[role].dicom["sop_instance_uid"] == volumes[role].GetAttribute(DICOM_UIDS_ATTRIBUTE)
    volumes["extension"].RemoveAttribute(DICOM_UIDS_ATTRIBUTE)
    assert "the extension film was not loaded from DICOM" in dicom_report_problem(pair.analyses["flexion"],
                                                                                     database.get)
    pair.cleanup()


def test_module_logic_write_dicom_report(module_with_stubs, monkeypatch, tmp_path):
    module, scene = module_with_stubs
    database: dict[str, str] = {}
    monkeypatch.setattr(slicer, "dicomDatabase", types.SimpleNamespace(fileForInstance=database.get), raising=False)
    logic = module.SpineAlignmentLogic()
    path, uid = _film(tmp_path / "film.dcm", 300, 400, PatientOrientation=["L", "F"])
    volume = _dicom_volume(scene, database, path, uid, (300, 400), oblique_ijk_to_ras(), "film")
    assert logic.sourceFileOfVolume(volume) == str(path)
    # Manual placement: the module reads the calibration from the DICOM file, the user places the points
    result, analysis = logic.analyze(volume, protocol="coronal-shoulder", model="manual")
    assert result.calibration == "detector-plane (magnified)"
    assert logic.dicomReportProblem(analysis).startswith("No parameter is computed yet")
    for key, xy in SHOULDER.items():
        analysis.add_landmark(key, xy)
    analysis.update()
    assert logic.dicomReportProblem(analysis) == ""
    written = logic.writeDicomReport(analysis, str(tmp_path / "out"), name="report")
    assert list(written) == ["sr"] and written["sr"].name == "report_sr.dcm"  # no masks: no SEG
    back = read_measurement_report(written["sr"])
    assert back.value("CHD") == pytest.approx(2.0, abs=1e-6) and back.dicom["sop_instance_uid"] == uid
    analysis.cleanup()
