"""Time the review page for a large study: generation (first run, crops written; second run, crops reused) and
its load and scroll in headless Chromium.

    python Testing/Python/benchmark_review.py RESULTS_DIR WORK_DIR [--cards 1000]

RESULTS_DIR is a ``spine-align batch`` output of a few films (their result JSON files and summary.csv); the
benchmark writes ``--cards`` copies of those results into WORK_DIR/out, each under its own film name (a
symbolic link in WORK_DIR/films to one of the few films), then runs ``spine-align review`` on it twice and
opens the page in Chromium (load event, then one viewport scrolled per animation frame to the end).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from headless_chromium import Chromium  # noqa: E402

from SpineAlignmentLib.io.review import build_review  # noqa: E402

SCROLL = """new Promise(done => {
  const times = []; let last = performance.now();
  function frame(now) {
    times.push(now - last); last = now;
    if (window.scrollY + innerHeight >= document.body.scrollHeight - 2) { done(times); return; }
    window.scrollBy(0, innerHeight); requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
})"""


def synthesise(results: Path, work: Path, n: int) -> Path:
    with open(results / "summary.csv", newline="", encoding="utf-8") as f:
        films = {Path(row["image"]).name: Path(row["image"]) for row in csv.DictReader(f)}
    templates = [json.loads(p.read_text()) for p in sorted(results.glob("*.json")) if not p.name.endswith(".mrk.json")]
    templates = [t for t in templates if t.get("image") in films]
    out, film_dir = work / "out", work / "films"
    shutil.rmtree(work, ignore_errors=True)
    out.mkdir(parents=True)
    film_dir.mkdir()
    for i in range(n):
        t = json.loads(json.dumps(templates[i % len(templates)]))
        source = films[t["image"]]
        t["image"] = f"film{i:04d}{source.suffix}"
        t["levels"]["confidence"] = round((i * 7919 % 1000) / 1000, 3)  # spread the order
        os.symlink(source, film_dir / t["image"])
        (out / f"film{i:04d}.json").write_text(json.dumps(t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--cards", type=int, default=1000)
    args = ap.parse_args()
    out = synthesise(args.results, args.work, args.cards)
    first = build_review(out, films=[args.work / "films"])
    second = build_review(out, films=[args.work / "films"])
    page = Path(first["page"])
    crops = list((page.parent / "review").glob("*.jpg"))
    figures = {"cards": first["cards"], "first_run_s": first["seconds"], "first_run_crops_s": first["crop_seconds"],
               "second_run_s": second["seconds"], "page_mb": round(page.stat().st_size / 1e6, 2),
               "crop_files": len(crops), "crops_mb": round(sum(p.stat().st_size for p in crops) / 1e6, 1)}
    with Chromium(size=(1400, 1000)) as browser:
        figures["chromium_load_s"] = round(browser.open(page.as_uri()), 3)
        figures["dom_content_loaded_ms"] = browser.js(
            "Math.round(performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd)")
        t0 = time.perf_counter()
        frames = browser.js(SCROLL)[1:]
        figures["scroll_to_end_s"] = round(time.perf_counter() - t0, 2)
        figures["scroll_frames"] = len(frames)
        figures["frame_ms_median"] = round(statistics.median(frames), 1)
        figures["frame_ms_p95"] = round(sorted(frames)[int(0.95 * (len(frames) - 1))], 1)
        figures["frame_ms_max"] = round(max(frames), 1)
        figures["images_loaded_at_end"] = browser.js(
            "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
