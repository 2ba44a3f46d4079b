"""Level anchors on the model's validation split: naming with the true T1 as anchor, and the re-measure time.

For each validation film (``metadata.json`` ``training.split.val_images``) the packaged coronal model
analyses the film once (:func:`~SpineAlignmentLib.pipeline.analyze`); then the centre of the reference
T1 (mean of its four corners in the AASCE label) is given as the anchor *this vertebra is T1* and the
chain is re-named and re-measured (:func:`~SpineAlignmentLib.pipeline.reanchor`, timed). A chain is
named right when every predicted vertebra's nearest reference vertebra carries its name
(:func:`~SpineAlignmentLib.evaluation.levels.named_right`): counted on the final landmarks and on the
chain as chosen from the candidates (their first-stage corners, before the second stage moves them). Run single-threaded::

    OMP_NUM_THREADS=1 python Testing/Python/benchmark_level_anchor.py --data ../shared/datasets/aasce-train
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="AASCE-layout dataset (images/, labels/*.mat)")
    p.add_argument("--model", default="coronal-spine-landmarks")
    p.add_argument("--limit", type=int, default=0, help="only the first N validation films (0: all)")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("SpineAlignmentLib.training.hygiene").setLevel(logging.ERROR)
    from SpineAlignmentLib.errors import SpineAlignmentError
    from SpineAlignmentLib.evaluation.levels import level_shift, named_right
    from SpineAlignmentLib.imaging import read_radiograph
    from SpineAlignmentLib.inference.anchor import LevelAnchor
    from SpineAlignmentLib.models.registry import load_model
    from SpineAlignmentLib.pipeline import analyze, reanchor
    from SpineAlignmentLib.training.dataset import load_samples

    model = load_model(a.model)
    val = set(model.metadata["training"]["split"]["val_images"])
    samples, _ = load_samples(Path(a.data))
    samples = [s for s in samples if s.name in val][: a.limit or None]
    ids = model.landmark_ids
    before = right = chain_right = 0
    times, failures = [], []
    for s in samples:
        res = analyze(read_radiograph(s.image_path), "coronal-spine", model=model)
        pred = np.array([[res.landmarks[i].x, res.landmarks[i].y] for i in ids])
        before += named_right(pred, s.points)
        t1 = np.asarray(s.points[:4], dtype=float).mean(axis=0)
        t0 = time.perf_counter()
        try:
            new = reanchor(res, LevelAnchor("user", "T1", float(t1[0]), float(t1[1])))
        except SpineAlignmentError as exc:
            failures.append({"image": s.name, "reason": str(exc)})
            continue
        times.append(time.perf_counter() - t0)
        got = np.array([[new.landmarks[i].x, new.landmarks[i].y] for i in ids])
        st = new.chain  # the chain as chosen from the candidates (first-stage corners), before the second stage
        chain_right += named_right(st.geo.to_original(st.corners[st.chain].reshape(-1, 2)), s.points)
        if named_right(got, s.points):
            right += 1
        else:
            failures.append({"image": s.name, "shift": level_shift(got, s.points)})
    n = len(samples)
    print(json.dumps({"n_films": n, "named_right_unanchored": int(before), "named_right_with_true_T1": right,
                      "chain_named_right_with_true_T1": int(chain_right),
                      "named_right_pct": round(100.0 * right / max(n, 1), 1),
                      "reanchor_seconds_median": round(float(np.median(times)), 4) if times else None,
                      "reanchor_seconds_max": round(float(np.max(times)), 4) if times else None,
                      "failures": failures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
