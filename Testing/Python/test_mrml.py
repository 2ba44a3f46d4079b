"""The MRML layer on real MRML classes (slicer-core wheel): nodes, table, round trips, live update, .mrk.json."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install 'SpineAlignmentLib[slicer]')")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML classes (install slicer-core)", allow_module_level=True)

import vtk  # noqa: E402  (installed with slicer-core)
from spines import coronal_spine, lateral_spine, select  # noqa: E402

from SpineAlignmentLib.pipeline import measure  # noqa: E402
from SpineAlignmentLib.protocols import get_protocol  # noqa: E402
from SpineAlignmentLib.slicerio import mrml  # noqa: E402
from SpineAlignmentLib.slicerio.geometry import (  # noqa: E402
    ijk_to_ras_for_file,
    ijk_to_ras_from_geometry,
    pixels_to_ras,
    ras_to_pixels,
)
from SpineAlignmentLib.slicerio.markups_json import (  # noqa: E402
    landmarks_from_markups_json,
    read_markups_json,
    write_markups_json,
)

SAG = "sagittal-whole-spine"


def oblique_ijk_to_ras() -> np.ndarray:
    """Rotated (30 deg about S-I), flipped, anisotropic (0.15 x 0.2 mm) with origin (-100, 50, 3)."""
    th = np.radians(30.0)
    rot = np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]])
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([-1.0, 1.0, -1.0]) @ np.diag([0.15, 0.2, 1.0])
    m[:3, 3] = (-100.0, 50.0, 3.0)
    return m


@pytest.fixture
def scene():
    s = slicer.vtkMRMLScene()
    s.AddNewNodeByClass("vtkMRMLSelectionNode")  # as in Slicer: gives markups measurements their units
    yield s
    s.Clear(1)


@pytest.fixture
def sagittal(scene):
    lms = select(lateral_spine(np.random.default_rng(7)), SAG)
    res = measure(lms, SAG, spacing_mm=(0.2, 0.15), calibration="calibrated:GEOMETRY", image_size=(2000, 1600))
    volume = mrml.make_volume_node(scene, np.zeros((2000, 1600), np.float32), oblique_ijk_to_ras())
    analysis = mrml.create_analysis(scene, volume, res, observe=True)
    yield lms, res, volume, analysis
    analysis.cleanup()


def _load_with_slicer(scene, path):
    """A fiducial node read from ``path`` by Slicer's own markups JSON reader, and its storage node."""
    node = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    return node, storage


def _index_of(analysis, landmark_id):
    for node in analysis.landmark_nodes.values():
        for cp, lm in json.loads(node.GetAttribute(mrml.ATTR_LANDMARK_IDS)).items():
            if lm == landmark_id:
                return node, node.GetControlPointIndexByID(cp)
    raise KeyError(landmark_id)


def test_pixel_ras_conversion_by_hand():
    m = oblique_ijk_to_ras()
    # pixel (10, 20): IJK (10, 20, 0) -> scaled (1.5, 4.0, 0) -> flipped (-1.5, 4.0, 0) -> rotated 30 deg -> + origin
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = np.array([-1.5 * c - 4.0 * s - 100.0, -1.5 * s + 4.0 * c + 50.0, 3.0])
    np.testing.assert_allclose(pixels_to_ras(m, [(10.0, 20.0)])[0], expected, atol=1e-12)
    xy, k = ras_to_pixels(m, [expected], return_k=True)
    np.testing.assert_allclose(xy[0], (10.0, 20.0), atol=1e-9)
    assert abs(k[0]) < 1e-9


