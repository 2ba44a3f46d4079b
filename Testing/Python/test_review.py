"""``spine-align review``: the review page of a results folder, built from a real analysis of the bundled sample,
and driven in a real headless Chromium (clicks, keys, the CSV download, a screenshot)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from SpineAlignmentLib import cli
from SpineAlignmentLib.geometry.levels import adjacent_level, level_rows, vertebra_chain
from SpineAlignmentLib.io.overlay import display_window
from SpineAlignmentLib.io.review import REVIEW_DIR, SHIFT_HELP, TOP_HALF_WIDTHS, build_review, collect_cards, crop_boxes
from SpineAlignmentLib.imaging import read_radiograph
from SpineAlignmentLib.protocols import get_protocol

from headless_chromium import find_chromium, Chromium

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "aasce-sample-AP.jpg"


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Path:
    """The bundled sample analysed once by ``spine-align analyze`` (real model, real result JSON)."""
    out = tmp_path_factory.mktemp("analysed")
    assert cli.main(["-q", "analyze", str(SAMPLE), "--protocol", "coronal-spine", "--out", str(out)]) == 0
    return out


@pytest.fixture
def study(analysed, tmp_path) -> Path:
    """A results folder of four films: the sample as analysed; a copy of it with a low level confidence whose
    film has moved (found through --films); one whose film is gone; one incomplete chain. Plus a result of a
    protocol without a vertebra chain."""
    out = tmp_path / "out"
    shutil.copytree(analysed, out)
    moved = tmp_path / "films"
    moved.mkdir()
    shutil.copy(SAMPLE, moved / "moved-film.jpg")
    shutil.copy(SAMPLE, moved / "partial-film.jpg")
    base = json.loads((out / "aasce-sample-AP.json").read_text())

    def variant(name: str, image: str, **levels) -> None:
        d = json.loads(json.dumps(base))
        d["image"] = image
        d["levels"].update(levels)
        (out / f"{name}.json").write_text(json.dumps(d))

    variant("moved-film", "moved-film.jpg", confidence=0.12, uncertain=True,
            alternative={"shift": -1, "probability": 0.8, "top": "C7", "bottom": "L4"})
    variant("gone", "gone.jpg", confidence=0.3)
    variant("partial", "partial-film.jpg", confidence=0.9, uncertain=True, incomplete=True, weak_vertebrae=5,
            weakest_score=0.01, score_floor=0.1)
    (out / "lateral.json").write_text(json.dumps({
        "schema": "spinealignment.result/1", "protocol": "sagittal-whole-spine", "image": "lateral.png",
        "landmarks": {"C7_AI": [10, 20], "S1_AS": [15, 300]}}))
    return out


def test_level_names_come_from_the_protocol_table():
    chain = vertebra_chain(get_protocol("coronal-spine").landmark_ids)
    assert chain[0] == "T1" and chain[-1] == "L5" and len(chain) == 17
    assert vertebra_chain(get_protocol("sagittal-whole-spine").landmark_ids) == ()
    assert [adjacent_level("T1", -1), adjacent_level("T1", 1), adjacent_level("L5", 1), adjacent_level("L5", -1),
            adjacent_level("T12", 1), adjacent_level("C1", -1)] == ["C7", "T2", "S1", "L4", "L1", None]
    assert "the vertebra named T1 is really T2" in SHIFT_HELP and "T1 is really C7" in SHIFT_HELP


def test_cards_are_sorted_least_certain_first_and_bad_input_is_noted(study, tmp_path):
    cards, notes = collect_cards(study, films=[tmp_path / "films"])
    assert [c.name for c in cards] == ["partial", "moved-film", "gone", "aasce-sample-AP"]
    assert notes == ["1 result skipped, protocol 'sagittal-whole-spine' has no vertebra chain to name: lateral.json"]
    by = {c.name: c for c in cards}
    assert by["moved-film"].film == tmp_path / "films" / "moved-film.jpg"
    assert by["aasce-sample-AP"].film == SAMPLE  # from summary.csv
    assert by["gone"].film is None and "source film gone.jpg not found" in by["gone"].note


def test_page_crops_and_notes(study, tmp_path):
    summary = build_review(study, films=[tmp_path / "films"])
    assert (summary["cards"], summary["with_crops"], summary["without_crops"]) == (4, 3, 1)
    page = (study / "review.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing from a network
    assert page.count('<section class="card') == 4 and page.count('loading="lazy"') == 6
    assert "protocol &#x27;sagittal-whole-spine&#x27; has no vertebra chain" in page
    assert "source film gone.jpg not found" in page
    assert page.index('id="c0"') < page.index("partial") < page.index("moved-film") < page.index("aasce-sample-AP_top")

    # the crops: the film's own pixels (native resolution: the sample is small) in the boxes of the chain
    result = json.loads((study / "aasce-sample-AP.json").read_text())
    ids = get_protocol("coronal-spine").landmark_ids
    pts = np.array([[result["landmarks"][k]["x"], result["landmarks"][k]["y"]] for k in ids])
    film = read_radiograph(SAMPLE).pixels
    boxes = crop_boxes(pts, film.shape)
    rows = level_rows(pts)
    x0, y0, x1, y1 = boxes["top"]
    c = pts.reshape(-1, 4, 2).mean(axis=1)
    assert y0 == max(0, int(np.floor(rows["C4"]))) and y1 > c[2, 1]
    q = pts.reshape(-1, 4, 2)
    width_t1 = 0.5 * (np.linalg.norm(q[0, 1] - q[0, 0]) + np.linalg.norm(q[0, 3] - q[0, 2]))
    half = TOP_HALF_WIDTHS * width_t1  # both first ribs: over three T1 widths either side of the chain
    assert (x0, x1) == (max(int(np.floor(c[:3, 0].mean() - half)), 0),
                        min(int(np.ceil(c[:3, 0].mean() + half)), film.shape[1]))
    assert TOP_HALF_WIDTHS >= 3
    top = np.asarray(Image.open(study / REVIEW_DIR / "aasce-sample-AP_top.jpg"), dtype=float)
    assert top.shape == (y1 - y0, x1 - x0)
    expected = display_window(film[y0:y1, x0:x1]) * 255
    assert np.mean(np.abs(top - expected)) < 4.0  # JPEG loss only
    bx0, by0, bx1, by1 = boxes["bottom"]
    assert by0 < c[-2, 1] and by1 == min(film.shape[0], int(np.ceil(rows["below_sacrum"])))
    # labels: T1..T3 drawn on the top crop, L4 and L5 on the bottom one, at the vertebrae
    card = page[page.index('id="c3"'):]
    assert '<text x=' in card and '>T1</text>' in card and '>L5</text>' in card

    # written once: a second run reuses the crops, a newer result rewrites them
    before = (study / REVIEW_DIR / "aasce-sample-AP_top.jpg").stat().st_mtime_ns
    again = build_review(study, films=[tmp_path / "films"])
    assert (study / REVIEW_DIR / "aasce-sample-AP_top.jpg").stat().st_mtime_ns == before
    assert again["crop_seconds"] < summary["crop_seconds"] + 1.0


def test_cli_bad_input_is_one_sentence(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["review", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no result JSON files" in err and str(tmp_path / "empty") in err
    assert cli.main(["review", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert cli.main(["review", str(tmp_path / "empty"), "--films", str(tmp_path / "nope")]) == 2
    assert "--films" in capsys.readouterr().err


def test_cli_writes_the_page_elsewhere_with_relative_links(study, tmp_path, capsys):
    page = tmp_path / "pages" / "study.html"
    assert cli.main(["-q", "review", str(study), "--out", str(page), "--films", str(tmp_path / "films")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["page"] == str(page) and summary["cards"] == 4
    text = page.read_text()
    assert (page.parent / REVIEW_DIR / "moved-film_top.jpg").is_file()
    assert 'href="../out/aasce-sample-AP_overlay.png"' in text


@pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH; `make setup` as root installs it "
                                                    "(Debian package chromium)")
def test_page_in_headless_chromium(study, tmp_path):
    build_review(study, films=[tmp_path / "films"])
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    result = json.loads((study / "moved-film.json").read_text())
    t1 = np.mean([[result["landmarks"][f"T1_{k}"]["x"], result["landmarks"][f"T1_{k}"]["y"]]
                  for k in ("TL", "TR", "BL", "BR")], axis=0)
    with Chromium(download_dir=downloads) as browser:
        browser.open((study / "review.html").as_uri())
        assert browser.js("document.querySelectorAll('section.card').length") == 4
        # card 2 (moved-film): click on its T1 in the top crop -> "T1 is here" in original pixels
        x, y = browser.js("""(() => { const f = document.querySelector('#c1 figure.top'); const i = f.querySelector('img');
            i.scrollIntoView({block: 'center'}); const r = i.getBoundingClientRect(); const s = Number(f.dataset.s);
            return [r.left + (%f - f.dataset.x0 + 0.5) * s * r.width / f.dataset.w,
                    r.top + (%f - f.dataset.y0 + 0.5) * s * r.height / f.dataset.h]; })()""" % (t1[0], t1[1]))
        browser.click(x, y)
        # card 3 (gone, no crops): names one level down by its button; card 4 (the sample): key c confirms
        browser.click_selector('#c2 button[data-act="1"]')
        browser.click_selector("#c3 header")
        browser.key("c")
        # card 1 (partial): key u, then undone with x, then shifted up again by its button
        browser.click_selector("#c0 header")
        browser.key("u")
        browser.click_selector("#c0 header")
        browser.key("x")
        browser.click_selector('#c0 button[data-act="-1"]')
        assert browser.js("[...document.querySelectorAll('#c0 figure.top text')].map(t => t.textContent)") == \
            ["C7", "T1", "T2"]  # the shift renames the drawn labels
        assert browser.js("[...document.querySelectorAll('#c0 figure.bottom text')].map(t => t.textContent)") \
            [-2:] == ["L3", "L4"]
        csv_text = browser.js("document.getElementById('csv').value")
        browser.click_selector("#download")
        done = browser.wait_event("Browser.downloadProgress", lambda p: p.get("state") == "completed")
        browser.js("window.scrollTo(0, 0)")
        shot = browser.screenshot(tmp_path / "review.png")
        # the decisions are in localStorage, and a reload shows them again. Chromium hands the old page's
        # writes to the browser process asynchronously, so under a loaded CI machine the first reload can come
        # before them: a user reloads seconds later, the test reloads again for up to 10 s.
        key = "'spine-align-review:' + location.pathname"
        assert json.loads(browser.js(f"localStorage.getItem({key})"))["moved-film.jpg"]["level"] == "T1"
        deadline = time.monotonic() + 10
        while True:
            browser.open((study / "review.html").as_uri())
            reloaded = browser.js("document.getElementById('csv').value")
            if reloaded == csv_text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert reloaded == csv_text
    lines = csv_text.splitlines()
    assert lines[0] == "image,shift,level,x,y"
    assert lines[1] == "partial-film.jpg,-1,,,"
    assert lines[3:] == ["gone.jpg,1,,,", "aasce-sample-AP.jpg,0,,,"]
    image, shift, level, cx, cy = lines[2].split(",")
    assert (image, shift, level) == ("moved-film.jpg", "", "T1")
    assert abs(float(cx) - t1[0]) < 0.6 and abs(float(cy) - t1[1]) < 0.6  # original film pixels
    assert Path(done["filePath"]).name == "level-anchors.csv" and Path(done["filePath"]).read_text() == csv_text
    if os.environ.get("REVIEW_SCREENSHOT"):  # a copy to look at
        shutil.copy(shot, os.environ["REVIEW_SCREENSHOT"])
    png = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert png.shape == (900, 1400) and png.std() > 20  # not blank: the page and its crops
