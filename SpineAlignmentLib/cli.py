"""``spine-align`` command line: one entry point, one module per sub-command.

Each module in :mod:`SpineAlignmentLib.commands` exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors a user can fix
(:class:`~SpineAlignmentLib.errors.SpineAlignmentError`) print one sentence and
exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from . import __version__
from .errors import SpineAlignmentError
from .safefiles import describe_os_error

#: Sub-command name -> module under SpineAlignmentLib.commands
COMMANDS = {
    "protocols": "protocols",
    "info": "info",
    "measure": "measure",
    "analyze": "analyze",
    "batch": "batch",
    "review": "review",
    "train": "train",
    "export": "export",
    "evaluate": "evaluate",
    "dataset": "dataset",
    "models": "models",
}

log = logging.getLogger("SpineAlignmentLib")


def _load(name: str):
    return importlib.import_module(f"SpineAlignmentLib.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spine-align",
        description="Measure spinal alignment on radiographs (SpineAlignment).",
    )
    parser.add_argument("--version", action="version", version=f"spine-align (SpineAlignmentLib) {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:
            # A sub-command whose optional dependencies are missing stays listed with the reason.
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(_unavailable=str(exc))
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO)
    # third-party libraries (highdicom: 16 INFO lines per SR) speak only at WARNING unless --debug
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    log.setLevel(level)
    if not args.debug:
        # pydicom repeats a header problem (an unknown character set, a malformed UID) at every access; the
        # readers say what matters in one sentence, and --debug shows pydicom's own lines.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_unavailable", None):
        print(f"spine-align {args.command}: not available ({args._unavailable}); "
              "install the development extras: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except SpineAlignmentError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`spine-align protocols --json | head`): stop quietly, and
        # point stdout at /dev/null so that the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a tool killed by the signal reports
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory; analyse fewer or smaller images at a time.", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file system failure outside the per-file checks (disk full, read-only folder while writing
        # a table): one sentence naming the path; the finished results stay where they are.
        if args.debug:
            raise
        where = exc.filename or "a file"
        print(f"error: {where}: {describe_os_error(exc)}; free space or fix the folder's permissions, then "
              "run again (finished results are kept).", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