def test_ijk_to_ras_from_lps_header(tmp_path):
    # an ITK (LPS) origin/spacing/identity direction becomes RAS with x and y negated
    m = ijk_to_ras_from_geometry((5.0, 7.0), (0.2, 0.3), (1.0, 0.0, 0.0, 1.0))
    np.testing.assert_allclose(m, [[-0.2, 0, 0, -5.0], [0, -0.3, 0, -7.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(np.zeros((4, 6), np.uint8))
    img.SetSpacing((0.5, 0.25))
    img.SetOrigin((10.0, -2.0))
    sitk.WriteImage(img, str(tmp_path / "a.nrrd"))
    np.testing.assert_allclose(ijk_to_ras_for_file(tmp_path / "a.nrrd"),
                               [[-0.5, 0, 0, -10.0], [0, -0.25, 0, 2.0], [0, 0, 1, 0], [0, 0, 0, 1]])


def test_result_becomes_expected_nodes_and_table(scene, sagittal):
    lms, res, volume, analysis = sagittal
    proto = get_protocol(SAG)
    # one fiducial node per display group, labelled and described from the protocol table
    assert set(analysis.landmark_nodes) == {g for g, _ in proto.groups}
    n_points = sum(n.GetNumberOfControlPoints() for n in analysis.landmark_nodes.values())
    assert n_points == len(proto.landmarks) == 45
    node, i = _index_of(analysis, "S1_AS")
    assert node.GetNthControlPointLabel(i) == "S1_AS"
    assert node.GetNthControlPointDescription(i) == proto.landmark("S1_AS").description
    assert tuple(node.GetDisplayNode().GetColor()) == pytest.approx(proto.landmark("S1_AS").color)
    # constructions: PI has an angle? no - its lines are lines; SSA's angle at S1m is an angle node
    kinds = {pid: sorted(n.GetClassName() for n in nodes) for pid, nodes in analysis.construction_nodes.items()}
    assert set(kinds) == set(res.parameters)
    assert "vtkMRMLMarkupsAngleNode" in kinds["SSA"]
    assert kinds["SVA"] == ["vtkMRMLMarkupsLineNode", "vtkMRMLMarkupsLineNode"]  # plumb line + offset
    assert kinds["CL"] == ["vtkMRMLMarkupsLineNode", "vtkMRMLMarkupsLineNode"]  # the two lines of a Cobb angle
    assert all(n.GetLocked() for ns in analysis.construction_nodes.values() for n in ns)
    # everything sits in one subject-hierarchy folder
    sh = scene.GetSubjectHierarchyNode()
    for n in [*analysis.landmark_nodes.values(), analysis.table_node,
              *(n for ns in analysis.construction_nodes.values() for n in ns)]:
        assert sh.GetItemParent(sh.GetItemByDataNode(n)) == analysis.folder_item
    # the table: machine names, titles, typed columns, one row per parameter
    table = analysis.table_node
    t = table.GetTable()
    names = [t.GetColumnName(c) for c in range(t.GetNumberOfColumns())]
    assert names == ["id", "title", "value", "unit", "calibration", "landmarks", "computed", "warning"]
    assert table.GetColumnTitle("value") == "Value"
    assert t.GetColumnByName("value").GetClassName() == "vtkDoubleArray"
    assert t.GetColumnByName("computed").GetClassName() == "vtkBitArray"
    assert t.GetNumberOfRows() == len(proto.parameters) == 18
    row = [t.GetColumnByName("id").GetValue(r) for r in range(18)].index("SVA")
    assert t.GetColumnByName("value").GetValue(row) == pytest.approx(res.value("SVA"))
    assert t.GetColumnByName("unit").GetValue(row) == "mm"
    assert t.GetColumnByName("calibration").GetValue(row) == "calibrated:GEOMETRY"
    assert t.GetColumnByName("landmarks").GetValue(row) == "C7c S1_PS"


def test_round_trip_through_scene_is_identical(sagittal):
    lms, res, volume, analysis = sagittal
    back, warnings = analysis.read_landmarks()
    assert warnings == []
    assert set(back) == set(lms)
    for key, (x, y) in lms.items():
        assert back[key].x == pytest.approx(x, abs=1e-9) and back[key].y == pytest.approx(y, abs=1e-9)
    again = analysis.measure()
    for pid, m in res.parameters.items():
        assert again.value(pid) == pytest.approx(m.value, abs=1e-9)


def test_moving_s1_as_changes_exactly_its_dependants(scene, sagittal):
    lms, res, volume, analysis = sagittal
    proto = get_protocol(SAG)
    seen = []
    analysis.listeners.append(lambda a, changed: seen.append(set(changed)))
    node, i = _index_of(analysis, "S1_AS")
    x, y = lms["S1_AS"]
    node.SetNthControlPointPosition(i, *pixels_to_ras(oblique_ijk_to_ras(), [(x + 6.0, y - 4.0)])[0])
    expected = {p.id for p in proto.parameters if "S1_AS" in p.landmarks}
    assert expected == {"PI", "SS", "PT", "LL", "L4SL", "SSA", "GT", "LPA", "TPA"}
    assert seen == [expected]  # one update from the point event, exactly the dependants
    # the table follows: SS changed, CL did not
    t = analysis.table_node.GetTable()
    ids = [t.GetColumnByName("id").GetValue(r) for r in range(t.GetNumberOfRows())]
    new = measure({**lms, "S1_AS": (x + 6.0, y - 4.0)}, SAG, spacing_mm=(0.2, 0.15), image_size=(2000, 1600))
    assert t.GetColumnByName("value").GetValue(ids.index("SS")) == pytest.approx(new.value("SS"), abs=1e-6)
    assert new.value("SS") != pytest.approx(res.value("SS"), abs=1e-3)
    assert t.GetColumnByName("value").GetValue(ids.index("CL")) == pytest.approx(res.value("CL"), abs=1e-12)
    # the SS line moved with the point
    line = analysis.construction_nodes["SS"][0]
    ends = [line.GetNthControlPointPosition(k) for k in range(2)]
    xy = ras_to_pixels(oblique_ijk_to_ras(), ends)
    assert {tuple(np.round(p, 6)) for p in xy} == {(round(x + 6.0, 6), round(y - 4.0, 6)),
                                                    (round(lms["S1_PS"][0], 6), round(lms["S1_PS"][1], 6))}


def test_removed_landmark_leaves_parameters_out_and_nan_in_table(scene, sagittal):
    lms, res, volume, analysis = sagittal
    node, i = _index_of(analysis, "C7c")
    node.RemoveNthControlPoint(i)
    assert "SVA" not in analysis.result.parameters and "SVA" not in analysis.construction_nodes
    rows = {r["id"]: r for r in analysis.table_rows()}
    assert math.isnan(rows["SVA"]["value"]) and rows["SVA"]["computed"] is False
    assert "C7c" in rows["SVA"]["warning"]


def test_observers_removed_on_cleanup_and_scene_close(scene, sagittal):
    lms, res, volume, analysis = sagittal
    node, i = _index_of(analysis, "S1_AS")
    analysis.cleanup()
    before = analysis.result
    node.SetNthControlPointPosition(i, 0.0, 0.0, 3.0)
    assert analysis.result is before  # nobody listened
    analysis.observe()
    assert analysis.observing
    scene.Clear(0)
    assert not analysis.observing


def test_measure_from_markups_rebuilds_from_scene_attributes(scene, sagittal):
    lms, res, volume, analysis = sagittal
    analysis.cleanup()  # forget the live object: everything must come from the scene
    node, i = _index_of(analysis, "FH_1")
    node.SetNthControlPointLabel(i, "renamed by a user")  # a label carries no meaning
    x, y = lms["FH_1"]
    node.SetNthControlPointPosition(i, *pixels_to_ras(oblique_ijk_to_ras(), [(x + 10.0, y)])[0])
    assert analysis["landmarks"].GetAttribute(mrml.ATTR_ANALYSIS) == analysis.uid  # console shorthand
    assert analysis["table"] is analysis.table_node
    new = mrml.measure_from_markups(node)
    expected = measure({**lms, "FH_1": (x + 10.0, y)}, SAG, spacing_mm=(0.2, 0.15), image_size=(2000, 1600))
    for pid in expected.parameters:
        assert new.value(pid) == pytest.approx(expected.value(pid), abs=1e-9)
    assert new.calibration == "calibrated:GEOMETRY"


def test_guided_placement_assigns_the_prompted_landmark(scene):
    lms = coronal_spine([0.0] * 17)
    volume = mrml.make_volume_node(scene, np.zeros((900, 800), np.float32), oblique_ijk_to_ras())
    analysis = mrml.create_empty_analysis(scene, volume, "coronal-spine")
    assert analysis.missing_landmarks()[:2] == ["T1_TL", "T1_TR"]
    assert all(math.isnan(r["value"]) for r in analysis.table_rows())
    node = analysis.landmark_nodes[get_protocol("coronal-spine").landmark("T1_TL").group]
    analysis.pending_landmark = "T1_TL"
    # what Slicer's place mode does on a click: a new point with a generic label
    node.AddControlPoint(vtk.vtkVector3d(*pixels_to_ras(oblique_ijk_to_ras(), [lms["T1_TL"]])[0]), "F-1")
    assert node.GetNthControlPointLabel(node.GetNumberOfControlPoints() - 1) == "T1_TL"
    assert analysis.missing_landmarks()[0] == "T1_TR"
    for key, xy in lms.items():  # the rest placed by script
        if key != "T1_TL":
            analysis.add_landmark(key, xy)
    analysis.update()
    assert analysis.result.value("AASCE_1") == pytest.approx(measure(lms, "coronal-spine", image_size=(900, 800)).value("AASCE_1"), abs=1e-9)


def test_export_csv_machine_names_nan_booleans(tmp_path, sagittal):
    lms, res, volume, analysis = sagittal
    node, i = _index_of(analysis, "OD")
    node.RemoveNthControlPoint(i)
    path = analysis.export_csv(tmp_path / "p.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "title", "value", "unit", "calibration", "landmarks", "computed", "warning"]
    by_id = {r["id"]: r for r in rows}
    assert by_id["OD_HA"]["value"] == "NaN" and by_id["OD_HA"]["computed"] == "False"
    assert float(by_id["PI"]["value"]) == pytest.approx(res.value("PI"), abs=1e-12)
    assert by_id["PI"]["computed"] == "True"


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_pure_python_mrk_json_loads_in_slicer_reader(tmp_path, scene, system):
    lms = select(lateral_spine(np.random.default_rng(3)), SAG)
    m = oblique_ijk_to_ras()
    path = write_markups_json(tmp_path / "a.mrk.json", lms, m, protocol=SAG, coordinate_system=system)
    data = json.loads(path.read_text())
    assert data["markups"][0]["coordinateSystem"] == system
    node, storage = _load_with_slicer(scene, path)
    assert node.GetNumberOfControlPoints() == 45
    ids = [node.GetNthControlPointID(i) for i in range(45)]
    assert ids == list(get_protocol(SAG).landmark_ids)
    assert [node.GetNthControlPointLabel(i) for i in range(45)] == ids
    ras = np.array([node.GetNthControlPointPosition(i) for i in range(45)])
    np.testing.assert_allclose(ras_to_pixels(m, ras), [lms[i] for i in ids], atol=1e-5)
    np.testing.assert_allclose(ras, pixels_to_ras(m, [lms[i] for i in ids]), atol=1e-5)
    # and the pure-Python reader agrees
    back = landmarks_from_markups_json(path, m, SAG)
    assert max(abs(back[k].x - lms[k][0]) + abs(back[k].y - lms[k][1]) for k in lms) < 1e-5


def test_slicer_writer_output_has_canonical_ids(tmp_path, scene, sagittal):
    lms, res, volume, analysis = sagittal
    path = mrml.write_markups_json_from_scene(scene, analysis, tmp_path / "b.mrk.json")
    points = read_markups_json(path)
    assert json.loads(path.read_text())["markups"][0]["coordinateSystem"] == "LPS"
    assert {p.id for p in points} == set(lms)
    back = landmarks_from_markups_json(path, oblique_ijk_to_ras(), SAG)
    assert max(abs(back[k].x - lms[k][0]) + abs(back[k].y - lms[k][1]) for k in lms) < 1e-5
    # a loaded file is adopted into a new analysis and measured by its IDs
    node, storage = _load_with_slicer(scene, path)
    again = mrml.measure_from_markups(node, SAG, volume)
    assert again.value("PI") == pytest.approx(measure(lms, SAG).value("PI"), abs=1e-6)


# --------------------------------------------------------------------------------------------
# The Slicer module's logic and its own test class, run headless: Qt and the application are
# replaced by minimal stand-ins, the scene and every MRML class are real.


@pytest.fixture
def module_with_stubs(monkeypatch, tmp_path):
    import importlib.util
    import sys
    import types

    import slicer.util as slicer_util

    qt = types.ModuleType("qt")

    class _Inert:
        def __init__(self, *a, **k):
            pass

        def __getattr__(self, name):
            return lambda *a, **k: None

    qt.QTimer = qt.QAbstractItemView = qt.QFileDialog = _Inert
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self):
            return None

    class ScriptedLoadableModuleTest:
        def delayDisplay(self, message, *a):
            pass

        def assertEqual(self, a, b):
            assert a == b

        def assertIsNone(self, a):
            assert a is None

        def assertAlmostEqual(self, a, b, places=7):
            assert round(abs(a - b), places) == 0, (a, b)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = pnw.WithinRange = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", slm)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", pnw)
    if not hasattr(slicer_util, "VTKObservationMixin"):
        monkeypatch.setattr(slicer_util, "VTKObservationMixin", object, raising=False)
    scene = slicer.vtkMRMLScene()
    for cls in (slicer.vtkMRMLSelectionNode, slicer.vtkMRMLInteractionNode):
        node = cls()
        node.SetSingletonTag("Singleton")
        scene.AddNode(node)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(temporaryPath=str(tmp_path), layoutManager=lambda: None),
                        raising=False)

    def load_markups(path):  # what slicer.util.loadMarkups does, without the application's IO manager
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
        storage = slicer.vtkMRMLMarkupsJsonStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(path))
        assert storage.ReadData(node)
        return node

    monkeypatch.setattr(slicer_util, "loadMarkups", load_markups, raising=False)
    path = Path(__file__).resolve().parents[2] / "SpineAlignment" / "SpineAlignment.py"
    spec = importlib.util.spec_from_file_location("SpineAlignment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, scene
    scene.Clear(1)


def test_module_test_class_runs_headless(module_with_stubs):
    module, scene = module_with_stubs
    test = module.SpineAlignmentTest()
    test.setUp = lambda: scene.Clear(0)
    test.test_AnalyzeMoveUpdate()
    scene.Clear(0)
    test.test_ExportAndReload()


def test_module_guided_placement_logic(module_with_stubs, monkeypatch, tmp_path):
    module, scene = module_with_stubs
    logic = module.SpineAlignmentLogic()
    landmarks, image = module.SpineAlignmentTest.syntheticLateral()
    volume = mrml.make_volume_node(scene, image, oblique_ijk_to_ras(), "lateral")
    result, analysis = logic.analyze(volume, protocol="sagittal-whole-spine", model=None)
    assert result.calibration == "pixels-only" and not result.parameters
    first = logic.nextLandmark(analysis)
    assert first == "OD"
    logic.startPlacing(analysis, first)
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    assert interaction.GetCurrentInteractionMode() == interaction.Place
    target = scene.GetNodeByID(selection.GetActivePlaceNodeID())
    assert target is analysis.landmark_nodes["cervical"]
    # the user's click: Slicer adds a point with a generic label to the active node
    target.AddControlPoint(vtk.vtkVector3d(*pixels_to_ras(oblique_ijk_to_ras(), [landmarks["OD"]])[0]), "F-1")
    assert analysis.pending_landmark is None
    assert logic.nextLandmark(analysis) == "C2_AI"
    assert logic.nextLandmark(analysis, skip={"C2_AI"}) == "C2_PI"
    logic.stopPlacing()
    assert interaction.GetCurrentInteractionMode() == interaction.ViewTransform
    # the model list is read from the registry folder without importing torch
    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "metadata.json").write_text(json.dumps({"name": "m1", "protocol": "cervical-lateral"}))
    (tmp_path / "user" / "m0").mkdir(parents=True)
    (tmp_path / "user" / "m0" / "metadata.json").write_text(json.dumps({"name": "m0", "protocol": "cervical-lateral"}))
    (tmp_path / "user" / "m1").mkdir()  # hidden by the same name in $SPINEALIGN_MODELS, which comes first
    (tmp_path / "user" / "m1" / "metadata.json").write_text(json.dumps({"name": "m1", "protocol": "lumbar-dynamic"}))
    monkeypatch.setenv("SPINEALIGN_MODELS", str(tmp_path))
    monkeypatch.setenv("SPINEALIGN_USER_MODELS", str(tmp_path / "user"))
    assert logic.modelsForProtocol("cervical-lateral") == ["m1", "m0"]
    assert logic.modelsForProtocol("lumbar-dynamic") == []
    # calibration comes from the user's override, never from the volume's spacing
    assert logic.calibrationForVolume(volume, (0.2, 0.3))[:2] == ((0.2, 0.3), "manual:user")
    assert logic.calibrationForVolume(volume)[:2] == (None, "pixels-only")


