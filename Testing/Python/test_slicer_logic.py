"""What the module's widget shows, decided by the library logic (SpineAlignmentLib.slicerio.logic), run headless."""

from __future__ import annotations

import queue

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install 'SpineAlignmentLib[slicer]')")

from test_mrml import module_with_stubs, oblique_ijk_to_ras  # noqa: E402,F401 (fixture)
from test_mrml_pairs import EXT, FLEX, SPACING, _volumes  # noqa: E402

from SpineAlignmentLib.batch import BatchEvent, Progress  # noqa: E402
from SpineAlignmentLib.slicerio import mrml  # noqa: E402
from SpineAlignmentLib.slicerio.logic import MANUAL_MODEL, MANUAL_PLACEMENT, SceneLogic  # noqa: E402
from SpineAlignmentLib.slicerio.pairs import create_pair_analysis  # noqa: E402


@pytest.fixture
def logic(module_with_stubs):
    return module_with_stubs[0].SpineAlignmentLogic()


def test_module_logic_is_the_library_logic(module_with_stubs):
    module, _ = module_with_stubs
    assert issubclass(module.SpineAlignmentLogic, SceneLogic) and module.MANUAL_MODEL == MANUAL_MODEL


def test_apply_state_says_why_not(logic, module_with_stubs):
    _, scene = module_with_stubs
    assert logic.applyState(None, "m") == (False, "Select a radiograph (a scalar volume) first.")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    assert logic.applyState(empty, "m") == (False, "The selected volume is not a single-slice radiograph.")
    film = mrml.make_volume_node(scene, np.zeros((30, 40), np.float32), oblique_ijk_to_ras())
    assert logic.applyState(film, MANUAL_MODEL) == (True, "Start guided landmark placement.")
    assert logic.applyState(film, "coronal-model") == (True, "Detect the landmarks with the model and measure.")


def test_calibration_text(logic, module_with_stubs):
    _, scene = module_with_stubs
    film = mrml.make_volume_node(scene, np.zeros((30, 40), np.float32), oblique_ijk_to_ras())
    assert logic.calibrationText(None) == "-"
    assert logic.calibrationText(film, (0.2, 0.25)) == "manual:user (0.2 x 0.25 mm)"
    assert logic.calibrationText(film) == "pixels-only"  # no source file
    logic.calibrationLabelForVolume = lambda volume: ((0.148, 0.148), "detector-plane (magnified)")
    assert logic.calibrationText(film) == "detector-plane (magnified) (0.148 x 0.148 mm)"

    def missing(volume):
        raise ImportError("No module named 'pydicom'")

    logic.calibrationLabelForVolume = missing
    assert logic.calibrationText(film) == "determined at Apply"


def test_second_film_model_list_and_flip_controls(logic, monkeypatch, tmp_path):
    assert logic.secondFilmControls("sagittal-whole-spine") == (
        False, "Second film:", "sagittal-whole-spine measures one film; no second film is used.")
    enabled, label, tip = logic.secondFilmControls("coronal-spine")
    assert (enabled, label) == (True, "Paired lateral:") and "T4-T12 kyphosis" in tip
    enabled, label, tip = logic.secondFilmControls("lumbar-dynamic")
    assert (enabled, label) == (True, "Extension film:") and tip.startswith("The extension film; the input is the "
                                                                             "flexion film.")
    monkeypatch.setenv("SPINEALIGN_MODELS", str(tmp_path))
    monkeypatch.setenv("SPINEALIGN_USER_MODELS", str(tmp_path / "none"))
    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "metadata.json").write_text('{"name": "m1", "protocol": "cervical-lateral"}')
    entries, tip = logic.modelChoices("cervical-lateral")
    assert entries == ["m1", MANUAL_PLACEMENT] and tip.startswith("Registered models")
    entries, tip = logic.modelChoices("lumbar-dynamic")
    assert entries == [MANUAL_PLACEMENT] and tip.startswith("No model exists for this protocol yet")
    assert [logic.modelFromChoice(t) for t in ("", MANUAL_PLACEMENT, "m1")] == [MANUAL_MODEL, MANUAL_MODEL, "m1"]
    assert logic.flipTTAControls(MANUAL_MODEL) == (False, "Only for models: Manual placement uses your points.")
    assert logic.flipTTAControls("m1")[0] is True


