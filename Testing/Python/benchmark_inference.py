#!/usr/bin/env python
"""Inference benchmark (a script, not a test): seconds per image, peak RSS, images per minute.

Usage::

    python Testing/Python/benchmark_inference.py [--model coronal-spine-landmarks] [--images DIR_OR_FILES ...]
        [--repeat 10] [--threads 2] [--flip-tta]

Each timed run is end to end: read the file (``read_radiograph``), predict the
landmarks (``predict_landmarks``) and measure the parameters
(``pipeline.measure``). The model is loaded once beforehand (its load time is
printed separately). Without ``--images`` the bundled sample image is used.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="coronal-spine-landmarks")
    p.add_argument("--images", nargs="*", default=None, help="image files or folders (default: the bundled sample)")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per image for the median (default 10)")
    p.add_argument("--batch", type=int, default=20, help="images in the throughput run (cycled, default 20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flip-tta", action="store_true")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from SpineAlignmentLib.imaging import read_radiograph
    from SpineAlignmentLib.inference import predict_landmarks
    from SpineAlignmentLib.models.registry import load_model
    from SpineAlignmentLib.pipeline import measure

    files: list[Path] = []
    for item in a.images or [str(REPO / "Resources" / "SampleData" / "aasce-sample-AP.jpg")]:
        path = Path(item)
        files += sorted(f for f in path.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".dcm")) if path.is_dir() else [path]
    if not files:
        print("no images found", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    model = load_model(a.model)
    load_s = time.perf_counter() - t0

    def one(path: Path) -> float:
        t = time.perf_counter()
        rg = read_radiograph(path)
        lms, warns = predict_landmarks(rg, model, flip_tta=a.flip_tta)
        measure(lms, model.protocol, image_size=rg.shape, spacing_mm=rg.spacing_mm, calibration=rg.calibration)
        return time.perf_counter() - t

    one(files[0])  # warm-up (first call allocates and initialises oneDNN kernels)
    per_image = [one(files[i % len(files)]) for i in range(a.repeat)]
    t = time.perf_counter()
    for i in range(a.batch):
        one(files[i % len(files)])
    batch_s = time.perf_counter() - t

    print(f"model: {model.name} {model.version}  threads: {a.threads}  flip TTA: {a.flip_tta}")
    print(f"images: {len(files)} file(s); first: {files[0].name}")
    print(f"model load (incl. SHA-256 check): {load_s:.2f} s")
    print(f"seconds per image (end to end, median of {a.repeat}): {statistics.median(per_image):.3f} s "
          f"(min {min(per_image):.3f}, max {max(per_image):.3f})")
    print(f"batch of {a.batch}: {batch_s:.1f} s = {60.0 * a.batch / batch_s:.1f} images per minute")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
