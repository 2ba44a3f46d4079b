"""Two films as one analysis (lumbar flexion/extension, coronal + paired lateral) and live .mrk.json, on real MRML."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install 'SpineAlignmentLib[slicer]')")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML classes (install slicer-core)", allow_module_level=True)

from spines import coronal_spine, lateral_spine  # noqa: E402
from test_geometry import _lumbar_image  # noqa: E402
from test_mrml import module_with_stubs, oblique_ijk_to_ras  # noqa: E402,F401 (fixture)

from SpineAlignmentLib.errors import LandmarkError  # noqa: E402
from SpineAlignmentLib.pipeline import measure  # noqa: E402
from SpineAlignmentLib.result import Landmark, View  # noqa: E402
from SpineAlignmentLib.slicerio import mrml  # noqa: E402
from SpineAlignmentLib.slicerio.geometry import ijk_to_ras_from_volume_node, pixels_to_ras  # noqa: E402
from SpineAlignmentLib.slicerio.markups_json import write_markups_json  # noqa: E402
from SpineAlignmentLib.slicerio.pairs import create_pair_analysis, pair_from_markups, pair_roles  # noqa: E402

LUMBAR = "lumbar-dynamic"
FLEX = _lumbar_image([0, 0, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0])
EXT = _lumbar_image([10, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], facing=-1)
SPACING = {"spacing_mm": (0.2, 0.2), "calibration": "estimated(ERMF)"}


@pytest.fixture
def scene():
    s = slicer.vtkMRMLScene()
    s.AddNewNodeByClass("vtkMRMLSelectionNode")
    yield s
    s.Clear(1)


def _volumes(scene):
    """Two films with different geometry: the extension film is rotated, flipped and anisotropic."""
    flex = mrml.make_volume_node(scene, np.zeros((400, 900), np.float32), np.diag([0.2, 0.2, 1.0, 1.0]), "flexion")
    ext = mrml.make_volume_node(scene, np.zeros((400, 900), np.float32), oblique_ijk_to_ras(), "extension")
    return {"flexion": flex, "extension": ext}


def _expected(flex, ext):
    views = {r: View({k: Landmark(*p) for k, p in pts.items()}, image_size=(400, 900), **SPACING)
             for r, pts in (("flexion", flex), ("extension", ext))}
    return measure(None, LUMBAR, views=views)


def _table(pair):
    t = pair.table_node.GetTable()
    return {t.GetColumnByName("id").GetValue(r): t.GetColumnByName("value").GetValue(r)
            for r in range(t.GetNumberOfRows())}


def _move(analysis, landmark_id, xy):
    for node in analysis.landmark_nodes.values():
        for i in range(node.GetNumberOfControlPoints()):
            if node.GetNthControlPointLabel(i) == landmark_id:
                node.SetNthControlPointPosition(i, *pixels_to_ras(analysis.ijk_to_ras, [xy])[0])
                return
    raise KeyError(landmark_id)


def test_lumbar_pair_one_table_each_film_draws_its_own_and_a_drag_on_either_updates(scene):
    pair = create_pair_analysis(scene, _volumes(scene), LUMBAR, films={"flexion": SPACING, "extension": SPACING},
                                landmarks={"flexion": FLEX, "extension": EXT})
    # hand-worked (test_geometry): extension L1 tilted 10 deg over a flat L2 -> IROM 10; flexion ST 4 px = 0.8 mm
    assert pair.result.value("IROM_L1L2") == pytest.approx(10.0, abs=1e-9)
    assert pair.result.value("ST_L1L2_flexion") == pytest.approx(0.8, abs=1e-9)
    expected = _expected(FLEX, EXT)
    assert set(pair.result.parameters) == set(expected.parameters)
    table = _table(pair)
    for pid, m in expected.parameters.items():
        assert table[pid] == pytest.approx(m.value, abs=1e-6), pid
    assert pair.analyses["extension"].table_node is None  # one table for the pair
    flex_a, ext_a = pair.analyses["flexion"], pair.analyses["extension"]
    assert "SA_L1L2_flexion" in flex_a.construction_nodes and "SA_L1L2_flexion" not in ext_a.construction_nodes
    assert "SA_L1L2_extension" in ext_a.construction_nodes and "IROM_L1L2" not in flex_a.construction_nodes
    # drag L1_AI (L1's lower endplate) on the (oblique) extension film: the pair re-measures, IROM follows
    x, y = EXT["L1_AI"]
    _move(ext_a, "L1_AI", (x, y - 6.0))
    moved = _expected(FLEX, {**EXT, "L1_AI": (x, y - 6.0)})
    assert pair.result.value("IROM_L1L2") == pytest.approx(moved.value("IROM_L1L2"), abs=1e-6)
    assert pair.result.value("IROM_L1L2") != pytest.approx(10.0, abs=0.1)
    assert _table(pair)["IROM_L1L2"] == pytest.approx(moved.value("IROM_L1L2"), abs=1e-6)
    # and on the flexion film
    x, y = FLEX["L1_PI"]
    _move(flex_a, "L1_PI", (x + 2.0, y))
    again = _expected({**FLEX, "L1_PI": (x + 2.0, y)}, {**EXT, "L1_AI": (EXT["L1_AI"][0], EXT["L1_AI"][1] - 6.0)})
    assert _table(pair)["dST_L1L2"] == pytest.approx(again.value("dST_L1L2"), abs=1e-6)
    # measure_from_markups on either film's node measures the pair
    node = next(iter(ext_a.landmark_nodes.values()))
    assert mrml.measure_from_markups(node).value("IROM_L1L2") == pytest.approx(again.value("IROM_L1L2"), abs=1e-6)
    pair.cleanup()
    _move(ext_a, "L1_AI", EXT["L1_AI"])
    assert pair.result.value("IROM_L1L2") == pytest.approx(again.value("IROM_L1L2"), abs=1e-6)  # no observers left


def test_coronal_film_with_its_paired_lateral(scene):
    ap = coronal_spine([0, 2, 4, 6, 8, 10, 8, 4, 0, -4, -8, -12, -10, -6, -2, 0, 0])
    lat_all = lateral_spine(np.random.default_rng(5))
    lat = {k: (float(v[0]), float(v[1])) for k, v in lat_all.items()
           if k in {"T4_AS", "T4_PS", "T12_AI", "T12_PI", "L1_AS", "L1_PS", "L5_AI", "L5_PI"}}
    assert len(lat) == 8
    volumes = {"coronal": mrml.make_volume_node(scene, np.zeros((800, 800), np.float32), np.eye(4), "AP"),
               "lateral": mrml.make_volume_node(scene, np.zeros((2000, 1600), np.float32), oblique_ijk_to_ras(), "LAT")}
    films = {"coronal": {"spacing_mm": (0.2, 0.2), "calibration": "calibrated:GEOMETRY", "patient_orientation": "L,F"},
             "lateral": {"spacing_mm": (0.2, 0.15), "calibration": "manual:user", "patient_orientation": "A,F"}}
    pair = create_pair_analysis(scene, volumes, "coronal-spine", films=films, landmarks={"coronal": ap, "lateral": lat})
    expected = measure(ap, "coronal-spine", spacing_mm=(0.2, 0.2), calibration="calibrated:GEOMETRY",
                       image_size=(800, 800), patient_orientation="L,F",
                       paired_lateral={"landmarks": lat, "spacing_mm": (0.2, 0.15), "patient_orientation": "A,F"})
    assert {"TK_T4_T12", "LL_L1_L5", "Cobb_MT"} <= set(pair.result.parameters)
    for pid in ("TK_T4_T12", "LL_L1_L5", "Cobb_MT", "AASCE_1"):
        assert pair.result.value(pid) == pytest.approx(expected.value(pid), abs=1e-6), pid
    assert "TK_T4_T12" in pair.analyses["lateral"].construction_nodes
    assert "TK_T4_T12" not in pair.analyses["coronal"].construction_nodes
    assert "Cobb_MT" in pair.analyses["coronal"].construction_nodes
    # guided placement asks each film for its own landmarks
    assert pair.analyses["lateral"].missing_landmarks() == pair.analyses["coronal"].missing_landmarks() == []
    empty = create_pair_analysis(scene, volumes, "coronal-spine", films=films, observe=False)
    assert empty.analyses["lateral"].missing_landmarks() == [
        "T4_AS", "T4_PS", "T12_AI", "T12_PI", "L1_AS", "L1_PS", "L5_AI", "L5_PI"]
    assert empty.analyses["coronal"].missing_landmarks()[:2] == ["T1_TL", "T1_TR"]
    assert "TK_T4_T12" in empty.result.omitted
    cobb = pair.result.value("Cobb_MT")
    x, y = lat["T4_AS"]
    _move(pair.analyses["lateral"], "T4_AS", (x, y - 10.0))
    moved = measure(ap, "coronal-spine", spacing_mm=(0.2, 0.2), calibration="calibrated:GEOMETRY",
                    image_size=(800, 800), patient_orientation="L,F",
                    paired_lateral={"landmarks": {**lat, "T4_AS": (x, y - 10.0)}, "spacing_mm": (0.2, 0.15),
                                    "patient_orientation": "A,F"})
    assert pair.result.value("TK_T4_T12") == pytest.approx(moved.value("TK_T4_T12"), abs=1e-6)
    assert pair.result.value("TK_T4_T12") != pytest.approx(expected.value("TK_T4_T12"), abs=0.1)
    assert pair.result.value("Cobb_MT") == cobb


def test_two_loaded_mrk_json_files_become_a_live_pair(scene, tmp_path):
    volumes = _volumes(scene)
    nodes = {}
    for role, pts in (("flexion", FLEX), ("extension", EXT)):
        path = write_markups_json(tmp_path / f"{role}.mrk.json", pts, ijk_to_ras_from_volume_node(volumes[role]),
                                  protocol=LUMBAR)
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
        storage = slicer.vtkMRMLMarkupsJsonStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(path))
        assert storage.ReadData(node) == 1
        nodes[role] = node
    pair = pair_from_markups(nodes, LUMBAR, volumes)
    # the files carry no spacing: values in px and degrees, IROM still 10 deg (file coordinates are rounded)
    assert pair.result.value("IROM_L1L2") == pytest.approx(10.0, abs=1e-4)
    assert pair.result.parameters["ST_L1L2_flexion"].unit == "px"
    _move(pair.analyses["extension"], "L1_AI", (EXT["L1_AI"][0], EXT["L1_AI"][1] - 6.0))
    assert pair.result.value("IROM_L1L2") != pytest.approx(10.0, abs=0.1)


def test_a_loaded_mrk_json_keeps_updating_after_the_first_measurement(scene, tmp_path):
    volume = mrml.make_volume_node(scene, np.zeros((400, 900), np.float32), oblique_ijk_to_ras(), "film")
    path = write_markups_json(tmp_path / "film.mrk.json", FLEX, oblique_ijk_to_ras(), protocol=LUMBAR)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    first = mrml.measure_from_markups(node, LUMBAR, volume)
    assert first.value("SA_L1L2") == pytest.approx(0.0, abs=1e-4)  # file coordinates are rounded
    analysis = mrml.analysis_for_node(node)
    # drag L1_AI up: the analysis re-measures without another call (it did not before: issue 17)
    x, y = FLEX["L1_AI"]
    _move(analysis, "L1_AI", (x, y - 5.0))
    moved = measure({**FLEX, "L1_AI": (x, y - 5.0)}, LUMBAR)
    assert analysis.result.value("SA_L1L2") == pytest.approx(moved.value("SA_L1L2"), abs=1e-4)
    assert analysis.result.value("SA_L1L2") > 1.0
    analysis.cleanup()


def test_single_film_protocols_have_no_pair():
    assert pair_roles(LUMBAR) == ("flexion", "extension")
    assert pair_roles("coronal-spine") == ("coronal", "lateral")
    with pytest.raises(LandmarkError, match="measures one film"):
        pair_roles("sagittal-whole-spine")


def test_module_logic_pairs_and_manual_batch_guard(module_with_stubs, tmp_path):
    """The module's own pair self-test, logic.measureFromMarkups with a pair, and batch with Manual placement."""
    module, scene = module_with_stubs
    test = module.SpineAlignmentTest()
    test.test_PairMoveUpdate()
    logic = module.SpineAlignmentLogic()
    volumes = _volumes(scene)
    nodes = {}
    for role, pts in (("flexion", FLEX), ("extension", EXT)):
        path = write_markups_json(tmp_path / f"{role}.mrk.json", pts, ijk_to_ras_from_volume_node(volumes[role]),
                                  protocol=LUMBAR)
        nodes[role] = slicer.util.loadMarkups(str(path))
    result = logic.measureFromMarkups(nodes["flexion"], LUMBAR, volumes["flexion"],
                                      pairedMarkupsNode=nodes["extension"], pairedVolumeNode=volumes["extension"])
    assert result.value("IROM_L1L2") == pytest.approx(10.0, abs=1e-4)
    with pytest.raises(ValueError, match="re-measures landmark files"):
        logic.startBatch([str(tmp_path)], str(tmp_path / "out"), LUMBAR, model="manual")
