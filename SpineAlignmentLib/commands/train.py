"""``spine-align train``: train a protocol's model on a dataset folder.

Which trainer runs follows from the protocol table and the data: a protocol whose table lists
``segments`` trains a segmentation network (clavicle masks); a folder in the AASCE layout (``images/`` +
``labels/*.mat``) trains the specialised coronal vertebra network (the only layout it reads); any other
folder is a dataset-format folder (docs/dataset-format.md) and trains the generic two-stage landmark
model of :mod:`SpineAlignmentLib.training.generic`, for every protocol: by default its level-sequence first
stage (:mod:`SpineAlignmentLib.models.level_family`) where the protocol's landmarks name vertebral levels,
``--trainer generic`` for one heatmap per landmark.
"""

from __future__ import annotations

import argparse
import json

from . import add_progress_option, count, count0, input_side, open_fraction, positive, positive0, probability, shows_progress

HELP = "train a protocol's landmark (or segmentation) model on a dataset folder (resumable run folder with metrics and checkpoints)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", default="coronal-spine", help="protocol whose landmarks are learnt (default: coronal-spine)")
    parser.add_argument("--data", required=True,
                        help="dataset folder: the dataset format of docs/dataset-format.md (any protocol; generic trainer), "
                             "or the AASCE layout images/ + labels/ (coronal vertebra network), or the clavicle-mask layout")
    parser.add_argument("--out", required=True, help="run folder (created); holds checkpoints, metrics.jsonl, split.json, hygiene.json")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--epochs", type=count, default=60, help="total epochs (default 60)")
    parser.add_argument("--batch-size", type=count, default=None, help="images per step (default 8; 4 for segmentation)")
    parser.add_argument("--lr", type=positive, default=2e-3, help="peak learning rate (AdamW, cosine schedule)")
    parser.add_argument("--input-size", type=input_side, nargs=2, default=None, metavar=("ROWS", "COLS"),
                        help="network input (letterbox) size, divisible by 64 (default 512 256; 512 512 for segmentation)")
    parser.add_argument("--val-fraction", type=open_fraction, default=None,
                        help="fraction of images held out by patient (default 0.2; 0.15 for segmentation, which also "
                             "keeps 0.15 apart as a test split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=count, default=2, help="torch CPU threads")
    parser.add_argument("--time-limit", type=positive, default=None, metavar="MIN",
                        help="stop after the epoch that passes this many minutes (resume later)")
    parser.add_argument("--max-images", type=count, default=None, help="use only the first N usable images (smoke tests)")
    parser.add_argument("--representation", choices=("vertebra", "landmark"), default="vertebra",
                        help="vertebra: centre heatmap + corner offsets + corner heatmaps (default); "
                             "landmark: one DSNT heatmap per corner")
    parser.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                        help="start from these weights (a run's .pt checkpoint or a packaged model.pt; segmentation too: a "
                             "warm restart); landmark heads: extra "
                             "channels start as copies of the centre map; own-data trainers: a run's last.pt (both "
                             "stages) or a model folder's model.pt (with the refine.pt beside it)")
    parser.add_argument("--anchors", action="store_true",
                        help="vertebra representation: also learn T1 and L5 anchor maps, used to choose the first and "
                             "last vertebra (experimental: in a 10-epoch fine-tune they did not help yet)")
    parser.add_argument("--warmup", type=positive0, default=None, metavar="EPOCHS",
                        help="linear warm-up epochs (default: 2 for landmarks, 1 for refine and levels)")
    parser.add_argument("--stage", choices=("landmarks", "refine", "levels"), default="landmarks",
                        help="landmarks: the whole-image first stage (default); refine: the second-stage ROI "
                             "network that refines each vertebra's corners; levels: the identification network "
                             "that tells which detected vertebra is T1 and which L5 (experimental: in two 20-epoch "
                             "runs, and a 24-epoch run with --framings 8, it did not name more validation images right "
                             "than the first stage alone, on the films as they are or re-framed)")
    parser.add_argument("--stage1", default="coronal-spine-landmarks", metavar="MODEL",
                        help="--stage refine or levels: packaged first-stage model (name or folder) whose validation "
                             "predictions the network is evaluated on (default coronal-spine-landmarks)")
    parser.add_argument("--tilt-weight", type=positive0, default=0.0, metavar="W",
                        help="--stage refine: add W x the mid-line angle error (degrees) to the loss (default 0)")
    parser.add_argument("--framings", type=count0, default=0, metavar="N",
                        help="--stage levels: also mine first-stage candidates on N re-framed copies of each training "
                             "image (top moved between C4 and T3, bottom between L4 and below the sacrum; default 0)")
    parser.add_argument("--reframe", type=probability, default=0.0, metavar="P",
                        help="coronal vertebra network: re-frame each training film with probability P (its top moved "
                             "between C4 and T3, its bottom between L4 and below the sacrum), so that the network cannot "
                             "learn 'the topmost vertebra is T1'; default 0; a 20-epoch fine-tune of the shipped "
                             "first stage with 0.5 did not name more validation images right: 75 of 94 against 76)")
    parser.add_argument("--neck", type=probability, default=0.0, metavar="P",
                        help="coronal-spine first stage (the vertebra network and the level family): give a training "
                             "film a synthetic neck above T1 (cervical vertebrae without ribs, built from the film's own "
                             "T1) with probability P")
    parser.add_argument("--neck-copies", type=count0, default=0, metavar="N",
                        help="--stage levels: N copies of each training image with a synthetic neck above T1 join the "
                             "training set (the identification network then sees C7 and C6 without ribs; default 0)")
    parser.add_argument("--crop", type=probability, default=None, metavar="P",
                        help="generic and level-family trainers: show a training film cropped to part of its labelled "
                             "span (30-80 %% of it, zoomed to fill the input) with probability P, so that a film framed on "
                             "part of the spine is named by its anatomy, not by where it starts (default 0)")
    parser.add_argument("--trainer", choices=("auto", "generic", "levels", "vertebra"), default="auto",
                        help="auto (default): the AASCE layout trains the coronal vertebra network, a dataset-format "
                             "folder the level-sequence family (levels) when the protocol's landmarks name vertebral "
                             "levels, else the per-landmark model; levels: one shared level-centre map, part offsets, "
                             "landmarks off the film reported as not found; generic: one heatmap per landmark (the "
                             "design before the family; docs/training.md compares them); vertebra forces the coronal "
                             "network")
    parser.add_argument("--val-list", default=None, metavar="FILE",
                        help="every landmark trainer and stage: validation images named in FILE (one per line, or a "
                             "split.json) instead of a patient split, so that runs of different trainers are measured on "
                             "the same films (give --stage refine / levels the list their first stage trained with)")
    g = parser.add_argument_group("generic landmark trainer (dataset-format folders)")
    g.add_argument("--refine-epochs", type=count0, default=None,
                   help="epochs of the second stage (one ROI per vertebral level; default 30, 0 = none)")
    g.add_argument("--train-images", type=count, default=None, metavar="N",
                   help="train on N training films only (whole patients; for learning curves)")
    g.add_argument("--val-every", type=count, default=None, metavar="N", help="validate every N epochs (default 1)")
    add_progress_option(parser)


