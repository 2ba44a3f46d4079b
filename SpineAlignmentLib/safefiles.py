"""Checked file access for every input and output path: one place for the limits.

Researchers point this tool at whole PACS exports and shared drives, so any
path may be a named pipe, a device, a folder, a symbolic-link loop, a file
whose header announces a gigantic image, or a JSON file nested a million
levels deep. Every reader goes through :func:`check_input_file` (or
:func:`read_limited` / :func:`load_json_file`, which use it) before it opens
anything, and every writer checks its folder with :func:`check_output_dir` and
names its files with :func:`output_stem` before any work is done.

Limits (documented in README, "Reliability"):

* an image may have at most :data:`MAX_IMAGE_SIDE` pixels a side and
  :data:`MAX_IMAGE_PIXELS` pixels in all; the check uses the header only
  (PIL's header, DICOM Rows x Columns x frames), before any pixel is
  allocated; a DICOM file's pixel data may also not exceed
  :data:`MAX_DECODED_BYTES` decoded;
* a JSON input may be at most :data:`MAX_JSON_BYTES` long and
  :data:`MAX_JSON_DEPTH` levels deep;
* output file names stay within :data:`MAX_NAME_BYTES` bytes (the limit of
  ext4, XFS, APFS and NTFS), shortened with a stable hash when needed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import SpineAlignmentError

__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_IMAGE_FILE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NAME_BYTES",
    "check_image_size",
    "check_input_file",
    "check_output_dir",
    "describe_os_error",
    "json_depth",
    "load_json_file",
    "output_stem",
    "read_limited",
]

#: Largest image side in pixels (a 43 cm detector at 0.02 mm is 21,500 px; real radiographs are under 10,000).
MAX_IMAGE_SIDE = 20_000
#: Largest image in pixels (8000 x 8000; a film scanned at 0.05 mm is 60 M): an analysis of a 63 M pixel
#: PNG peaks at 1.3 GB (README, "Reliability"); a 12000 x 12000 one would need 2.4 GB.
MAX_IMAGE_PIXELS = 64_000_000
#: Largest decoded DICOM pixel data (Rows x Columns x frames x bytes per sample x samples).
MAX_DECODED_BYTES = 1 << 30
#: Largest image file (any format): the decoded limit plus room for headers.
MAX_IMAGE_FILE_BYTES = MAX_DECODED_BYTES + (64 << 20)
#: Largest landmark/result/metadata JSON file (a coronal result with constructions is about 200 kB).
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Deepest JSON nesting accepted (the result format needs 6 levels).
MAX_JSON_DEPTH = 32
#: Longest file name (bytes, UTF-8) of the file systems in use.
MAX_NAME_BYTES = 255

_KINDS = (
    (stat.S_ISDIR, "is a folder, not a file"),
    (stat.S_ISFIFO, "is a named pipe (FIFO), not a regular file"),
    (stat.S_ISCHR, "is a character device, not a regular file"),
    (stat.S_ISBLK, "is a block device, not a regular file"),
    (stat.S_ISSOCK, "is a socket, not a regular file"),
)


def describe_os_error(exc: OSError) -> str:
    """A short reason for an OS error, without Python's ``[Errno N]`` prefix."""
    reasons = {
        errno.ENOENT: "does not exist",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ELOOP: "is a symbolic link loop",
        errno.ENAMETOOLONG: "the name is too long for the file system",
        errno.ENOTDIR: "a part of the path is not a folder",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EISDIR: "is a folder",
        errno.EIO: "input/output error",
        errno.EEXIST: "already exists",
    }
    return reasons.get(exc.errno, exc.strerror or str(exc))


