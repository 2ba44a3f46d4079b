"""Level anchors: re-naming the vertebra chain from the first stage's candidates, CLI and batch with a CSV."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from SpineAlignmentLib.errors import LandmarkError, SpineAlignmentError
from SpineAlignmentLib.inference.anchor import (ChainState, LevelAnchor, anchored_chain, level_position,
                                                shifted_chain, walk)
from SpineAlignmentLib.inference.preprocess import letterbox_geometry
from SpineAlignmentLib.io.level_anchors import match_level_anchors, read_level_anchors

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "SampleData" / "aasce-sample-AP.jpg"
NAMES = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]


def _state(n_vertebrae: int = 20, chain_start: int = 1, extra=()) -> ChainState:
    """Synthetic candidates: ``n_vertebrae`` vertebrae 10 px high, centres 20 px apart on x = 100 from y = 20
    (candidate i at y = 20 + 20 i, score 0.9), plus ``extra`` (x, y, score) candidates; the film's chain is
    candidates ``chain_start`` .. ``chain_start + 16``. Identity letterbox (input = original pixels)."""
    pts = [(100.0, 20.0 + 20.0 * i, 0.9) for i in range(n_vertebrae)] + list(extra)
    centers = np.array([(x, y) for x, y, _ in pts])
    scores = np.array([s for _, _, s in pts])
    corners = np.stack([centers + d for d in ((-8, -5), (8, -5), (-8, 5), (8, 5))], axis=1)
    geo = letterbox_geometry((600, 200), (600, 200))
    model = SimpleNamespace(landmark_ids=[f"{v}_{c}" for v in NAMES for c in ("TL", "TR", "BL", "BR")])
    chain = np.arange(chain_start, chain_start + 17)
    return ChainState(centers, corners, scores, chain, np.zeros((4, 300, 100)), 2, 3, 2, geo,
                      corners[chain].reshape(-1, 2), np.full(68, 0.9), model)


def test_level_positions():
    assert [level_position(v, NAMES) for v in ("C7", "T1", "t12", "L5", "S1")] == [-1, 0, 11, 16, 17]
    with pytest.raises(LandmarkError, match="'T13' is not a vertebra level"):
        level_position("T13", NAMES)


def test_shift_moves_every_name_exactly_one_vertebra():
    st = _state(chain_start=1)  # chain = candidates 1..17; 0 above it, 18 and 19 below
    assert shifted_chain(st, -1).tolist() == list(range(2, 19))  # named too high: T1 was C7, one more below
    assert shifted_chain(st, +1).tolist() == list(range(0, 17))  # named too low: T1 was T2, one more above
    assert shifted_chain(st, -2).tolist() == list(range(3, 20))
    assert shifted_chain(st, 0).tolist() == st.chain.tolist()  # confirmed as named


def test_shift_past_the_film_is_refused():
    st = _state(chain_start=0)  # nothing above the chain's T1
    with pytest.raises(LandmarkError, match=r"shift \+1 pushes the chain past the film"):
        shifted_chain(st, 1)


def test_t1_on_the_second_candidate_renames_the_chain():
    st = _state(chain_start=0)  # the model named candidate 0 T1
    chain = anchored_chain(st, "T1", (100.0, 40.0))  # the person: candidate 1 (y 40) is T1
    assert chain.tolist() == list(range(1, 18))
    assert anchored_chain(st, "L5", (100.0, 380.0)).tolist() == list(range(2, 19))  # candidate 18 is L5
    assert anchored_chain(st, "C7", (100.0, 20.0)).tolist() == list(range(1, 18))  # C7 names the one above T1


def test_walk_steps_over_a_double_detection_and_takes_a_weak_vertebra():
    # a weak second detection 8 px below candidate 3 (between two vertebrae), and vertebra 5 found weakly
    st = _state(n_vertebrae=19, chain_start=0, extra=[(101.0, 88.0, 0.2)])
    st.scores[5] = 0.3
    chain = anchored_chain(st, "T1", (100.0, 20.0))
    assert chain.tolist() == list(range(0, 17))
    pool = np.arange(len(st.scores))
    h = np.full(len(st.scores), 10.0)
    assert walk(st.centers, h, st.scores, pool, 17, 1, 2, 2.0) is None  # only one candidate below 17


def test_bad_anchor_points_say_why():
    st = _state()
    with pytest.raises(LandmarkError, match="outside the 600 x 200 film"):
        anchored_chain(st, "T1", (250.0, 40.0))
    with pytest.raises(LandmarkError, match="on no vertebra the model found"):
        anchored_chain(st, "T1", (160.0, 40.0))
    with pytest.raises(LandmarkError, match="run past the film"):
        anchored_chain(st, "T5", (100.0, 40.0))  # T1 would be 4 vertebrae above candidate 1


def test_level_anchor_file_rows(tmp_path):
    f = tmp_path / "anchors.csv"
    f.write_text("image,level,x,y,shift\na.png,T1,10,20,\nb.png,,,,-1\nc.png,T13,1,2,\nd.png,T1,x,2,\n"
                 "e.png,,,,0\n")
    rows = read_level_anchors(f)
    assert [r.where for r in rows] == [f"anchors.csv row {i}" for i in range(2, 7)]
    assert rows[0].anchor == LevelAnchor("file:anchors.csv", "T1", 10.0, 20.0)
    assert rows[1].anchor.to_dict() == {"by": "file:anchors.csv", "shift": -1}
    assert "'T13' is not a vertebra level" in rows[2].problem
    assert "must be pixel coordinates" in rows[3].problem
    assert rows[4].anchor.to_dict() == {"by": "file:anchors.csv", "shift": 0}  # the review page's "confirm"
    items = [SimpleNamespace(image=str(tmp_path / "in" / "a.png"), name="a"),
             SimpleNamespace(image=str(tmp_path / "in" / "b.png"), name="b")]
    matched, problems = match_level_anchors(rows, items, tmp_path)
    assert sorted(matched) == ["a", "b"]
    assert len(problems) == 3 and problems[0].startswith("Level anchor anchors.csv row 4 not used: image 'c.png'")


@pytest.mark.parametrize("text, what", [("image,foo\na,1\n", "must name the columns"),
                                        (b"\xff\xfe\x00", "is not UTF-8 text"),
                                        ('image,shift\n"a,1\n', "not a CSV file")])
def test_malformed_anchor_file_is_one_sentence(tmp_path, text, what):
    f = tmp_path / "bad.csv"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SpineAlignmentError, match=what) as exc:
        read_level_anchors(f)
    assert str(exc.value).startswith(str(f))


# ---- on the bundled sample with the packaged model -----------------------------------------------------

@pytest.fixture(scope="module")
def sample_result():
    pytest.importorskip("torch")
    from SpineAlignmentLib.imaging import read_radiograph
    from SpineAlignmentLib.pipeline import analyze

    return analyze(read_radiograph(SAMPLE), "coronal-spine")


def _centre(res, v):
    return tuple(np.mean([[res.landmarks[f"{v}_{c}"].x, res.landmarks[f"{v}_{c}"].y]
                          for c in ("TL", "TR", "BL", "BR")], axis=0))


def test_reanchor_on_the_sample(sample_result):
    from SpineAlignmentLib.inference.levels import levels_line
    from SpineAlignmentLib.pipeline import reanchor

    res = sample_result
    assert res.chain is not None and not res.levels.get("confirmed")
    same = reanchor(res, LevelAnchor("user", "T1", *_centre(res, "T1")))
    assert same.levels["confirmed"] and same.levels["confidence"] == 1.0
    assert same.levels["anchor"]["level"] == "T1" and same.levels["model_confidence"] == res.levels["confidence"]
    assert not any("Vertebra levels" in w for w in same.warnings)
    assert levels_line(same.levels).startswith("level confidence 1.00 (confirmed by user: T1 at (")
    down = reanchor(res, LevelAnchor("user", "T1", *_centre(res, "T2")))
    up = reanchor(res, LevelAnchor("user", shift=-1))
    for new in (down, up):  # the old T2 is now T1, every name moved by exactly one vertebra
        for k, v in enumerate(NAMES[:-1]):
            for c in ("TL", "TR", "BL", "BR"):
                assert new.landmarks[f"{v}_{c}"] == res.landmarks[f"{NAMES[k + 1]}_{c}"]
    assert down.levels["anchor"] == {"by": "user", "level": "T1", "x": round(_centre(res, "T2")[0], 2),
                                     "y": round(_centre(res, "T2")[1], 2)}
    confirmed = reanchor(res, LevelAnchor("file:level-anchors.csv", shift=0))  # the review page's "confirm"
    assert confirmed.levels["confirmed"] and confirmed.levels["anchor"] == {"by": "file:level-anchors.csv", "shift": 0}
    assert {k: (lm.x, lm.y) for k, lm in confirmed.landmarks.items()} == {k: (lm.x, lm.y) for k, lm in res.landmarks.items()}
    back = reanchor(up, LevelAnchor("user", shift=1))  # and back: the first chain again (T1 refined on its own)
    for k, lm in res.landmarks.items():
        assert (back.landmarks[k].x, back.landmarks[k].y) == pytest.approx((lm.x, lm.y), abs=1e-3)


def _cli(args):
    from SpineAlignmentLib.cli import main

    return main(args)


def test_cli_analyze_and_batch_with_anchor_file(tmp_path, sample_result, capsys, caplog):
    pytest.importorskip("torch")
    films = tmp_path / "films"
    films.mkdir()
    shutil.copy(SAMPLE, films / "sample.jpg")
    cx, cy = _centre(sample_result, "T2")
    anchors = tmp_path / "anchors.csv"
    anchors.write_text(f"image,level,x,y\nsample.jpg,T1,{cx},{cy}\nmissing.jpg,T1,1,1\n")
    out = tmp_path / "out"
    assert _cli(["analyze", str(films / "sample.jpg"), "--protocol", "coronal-spine", "--out", str(out),
                 "--no-overlay", "--level-anchors", str(anchors)]) == 0
    text = capsys.readouterr()
    assert "confirmed by file:anchors.csv: T1 at (" in text.out
    assert "Level anchor anchors.csv row 3 not used: image 'missing.jpg' is not one of the films" in text.err
    data = json.loads((out / "sample.json").read_text())
    assert data["levels"]["confirmed"] is True and data["levels"]["anchor"]["by"] == "file:anchors.csv"
    assert data["landmarks"]["T1_TL"]["x"] == pytest.approx(sample_result.landmarks["T2_TL"].x, abs=1e-6)

    # batch: a second film without a row; resume re-measures only the film whose row changed
    shutil.copy(SAMPLE, films / "other.jpg")
    bout = tmp_path / "batch"
    anchors.write_text("image,shift\nsample.jpg,-1\n")
    args = ["batch", str(films), "--protocol", "coronal-spine", "--out", str(bout), "--no-overlay", "--no-markups",
            "--level-anchors", str(anchors), "--progress", "none"]
    assert _cli(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["done"] == 2
    res = {n: json.loads((bout / f"{n}.json").read_text()) for n in ("sample", "other")}
    assert res["sample"]["levels"]["anchor"] == {"by": "file:anchors.csv", "shift": -1}
    assert "anchor" not in res["other"]["levels"]
    assert _cli(args) == 0  # nothing changed: both re-used
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 2
    anchors.write_text("image,shift\nsample.jpg,1\n")  # the row changed: only that film again
    assert _cli(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (again["done"], again["skipped"]) == (1, 1)
    assert json.loads((bout / "sample.json").read_text())["levels"]["anchor"]["shift"] == 1

    # a row that cannot be applied: that film keeps its unanchored result, the batch goes on
    anchors.write_text("image,level,x,y\nsample.jpg,T1,5000,10\nother.jpg,T44,1,1\n")
    assert _cli(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["done"] == 2
    for name, what in (("sample", "lies outside the"), ("other", "'T44' is not a vertebra level")):
        data = json.loads((bout / f"{name}.json").read_text())
        assert "anchor" not in data["levels"]
        assert any(w.startswith("Level anchor anchors.csv row ") and what in w for w in data["warnings"])

    # an unreadable anchor file: one sentence naming it, exit 2
    bad = tmp_path / "bad.csv"
    bad.write_text("film;level\n")
    assert _cli(["analyze", str(films / "sample.jpg"), "--protocol", "coronal-spine", "--out", str(out),
                 "--level-anchors", str(bad)]) == 2
    assert f"{bad}: the first row must name the columns image,level,x,y or image,shift" in capsys.readouterr().err
