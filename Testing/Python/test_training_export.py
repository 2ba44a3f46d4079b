"""Slicer *Export for training* on real MRML classes (slicer-core): scene -> dataset folder -> read_dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install 'SpineAlignmentLib[slicer]')")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package has no MRML classes (install slicer-core)", allow_module_level=True)

import vtk  # noqa: E402
from spines import lateral_spine, select  # noqa: E402
from test_mrml import _load_with_slicer, oblique_ijk_to_ras, scene  # noqa: E402,F401  (scene: the fixture)

from SpineAlignmentLib.io.dataset import read_dataset  # noqa: E402
from SpineAlignmentLib.pipeline import measure  # noqa: E402
from SpineAlignmentLib.slicerio import mrml  # noqa: E402
from SpineAlignmentLib.slicerio.geometry import ijk_to_ras_for_file, pixels_to_ras  # noqa: E402
from SpineAlignmentLib.slicerio.markups_json import write_markups_json  # noqa: E402
from SpineAlignmentLib.slicerio.training_export import export_for_training  # noqa: E402

SAG = "sagittal-whole-spine"


def _film(rows=2000, cols=1600):
    return ((np.arange(cols)[None, :] + np.arange(rows)[:, None]) % 250).astype(np.uint8)


def _max_error(got, want):
    assert set(got) == set(want)
    return max(np.hypot(got[k][0] - want[k][0], got[k][1] - want[k][1]) for k in want)


def test_export_round_trip_through_an_oblique_volume(scene, tmp_path, rng):
    lms = select(lateral_spine(rng, -1), SAG)
    res = measure(lms, SAG, spacing_mm=(0.2, 0.15), calibration="calibrated:GEOMETRY", image_size=(2000, 1600))
    volume = mrml.make_volume_node(scene, _film(), oblique_ijk_to_ras(), "lateral film")
    analysis = mrml.create_analysis(scene, volume, res)
    ds = tmp_path / "ds"
    label = export_for_training(analysis, ds, patient="P7")
    assert label == ds / "lateral_film.json"
    rep = read_dataset(ds, SAG)
    assert rep.findings == [] and len(rep.items) == 1
    item = rep.items[0]
    assert _max_error(item.landmarks, lms) < 1e-6  # pixels -> RAS (rotated, flipped, anisotropic) -> pixels
    assert item.image.name == "lateral_film.nrrd" and item.image_size == (2000, 1600)
    assert (item.spacing_mm, item.calibration, item.patient) == ((0.2, 0.15), "calibrated:GEOMETRY", "P7")
    import SimpleITK as sitk

    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(item.image))), _film())
    # the user corrects OD (drags it 6 px right) and exports again: replaced, not duplicated
    node, index = next((n, i) for n in analysis.landmark_nodes.values() for i in range(n.GetNumberOfControlPoints())
                       if json_id(n, i) == "OD")
    moved = (lms["OD"][0] + 6.0, lms["OD"][1])
    node.SetNthControlPointPosition(index, vtk.vtkVector3d(*pixels_to_ras(oblique_ijk_to_ras(), [moved])[0]))
    export_for_training(analysis, ds, patient="P7")
    rep = read_dataset(ds, SAG)
    assert len(rep.items) == 1 and sorted(p.name for p in ds.iterdir()) == [
        "lateral_film.json", "lateral_film.nrrd", "patients.csv"]
    assert _max_error(rep.items[0].landmarks, dict(lms, OD=moved)) < 1e-6
    assert (ds / "patients.csv").read_text().splitlines() == ["image,patient", "lateral_film.nrrd,P7"]


def json_id(node, i):
    import json

    return json.loads(node.GetAttribute(mrml.ATTR_LANDMARK_IDS)).get(node.GetNthControlPointID(i))


def test_export_a_loaded_markups_file_and_its_source_film(scene, tmp_path, rng):
    lms = select(lateral_spine(rng, +1), SAG)
    png = tmp_path / "film 1.png"
    Image.fromarray(_film()).save(png)
    m = ijk_to_ras_for_file(png)  # what Slicer gives a PNG: origin 0, spacing 1, LPS axes
    volume = mrml.make_volume_node(scene, _film(), m, "film 1")
    write_markups_json(tmp_path / "film 1.mrk.json", lms, m, protocol=SAG)
    node, _ = _load_with_slicer(scene, tmp_path / "film 1.mrk.json")
    ds = tmp_path / "ds"
    export_for_training(node, ds, protocol=SAG, volume_node=volume, source_file=png)
    rep = read_dataset(ds, SAG)
    assert [it.image.name for it in rep.items] == ["film 1.png"]
    assert (ds / "film 1.png").read_bytes() == png.read_bytes()  # the source film, copied as it is
    assert _max_error(rep.items[0].landmarks, lms) < 1e-4  # mm rounded to 6 decimals in the file
    assert rep.summary["facing"] == {"image-right": 1}
    # a source file of another size is not the displayed film: the volume's pixels are exported instead
    Image.fromarray(_film(100, 80)).save(tmp_path / "small.png")
    export_for_training(node, ds, protocol=SAG, volume_node=volume, source_file=tmp_path / "small.png", name="shown")
    shown = {it.image.name: it for it in read_dataset(ds, SAG).items}["shown.nrrd"]  # float volume: NRRD keeps it
    assert shown.image_size == (2000, 1600) and _max_error(shown.landmarks, lms) < 1e-4


def test_export_without_landmarks_is_one_sentence(scene, tmp_path):
    volume = mrml.make_volume_node(scene, _film(64, 64), np.eye(4), "empty")
    analysis = mrml.create_empty_analysis(scene, volume, SAG)
    with pytest.raises(Exception, match="No landmark of sagittal-whole-spine is placed on 'empty'"):
        export_for_training(analysis, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