def check_input_file(path: str | os.PathLike, error: type[SpineAlignmentError] = SpineAlignmentError, *,
                     what: str = "file", max_bytes: int | None = None) -> os.stat_result:
    """Refuse anything but an existing, readable regular file (never opens it, so never blocks).

    Args:
        path: the input path.
        error: the exception class to raise (e.g. ``RadiographError``).
        what: what the file should be, for the message ("image file", "landmark file").
        max_bytes: also refuse a file larger than this.

    Returns:
        The file's ``os.stat`` result (symbolic links followed).

    Raises:
        ``error``: missing, a folder, FIFO, device or socket, a link loop, unreadable or too large.
    """
    p = str(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise error(f"{p}: file not found; check the path.") from None
    except OSError as exc:
        raise error(f"{p}: cannot be opened ({describe_os_error(exc)}); give a readable {what}.") from None
    for test, reason in _KINDS:
        if test(st.st_mode):
            raise error(f"{p}: {reason}; give one {what}.")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{p}: is not a regular file; give one {what}.")
    if not os.access(p, os.R_OK):
        raise error(f"{p}: cannot be opened (permission denied); check its permissions.")
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{p}: is {_size(st.st_size)}, more than the {_size(max_bytes)} a {what} may have; "
                    f"give the right file.")
    return st


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def read_limited(path: str | os.PathLike, max_bytes: int, error: type[SpineAlignmentError] = SpineAlignmentError,
                 *, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked before and while reading).

    The file is opened with ``O_NONBLOCK`` so that a FIFO swapped in after the
    check cannot block, and its type is checked again on the open descriptor.
    """
    check_input_file(path, error, what=what, max_bytes=max_bytes)
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(f"{p}: cannot be opened ({describe_os_error(exc)}); give a readable {what}.") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{p}: is not a regular file; give one {what}.")
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"{p}: cannot be read ({describe_os_error(exc)}).") from None
    if len(data) > max_bytes:
        raise error(f"{p}: is more than the {_size(max_bytes)} a {what} may have; give the right file.")
    return data


def read_utf8(path: str | os.PathLike, max_bytes: int, error: type[SpineAlignmentError] = SpineAlignmentError, *,
              what: str = "file", save_as: str = "a UTF-8 text file") -> str:
    """The text of a UTF-8 file of at most ``max_bytes`` (:func:`read_limited`; a byte-order mark is dropped).

    Raises:
        ``error``: what :func:`read_limited` refuses, or bytes that are not UTF-8 (the message says to save the
        file as ``save_as``).
    """
    data = read_limited(path, max_bytes, error, what=what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: is not UTF-8 text (byte {exc.start}); save the {what} as {save_as}.") from None


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(text: bytes) -> int:
    """Deepest nesting of ``[``/``{`` in JSON text (brackets inside strings ignored); linear time."""
    stripped = _JSON_STRING.sub(b'""', text)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    if arr.size == 0:
        return 0
    step = np.isin(arr, (0x5B, 0x7B)).astype(np.int32) - np.isin(arr, (0x5D, 0x7D)).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def load_json_file(path: str | os.PathLike, error: type[SpineAlignmentError] = SpineAlignmentError, *,
                   what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
                   object_pairs_hook: Callable[[list], Any] | None = None) -> Any:
    """Parse a JSON file within a size and a nesting-depth limit, every failure one sentence.

    Raises:
        ``error``: not a regular file, too large, not UTF-8, not JSON, or nested deeper than ``max_depth``.
    """
    p = str(path)
    data = read_limited(path, max_bytes, error, what=what)
    depth = json_depth(data)
    if depth > max_depth:
        raise error(f"{p}: JSON nested {depth} levels deep, more than the {max_depth} a {what} may have; "
                    "give the right file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{p}: is not UTF-8 text (byte {exc.start}); give a {what}.") from None
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        raise error(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); fix the file.") from None
    except RecursionError:  # belt and braces: the depth check above should have caught it
        raise error(f"{p}: JSON nested too deeply; give the right file.") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise error(f"{p}: not valid JSON ({str(exc).splitlines()[0][:120]}); fix the file.") from None


def check_image_size(where: str, rows: int, cols: int, error: type[SpineAlignmentError], *, frames: int = 1,
                     bytes_per_pixel: float | None = None) -> None:
    """Refuse an image whose header announces more than the limits, before any pixel is decoded."""
    if rows <= 0 or cols <= 0:
        raise error(f"{where}: the header gives an image size of {rows} x {cols} pixels; the file is damaged.")
    if max(rows, cols) > MAX_IMAGE_SIDE or rows * cols > MAX_IMAGE_PIXELS:
        raise error(f"{where}: the header announces {rows} x {cols} pixels, more than the {MAX_IMAGE_SIDE:,} px a "
                    f"side and {MAX_IMAGE_PIXELS // 1_000_000} megapixels SpineAlignment reads; downsample the "
                    "image or check that it is a radiograph.")
    if bytes_per_pixel is not None and rows * cols * frames * bytes_per_pixel > MAX_DECODED_BYTES:
        raise error(f"{where}: the pixel data would decode to {_size(int(rows * cols * frames * bytes_per_pixel))}, "
                    f"more than the {_size(MAX_DECODED_BYTES)} limit; export a single, smaller image.")


def output_stem(stem: str, *, reserve: int = len("_overlay.png.part")) -> str:
    """An output file stem that fits :data:`MAX_NAME_BYTES` with the longest suffix appended.

    A stem that fits is returned unchanged. A longer one keeps its beginning
    (cut on a character boundary) and gets ``-`` plus 12 hex digits of the
    SHA-1 of the whole stem, so the same input always gets the same name and
    two long names differing only at the end stay distinct.
    """
    budget = MAX_NAME_BYTES - reserve
    encoded = stem.encode("utf-8", "surrogateescape")
    if len(encoded) <= budget:
        return stem
    digest = hashlib.sha1(encoded).hexdigest()[:12]
    head = encoded[: budget - len(digest) - 1].decode("utf-8", "ignore")
    return f"{head}-{digest}"


def check_output_dir(out: str | os.PathLike, error: type[SpineAlignmentError] = SpineAlignmentError) -> Path:
    """Create the output folder if needed and prove it is writable, before any work is done.

    Raises:
        ``error``: the path is an existing file, cannot be created, or is not writable.
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise error(f"{p}: the output path is an existing file, not a folder; give a folder for --out.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"{p}: the output folder cannot be created ({describe_os_error(exc)}); "
                    "give a writable folder for --out.") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".spinealign-write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{p}: the output folder is not writable ({describe_os_error(exc)}); "
                    "give a writable folder for --out.") from None
    return p