def test_module_export_for_training(module_with_stubs, sagittal, tmp_path):
    """The module's console method writes the film and its landmarks; a second export replaces them."""
    from SpineAlignmentLib.io.dataset import read_dataset

    module, _ = module_with_stubs
    lms, res, volume, analysis = sagittal
    logic = module.SpineAlignmentLogic()
    label = logic.exportForTraining(analysis, str(tmp_path / "ds"), patient="P1")
    assert label == tmp_path / "ds" / "radiograph.json"
    logic.exportForTraining(analysis["landmarks"], str(tmp_path / "ds"), patient="P1")
    rep = read_dataset(tmp_path / "ds", SAG)
    assert [it.image.name for it in rep.items] == ["radiograph.nrrd"] and rep.items[0].patient == "P1"
    item = rep.items[0]
    assert max(math.dist(item.landmarks[k], lms[k]) for k in lms) < 1e-6 and set(item.landmarks) == set(lms)


def test_highlight_selects_a_parameters_landmarks_and_lines(sagittal):
    lms, res, volume, analysis = sagittal
    analysis.highlight("SS")
    node, i = _index_of(analysis, "S1_AS")
    other, j = _index_of(analysis, "C7c")
    assert node.GetNthControlPointSelected(i) and not other.GetNthControlPointSelected(j)
    assert node.GetDisplayNode().GetSelectedColor() == pytest.approx(mrml.HIGHLIGHT_COLOR)
    ss_line = analysis.construction_nodes["SS"][0].GetDisplayNode()
    cl_line = analysis.construction_nodes["CL"][0].GetDisplayNode()
    assert ss_line.GetColor() == pytest.approx(mrml.HIGHLIGHT_COLOR) and cl_line.GetOpacity() < 1.0
    analysis.highlight(None)
    assert other.GetNthControlPointSelected(j) and cl_line.GetOpacity() == 1.0
    assert node.GetDisplayNode().GetSelectedColor() == pytest.approx(get_protocol(SAG).landmark("S1_AS").color)
    analysis.highlight("not-a-parameter")  # an unknown row highlights nothing and does not fail


