"""Synthetic lumbar flexion/extension pairs with landmark files and a pairs manifest (for timing ``batch --pairs``).

Each pair: two 1200 x 1000 noise PNG films and the L1..S1 boxes of ``test_geometry._lumbar_image`` (pair k: flexion
L1 tilted -(k mod 7) deg and shifted k mod 5 px, extension L1 tilted k mod 9 deg), so IROM_L1L2 = k mod 9 + k mod 7.

    python Testing/Python/make_pairs_demo.py OUT_DIR [--pairs 20]
    spine-align batch --pairs OUT_DIR/pairs.csv --protocol lumbar-dynamic --spacing 0.2 0.2 --out OUT_DIR/out
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_geometry import _lumbar_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--pairs", type=int, default=20)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    for k in range(args.pairs):
        pair = f"P{k:02d}"
        films = (("flexion", _lumbar_image([-(k % 7), 0, 0, 0, 0, 0], [k % 5, 0, 0, 0, 0, 0])),
                 ("extension", _lumbar_image([k % 9, 0, 0, 0, 0, 0], [0] * 6, facing=-1)))
        (args.out / pair).mkdir(exist_ok=True)
        for role, points in films:
            Image.fromarray(rng.integers(0, 255, (1200, 1000), dtype=np.uint8)).save(args.out / pair / f"{role}.png")
            (args.out / pair / f"{role}.json").write_text(json.dumps({"protocol": "lumbar-dynamic",
                                                                       "landmarks": points}))
            rows.append((pair, role, f"{pair}/{role}.png", f"{pair}/{role}.json"))
    with open(args.out / "pairs.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("pair", "role", "image", "landmarks"))
        writer.writerows(rows)


if __name__ == "__main__":
    main()
