"""Protocols are data plus one module: the pipeline and the CLI measure a protocol they were never told about."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from SpineAlignmentLib.cli import main
from SpineAlignmentLib.errors import ProtocolError
from SpineAlignmentLib.pipeline import measure
from SpineAlignmentLib.protocols import (PROTOCOL_IDS, get_protocol, list_protocols, measuring_routine,
                                         protocol_ids)

SHIPPED = ("sagittal-whole-spine", "cervical-lateral", "coronal-spine", "coronal-shoulder", "lumbar-dynamic")

#: A sixth protocol: the distance between the two femoral head centres on an AP film.
TABLE = {
    "id": "hip-width",
    "title": "Femoral head distance",
    "view": "coronal",
    "study": "test",
    "description": "Distance between the femoral head centres (a protocol added as one table and one module).",
    "module": "sixth_protocol_geometry",
    "groups": [{"id": "hip", "color": [0.9, 0.4, 0.4]}],
    "landmarks": [{"id": "FH_L", "description": "patient left femoral head centre", "group": "hip"},
                  {"id": "FH_R", "description": "patient right femoral head centre", "group": "hip"}],
    "parameters": [{"id": "HW", "title": "Femoral head distance", "unit": "mm", "landmarks": ["FH_L", "FH_R"],
                    "definition": "|FH_L - FH_R|"}],
}

MODULE = '''
import numpy as np

from SpineAlignmentLib.geometry.measurement import Construct, Measurement


def hw(ctx):
    left, right = ctx.mm("FH_L"), ctx.mm("FH_R")
    return Measurement("HW", float(np.linalg.norm(left - right)), ctx.distance_unit, ("FH_L", "FH_R"),
                       ctx.calibration, {}, [Construct("line", ctx.pxs(left, right), "FH_L-FH_R")])


def measure(proto, job):
    job.measure_table({"HW": hw})
'''


@pytest.fixture
def sixth(tmp_path, monkeypatch):
    """A tables folder in $SPINEALIGN_PROTOCOLS holding hip-width.json, and its module on sys.path."""
    folder = tmp_path / "protocols"
    folder.mkdir()
    (folder / "hip-width.json").write_text(json.dumps(TABLE))
    (tmp_path / "sixth_protocol_geometry.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.setenv("SPINEALIGN_PROTOCOLS", str(folder))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield folder
    sys.modules.pop("sixth_protocol_geometry", None)


def test_shipped_tables_name_their_geometry_module():
    assert PROTOCOL_IDS == protocol_ids() == SHIPPED
    for p in list_protocols():
        fn = measuring_routine(p)
        assert p.module.startswith("SpineAlignmentLib.geometry.") and fn.__module__ == p.module and fn.__name__ == "measure"


def test_a_sixth_protocol_is_one_table_and_one_module(sixth):
    assert protocol_ids() == SHIPPED + ("hip-width",)  # the five keep protocols.md's order; added ones follow
    # 300 px across, 400 px down: 500 px, at 0.2 mm per pixel 100 mm
    res = measure({"FH_L": (400, 600), "FH_R": (100, 200)}, "hip-width", spacing_mm=(0.2, 0.2))
    m = res.parameters["HW"]
    assert m.value == pytest.approx(100.0) and m.unit == "mm" and m.calibration == "manual:user"
    assert res.frame == {"source": "default", "facing": "unknown"}  # a coronal film without Patient Orientation
    assert not res.warnings and not res.omitted
    # the shared steps work for it too: a missing landmark is left out and explained, an untrusted one not used
    res = measure({"FH_L": (400, 600)}, "hip-width")
    assert "HW" not in res.parameters and res.omitted["HW"] == "missing FH_R"
    res = measure({"FH_L": {"x": 400, "y": 600, "confidence": 0.1}, "FH_R": (100, 200)}, "hip-width")
    assert res.omitted["HW"] == "not trusted FH_L"
    # landmarks of another protocol are refused as for the shipped ones
    with pytest.raises(Exception, match="T1_TL are not part of protocol 'hip-width'"):
        measure({"T1_TL": (1, 2)}, "hip-width")


def test_the_cli_lists_and_measures_the_sixth_protocol(sixth, tmp_path, capsys):
    assert main(["protocols", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["id"] for p in listed] == list(SHIPPED) + ["hip-width"]
    f = tmp_path / "hips.json"
    f.write_text(json.dumps({"protocol": "hip-width", "spacing_mm": [0.2, 0.2],
                             "landmarks": {"FH_L": {"x": 400, "y": 600}, "FH_R": {"x": 100, "y": 200}}}))
    assert main(["measure", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == "hip-width" and out["parameters"]["HW"]["value"] == pytest.approx(100.0)
    assert out["parameters"]["HW"]["unit"] == "mm" and out["parameters"]["HW"]["calibration"] == "manual:file"


def test_an_added_table_cannot_replace_a_shipped_one(sixth):
    (sixth / "coronal-spine.json").write_text(json.dumps({**TABLE, "id": "coronal-spine"}))
    assert get_protocol("coronal-spine").module == "SpineAlignmentLib.geometry.coronal"


@pytest.mark.parametrize("change,needle", [
    ({"module": "no_such_protocol_module"}, "names module 'no_such_protocol_module', which cannot be imported"),
    ({"module": "json"}, "module 'json' has no measure(proto, job) function"),
])
def test_a_table_naming_a_missing_module_or_routine_is_refused(sixth, change, needle, tmp_path, capsys):
    (sixth / "hip-width.json").write_text(json.dumps({**TABLE, **change}))
    with pytest.raises(ProtocolError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        measure({"FH_L": (400, 600), "FH_R": (100, 200)}, "hip-width")
    f = tmp_path / "hips.json"
    f.write_text(json.dumps({"protocol": "hip-width", "landmarks": {"FH_L": {"x": 1, "y": 2}}}))
    assert main(["measure", str(f)]) == 2
    err = capsys.readouterr().err
    assert "hip-width" in err and "Traceback" not in err


@pytest.mark.parametrize("change,needle", [
    ({"module": None}, "'module' must be an importable module name"),
    ({"id": "hip-widths"}, "has id 'hip-widths'; name the file 'hip-widths.json'"),
])
def test_a_broken_table_is_refused_naming_the_file(sixth, change, needle):
    (sixth / "hip-width.json").write_text(json.dumps({**TABLE, **change}))
    with pytest.raises(ProtocolError, match=needle) as exc:
        get_protocol("hip-width")
    assert "hip-width.json" in str(exc.value)
    assert protocol_ids() == SHIPPED  # listed without it (the error is logged), the others stay usable


def test_a_table_without_a_module_is_refused(sixth):
    (sixth / "hip-width.json").write_text(json.dumps({k: v for k, v in TABLE.items() if k != "module"}))
    with pytest.raises(ProtocolError, match="hip-width.json: no 'module' field"):
        get_protocol("hip-width")


# ---- what models and inference read from the table ----

def test_flip_pairs_declared_in_the_table_replace_the_suffix_rule():
    from SpineAlignmentLib.models.landmarks import flip_permutation

    ids = ("FH_1", "FH_2", "Cor_top_L", "Cor_top_R", "T1_TL", "T1_TR")
    assert flip_permutation(ids) == [0, 1, 3, 2, 5, 4]  # derived from the L/R and TL/TR suffixes
    assert flip_permutation(ids, []) == [0, 1, 2, 3, 4, 5]  # a table that declares no pairs: nothing swaps
    assert flip_permutation(ids, [("FH_1", "FH_2")]) == [1, 0, 2, 3, 4, 5]  # exactly the declared pairs


def test_shipped_tables_keep_todays_flips_and_kinds():
    from SpineAlignmentLib.models.landmarks import flip_permutation
    from SpineAlignmentLib.models.registry import list_models, model_kind

    for p in list_protocols():
        ids = p.landmark_ids
        perm = flip_permutation(ids, p.flip_pairs)
        assert perm == flip_permutation(ids) and [perm[k] for k in perm] == list(range(len(ids)))
        assert all(model_kind(md) in p.model_kinds for md in list_models(p.id))  # the shipped models fit
    assert get_protocol("sagittal-whole-spine").flip_pairs == ()  # FH_1/FH_2 are two femoral heads, not L/R
    assert get_protocol("coronal-spine").flip_pairs is None  # TL <-> TR, BL <-> BR from the suffixes
    assert sum(flip_permutation(get_protocol("coronal-spine").landmark_ids)[k] != k for k in range(68)) == 68
    assert {p.id: p.model_kinds for p in list_protocols()} == {
        "sagittal-whole-spine": ("landmarks",), "cervical-lateral": ("landmarks",), "coronal-spine": ("landmarks",),
        "coronal-shoulder": ("segmentation",), "lumbar-dynamic": ("landmarks",)}


def test_a_model_of_a_kind_the_protocol_does_not_take_is_refused():
    from SpineAlignmentLib.errors import ModelError
    from SpineAlignmentLib.models.registry import LoadedModel, resolve_model

    md = {"name": "masks", "protocol": "coronal-spine", "decoding": {"method": "mask-keypoints"}}
    fake = LoadedModel(name="masks", version="1.0.0", metadata=md, network=None, landmark_ids=(), input_shape=(8, 8),
                       stride=1, folder=None)
    with pytest.raises(ModelError, match="'masks' is a segmentation model; protocol 'coronal-spine' takes landmarks"):
        resolve_model(fake, "coronal-spine")


@pytest.mark.parametrize("change,needle", [
    ({"flip_pairs": [["FH_L", "FH_X"]]}, "'flip_pairs' must be pairs of the table's landmark IDs"),
    ({"flip_pairs": [["FH_L", "FH_R"], ["FH_R", "FH_L"]]}, "each ID in one pair at most"),
    ({"model_kinds": ["segmentation"]}, "'segmentation' only with 'segments'"),
    ({"model_kinds": ["points"]}, "'model_kinds' must list some of landmarks, segmentation"),
])
def test_table_model_fields_are_checked(sixth, change, needle):
    (sixth / "hip-width.json").write_text(json.dumps({**TABLE, **change}))
    with pytest.raises(ProtocolError, match=needle):
        get_protocol("hip-width")
