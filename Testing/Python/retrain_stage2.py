"""Retrain the second stage of a finished own-data run on its unchanged first stage (a measurement tool, not a test).

Copies the run's settings and split into a new run folder, writes a checkpoint that holds the source run's
first-stage weights as a finished first stage (no decoding choice: it is made again on the training films, as
a new run makes it), and resumes there with today's second-stage settings (``--rotate 0``: upright ROIs,
the design before 2026-12-07). The first stage is not trained again; the second stage trains from scratch for the
run's own number of stage-2 epochs. Export and measure the new run as any other (``spine-align export``).

    python Testing/Python/retrain_stage2.py runs/fam-s1 runs/fam-s1-turned
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished run folder of spine-align train (own-data trainers)")
    ap.add_argument("out", help="the new run folder (must not exist)")
    ap.add_argument("--rotate", type=int, choices=(0, 1), default=1, help="turn the stage-2 ROIs along the spine (1)")
    ap.add_argument("--angle-sd", type=float, default=None,
                    help="simulated error of the turn in training, degrees (default: today's setting)")
    ap.add_argument("--roi-extent", type=float, default=None,
                    help="ROI side in median level-group sizes (default: the run's own setting)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    import torch

    from SpineAlignmentLib.protocols import get_protocol
    from SpineAlignmentLib.training.checkpoint import load_checkpoint, save_checkpoint
    from SpineAlignmentLib.training.generic import GenericConfig, build_stage1, train_generic
    from SpineAlignmentLib.training.loop import stored_config

    src, dst = Path(a.run), Path(a.out)
    dst.mkdir(parents=True)
    for name in ("config.json", "dataset.json", "split.json"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    state = load_checkpoint(src / "last.pt")
    stage1 = state["stage1"] if state.get("stage") == 2 else state["model"]
    cfg = stored_config(GenericConfig, state["config"])
    cfg.out, cfg.roi_rotate = str(dst), bool(a.rotate)
    if a.angle_sd is not None:
        cfg.roi_angle_sd = a.angle_sd
    else:
        cfg.roi_angle_sd = GenericConfig.roi_angle_sd
    if a.roi_extent is not None:
        cfg.roi_extent = a.roi_extent
    ids = get_protocol(cfg.protocol).landmark_ids
    net = build_stage1(cfg, ids)
    net.load_state_dict(stage1)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)  # never stepped: the first stage is finished
    save_checkpoint(dst / "last.pt", {"stage": 1, "model": stage1, "optimizer": opt.state_dict(), "epoch": cfg.epochs - 1,
                                      "config": asdict(cfg), "best": state.get("best") or {}, "landmark_ids": list(ids)})
    print(train_generic(GenericConfig(out=str(dst), protocol=cfg.protocol, data=cfg.data, threads=a.threads,
                                      epochs=cfg.epochs, refine_epochs=cfg.refine_epochs), resume=True, progress=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