def check_inputs(args: argparse.Namespace) -> None:
    """The files and folders named on the command line, checked before any film is read or any epoch runs.

    Raises:
        SpineAlignmentError: ``--data`` is not a folder, or ``--val-list`` / ``--init-from`` is not a readable
            regular file (a FIFO is refused without being opened, so nothing blocks).
    """
    import os
    import stat

    from ..errors import SpineAlignmentError
    from ..safefiles import check_input_file, describe_os_error

    try:
        st = os.stat(args.data)
    except OSError as exc:  # missing, a name too long, a link loop
        raise SpineAlignmentError(f"{args.data}: the dataset folder {describe_os_error(exc)}; check the path given "
                                  "with --data.") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SpineAlignmentError(f"{args.data}: is not a folder; give the dataset folder with --data.")
    if getattr(args, "val_list", None):
        check_input_file(args.val_list, what="validation list (--val-list: one image name a line, or a split.json)")
    if getattr(args, "init_from", None):
        check_input_file(args.init_from, what="checkpoint (--init-from)")


def run(args: argparse.Namespace) -> int:
    from ..errors import SpineAlignmentError
    from ..protocols import get_protocol

    check_inputs(args)
    if get_protocol(args.protocol).model_kinds[0] == "segmentation":
        # Protocols whose table's first model kind is segmentation learn masks (landmarks follow from the masks).
        from ..training.segmentation import SegConfig, train_segmentation

        kw = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                                "seed": args.seed, "threads": args.threads, "time_limit_min": args.time_limit,
                                "max_images": args.max_images, "warmup_epochs": args.warmup,
                                "init_from": args.init_from}.items() if v is not None}
        if args.input_size is not None:
            kw["input_shape"] = tuple(args.input_size)
        if args.val_fraction is not None:
            kw["val_fraction"] = args.val_fraction
        cfg = SegConfig(protocol=args.protocol, data=str(args.data), out=str(args.out), **kw)
        print(json.dumps(train_segmentation(cfg, resume=args.resume, progress=shows_progress(args)), indent=1))
        return 0
    if args.stage in ("refine", "levels"):
        if args.stage == "refine":
            from ..training.refiner import RefinerConfig as Config, train_refiner as train_stage
        else:
            from ..training.levels import LevelsConfig as Config, train_levels as train_stage

        scfg = Config(
            protocol=args.protocol, data=str(args.data), out=str(args.out), stage1=args.stage1,
            epochs=args.epochs, lr=args.lr, seed=args.seed, threads=args.threads,
            time_limit_min=args.time_limit, max_images=args.max_images, val_list=args.val_list,
            **({"val_fraction": args.val_fraction} if args.val_fraction is not None else {}),
            **({"warmup_epochs": args.warmup} if args.warmup is not None else {}),
            **({"tilt_weight": args.tilt_weight} if args.stage == "refine" else
               {"framings": args.framings, "neck": args.neck_copies}))
        print(json.dumps(train_stage(scfg, resume=args.resume, progress=shows_progress(args)), indent=1))
        return 0
    if args.trainer in ("generic", "levels") or (args.trainer == "auto" and not _aasce_layout(args.data)):
        return _run_generic(args)
    if args.crop is not None:
        raise SpineAlignmentError("--crop is an option of the own-data trainers (a dataset-format folder, or "
                                  "--trainer generic/levels); the coronal vertebra network re-frames with --reframe P.")
    from ..training.trainer import TrainConfig, train

    cfg = TrainConfig(
        protocol=args.protocol, data=str(args.data), out=str(args.out),
        **({"input_shape": tuple(args.input_size)} if args.input_size is not None else {}),
        **({"batch_size": args.batch_size} if args.batch_size is not None else {}),
        **({"val_fraction": args.val_fraction} if args.val_fraction is not None else {}),
        epochs=args.epochs, lr=args.lr,
        seed=args.seed, threads=args.threads, time_limit_min=args.time_limit, max_images=args.max_images,
        representation=args.representation, init_from=args.init_from,
        **({"warmup_epochs": args.warmup} if args.warmup is not None else {}),
        anchors=args.anchors, reframe=args.reframe, neck=args.neck, val_list=args.val_list,
    )
    best = train(cfg, resume=args.resume, progress=shows_progress(args))
    print(json.dumps(best, indent=1))
    return 0


