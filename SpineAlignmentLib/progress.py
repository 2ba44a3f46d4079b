"""Whether a command draws its progress bar on stderr: the one rule for ``spine-align`` and the ``python -m``
entry points of the training package (core floor, so both reach it)."""

from __future__ import annotations

import argparse

__all__ = ["add_progress_option", "shows_progress"]


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` of the commands that draw a progress bar on stderr (``-q`` silences it too)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr (-q: none either)")


def shows_progress(args: argparse.Namespace) -> bool:
    """Whether a command draws its progress bar: not with ``-q`` (spine-align's own option) or ``--no-progress``."""
    return not (getattr(args, "quiet", False) or getattr(args, "no_progress", False))
