"""A level anchor on an analysis in a real MRML scene (slicer-core wheel): markups, labels and table follow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install 'SpineAlignmentLib[slicer]')")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML classes (install slicer-core)", allow_module_level=True)
pytest.importorskip("torch")

from SpineAlignmentLib.errors import LandmarkError  # noqa: E402
from SpineAlignmentLib.imaging import read_radiograph  # noqa: E402
from SpineAlignmentLib.pipeline import analyze  # noqa: E402
from SpineAlignmentLib.slicerio import mrml  # noqa: E402
from SpineAlignmentLib.slicerio.geometry import pixels_to_ras  # noqa: E402
from SpineAlignmentLib.slicerio.level_anchor import set_level_anchor  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "aasce-sample-AP.jpg"
CORNERS = ("TL", "TR", "BL", "BR")
NAMES = [*(f"T{i}" for i in range(1, 13)), *(f"L{i}" for i in range(1, 6))]


def _ijk_to_ras() -> np.ndarray:
    """Flipped, anisotropic (0.15 x 0.2 mm), origin (-100, 50, 3): pixels and RAS differ in every way."""
    m = np.diag([-0.15, 0.2, -1.0, 1.0])
    m[:3, 3] = (-100.0, 50.0, 3.0)
    return m


@pytest.fixture(scope="module")
def result():
    return analyze(read_radiograph(SAMPLE), "coronal-spine")


@pytest.fixture
def analysis(result):
    scene = slicer.vtkMRMLScene()
    scene.AddNewNodeByClass("vtkMRMLSelectionNode")
    volume = mrml.make_volume_node(scene, read_radiograph(SAMPLE).pixels.astype(np.float32), _ijk_to_ras())
    a = mrml.create_analysis(scene, volume, result, observe=True)
    yield a
    a.cleanup()
    scene.Clear(1)


def _point(analysis, landmark_id):
    """(x, y) pixels of the control point labelled ``landmark_id`` (read back from the scene)."""
    for node in analysis.landmark_nodes.values():
        for i in range(node.GetNumberOfControlPoints()):
            if node.GetNthControlPointLabel(i) == landmark_id:
                return analysis.read_landmarks()[0][landmark_id], node, i
    raise KeyError(landmark_id)


def _level_row(analysis):
    table = analysis.table_node.GetTable()
    ids = [table.GetColumnByName("id").GetValue(r) for r in range(table.GetNumberOfRows())]
    r = ids.index("level_confidence")
    return table.GetColumnByName("value").GetValue(r), table.GetColumnByName("warning").GetValue(r)


def test_t1_is_here_moves_the_labels_and_updates_the_table(analysis, result):
    t2 = np.mean([[result.landmarks[f"T2_{c}"].x, result.landmarks[f"T2_{c}"].y] for c in CORNERS], axis=0)
    value, _ = _level_row(analysis)
    assert value == pytest.approx(result.levels["confidence"])
    ras = pixels_to_ras(analysis.ijk_to_ras, t2.reshape(1, 2))[0]
    new = set_level_anchor(analysis, level="T1", ras=ras)  # placed in the scene: RAS, as the module's button does
    assert new.levels["anchor"]["by"] == "slicer" and new.levels["anchor"]["level"] == "T1"
    assert (new.levels["anchor"]["x"], new.levels["anchor"]["y"]) == pytest.approx(tuple(t2), abs=0.01)
    for k in range(16):  # each label now sits where the next vertebra's did
        for c in CORNERS:
            lm, node, i = _point(analysis, f"{NAMES[k]}_{c}")
            old = result.landmarks[f"{NAMES[k + 1]}_{c}"]
            assert (lm.x, lm.y) == pytest.approx((old.x, old.y), abs=1e-3)
            assert node.GetNthControlPointLabel(i).startswith(("T", "L"))
    value, warning = _level_row(analysis)
    assert value == 1.0 and warning == ""
    assert analysis.result.levels["confirmed"] is True
    # a point dragged afterwards re-measures; the levels stay confirmed
    lm, node, i = _point(analysis, "T5_TL")
    pos = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(i, pos)
    node.SetNthControlPointPosition(i, pos[0] + 0.3, pos[1], pos[2])
    assert analysis.result.levels["confirmed"] is True and _level_row(analysis)[0] == 1.0


def test_levels_up_and_down_and_bad_input(analysis, result):
    set_level_anchor(analysis, shift=-1)  # named one level too high: names move one vertebra down
    lm, _, _ = _point(analysis, "T1_TL")
    assert (lm.x, lm.y) == pytest.approx((result.landmarks["T2_TL"].x, result.landmarks["T2_TL"].y), abs=1e-3)
    assert analysis.result.levels["anchor"] == {"by": "slicer", "shift": -1}
    set_level_anchor(analysis, shift=1)  # and back up
    lm, _, _ = _point(analysis, "T1_TL")
    assert (lm.x, lm.y) == pytest.approx((result.landmarks["T1_TL"].x, result.landmarks["T1_TL"].y), abs=1e-3)
    before = analysis.read_landmarks()[0]
    with pytest.raises(LandmarkError, match="outside the"):
        set_level_anchor(analysis, level="T1", xy=(-50.0, 10.0))
    with pytest.raises(LandmarkError, match="is not a vertebra level"):
        set_level_anchor(analysis, level="X9", xy=(10.0, 10.0))
    assert analysis.read_landmarks()[0] == before  # a refused anchor changes nothing