def _aasce_layout(folder) -> bool:
    from pathlib import Path

    labels = Path(folder) / "labels"
    return (Path(folder) / "images").is_dir() and labels.is_dir() and any(labels.glob("*.mat"))


def _run_generic(args: argparse.Namespace) -> int:
    from ..errors import SpineAlignmentError
    from ..training.generic import GenericConfig, train_generic

    kw = {k: v for k, v in {"batch_size": args.batch_size, "val_fraction": args.val_fraction, "warmup_epochs": args.warmup,
                            "refine_epochs": args.refine_epochs, "val_list": args.val_list,
                            "train_images": args.train_images, "val_every": args.val_every,
                            "time_limit_min": args.time_limit, "crop": args.crop, "init_from": args.init_from}.items()
          if v is not None}
    if args.reframe:
        raise SpineAlignmentError("--reframe is an option of the coronal vertebra network; the own-data trainers show "
                                  "films framed on part of the spine with --crop P.")
    kw["neck"] = args.neck
    if args.input_size is not None:
        kw["input_shape"] = tuple(args.input_size)
    if args.trainer == "auto":
        # measured better than one heatmap per landmark on synthetic whole-spine films (docs/training.md)
        from ..models.level_family import is_level_sequence
        from ..protocols import get_protocol

        kw["family"] = "levels" if is_level_sequence(get_protocol(args.protocol).landmark_ids) else "landmarks"
    else:
        kw["family"] = "levels" if args.trainer == "levels" else "landmarks"
    cfg = GenericConfig(protocol=args.protocol, data=str(args.data), out=str(args.out), epochs=args.epochs, lr=args.lr,
                        seed=args.seed, threads=args.threads, **kw)
    print(json.dumps(train_generic(cfg, resume=args.resume, progress=shows_progress(args)), indent=1))
    return 0
