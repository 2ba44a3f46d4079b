"""The Slicer module's self-test: generated films analysed, edited, exported and reloaded in the scene.

*Reload and Test* runs these through ``SpineAlignmentTest`` in the module file, and the
headless tests run the same functions with slicer-core (Testing/Python/test_mrml.py,
test_mrml_pairs.py). Each takes the running ``unittest.TestCase`` (for its asserts and
``delayDisplay``) and the module's logic; the scene is ``slicer.mrmlScene``.
"""

import os

import slicer
import vtk


def synthetic_lateral():
    """45 landmarks of a plausible lateral spine facing +x (pixels), and a matching generated image."""
    import numpy as np

    names = [f"C{i}" for i in range(2, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    points = {}
    image = np.zeros((1900, 900), dtype=np.float32)
    for k, v in enumerate(names):
        cx, cy = 450.0 + 40.0 * np.sin(k / 3.5), 150.0 + 68.0 * k
        tilt = np.radians(8.0 * np.cos(k / 4.0))
        d = np.array([np.cos(tilt), np.sin(tilt)])  # anterior along +x
        up = np.array([np.sin(tilt), -np.cos(tilt)])
        c = np.array([cx, cy])
        for suffix, vec in (("AS", d * 22 + up * 14), ("PS", -d * 22 + up * 14),
                            ("AI", d * 22 - up * 14), ("PI", -d * 22 - up * 14)):
            points[f"{v}_{suffix}"] = tuple(c + vec)
        points[f"{v}c"] = (cx, cy)
        image[int(cy - 14):int(cy + 14), int(cx - 22):int(cx + 22)] = 1000.0
    s1 = np.array([470.0, 1780.0])
    points["S1_PS"] = tuple(s1)
    points["S1_AS"] = tuple(s1 + 45.0 * np.array([np.cos(np.radians(40)), -np.sin(np.radians(40))]))
    points["FH_1"] = (540.0, 1700.0)
    points["FH_2"] = (548.0, 1712.0)
    points["OD"] = (points["C2c"][0] + 4.0, points["C2c"][1] - 30.0)
    from ..protocols import get_protocol

    ids = get_protocol("sagittal-whole-spine").landmark_ids
    return {k: points[k] for k in ids}, image


def _make_volume(image):
    import numpy as np

    volumeNode = slicer.util.addVolumeFromArray(image[np.newaxis], name="synthetic lateral")
    volumeNode.SetSpacing(0.15, 0.2, 1.0)
    volumeNode.SetOrigin(-100.0, 50.0, 3.0)
    return volumeNode


def analyze_move_update(case, logic):
    from ..pipeline import measure
    from .geometry import pixels_to_ras

    case.delayDisplay("Manual analysis of a generated lateral radiograph")
    landmarks, image = synthetic_lateral()
    volumeNode = _make_volume(image)
    result, analysis = logic.analyze(volumeNode, protocol="sagittal-whole-spine", model="manual",
                                     spacing=(0.2, 0.15))
    case.assertEqual(len(result.parameters), 0)
    case.assertEqual(logic.nextLandmark(analysis), "OD")
    for key, xy in landmarks.items():
        analysis.add_landmark(key, xy)
    analysis.update()
    expected = measure(landmarks, "sagittal-whole-spine", spacing_mm=(0.2, 0.15),
                       image_size=image.shape)
    case.assertEqual(set(analysis.result.parameters), set(expected.parameters))
    for pid, m in expected.parameters.items():
        case.assertAlmostEqual(analysis.result.value(pid), m.value, places=6)
    case.assertIsNone(logic.nextLandmark(analysis))

    case.delayDisplay("Move S1_AS: only its dependants change")
    table = analysis.table_node.GetTable()
    ids = [table.GetColumnByName("id").GetValue(r) for r in range(table.GetNumberOfRows())]
    before = {pid: table.GetColumnByName("value").GetValue(r) for r, pid in enumerate(ids)}
    node = analysis.landmark_nodes["pelvis"]
    index = next(i for i in range(node.GetNumberOfControlPoints()) if node.GetNthControlPointLabel(i) == "S1_AS")
    x, y = landmarks["S1_AS"]
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    import numpy as np

    m = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    node.SetNthControlPointPosition(index, *pixels_to_ras(m, [(x + 8.0, y - 5.0)])[0])
    after = {pid: table.GetColumnByName("value").GetValue(r) for r, pid in enumerate(ids)}
    changed = {pid for pid in ids if abs(after[pid] - before[pid]) > 1e-9}
    case.assertEqual(changed, {"PI", "SS", "PT", "LL", "L4SL", "SSA", "GT", "LPA", "TPA"})
    moved = measure({**landmarks, "S1_AS": (x + 8.0, y - 5.0)}, "sagittal-whole-spine",
                    spacing_mm=(0.2, 0.15), image_size=image.shape)
    case.assertAlmostEqual(after["SS"], moved.value("SS"), places=6)
    case.assertAlmostEqual(logic.measureFromMarkups(node).value("PI"), moved.value("PI"), places=6)
    case.delayDisplay("Test passed")


def export_and_reload(case, logic):
    import csv
    import json

    landmarks, image = synthetic_lateral()
    volumeNode = _make_volume(image)
    result, analysis = logic.analyze(volumeNode, protocol="sagittal-whole-spine", model="manual")
    for key, xy in landmarks.items():
        analysis.add_landmark(key, xy)
    analysis.update()
    folder = slicer.app.temporaryPath
    csvPath = analysis.export_csv(os.path.join(folder, "SpineAlignmentTest.csv"))
    with open(csvPath, newline="") as fh:
        rows = {row["id"]: row for row in csv.DictReader(fh)}
    case.assertEqual(rows["SVA"]["unit"], "px")  # no spacing: distances stay in pixels
    markupsPath = analysis.write_markups_json(os.path.join(folder, "SpineAlignmentTest.mrk.json"))
    loaded = slicer.util.loadMarkups(str(markupsPath))
    case.assertEqual(loaded.GetNumberOfControlPoints(), 45)
    case.assertEqual(loaded.GetNthControlPointID(0), "OD")
    reloaded = logic.measureFromMarkups(loaded, "sagittal-whole-spine", volumeNode)
    case.assertAlmostEqual(reloaded.value("PI"), analysis.result.value("PI"), places=4)
    case.assertEqual(json.loads(open(markupsPath).read())["markups"][0]["coordinateSystem"], "LPS")
    case.delayDisplay("Test passed")


def synthetic_lumbar(tiltL1, shiftL1, facing):
    """L1-S1 corners as 40 x 25 px boxes; L1 tilted by tiltL1 degrees (anterior end up), shifted shiftL1 px."""
    import math

    points, y = {}, 100.0
    for k, v in enumerate(["L1", "L2", "L3", "L4", "L5", "S1"]):
        t = math.radians(tiltL1 if k == 0 else 0.0)
        e = (facing * math.cos(t), -math.sin(t))
        ps = (500.0 + facing * (shiftL1 if k == 0 else 0.0), y)
        points[f"{v}_PS"] = ps
        points[f"{v}_AS"] = (ps[0] + 40 * e[0], ps[1] + 40 * e[1])
        if v != "S1":
            down = (facing * math.sin(t), math.cos(t))
            points[f"{v}_PI"] = (ps[0] + 25 * down[0], ps[1] + 25 * down[1])
            points[f"{v}_AI"] = (points[f"{v}_PI"][0] + 40 * e[0], points[f"{v}_PI"][1] + 40 * e[1])
        y += 35.0
    return points


def pair_move_update(case, logic):
    import numpy as np

    case.delayDisplay("Flexion and extension films as one analysis")
    flexion = slicer.util.addVolumeFromArray(np.zeros((1, 400, 900), np.float32), name="flexion")
    extension = slicer.util.addVolumeFromArray(np.zeros((1, 400, 900), np.float32), name="extension")
    extension.SetSpacing(0.15, 0.2, 1.0)
    extension.SetOrigin(-100.0, 50.0, 3.0)
    result, analysis = logic.analyze(flexion, protocol="lumbar-dynamic", model="manual", pairedVolumeNode=extension,
                                     spacing=(0.2, 0.2))
    pair = analysis.pair
    for role, points in (("flexion", synthetic_lumbar(0.0, 4.0, 1)),
                         ("extension", synthetic_lumbar(10.0, 0.0, -1))):
        for key, xy in points.items():
            pair.analyses[role].add_landmark(key, xy)
    pair.update()
    # hand-worked: extension L1 tilted 10 deg over a flat L2, flexion flat -> IROM 10 deg; flexion ST 4 px = 0.8 mm
    case.assertAlmostEqual(pair.result.value("IROM_L1L2"), 10.0, places=6)
    case.assertAlmostEqual(pair.result.value("ST_L1L2_flexion"), 0.8, places=6)
    # guided placement on the extension film asks for what is still missing there (the body centres)
    case.assertEqual(logic.nextLandmark(pair.analyses["extension"]), "L1c")
    case.delayDisplay("Drag L1's lower endplate on the extension film: the pair re-measures")
    before = pair.result.value("IROM_L1L2")
    film = pair.analyses["extension"]
    node = film.landmark_node(film.protocol.landmark("L1_AI").group)
    index = next(i for i in range(node.GetNumberOfControlPoints()) if node.GetNthControlPointLabel(i) == "L1_AI")
    position = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(index, position)
    node.SetNthControlPointPosition(index, position[0], position[1] + 1.2, position[2])
    case.assertEqual(pair.result.value("IROM_L1L2") != before, True)
    table = analysis.table_node.GetTable()
    row = next(r for r in range(table.GetNumberOfRows()) if table.GetColumnByName("id").GetValue(r) == "IROM_L1L2")
    case.assertAlmostEqual(table.GetColumnByName("value").GetValue(row), pair.result.value("IROM_L1L2"), places=6)
    case.delayDisplay("Test passed")