def test_result_summary_table_row_and_dicom_button(logic, module_with_stubs):
    _, scene = module_with_stubs
    pair = create_pair_analysis(scene, _volumes(scene), "lumbar-dynamic", films={"flexion": SPACING,
                                                                                 "extension": SPACING},
                                landmarks={"flexion": FLEX, "extension": EXT}, observe=False)
    first = pair.analyses["flexion"]
    total = len(first.protocol.parameters)
    n = len(pair.result.parameters)
    text = logic.resultSummary(pair.result, first)
    assert text.startswith(f"{n} of {total} parameters computed; calibration: ")
    assert len(text.split("\n")) == 1 + min(4, len(pair.result.warnings)) + (len(pair.result.warnings) > 4)
    table = first.table_node.GetTable()
    assert logic.parameterIdOfRow(first, 0) == table.GetColumnByName("id").GetValue(0)
    assert logic.parameterIdOfRow(first, table.GetNumberOfRows()) is None and logic.parameterIdOfRow(None, 0) is None
    enabled, tip = logic.dicomButtonState(first)
    assert not enabled and tip == logic.dicomReportProblem(first) and "DICOM" in tip
    pair.cleanup()


def test_guided_placement_goes_on_to_the_other_film(logic, module_with_stubs):
    _, scene = module_with_stubs
    volumes = _volumes(scene)
    _, first = logic.analyze(volumes["flexion"], protocol="lumbar-dynamic", model="manual",
                             pairedVolumeNode=volumes["extension"], spacing=(0.2, 0.2))
    film, nextId, text = logic.nextPlacement(first)
    assert film is first and nextId == logic.nextLandmark(first)
    assert text == f"Next landmark on the flexion film: <b>{nextId}</b> - {first.protocol.landmark(nextId).description}"
    for key, xy in FLEX.items():
        first.add_landmark(key, xy)
    for key in first.missing_landmarks():  # the body centres FLEX leaves out
        first.add_landmark(key, (10.0, 10.0))
    film, nextId, text = logic.nextPlacement(first)
    assert film is first.pair.analyses["extension"] and nextId == logic.nextLandmark(film)
    assert "on the extension film" in text
    film, nextId, text = logic.nextPlacement(film, skip=set(film.missing_landmarks()))
    assert nextId is None and text == "All landmarks placed. Drag any point to correct it."
    first.pair.cleanup()


def test_batch_problem_and_progress(logic):
    assert logic.batchProblem([], "out", "m1", None) == "Choose an input folder (or DICOM studies) and an output folder."
    assert logic.batchProblem(["in"], "out", MANUAL_MODEL, None).startswith("Manual placement in batch re-measures")
    assert logic.batchProblem(["in"], "out", MANUAL_MODEL, "lm") == ""
    done = Progress(BatchEvent.DONE, total=4, done=2, failed=1, skipped=0, image="/data/a.dcm")
    assert logic.batchProgress(done) == (False, 4, 3, "2 done, 1 failed, 0 skipped of 4 - a.dcm")
    started = Progress(BatchEvent.STARTED, total=0)
    assert logic.batchProgress(started) == (False, 1, 0, None)
    finished = Progress(BatchEvent.FINISHED, total=4, done=3, failed=1, message="3 analysed, 1 failed")
    assert logic.batchProgress(finished) == (True, 4, 4, "Finished: 3 analysed, 1 failed. See summary.csv and "
                                                         "failures.csv.")
    assert logic.batchProgress(OSError("disk full")) == (True, None, None, "Batch stopped: disk full")


def test_dependency_prompt_and_export_status(logic, module_with_stubs, tmp_path):
    text = logic.dependencyPrompt("measure", ["pydicom>=3.0"])
    assert text.startswith("This step needs these Python packages, which will be installed now:\n  pydicom>=3.0\n")
    assert "Cancel goes on without them" in text and "Cancel" not in logic.dependencyPrompt("model", ["monai"])
    _, scene = module_with_stubs
    pair = create_pair_analysis(scene, _volumes(scene), "lumbar-dynamic", films={"flexion": SPACING,
                                                                                 "extension": SPACING},
                                landmarks={"flexion": FLEX, "extension": EXT}, observe=False)
    status = logic.exportFilmsForTraining(pair.analyses["flexion"], str(tmp_path / "ds"))
    assert status == f"Exported for training: flexion.json, extension.json in {tmp_path / 'ds'}."
    pair.cleanup()


def test_batch_queue_item_stops_the_worker(logic, tmp_path):
    """startBatch with a queue: the worker's events arrive on the queue and end with FINISHED."""
    q = queue.Queue()
    runner = logic.startBatch([str(tmp_path / "missing")], str(tmp_path / "out"), "lumbar-dynamic", model="manual",
                              landmarksDir=str(tmp_path), progressQueue=q)
    items = [q.get(timeout=30)]
    while not logic.batchProgress(items[-1])[0]:
        items.append(q.get(timeout=30))
    assert runner is not None and logic.batchProgress(items[-1])[0] is True
