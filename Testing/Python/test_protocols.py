"""The protocol table keeps the names of protocols.md exactly."""

from __future__ import annotations

import json

import pytest

from SpineAlignmentLib.errors import ProtocolError
from SpineAlignmentLib.protocols import get_protocol, list_protocols

V = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]

EXPECTED_PARAMETERS = {
    "sagittal-whole-spine": ["PI", "SS", "PT", "LL", "SVA", "CL", "T1S", "cSVA", "GTK", "PTK", "MTK", "L4SL",
                             "LPA", "SSA", "GT", "TPA", "Barrey", "OD_HA"],
    "cervical-lateral": ["C2C7", "C2C6", "C0C2", "C7S", "T1S", "cSVA", "RJD", "CT", "CCA"],
    "coronal-spine": ["Cobb_PT", "Cobb_MT", "Cobb_TLL", "AASCE_1", "AASCE_2", "AASCE_3", "TK_T4_T12", "LL_L1_L5"],
    "coronal-shoulder": ["CA", "CTAD", "CHD", "RSH_bony", "RSH"],
}


def test_all_five_protocols():
    assert [p.id for p in list_protocols()] == [
        "sagittal-whole-spine", "cervical-lateral", "coronal-spine", "coronal-shoulder", "lumbar-dynamic"]


def test_landmark_ids():
    sag = get_protocol("sagittal-whole-spine").landmark_ids
    assert len(sag) == 45 and len(set(sag)) == 45
    assert sag[:22] == ("OD", "C2_AI", "C2_PI", "C7_AI", "C7_PS", "C7_PI", "T1_AS", "T1_PS", "T5_AS", "T5_PS",
                        "T5_AI", "T5_PI", "T12_AI", "T12_PI", "L1_AS", "L1_PS", "L4_AS", "L4_PS", "S1_AS", "S1_PS",
                        "FH_1", "FH_2")
    assert sag[22:] == tuple(f"{v}c" for v in [f"C{i}" for i in range(2, 8)] + V)
    cer = get_protocol("cervical-lateral").landmark_ids
    assert len(cer) == 29
    assert cer[:24] == tuple(f"C{n}_{c}" for n in range(2, 8) for c in ("AS", "PS", "AI", "PI"))
    assert cer[24:] == ("T1_AS", "T1_PS", "PNS", "OCC", "DENS")
    cor = get_protocol("coronal-spine").landmark_ids
    assert cor == tuple(f"{v}_{c}" for v in V for c in ("TL", "TR", "BL", "BR"))
    sho = get_protocol("coronal-shoulder").landmark_ids
    assert set(sho) == {f"{s}_{side}" for s in ("Clav_top", "Clav_med", "Clav_lat", "Cor_top") for side in "LR"} | {"ST_L", "ST_R"}
    lum = get_protocol("lumbar-dynamic")
    assert set(lum.landmark_ids) == ({f"L{n}_{c}" for n in range(1, 6) for c in ("AS", "PS", "AI", "PI")}
                                     | {"S1_AS", "S1_PS"} | {f"L{n}c" for n in range(1, 6)} | {"S1c"})
    assert lum.image_roles == ("flexion", "extension")


@pytest.mark.parametrize("pid,params", EXPECTED_PARAMETERS.items())
def test_parameter_ids(pid, params):
    assert list(get_protocol(pid).parameter_ids) == params


def test_lumbar_parameter_ids():
    ids = set(get_protocol("lumbar-dynamic").parameter_ids)
    for lv in ("L1L2", "L2L3", "L3L4", "L4L5", "L5S1"):
        assert {f"IROM_{lv}", f"dST_{lv}", f"dST_pct_{lv}"} <= ids


def test_parameter_landmarks_exist_and_units():
    for p in list_protocols():
        known = set(p.landmark_ids) | {lm.id for lm in p.extra_landmarks}
        for par in p.parameters:
            assert set(par.landmarks) <= known, (p.id, par.id)
            assert par.unit in ("deg", "mm", "ratio", "%")
        for lm in p.landmarks:
            assert len(lm.color) == 3 and lm.description


def test_unknown_protocol_message():
    with pytest.raises(ProtocolError, match="Unknown protocol 'sagittal'.*sagittal-whole-spine"):
        get_protocol("sagittal")


def test_json_export_round_trip():
    for p in list_protocols():
        d = json.loads(json.dumps(p.to_dict()))
        assert [lm["id"] for lm in d["landmarks"]] == list(p.landmark_ids)


def test_every_parameter_has_a_plausible_range_and_every_table_names_its_film():
    """Ranges and film kinds are data in the tables (issue 24): the pipeline and the model warnings read them."""
    import numpy as np

    from SpineAlignmentLib.inference.predict import plausibility_warnings
    from SpineAlignmentLib.protocols import PROTOCOL_IDS

    films = set()
    for pid in PROTOCOL_IDS:
        proto = get_protocol(pid)
        films.add(proto.film)
        for p in proto.parameters:
            assert p.plausible is not None and p.plausible[0] < p.plausible[1], p.id
        conf = np.full(4, 0.05)
        (w,) = plausibility_warnings(np.zeros((4, 2)), conf, ["A", "B", "C", "D"], 0.3, proto.film)
        assert f"this may not be {proto.film}," in w
    assert get_protocol("sagittal-whole-spine").film == "a lateral whole-spine radiograph"
    assert "AP" not in get_protocol("lumbar-dynamic").film and len(films) == len(PROTOCOL_IDS)


def test_a_bad_plausible_range_is_refused():
    from pathlib import Path

    import SpineAlignmentLib.protocols as protocols_pkg
    from SpineAlignmentLib.protocols import _parse

    data = json.loads((Path(protocols_pkg.__file__).parent / "coronal-shoulder.json").read_text())
    data["parameters"][0]["plausible"] = [5, -5]
    with pytest.raises(ProtocolError, match="'plausible' must be \\[low, high\\]"):
        _parse(data, "x.json")
