"""Sub-commands of ``spine-align`` (one module each) and the options they share."""

from __future__ import annotations

import argparse
import logging
import math

from ..progress import add_progress_option, shows_progress  # noqa: F401 (the commands import them from here)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_mm(text: str) -> float:
    """argparse type: one pixel spacing in mm, as :func:`~SpineAlignmentLib.imaging.calibration.validate_spacing` allows."""
    from ..errors import CalibrationError
    from ..imaging.calibration import validate_spacing

    try:
        return validate_spacing(text, text, what="--spacing")[0]
    except CalibrationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def probability(text: str) -> float:
    """argparse type: a finite number in [0, 1] (a confidence threshold)."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a confidence between 0 and 1")
    return value


def degrees(text: str) -> float:
    """argparse type: a finite angle in [0, 90] degrees (smallest curve reported)."""
    value = _number(text)
    if not 0.0 <= value <= 90.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an angle between 0 and 90 degrees")
    return value


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r} is less than {least}")
    return value


def count(text: str) -> int:
    """argparse type: a whole number of at least 1 (epochs, images per step, threads)."""
    return _whole(text, 1)


def count0(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    return _whole(text, 0)


def positive(text: str) -> float:
    """argparse type: a finite number above 0 (a learning rate, minutes)."""
    value = _number(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not above 0")
    return value


def positive0(text: str) -> float:
    """argparse type: a finite number of at least 0 (warm-up epochs, a loss weight)."""
    value = _number(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def open_fraction(text: str) -> float:
    """argparse type: a fraction strictly between 0 and 1 (a validation split)."""
    value = _number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1 (both excluded)")
    return value


#: Network input sides are multiples of this (the generic network halves the image 6 times).
INPUT_MULTIPLE = 64
#: Largest network input side accepted (a 4096 x 4096 input already needs tens of GB to train).
MAX_INPUT_SIDE = 4096


def input_side(text: str) -> int:
    """argparse type: one network input side: a multiple of :data:`INPUT_MULTIPLE` up to :data:`MAX_INPUT_SIDE`."""
    value = _whole(text, 0)
    if value == 0 or value % INPUT_MULTIPLE or value > MAX_INPUT_SIDE:
        raise argparse.ArgumentTypeError(f"{text!r} is not a multiple of {INPUT_MULTIPLE} between {INPUT_MULTIPLE} "
                                         f"and {MAX_INPUT_SIDE} (the network halves its input 6 times), e.g. 512 256")
    return value


def add_min_confidence(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-confidence", type=probability, default=None, metavar="C",
                        help="landmarks with a model confidence below C (0..1) are not trusted (default 0.3)")


def note_save_masks(args: argparse.Namespace, protocol) -> None:
    """Say once, before any work, that ``--save-masks`` writes nothing for a protocol without a segmentation model."""
    if getattr(args, "save_masks", False) and "segmentation" not in protocol.model_kinds:
        logging.getLogger("SpineAlignmentLib").warning(
            "--save-masks: protocol '%s' takes %s models, not a segmentation model, so no masks are written.",
            protocol.id, " or ".join(protocol.model_kinds))


def add_image_options(parser: argparse.ArgumentParser) -> None:
    """Options of every command that analyses images: model, spacing, orientation, flip TTA."""
    parser.add_argument("--model", help="registered model name (default: the protocol's model, if any)")
    parser.add_argument("--spacing", nargs=2, type=positive_mm, metavar=("ROW", "COL"),
                        help="pixel spacing in mm for every image (label manual:user); overrides DICOM tags; "
                             "without it non-DICOM images give angles and ratios only")
    parser.add_argument("--patient-orientation", metavar="X,Y",
                        help="DICOM Patient Orientation when files lack it, e.g. L,F (patient's left on image right)")
    parser.add_argument("--flip-tta", action="store_true", help="average the model with its mirrored prediction")
    parser.add_argument("--level-anchors", metavar="FILE.csv",
                        help="re-name a model's vertebra chain per film: rows image,level,x,y (the vertebra at x, y "
                             "in image pixels is that level, e.g. T1) or image,shift (-1: the chain is named one "
                             "level too high, its T1 is C7; +1: one level too low); image = the film's path or "
                             "file name (spine-align review writes this file)")
    add_min_confidence(parser)
    parser.add_argument("--save-masks", action="store_true",
                        help="segmentation models (coronal-shoulder): also write <name>.seg.nrrd, the label map on the "
                             "input's pixel grid (0 background, then the protocol's segments; loads in Slicer as a "
                             "segmentation)")