def test_compare_two_markups_sets_of_one_image(scene, sagittal):
    """Two analyses of one image (e.g. model and corrected): per-landmark errors in px and mm, parameter differences."""
    lms, res, volume, analysis = sagittal
    moved = dict(lms)
    moved["S1_AS"] = (lms["S1_AS"][0] + 3.0, lms["S1_AS"][1] + 4.0)
    res2 = measure(moved, SAG, spacing_mm=(0.2, 0.15), calibration="calibrated:GEOMETRY", image_size=(2000, 1600))
    other = mrml.create_analysis(scene, volume, res2, name="rater 2")
    ref_node = next(iter(analysis.landmark_nodes.values()))
    other_node = next(iter(other.landmark_nodes.values()))
    out = mrml.compare_markups(ref_node, other_node)
    by_id = {r["landmark"]: r for r in out["landmarks"]}
    assert by_id["S1_AS"]["error_px"] == pytest.approx(5.0, abs=1e-6)
    assert by_id["S1_AS"]["error_mm"] == pytest.approx(math.hypot(3 * 0.15, 4 * 0.2), abs=1e-6)
    assert by_id["S1_AS"]["calibration"] == "calibrated:GEOMETRY"
    assert by_id["L1_AS"]["error_px"] == pytest.approx(0.0, abs=1e-6)
    params = {p["id"]: p for p in out["parameters"]}
    assert params["PI"]["difference"] == pytest.approx(res2.value("PI") - res.value("PI"), abs=1e-6)
    assert params["CL"]["difference"] == pytest.approx(0.0, abs=1e-9)
    table = out["tables"]["parameters"].GetTable()
    assert table.GetNumberOfRows() == len(out["parameters"]) == 18
    assert table.GetColumnByName("difference").GetClassName() == "vtkDoubleArray"
    other.cleanup()


