"""Coronal models on validation films and on neck-visible copies of them: all 17 vertebrae named right (a
measurement tool, not a test).

The AASCE films are cut tight above T1; clinical AP films show more neck, where a network that learnt "the topmost
vertebra is T1" calls C7 T1. Every validation film is predicted as it is and as ``--necks`` copies with a synthetic
neck above T1 whose top lies 1-2 T1-T2 spacings above T1 (:func:`SpineAlignmentLib.training.neck.add_neck`, the
neck-visible validation framing of docs/training.md; the same copies for every model: seeded per film), through
:func:`SpineAlignmentLib.inference.predict.predict_array` with both stages. A film counts as named right when all
17 vertebrae are found and each one's nearest reference vertebra is its own (a missed level is not named right);
the level shift is the median offset of the vertebrae found (+1: the chain one level too low, -1: C7 called T1).

    python Testing/Python/neck_naming.py Resources/Models/coronal-spine-landmarks MODELS/fam-s1 \\
        --data ../shared/datasets/aasce-train --val-list VAL.txt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model folders")
    ap.add_argument("--data", required=True, help="the AASCE-layout folder (images/, labels/)")
    ap.add_argument("--val-list", required=True, help="validation film names, one per line")
    ap.add_argument("--necks", type=int, default=2, help="neck-visible copies per film (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch
    from PIL import Image

    from SpineAlignmentLib.evaluation.levels import _nearest_reference
    from SpineAlignmentLib.inference.predict import predict_array
    from SpineAlignmentLib.models.registry import load_model
    from SpineAlignmentLib.training.dataset import load_samples
    from SpineAlignmentLib.training.neck import VALIDATION_MARGIN, add_neck

    torch.set_num_threads(a.threads)
    wanted = {ln.strip() for ln in Path(a.val_list).read_text().splitlines() if ln.strip()}
    samples = [s for s in load_samples(Path(a.data))[0] if s.name in wanted]
    models = [load_model(Path(m).name, folder=Path(m)) for m in a.models]
    tally = {m: {k: {"films": 0, "named_right": 0, "shift": {}} for k in ("original", "neck")} for m in a.models}
    for i, s in enumerate(samples):
        with Image.open(s.image_path) as im:
            pixels = np.asarray(im.convert("L"), dtype=np.float32)
        rng = np.random.default_rng((a.seed, i))
        films = [("original", pixels, s.points)]
        for _ in range(a.necks):
            m, nrng = float(rng.uniform(*VALIDATION_MARGIN)), np.random.default_rng(rng.integers(1 << 62))
            films.append(("neck", *add_neck(pixels, s.points, m, nrng)))
        for path, model in zip(a.models, models):
            for kind, film, truth in films:
                pred, _ = predict_array(film, model)
                found = np.isfinite(pred).all(axis=1).reshape(-1, 4).all(axis=1)
                t = tally[path][kind]
                t["films"] += 1
                if found.any():
                    keep = np.repeat(found, 4)
                    nearest = _nearest_reference(pred[keep], truth)
                    own = np.where(found)[0]
                    t["named_right"] += int(found.all() and np.all(nearest == own))
                    shift = str(int(np.median(nearest - own)))
                    t["shift"][shift] = t["shift"].get(shift, 0) + 1
    print(json.dumps(tally, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
