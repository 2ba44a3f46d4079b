"""A batch's inputs: the image files of the files and folders given."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Iterable

from ..errors import SpineAlignmentError
from ..io.naming import IMAGE_EXTENSIONS
from ..safefiles import describe_os_error

log = logging.getLogger(__name__)


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    return any(name.endswith(ext) for ext in IMAGE_EXTENSIONS)


def collect_inputs(inputs: Iterable[str | Path], *, include_extensionless: bool = True,
                   exclude: str | Path | None = None) -> list[Path]:
    """Image files from files and folders (folders searched recursively), sorted, without duplicates.

    Folders are walked without following links to folders (a link loop cannot
    trap the walk); inside a folder, only regular files (or links to them) are
    taken and anything else (a FIFO, a device, a broken link or a link loop) is
    skipped with a log line. A file named explicitly is always taken, whatever
    it is, so that reading it reports the right reason as that image's failure.

    Args:
        inputs: files or folders.
        include_extensionless: also take files without an extension inside folders (DICOM).
        exclude: a folder whose files are never inputs (the batch's own output folder).

    Raises:
        SpineAlignmentError: if an input does not exist.
    """
    found: dict[Path, None] = {}
    skip = os.path.realpath(exclude) if exclude is not None else None
    for raw in inputs:
        p = Path(raw)
        try:
            is_dir = stat.S_ISDIR(os.stat(p).st_mode)
        except FileNotFoundError:
            if not os.path.lexists(p):
                raise SpineAlignmentError(f"{p}: no such file or folder; check the input path.") from None
            is_dir = False  # a broken link: its reader says so
        except OSError:
            is_dir = False  # a link loop or an unreadable path: its reader says so, as this image's failure
        if not is_dir:
            found[p] = None
            continue
        for f in _walk_files(p, include_extensionless):
            if skip is not None and (os.path.realpath(f) + os.sep).startswith(skip + os.sep):
                continue
            found[f] = None
    return list(found)


def _walk_files(folder: Path, include_extensionless: bool) -> list[Path]:
    """Regular image files below ``folder``, sorted; see :func:`collect_inputs`."""
    out = []

    def on_error(exc: OSError) -> None:
        log.warning("%s: skipped (%s)", exc.filename, describe_os_error(exc))

    for root, dirs, files in os.walk(folder, onerror=on_error):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            f = Path(root) / name
            if name.startswith(".") or not (_is_image(f) or (include_extensionless and "." not in name)):
                continue
            try:
                regular = stat.S_ISREG(os.stat(f).st_mode)
            except OSError as exc:
                log.warning("%s: skipped (%s)", f, describe_os_error(exc))
                continue
            if regular:
                out.append(f)
            else:
                log.warning("%s: skipped (not a regular file)", f)
    return sorted(out)