def test_confidence_and_model_survive_slicer_load_and_save_and_the_module(tmp_path, scene):
    """Finding 2: Slicer keeps control-point descriptions (not node attributes), so the provenance lives
    there; after Slicer's own reader and writer the point the model did not trust is still untrusted,
    in the pure-Python reader and in the module's adopted analysis."""
    from SpineAlignmentLib.result import Landmark
    from SpineAlignmentLib.slicerio.markups_json import markups_landmarks

    lms = select(lateral_spine(np.random.default_rng(3)), SAG)
    model = {"name": "sagittal-test-model", "version": "2.0.1"}
    marked = {k: Landmark(x, y, 0.05 if k == "S1_PS" else 0.8) for k, (x, y) in lms.items()}
    m = oblique_ijk_to_ras()
    path = write_markups_json(tmp_path / "a.mrk.json", marked, m, protocol=SAG, model=model)
    node, storage = _load_with_slicer(scene, path)
    resaved = tmp_path / "resaved.mrk.json"
    storage.SetFileName(str(resaved))
    assert storage.WriteData(node) == 1
    assert "SpineAlignment:" in resaved.read_text()
    back, back_model = markups_landmarks(resaved, m, SAG)
    assert back["S1_PS"].confidence == 0.05 and back["L1_AS"].confidence == 0.8 and back_model == model
    # the module adopting the loaded node: PI needs S1_PS, which stays untrusted
    volume = mrml.make_volume_node(scene, np.zeros((2000, 1600), np.float32), m)
    res = mrml.measure_from_markups(node, SAG, volume)
    assert "PI" not in res.parameters and "not trusted S1_PS" in res.omitted["PI"]
    assert res.model == model and res.landmarks["S1_PS"].confidence == 0.05
    assert measure(lms, SAG).value("PI") is not None  # the same points, all trusted, give PI
    # its export writes the provenance again
    analysis = mrml.analysis_for_node(node)
    again, again_model = markups_landmarks(analysis.write_markups_json(tmp_path / "export.mrk.json"), m, SAG)
    assert again["S1_PS"].confidence == 0.05 and again_model == model
    again, _ = markups_landmarks(mrml.write_markups_json_from_scene(scene, analysis, tmp_path / "w.mrk.json"), m, SAG)
    assert again["S1_PS"].confidence == 0.05


