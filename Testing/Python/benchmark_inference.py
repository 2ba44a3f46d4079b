#!/usr/bin/env python
"""Inference benchmark (a script, not a test): seconds per image, peak RSS, images per minute.

Usage::

    python Testing/Python/benchmark_inference.py [--model coronal-spine-landmarks] [--images DIR_OR_FILES ...]
        [--repeat 10] [--threads 2] [--flip-tta] [--spacing ROW COL] [--patient-orientation X,Y] [--record]

``--record`` writes the figures into the model's ``metadata.json`` (block
``benchmark``, tied to the SHA-256 of every weights file of the model, so new
weights in any stage drop them) and regenerates its model card, so no
measured figure is typed in by hand.

Each timed run is end to end: read the file (``read_radiograph``), predict the
landmarks with any kind of model (``inference.predict``: heatmaps, or masks and
their keypoints) and measure the parameters
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
    p.add_argument("--spacing", nargs=2, type=float, default=None, metavar=("ROW", "COL"),
                   help="pixel spacing for non-DICOM images (e.g. 0.35 0.35 for JSRT films)")
    p.add_argument("--patient-orientation", default=None, metavar="X,Y", help="e.g. L,F")
    p.add_argument("--record", action="store_true",
                   help="write the figures into the model's metadata.json and model card")
    p.add_argument("--machine", default="2-core CPU, no other job running",
                   help="machine description recorded with --record")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from SpineAlignmentLib.imaging import read_radiograph
    from SpineAlignmentLib.inference import predict
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
        rg = read_radiograph(path, spacing=tuple(a.spacing) if a.spacing else None,
                             patient_orientation=a.patient_orientation)
        lms, warns, _ = predict(rg, model, flip_tta=a.flip_tta, info={})  # with the level confidence, as analyze
        measure(lms, model.protocol, image_size=rg.shape, spacing_mm=rg.spacing_mm, calibration=rg.calibration,
                patient_orientation=rg.patient_orientation)
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
    if a.record:
        figures = {"seconds_per_image_median": round(statistics.median(per_image), 3),
                   "images_per_minute": round(60.0 * a.batch / batch_s), "peak_rss_mb": round(peak_rss_mb())}
        path = record(model, a, files, figures, " ".join(["python Testing/Python/benchmark_inference.py"] + _public_args(argv)))
        print(f"recorded in {path}")
    return 0


def _public_args(argv) -> list[str]:
    """The measuring command's arguments as recorded: image paths become a placeholder (no machine paths);
    the recording options themselves are left out."""
    out, skip = [], False
    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith("--"):
            skip = arg in ("--images", "--machine")  # their values are not recorded
            if arg == "--images":
                out += [arg, "DIR"]
            elif arg not in ("--record", "--machine"):
                out.append(arg)
        elif not skip:
            out.append(arg)
    return out


def record(model, a, files: list[Path], figures: dict, command: str) -> Path:
    """Merge the figures into ``metadata.json`` (``benchmark``; the flip-TTA run under ``flip_tta``) and
    regenerate the model card. Figures recorded for other weights are dropped."""
    import json

    import torch

    from SpineAlignmentLib.models.registry import weights_checksums
    from SpineAlignmentLib.training.card import write_card
    from SpineAlignmentLib.training.model_folder import write_metadata

    path = model.folder / "metadata.json"
    md = json.loads(path.read_text())
    # Every stage's weights: a new second stage on unchanged first-stage weights changes the speed too.
    sha = weights_checksums(md)
    bench = md.get("benchmark") or {}
    if bench.get("weights_sha256") != sha:
        bench = {}
    run = {**figures, "command": command, "threads": a.threads,
           "images": f"{len(files)} file(s), {', '.join(f.name for f in files[:3])}{', ...' if len(files) > 3 else ''}"}
    bench.update({"weights_sha256": sha, "machine": f"{a.machine}, torch {torch.__version__.split('+')[0]}"})
    bench["flip_tta" if a.flip_tta else "plain"] = run

    def says(label: str, r: dict) -> str:
        return (f"{label}: median {r['seconds_per_image_median']:.3f} s per image, {r['images_per_minute']} images per "
                f"minute, peak RSS {r['peak_rss_mb']} MB ({r['threads']} threads, {r['images']}; `{r['command']}`)")

    parts = [says(label, bench[k]) for k, label in (("plain", "Plain"), ("flip_tta", "Flip TTA")) if k in bench]
    bench["summary"] = (f"End to end (read the image, predict, measure) on a {bench['machine']}. " + ". ".join(parts) + ".")
    md["benchmark"] = bench
    write_metadata(md, model.folder)
    write_card(md, model.folder)
    return path


if __name__ == "__main__":
    sys.exit(main())
