#!/usr/bin/env python
"""Batch benchmark (a script, not a test): ``batch``'s time per film, end to end, against the network's own time.

Usage::

    OMP_NUM_THREADS=1 python Testing/Python/benchmark_batch.py [--images DIR] [--n 10] [--threads 1]
        [--model coronal-spine-landmarks] [--protocol coronal-spine]

For ``--n`` films taken evenly from ``--images`` (default: the AASCE training films in
``../shared/datasets/aasce-train/images`` beside the repository; they are read where they are, never copied), after start-up
(imports, model load and one warm-up film, timed separately) it measures per film:

- **network**: the model's own landmark detection (``inference.predict``: preprocessing, both network
  stages, decoding) on the film already read;
- **batch**: what ``spine-align batch`` does per film (``batch.analyze_one``): read the file, detect,
  measure, write the result JSON, the Slicer markups and the overlay PNG;
- **overlay**: the overlay PNG alone (``io.overlay.render_overlay``), a part of *batch*.

It prints the medians and totals and the ratio batch / network (issue 24's target: at most 2.5).
State the machine's load with the figures: a shared machine slows both sides.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DEFAULT_IMAGES = REPO.parent / "shared" / "datasets" / "aasce-train" / "images"  # ../shared/datasets beside the repository


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of films (default: AASCE training films)")
    p.add_argument("--n", type=int, default=10, help="films, taken evenly from the folder (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; the target names 2 cores)")
    p.add_argument("--model", default="coronal-spine-landmarks")
    p.add_argument("--protocol", default="coronal-spine")
    a = p.parse_args(argv)

    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(a.threads)
    from SpineAlignmentLib.batch import analyze_one
    from SpineAlignmentLib.imaging import read_radiograph
    from SpineAlignmentLib.inference import predict
    from SpineAlignmentLib.io.overlay import render_overlay
    from SpineAlignmentLib.models.registry import load_model

    if not a.images.is_dir():
        print(f"{a.images}: no such folder; give --images DIR with films.", file=sys.stderr)
        return 2
    films = sorted(f for f in a.images.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".dcm"))
    if not films:
        print(f"{a.images}: no films (.jpg, .png, .dcm) found.", file=sys.stderr)
        return 2
    step = max(1, len(films) // a.n)
    films = films[::step][: a.n]

    model = load_model(a.model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        analyze_one(films[0], a.protocol, out / "warm", model=a.model)  # warm-up: oneDNN kernels, fonts, imports
        startup = time.perf_counter() - t_start
        network, batch, overlay = [], [], []
        for k, film in enumerate(films):
            rg = read_radiograph(film)
            t = time.perf_counter()
            predict(rg, model, info={})
            network.append(time.perf_counter() - t)
            t = time.perf_counter()
            res = analyze_one(film, a.protocol, out, model=a.model, name=f"f{k}")
            batch.append(time.perf_counter() - t)
            t = time.perf_counter()
            render_overlay(rg.pixels, res, out / f"again{k}.png")
            overlay.append(time.perf_counter() - t)
            rows, cols = rg.shape[:2]
            print(f"{film.name[:40]:40s} {rows}x{cols}  network {network[-1]:.3f} s  batch {batch[-1]:.3f} s  "
                  f"overlay {overlay[-1]:.3f} s", flush=True)
    med = statistics.median
    print(f"films: {len(films)} from {a.images} (read in place); model {model.name} {model.version}; "
          f"protocol {a.protocol}; outputs JSON + markups + overlay")
    print(f"threads: torch {a.threads}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"CPUs seen: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    print(f"start-up (imports, model load, one warm-up film): {startup:.1f} s")
    print(f"network per film: median {med(network):.3f} s, total {sum(network):.2f} s")
    print(f"batch per film (read, detect, measure, JSON, markups, overlay): median {med(batch):.3f} s, "
          f"total {sum(batch):.2f} s")
    print(f"overlay per film: median {med(overlay):.3f} s ({100 * sum(overlay) / sum(batch):.0f} % of batch)")
    print(f"ratio batch / network (totals): {sum(batch) / sum(network):.2f}x (target <= 2.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