def test_module_export_for_training_of_a_pair(module_with_stubs, tmp_path):
    """Each film of a lumbar pair goes in with its role; the pair is named after the first film."""
    from test_mrml_pairs import EXT, FLEX, SPACING, _volumes

    from SpineAlignmentLib.io.dataset import read_dataset
    from SpineAlignmentLib.slicerio.pairs import create_pair_analysis

    module, scene = module_with_stubs
    pair = create_pair_analysis(scene, _volumes(scene), "lumbar-dynamic",
                                films={"flexion": SPACING, "extension": SPACING},
                                landmarks={"flexion": FLEX, "extension": EXT}, observe=False)
    logic = module.SpineAlignmentLogic()
    for film in pair.analyses.values():
        logic.exportForTraining(film, str(tmp_path / "ds"), patient="P1")
    rep = read_dataset(tmp_path / "ds", "lumbar-dynamic")
    items = {it.role: it for it in rep.items}
    assert set(items) == {"flexion", "extension"} and {it.pair for it in rep.items} == {"flexion"}
    for role, want in (("flexion", FLEX), ("extension", EXT)):
        it = items[role]
        assert set(it.landmarks) == set(want) and it.patient == "P1" and it.spacing_mm == (0.2, 0.2)
        assert max(math.dist(it.landmarks[k], want[k]) for k in want) < 1e-6
    assert rep.summary["pairs"] == 1
