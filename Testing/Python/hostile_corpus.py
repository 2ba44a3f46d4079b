"""A hostile corpus for the reliability suite, generated in a temporary folder, and its runner.

:func:`build_corpus` writes every file (sparse where a header announces gigabytes,
so nothing large is written or committed) and returns the cases: one CLI command
line each, the failure class it belongs to, the outcome it must have and a
fragment of the message that names the right reason.

:func:`run_cases` runs the cases through ``spine-align``'s ``main`` in a fresh
interpreter that imports the library once and forks one child per case, so each
case gets its own exit code, output, wall time and peak resident memory
(``os.wait4``'s ``ru_maxrss`` of that child; the child starts with the imported
library, as a fresh ``spine-align`` process would). A case still running after
:data:`KILL_AFTER_S` is killed and reported as a hang.

Outcomes:
    ``refused``: exit code 2, exactly one ``error:`` line on stderr naming the reason;
    ``warning``: exit code 0 and a warning naming the problem;
    ``ok``: exit code 0 (a valid variant);
    ``recorded``: ``batch`` exit code 1, the image listed in ``failures.csv`` with the reason;
    ``partial``: exit code 2 after the other images were done (``analyze`` of several films).

Run ``python hostile_corpus.py build DIR`` to look at the files.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
#: a case running longer than this is killed and counted as a hang
KILL_AFTER_S = 30.0
PROTO = "coronal-spine"


@dataclass
class Case:
    """One command line of the corpus and what it must give."""

    id: str
    cls: str  # failure class of issue 16 (crash, hang, memory, silent, fault, model, pipe, valid)
    argv: list[str]
    outcome: str  # refused | warning | ok | recorded | partial
    expect: str = ""  # fragment the error / warning / failures.csv must contain (case-insensitive)
    env: dict[str, str] = field(default_factory=dict)
    needs_model: bool = False


# ------------------------------------------------------------------------------------- file makers

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR announces ``width`` x ``height`` 8-bit gray and a tiny, wrong IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                     + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))
    return path


def jpeg_with_size(path: Path, width: int, height: int) -> Path:
    """A real small JPEG whose SOF0 marker is patched to announce ``width`` x ``height``."""
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def tiff_header_only(path: Path, width: int, height: int) -> Path:
    """A little-endian baseline TIFF whose IFD announces ``width`` x ``height`` with 8 bytes of strip data."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 9 * 12 + 4), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 8)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 8)
    return path


def sparse(path: Path, head: bytes, total: int) -> Path:
    """``head`` then a hole up to ``total`` bytes (no disk blocks are used for the hole)."""
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(total)
    return path


def dicom_dataset(rows: int = 64, cols: int = 48, *, bits: int = 16, ts: str | None = None, **tags):
    """A DX dataset with file meta; pixel data left to the caller."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts or ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.ImagerPixelSpacing = [0.15, 0.15]
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def write_dicom(path: Path, ds, pixels: bytes | None = None) -> Path:
    if pixels is not None:
        ds.PixelData = pixels
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_valid(path: Path, **tags) -> Path:
    ds = dicom_dataset(**tags)
    arr = (np.arange(ds.Rows * ds.Columns, dtype=np.uint32) % 4000).astype(np.uint16).reshape(ds.Rows, ds.Columns)
    return write_dicom(path, ds, arr.tobytes())


def dicom_corrupt_compressed(path: Path, ts: str) -> Path:
    from pydicom.encaps import encapsulate

    ds = dicom_dataset(bits=8, ts=ts)
    return write_dicom(path, ds, encapsulate([b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4]))


def dicom_sparse_pixels(path: Path, rows: int, cols: int) -> Path:
    """Rows x Columns 8-bit with the full Pixel Data length, the pixels a hole (3.6 GB for 60000 x 60000)."""
    from io import BytesIO

    import pydicom

    ds = dicom_dataset(rows, cols, bits=8)
    ds.PixelData = b"\0\0"
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    # Pixel Data is the last element: patch its 4-byte length and let the file end after the hole
    n = rows * cols
    head = data[:-6] + struct.pack("<I", n)
    assert data[-14:-10] == b"\xe0\x7f\x10\x00", "pixel data must be last"
    del pydicom
    return sparse(path, head, len(head) + n)


def tiff_float(path: Path, bad: float | None) -> Path:
    from PIL import Image

    arr = np.linspace(0, 1000, 64 * 48, dtype=np.float32).reshape(64, 48)
    if bad is not None:
        arr[10:12, 5:9] = bad
    Image.fromarray(arr, mode="F").save(path)
    return path


def png_gray(path: Path, rows: int = 700, cols: int = 800, seed: int = 5, dtype=np.uint8) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, np.iinfo(dtype).max, (rows, cols), dtype=dtype)
    Image.fromarray(arr).save(path)
    return path


def coronal_landmarks(seed: int = 0) -> dict[str, list[float]]:
    sys.path.insert(0, str(HERE))
    from spines import coronal_spine

    return {k: [float(x), float(y)] for k, (x, y) in
            coronal_spine([12.0 * math.sin(0.4 * i + seed) for i in range(17)]).items()}


def _json(path: Path, value) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- the corpus

def build_corpus(root: Path) -> list[Case]:
    """Write the hostile files under ``root`` and return the cases (see the module docstring)."""
    from pydicom.uid import (JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless,
                             RLELossless)
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    f, lm, out = root / "files", root / "landmarks", root / "out"
    for d in (f, lm, out):
        d.mkdir(exist_ok=True)
    cases: list[Case] = []

    def add(id_, cls, argv, outcome, expect="", **kw):
        cases.append(Case(id_, cls, [str(a) for a in argv], outcome, expect, **kw))

    lms = coronal_landmarks()
    good_lm = _json(lm / "good.json", {"protocol": PROTO, "landmarks": lms})
    # landmark files for the hostile images given to batch, so that the image itself is what fails
    for stem in ("pipe", "zero", "png-30000", "corrupt-j2k", "self"):
        _json(lm / f"{stem}.json", {"protocol": PROTO, "landmarks": lms})

    # --- special paths: never open, never block, the right reason
    fifo = f / "pipe.png"
    os.mkfifo(fifo)
    fifo_json = f / "pipe.json"
    os.mkfifo(fifo_json)
    loop = f / "loop.png"
    loop.symlink_to(loop)
    (f / "dangling.png").symlink_to(f / "nowhere.png")
    (f / "folder.png").mkdir()
    for cmd, target, why in (("info", fifo, "named pipe"), ("info", "/dev/zero", "character device"),
                             ("info", "/dev/null", "character device"), ("info", f / "folder.png", "folder"),
                             ("info", loop, "symbolic link loop"), ("info", f / "dangling.png", "not found"),
                             ("info", f / "absent.dcm", "not found"),
                             ("measure", fifo_json, "named pipe"), ("measure", "/dev/zero", "character device"),
                             ("measure", f / "folder.png", "folder"), ("measure", loop, "symbolic link loop")):
        add(f"{cmd}-{Path(target).name}", "hang", [cmd, target], "refused", why)
    add("analyze-fifo", "hang", ["analyze", fifo, "--protocol", PROTO, "--out", out / "a-fifo"], "refused",
        "named pipe")
    add("batch-fifo-explicit", "hang", ["batch", fifo, "--protocol", PROTO, "--out", out / "b-fifo",
                                        "--landmarks-dir", lm, "--progress", "none"], "recorded", "named pipe")
    add("batch-devzero", "hang", ["batch", "/dev/zero", "--protocol", PROTO, "--out", out / "b-zero",
                                  "--landmarks-dir", lm, "--progress", "none"], "recorded", "character device")

    # --- image headers announcing huge sizes (refused from the header, before any pixel is allocated)
    for name, make, why in (
        ("png-30000", lambda p: png_header_only(p, 30000, 30000), "header announces"),
        ("png-20001x10", lambda p: png_header_only(p, 20001, 10), "header announces"),
        ("png-13000x13000", lambda p: png_header_only(p, 13000, 13000), "megapixels"),
        ("png-2e9", lambda p: png_header_only(p, 2_000_000_000, 2_000_000_000), "header announces"),
        ("png-0x0", lambda p: png_header_only(p, 0, 0), ""),
        ("jpeg-65000", lambda p: jpeg_with_size(p, 65000, 65000), "header announces"),
        ("jpeg-65000x100", lambda p: jpeg_with_size(p, 65000, 100), "header announces"),
        ("tiff-100000", lambda p: tiff_header_only(p, 100000, 100000), "header announces"),
        ("tiff-4e9", lambda p: tiff_header_only(p, 4_000_000_000, 3), "header announces"),
    ):
        ext = name.split("-")[0]
        p = make(f / f"{name}.{ 'jpg' if ext == 'jpeg' else ext}")
        add(f"info-{name}", "memory", ["info", p], "refused", why)
    p = f / "png-30000.png"
    add("batch-png-30000", "memory", ["batch", p, "--protocol", PROTO, "--out", out / "b-huge", "--landmarks-dir",
                                      lm, "--progress", "none"], "recorded", "header announces")
    # DICOM: header that lies (60000 x 60000, tiny pixel data) and a sparse 3.6 GB file with full pixel data
    big_hdr = write_dicom(f / "dcm-60000-header.dcm", dicom_dataset(60000, 60000, bits=8), b"\0" * 100)
    add("info-dcm-60000-header", "memory", ["info", big_hdr], "refused", "header announces")
    big = dicom_sparse_pixels(f / "dcm-60000-full.dcm", 60000, 60000)
    add("info-dcm-60000-full", "memory", ["info", big], "refused", "more than")
    mid = dicom_sparse_pixels(f / "dcm-19000-full.dcm", 19000, 19000)
    add("info-dcm-19000-full", "memory", ["info", mid], "refused", "megapixels")
    frames = dicom_dataset(4000, 4000, bits=16, NumberOfFrames=200)
    add("info-dcm-200-frames", "memory", ["info", write_dicom(f / "dcm-frames.dcm", frames, b"\0" * 64)], "refused",
        "multi-frame")
    add("info-dcm-bits-12", "crash", ["info", write_dicom(f / "dcm-bits12.dcm", dicom_dataset(bits=16, BitsAllocated=12),
                                                         b"\0" * 64 * 48 * 2)], "refused", "bits allocated")
    add("info-dcm-rows-0", "crash", ["info", write_dicom(f / "dcm-rows0.dcm", dicom_dataset(0, 48), b"")], "refused",
        "")
    sparse_big_json = sparse(f / "huge.json", b'{"protocol": "coronal-spine", "landmarks": {', 40 << 20)
    add("measure-40MB-json", "memory", ["measure", sparse_big_json], "refused", "more than")

    # --- corrupt codestreams (decoders are installed: the message must say corrupt, not "no decoder")
    for name, ts in (("jpeg", JPEGBaseline8Bit), ("j2k", JPEG2000Lossless), ("jls", JPEGLSLossless),
                     ("jpeg-lossless", JPEGLosslessSV1), ("rle", RLELossless)):
        p = dicom_corrupt_compressed(f / f"corrupt-{name}.dcm", ts)
        add(f"info-corrupt-{name}", "crash", ["info", p], "refused", "compressed pixel data is corrupt")
    add("batch-corrupt-j2k", "crash", ["batch", f / "corrupt-j2k.dcm", "--protocol", PROTO, "--out", out / "b-j2k",
                                       "--landmarks-dir", lm, "--progress", "none"], "recorded", "corrupt")
    # other damaged DICOM
    valid_dcm = dicom_valid(f / "valid.dcm")
    data = valid_dcm.read_bytes()
    for name, blob, why in (
        ("truncated-half", data[: len(data) // 2], ""),
        ("truncated-header", data[:300], ""),
        ("preamble-only", data[:132], ""),
        ("garbage-after-dicm", data[:132] + os.urandom(2000), ""),
        ("empty", b"", ""),
        ("text", b"this is a text file, not an image\n" * 20, ""),
        ("random", np.random.default_rng(1).bytes(5000), ""),
    ):
        add(f"info-dcm-{name}", "crash", ["info", _bytes(f / f"dcm-{name}.dcm", blob)], "refused", why)
    bad_len = bytearray(data)
    i = bytes(bad_len).index(b"\xe0\x7f\x10\x00")
    struct.pack_into("<I", bad_len, i + 8, 0xFFFFFFF0)
    # a Pixel Data length of 4 GB in a small file: nothing that size is allocated; the pixels present are complete
    add("info-dcm-pixel-length-4GB", "memory", ["info", _bytes(f / "dcm-len.dcm", bytes(bad_len))], "ok")
    add("info-dcm-rgb", "crash", ["info", write_dicom(f / "dcm-rgb.dcm", dicom_dataset(
        bits=8, SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0), b"\0" * 64 * 48 * 3)],
        "refused", "colour")
    add("info-dcm-no-pixels", "crash", ["info", write_dicom(f / "dcm-nopix.dcm", dicom_dataset())], "refused",
        "pixel data")
    unknown_ts = data.replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.99999.1.2.1\0", 1)
    add("info-dcm-unknown-ts", "crash", ["info", _bytes(f / "dcm-ts.dcm", unknown_ts)], "refused", "")

    # --- silent results: spacing and non-finite pixels
    add("info-dcm-spacing-1e-9", "silent", ["info", dicom_valid(f / "dcm-sp9.dcm", ImagerPixelSpacing=[1e-9, 1e-9])],
        "warning", "ignored")
    add("info-dcm-pixelspacing-1e-9", "silent",
        ["info", dicom_valid(f / "dcm-psp9.dcm", PixelSpacing=[1e-9, 1e-9])], "warning", "ignored")
    add("info-dcm-spacing-1e6", "silent", ["info", dicom_valid(f / "dcm-sp6.dcm", ImagerPixelSpacing=[1e6, 1e6])],
        "warning", "ignored")
    text_sp = dicom_valid(f / "dcm-spt.dcm", ImagerPixelSpacing=[9.9, 9.9]).read_bytes().replace(b"9.9\\9.9", b"abc\\def")
    add("info-dcm-spacing-text", "silent", ["info", _bytes(f / "dcm-spt.dcm", text_sp)], "warning", "ignored")
    png = png_gray(f / "small.png", 64, 48)
    for vals, why in ((("1e-9", "1e-9"), "outside"), (("nan", "nan"), "not a positive finite"),
                      (("-1", "0.1"), "not a positive finite"), (("0", "0"), "not a positive finite"),
                      (("inf", "0.1"), "not a positive finite"), (("1000", "1000"), "10 mm")):
        add(f"info-spacing-{vals[0]}", "silent", ["info", png, "--spacing", *vals], "refused", why)
    for bad, name in ((float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")):
        add(f"info-tiff-{name}", "silent", ["info", tiff_float(f / f"float-{name}.tif", bad)], "refused",
            "nan or infinite")
    add("info-tiff-float-finite", "valid", ["info", tiff_float(f / "float-ok.tif", None)], "ok")
    sp9 = _json(lm / "sp9.json", {"protocol": PROTO, "landmarks": lms, "spacing_mm": [1e-9, 1e-9]})
    add("measure-spacing-1e-9", "silent", ["measure", sp9], "refused", "outside")
    add("measure-cli-spacing-1e-9", "silent", ["measure", good_lm, "--spacing", "1e-9", "1e-9"], "refused", "outside")

    # --- other damaged raster files
    for name, blob in (("truncated.png", png.read_bytes()[:100]), ("empty.png", b""),
                       ("random.jpg", np.random.default_rng(2).bytes(3000)), ("text.tif", b"II*\x00garbage" * 10),
                       ("sig-only.png", b"\x89PNG\r\n\x1a\n"), ("bmp-bad.bmp", b"BM" + b"\xff" * 60)):
        add(f"info-{name}", "crash", ["info", _bytes(f / name, blob)], "refused", "")
    rgb = f / "colour.png"
    Image.fromarray(np.dstack([np.zeros((20, 20), np.uint8), np.full((20, 20), 9, np.uint8),
                               np.zeros((20, 20), np.uint8)])).save(rgb)
    add("info-colour-png", "valid", ["info", rgb], "refused", "colour")
    multi = f / "pages.tif"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(multi, save_all=True,
                                                   append_images=[Image.fromarray(np.ones((8, 8), np.uint8))])
    add("info-multipage-tiff", "valid", ["info", multi], "refused", "frames")
    add("info-valid-png16", "valid", ["info", png_gray(f / "gray16.png", 40, 30, dtype=np.uint16)], "ok")
    add("info-valid-dcm", "valid", ["info", valid_dcm], "ok")

    # --- landmark JSON: every schema violation names the file and the field
    bad_json = {
        "landmarks-list": ({"protocol": PROTO, "landmarks": [1, 2]}, "'landmarks'"),
        "landmarks-string": ({"protocol": PROTO, "landmarks": "T1"}, "'landmarks'"),
        "protocol-list": ({"protocol": [PROTO], "landmarks": lms}, "'protocol'"),
        "protocol-number": ({"protocol": 7, "landmarks": lms}, "'protocol'"),
        "protocol-null": ({"protocol": None, "landmarks": lms}, "protocol"),
        "protocol-unknown": ({"protocol": "knee", "landmarks": lms}, "unknown protocol"),
        "views-list": ({"protocol": "lumbar-dynamic", "views": [1, 2]}, "'views'"),
        "views-string": ({"protocol": "lumbar-dynamic", "views": {"flexion": "x"}}, "views.flexion"),
        "views-landmarks-list": ({"protocol": "lumbar-dynamic", "views": {"flexion": {"landmarks": [1]}}},
                                 "'landmarks'"),
        "paired-list": ({"protocol": PROTO, "landmarks": lms, "paired_lateral": [1]}, "'paired_lateral'"),
        "paired-landmarks-number": ({"protocol": PROTO, "landmarks": lms, "paired_lateral": {"landmarks": 5}},
                                    "paired_lateral"),
        "paired-spacing-string": ({"protocol": PROTO, "landmarks": lms, "paired_lateral": {"spacing_mm": "x"}},
                                  "spacing_mm"),
        "image-size-string": ({"protocol": PROTO, "landmarks": lms, "image_size": "big"}, "'image_size'"),
        "image-size-three": ({"protocol": PROTO, "landmarks": lms, "image_size": [1, 2, 3]}, "image_size"),
        "spacing-strings": ({"protocol": PROTO, "landmarks": lms, "spacing_mm": ["a", "b"]}, "spacing_mm"),
        "orientation-number": ({"protocol": PROTO, "landmarks": lms, "patient_orientation": 5},
                               "'patient_orientation'"),
        "orientation-bad": ({"protocol": PROTO, "landmarks": lms, "patient_orientation": "Q,Z"}, "orientation"),
        "parameters-list": ({"protocol": PROTO, "landmarks": lms, "parameters": [1]}, "'parameters'"),
        "parameter-bad": ({"protocol": PROTO, "landmarks": lms, "parameters": {"AASCE_1": {"v": 1}}}, "AASCE_1"),
        "warnings-number": ({"protocol": PROTO, "landmarks": lms, "warnings": 3}, "'warnings'"),
        "model-list": ({"protocol": PROTO, "landmarks": lms, "model": ["x"]}, "'model'"),
        "calibration-number": ({"protocol": PROTO, "landmarks": lms, "calibration": 1}, "'calibration'"),
        "image-number": ({"protocol": PROTO, "landmarks": lms, "image": 12}, "'image'"),
        "point-string": ({"protocol": PROTO, "landmarks": {"T1_TL": "here"}}, "T1_TL"),
        "point-short": ({"protocol": PROTO, "landmarks": {"T1_TL": [1]}}, "T1_TL"),
        "point-object-no-y": ({"protocol": PROTO, "landmarks": {"T1_TL": {"x": 1}}}, "T1_TL"),
        "confidence-2": ({"protocol": PROTO, "landmarks": {"T1_TL": {"x": 1, "y": 2, "confidence": 2}}},
                         "confidence"),
        "unknown-id": ({"protocol": PROTO, "landmarks": {"XX": [1, 2]}}, "not part of protocol"),
        "top-level-list": ([1, 2, 3], "expected a json object"),
        "top-level-null": (None, "expected a json object"),
        "no-protocol": ({"landmarks": lms}, "protocol"),
    }
    for name, (value, why) in bad_json.items():
        add(f"measure-{name}", "crash", ["measure", _json(lm / f"bad-{name}.json", value)], "refused", why)
    texts = {
        "deep-100000": ("[" * 100_000 + "]" * 100_000, "nested"),
        "deep-in-landmarks": ('{"protocol": "coronal-spine", "landmarks": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}",
                              "nested"),
        "deep-strings-ok": (json.dumps({"protocol": PROTO, "landmarks": lms, "note": "[" * 10000}), ""),
        "nan-literal": ('{"protocol": "coronal-spine", "landmarks": {"T1_TL": [NaN, 1]}}', "non-finite"),
        "infinity-literal": ('{"protocol": "coronal-spine", "landmarks": {"T1_TL": {"x": Infinity, "y": 1}}}',
                             "non-finite"),
        "bigint": ('{"protocol": "coronal-spine", "landmarks": {"T1_TL": [' + "9" * 5000 + ", 1]}}", "json"),
        "bigfloat": ('{"protocol": "coronal-spine", "landmarks": {"T1_TL": [1e999, 1]}}', "non-finite"),
        "duplicate-key": ('{"protocol": "coronal-spine", "landmarks": {"T1_TL": [1, 2], "T1_TL": [3, 4]}}', "twice"),
        "truncated": (json.dumps({"protocol": PROTO, "landmarks": lms})[:200], "not valid json"),
        "empty": ("", "not valid json"),
        "not-utf8": (None, "utf-8"),
    }
    for name, (text, why) in texts.items():
        p = lm / f"text-{name}.json"
        if text is None:
            p.write_bytes(b'{"protocol": "coronal-spine", "landmarks": {"\xff\xfe": [1, 2]}}')
        else:
            p.write_text(text, encoding="utf-8")
        outcome = "ok" if name == "deep-strings-ok" else "refused"
        add(f"measure-{name}", "crash", ["measure", p], outcome, why)
    add("measure-two-files-one-bad", "crash", ["measure", good_lm, lm / "bad-protocol-list.json"], "refused",
        "'protocol'")
    add("measure-valid", "valid", ["measure", good_lm], "ok")
    add("measure-bom", "valid", ["measure", _bytes(lm / "bom.json", b"\xef\xbb\xbf" + good_lm.read_bytes())], "ok")

    # --- .mrk.json through batch --landmarks-dir
    mrk_dir = root / "mrk"
    mrk_dir.mkdir()
    (root / "mrkimg").mkdir()
    img_mrk = png_gray(root / "mrkimg" / "case.png", 700, 800)
    for name, value in (("points-ints", {"markups": [{"controlPoints": [1, 2, 3]}]}),
                        ("position-2", {"markups": [{"controlPoints": [{"label": "T1_TL", "position": [1, 2]}]}]}),
                        ("markups-object", {"markups": {"a": 1}}), ("deep", None)):
        d = mrk_dir / name
        d.mkdir()
        p = d / "case.mrk.json"
        if value is None:
            p.write_text('{"markups": ' + "[" * 50_000 + "]" * 50_000 + "}")
        else:
            _json(p, value)
        add(f"batch-mrk-{name}", "crash", ["batch", img_mrk, "--protocol", PROTO, "--out", out / f"b-mrk-{name}",
                                           "--landmarks-dir", d, "--progress", "none"], "recorded", "")

    # --- paths and names
    long_dir = root / "long"
    long_dir.mkdir()
    long_lm = root / "long-lm"
    long_lm.mkdir()
    for n, stem in ((1, "x" * 250), (2, "é" * 125), (3, "y" * 240 + "-overlay")):
        img = png_gray(long_dir / f"{stem}.png", 700, 800, seed=n)
        _json(long_lm / f"{stem}.json", {"protocol": PROTO, "landmarks": coronal_landmarks(n)})
        add(f"batch-long-name-{n}", "crash", ["batch", img, "--protocol", PROTO, "--out", out / f"b-long-{n}",
                                              "--landmarks-dir", long_lm, "--progress", "none"], "ok")
    add("batch-long-names-folder", "crash", ["batch", long_dir, "--protocol", PROTO, "--out", out / "b-long-all",
                                             "--landmarks-dir", long_lm, "--progress", "none"], "ok")
    odd = root / "odd"
    odd.mkdir()
    odd_lm = root / "odd-lm"
    odd_lm.mkdir()
    for stem in ("new\nline", "tab\there", " spaces ", "-dash", "ünï©ødé"):
        png_gray(odd / f"{stem}.png", 700, 800)
        _json(odd_lm / f"{stem}.json", {"protocol": PROTO, "landmarks": lms})
    add("batch-odd-names", "crash", ["batch", odd, "--protocol", PROTO, "--out", out / "b-odd", "--landmarks-dir",
                                     odd_lm, "--progress", "none"], "ok")
    # a folder with a symbolic link loop, a dangling link, a FIFO and a sub-folder link loop among good images
    mixed = root / "mixed"
    mixed.mkdir()
    for k in range(2):
        png_gray(mixed / f"case{k}.png", 700, 800, seed=k)
        _json(lm / f"case{k}.json", {"protocol": PROTO, "landmarks": coronal_landmarks(k)})
    (mixed / "self.png").symlink_to(mixed / "self.png")
    (mixed / "ab.dcm").symlink_to(mixed / "ba.dcm")
    (mixed / "ba.dcm").symlink_to(mixed / "ab.dcm")
    (mixed / "gone.png").symlink_to(root / "gone.png")
    os.mkfifo(mixed / "fifo.dcm")
    (mixed / "sub").mkdir()
    (mixed / "sub" / "up").symlink_to(mixed)
    add("batch-folder-with-link-loops", "crash", ["batch", mixed, "--protocol", PROTO, "--out", out / "b-mixed",
                                                  "--landmarks-dir", lm, "--progress", "none"], "ok")
    add("batch-explicit-link-loop", "crash", ["batch", mixed / "self.png", mixed / "case0.png", "--protocol", PROTO,
                                              "--out", out / "b-loop", "--landmarks-dir", lm, "--progress", "none"],
        "recorded", "symbolic link loop")
    afile = _bytes(root / "a-file", b"x")
    for cmd in ("batch", "analyze"):
        extra = ["--landmarks-dir", lm, "--progress", "none"] if cmd == "batch" else []
        add(f"{cmd}-out-is-file", "crash", [cmd, mixed / "case0.png", "--protocol", PROTO, "--out", afile, *extra],
            "refused", "existing file")
        add(f"{cmd}-out-under-file", "crash", [cmd, mixed / "case0.png", "--protocol", PROTO, "--out",
                                               afile / "sub", *extra], "refused", "cannot be created")
        add(f"{cmd}-out-name-too-long", "crash", [cmd, mixed / "case0.png", "--protocol", PROTO, "--out",
                                                  out / ("z" * 300), *extra], "refused", "too long")
    add("batch-input-missing", "crash", ["batch", root / "missing", "--protocol", PROTO, "--out", out / "b-miss"],
        "refused", "no such file")
    add("info-name-300-bytes", "crash", ["info", root / ("n" * 300 + ".png")], "refused", "too long")

    # --- evaluate: folders with hostile JSON among good results
    truth, pred = root / "truth", root / "pred"
    truth.mkdir()
    pred.mkdir()
    for k in range(3):
        _json(truth / f"img{k}.json", {"protocol": PROTO, "image": f"img{k}.png", "landmarks": coronal_landmarks(k)})
        _json(pred / f"img{k}.json", {"protocol": PROTO, "image": f"img{k}.png", "landmarks": coronal_landmarks(k)})
    (pred / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (pred / "loop.json").symlink_to(pred / "loop.json")
    os.mkfifo(pred / "fifo.json")
    sparse(pred / "huge.json", b"{", 40 << 20)
    add("evaluate-hostile-pred", "crash", ["evaluate", "--truth", truth, "--pred", pred, "--out", out / "e1"],
        "warning", "failed")
    add("evaluate-pred-is-file", "crash", ["evaluate", "--truth", truth, "--pred", good_lm, "--out", out / "e2"],
        "refused", "not a folder")
    add("evaluate-deep-truth", "crash", ["evaluate", "--truth", pred, "--pred", truth, "--out", out / "e3"],
        "warning", "failed")

    # --- model folders that cannot be used (named with folder, file and reason)
    shipped = REPO / "Resources" / "Models" / "coronal-spine-landmarks"
    meta = json.loads((shipped / "metadata.json").read_text())
    for name, change, why in (
        ("invalid-json", None, "not valid json"),
        ("unknown-class", lambda m: m["network"].__setitem__("class", "SpineAlignmentLib.models.Nope"), "Nope"),
        ("no-checksum", lambda m: m["weights"].pop("sha256"), "sha256"),
        ("dotdot-weights", lambda m: m["weights"].__setitem__("file", "../../etc/model.pt"), "weights/file"),
        ("deep-metadata", "deep", "nested"),
    ):
        models = root / "models" / name
        folder = models / "coronal-spine-landmarks"
        folder.mkdir(parents=True)
        for w in shipped.glob("*.pt"):
            (folder / w.name).symlink_to(w)
        if change is None:
            (folder / "metadata.json").write_text(json.dumps(meta)[:-40])
        elif change == "deep":
            (folder / "metadata.json").write_text('{"protocol": "coronal-spine", "x": ' + "[" * 10000 + "]" * 10000
                                                  + "}")
        else:
            m = json.loads(json.dumps(meta))
            change(m)
            _json(folder / "metadata.json", m)
        add(f"analyze-model-{name}", "model", ["analyze", mixed / "case0.png", "--protocol", PROTO, "--out",
                                               out / f"m-{name}"], "refused", why, env={"SPINEALIGN_MODELS": str(models)})

    # --- analyze with the shipped model (torch): few cases, one warm process
    two = root / "two"
    two.mkdir()
    png_gray(two / "first.png", 700, 800, seed=3)
    os.mkfifo(two / "second.png")
    png_gray(two / "third.png", 700, 800, seed=4)
    add("analyze-several-one-fifo", "fault", ["analyze", two / "first.png", two / "second.png", two / "third.png",
                                              "--protocol", PROTO, "--out", out / "a-two", "--no-overlay"], "partial",
        "named pipe", needs_model=True)
    add("analyze-long-name", "crash", ["analyze", long_dir / f"{'x' * 250}.png", "--protocol", PROTO, "--out",
                                       out / "a-long"], "ok", needs_model=True)
    add("analyze-png-12000", "memory", ["analyze", png_header_only(f / "big-12000.png", 12000, 12000), "--protocol",
                                        PROTO, "--out", out / "a-big"], "refused", "megapixels")
    add("analyze-tiff-nan", "silent", ["analyze", f / "float-nan.tif", "--protocol", PROTO, "--out", out / "a-nan"],
        "refused", "nan or infinite", needs_model=True)
    build_boundary_cases(root, add, mixed / "case0.png")
    return cases


def lumbar_landmarks(seed: int = 0, facing: int = +1) -> dict[str, list[float]]:
    """A lumbar-dynamic landmark set (pixels of a 1800 x 1200 film)."""
    sys.path.insert(0, str(HERE))
    from spines import lateral_spine, select

    return {k: list(v) for k, v in select(lateral_spine(np.random.default_rng(seed), facing), "lumbar-dynamic").items()}


def _mrk(points: list[dict], **markup) -> dict:
    return {"markups": [{"type": "Fiducial", "coordinateSystem": "RAS", "coordinateUnits": "mm", **markup,
                         "controlPoints": points}]}


def build_boundary_cases(root: Path, add, good_png: Path) -> None:
    """Issue 26: training and export arguments, dataset check, markups, pairs, DICOM sources, landmark files
    as documented, model folders. Every file generated (no model needed: landmark files everywhere)."""
    b = root / "i26"
    b.mkdir()
    out = b / "out"
    out.mkdir()
    lms = coronal_landmarks()

    # --- training and export inputs: one sentence each, exit 2, before any epoch
    data = b / "train-data"
    data.mkdir()
    os.mkfifo(b / "val-fifo.txt")
    train = ["train", "--data", data, "--out"]
    for name, extra, why in (("batch-size-0", ["--batch-size", "0"], "--batch-size"),
                             ("batch-size-neg", ["--batch-size", "-3"], "--batch-size"),
                             ("input-size-100", ["--input-size", "100", "100"], "multiple of 64"),
                             ("input-size-0", ["--input-size", "0", "256"], "multiple of 64"),
                             ("lr-nan", ["--lr", "nan"], "--lr"), ("lr-0", ["--lr", "0"], "--lr"),
                             ("epochs-0", ["--epochs", "0"], "--epochs"),
                             ("val-fraction-1", ["--val-fraction", "1"], "--val-fraction"),
                             ("threads-0", ["--threads", "0"], "--threads"),
                             ("val-list-fifo", ["--val-list", b / "val-fifo.txt"], "named pipe"),
                             ("val-list-missing", ["--val-list", b / "absent.txt"], "not found"),
                             ("init-from-missing", ["--init-from", b / "absent.pt"], "not found"),
                             ("data-missing", None, "does not exist")):
        argv = (["train", "--data", b / "no-data", "--out", out / f"t-{name}"] if extra is None
                else [*train, out / f"t-{name}", *extra])
        add(f"train-{name}", "crash", argv, "refused", why)
    add("export-run-missing", "crash", ["export", "--run", b / "no-run", "--out", out / "x1"], "refused",
        "not a training run folder")
    add("export-run-is-file", "crash", ["export", "--run", good_png, "--out", out / "x2"], "refused",
        "not a training run folder")

    # --- dataset check: each hostile file is one per-file error in the report, the check goes on
    def dataset(name: str) -> Path:
        d = b / f"ds-{name}"
        d.mkdir()
        for k in range(2):
            png_gray(d / f"good{k}.png", 700, 800, seed=k)
            _json(d / f"good{k}.json", {"protocol": PROTO, "landmarks": coronal_landmarks(k)})
        png_gray(d / "bad.png", 700, 800)
        return d

    for name, value, why in (("views-array", {"views": [1, 2]}, "'views'"),
                             ("views-string", {"views": "flexion"}, "'views'"),
                             ("views-number-protocol", {"protocol": PROTO, "views": 3}, "'views'")):
        d = dataset(name)
        _json(d / "bad.json", value)
        add(f"dataset-{name}", "crash", ["dataset", "check", d, "--protocol", PROTO], "warning", why)
    d = dataset("control-points-number")
    _json(d / "bad.mrk.json", _mrk(5))
    add("dataset-control-points-number", "crash", ["dataset", "check", d, "--protocol", PROTO], "warning",
        "controlpoints")
    d = dataset("patients-long-cell")
    (d / "patients.csv").write_text("image,patient\ngood0.png," + "x" * 200_000 + "\n", encoding="utf-8")
    add("dataset-patients-long-cell", "crash", ["dataset", "check", d, "--protocol", PROTO], "warning",
        "patients.csv")
    d = dataset("bomb")
    png_header_only(d / "bad.png", 20000, 20000)
    _json(d / "bad.json", {"protocol": PROTO, "landmarks": lms})
    add("dataset-headers-only-bomb", "memory", ["dataset", "check", d, "--protocol", PROTO, "--headers-only"],
        "warning", "header announces")
    add("dataset-bomb", "memory", ["dataset", "check", d, "--protocol", PROTO], "warning", "header announces")

    # --- .mrk.json read everywhere (batch --landmarks-dir, measure --image): refused in one sentence
    img = b / "mrk-img"
    img.mkdir()
    film = png_gray(img / "case.png", 700, 800)
    good_points = [{"id": k, "label": k, "position": [-x, -y, 0.0]} for k, (x, y) in lms.items()]

    def points_with(first: dict) -> list[dict]:
        return [{**good_points[0], **first}] + good_points[1:]

    mrk_cases = {
        "point-1e308": (_mrk(points_with({"position": [1e308, 1.0, 0.0]})), "far outside"),
        "point-nan": (None, "not a finite"),
        "position-bools": (_mrk(points_with({"position": [True, True, True]})), "3-number"),
        "position-strings": (_mrk(points_with({"position": ["1", "2", "3"]})), "3-number"),
        "duplicate-id": (_mrk(good_points + [{**good_points[5], "position": [-400.0, -300.0, 0.0]}]), "twice"),
        "units-um": (_mrk(good_points, coordinateUnits="um"), "coordinateunits"),
        "type-line": (_mrk(good_points, type="Line"), "line"),
        "z-off-plane": (_mrk(points_with({"position": [good_points[0]["position"][0],
                                                       good_points[0]["position"][1], 250.0]})), "plane"),
        "control-points-number": (_mrk(7), "controlpoints"),
        "control-points-object": (_mrk({"a": 1}), "controlpoints"),
    }
    for name, (value, why) in mrk_cases.items():
        d = b / f"mrk-{name}"
        d.mkdir()
        p = d / "case.mrk.json"
        if value is None:
            text = json.dumps(_mrk(points_with({"position": [1.0, 2.0, 0.0]})))
            p.write_text(text.replace("[1.0, 2.0, 0.0]", "[NaN, 2.0, 0.0]"), encoding="utf-8")
        else:
            _json(p, value)
        add(f"batch-mrk-{name}", "silent", ["batch", film, "--protocol", PROTO, "--out", out / f"b-mrk-{name}",
                                            "--landmarks-dir", d, "--progress", "none"], "recorded", why)
        add(f"measure-mrk-{name}", "silent", ["measure", p, "--image", film, "--protocol", PROTO], "refused", why)
    d = b / "mrk-good"
    d.mkdir()
    _json(d / "case.mrk.json", _mrk(good_points))
    add("measure-mrk-valid", "valid", ["measure", d / "case.mrk.json", "--image", film, "--protocol", PROTO], "ok")

    # --- landmark files as documented: only 'landmarks' (the command gives the protocol)
    d = b / "only-landmarks"
    d.mkdir()
    _json(d / "case.json", {"landmarks": lms})
    add("batch-only-landmarks", "valid", ["batch", film, "--protocol", PROTO, "--out", out / "b-only",
                                          "--landmarks-dir", d, "--progress", "none"], "ok")
    add("measure-only-landmarks-with-protocol", "valid", ["measure", d / "case.json", "--protocol", PROTO], "ok")

    # --- pairs: one film (and one landmark file) given as both films; --save-masks without a segmentation model
    pairs = b / "pairs"
    pairs.mkdir()
    png_gray(pairs / "flex.png", 1800, 1200, seed=1)
    (pairs / "copy.png").write_bytes((pairs / "flex.png").read_bytes())
    png_gray(pairs / "ext.png", 1800, 1200, seed=2)
    _json(pairs / "flex.json", {"protocol": "lumbar-dynamic", "landmarks": lumbar_landmarks(1)})
    _json(pairs / "ext.json", {"protocol": "lumbar-dynamic", "landmarks": lumbar_landmarks(2, -1)})
    for name, rows, why in (
        ("same-file", "P1,flexion,flex.png,flex.json\nP1,extension,flex.png,flex.json\n", "one file"),
        ("same-content", "P1,flexion,flex.png,flex.json\nP1,extension,copy.png,ext.json\n", "same"),
        ("same-landmarks", "P1,flexion,flex.png,flex.json\nP1,extension,ext.png,flex.json\n", "one landmark file"),
    ):
        m = _bytes(pairs / f"{name}.csv", ("pair,role,image,landmarks\n" + rows).encode())
        add(f"pairs-{name}", "silent", ["batch", "--pairs", m, "--protocol", "lumbar-dynamic", "--out",
                                        out / f"p-{name}", "--progress", "none"], "recorded", why)
    m = _bytes(pairs / "good.csv", b"pair,role,image,landmarks\nP1,flexion,flex.png,flex.json\n"
                                   b"P1,extension,ext.png,ext.json\n")
    add("pairs-valid", "valid", ["batch", "--pairs", m, "--protocol", "lumbar-dynamic", "--out", out / "p-good",
                                 "--progress", "none"], "ok")
    # a coronal film and its paired lateral whose landmark file holds only 'landmarks'
    ids = [lm_id for lm_id in ("T4_AS", "T4_PS", "T12_AI", "T12_PI", "L1_AS", "L1_PS", "L5_AI", "L5_PI")]
    sys.path.insert(0, str(HERE))
    from spines import lateral_spine

    lat = lateral_spine(np.random.default_rng(3))
    _json(pairs / "lateral.json", {"landmarks": {k: [float(lat[k][0]), float(lat[k][1])] for k in ids}})
    _json(pairs / "coronal.json", {"protocol": PROTO, "landmarks": lms})
    m = _bytes(pairs / "coronal.csv", f"pair,role,image,landmarks\nS1,coronal,{good_png},coronal.json\n"
                                      "S1,lateral,ext.png,lateral.json\n".encode())
    add("pairs-lateral-only-landmarks", "valid", ["batch", "--pairs", m, "--protocol", PROTO, "--out", out / "p-lat",
                                                  "--progress", "none"], "ok")
    add("batch-save-masks-no-segmentation", "silent", ["batch", film, "--protocol", PROTO, "--out", out / "b-masks",
                                                       "--landmarks-dir", d, "--progress", "none", "--save-masks"],
        "warning", "segmentation")

    # --- DICOM outputs on odd sources: one sentence, the other outputs still written
    dcm = b / "dcm"
    dcm.mkdir()
    dlm = b / "dcm-lm"
    dlm.mkdir()
    from pydicom.uid import SecondaryCaptureImageStorage  # noqa: F401  (an image class, for contrast)

    odd = {"charset-999": ({"SpecificCharacterSet": "ISO_IR 999"}, "character set"),
           "studydate-text": ({"StudyDate": "notadate"}, "studydate"),
           "sop-class-not-image": ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.481.5"}, "not a dicom image"),
           "patient-name-3": ({"PatientName": "A\\B\\C"}, "patientname"),
           "sop-instance-not-uid": ({"SOPInstanceUID": "not a uid!"}, "sopinstanceuid")}
    for name, (tags, why) in odd.items():
        path = dcm / f"{name}.dcm"
        ds = dicom_dataset(700, 800, StudyInstanceUID="1.2.3.4", SeriesInstanceUID="1.2.3.4.5")
        for k, v in tags.items():
            setattr(ds, k, v)
        write_dicom(path, ds, (np.arange(700 * 800, dtype=np.uint32) % 4000).astype(np.uint16).tobytes())
        _json(dlm / f"{name}.json", {"protocol": PROTO, "landmarks": lms})
        add(f"batch-dicom-sr-{name}", "crash", ["batch", path, "--protocol", PROTO, "--out", out / f"d-{name}",
                                                "--landmarks-dir", dlm, "--dicom-sr", "--progress", "none"],
            "warning", why)
    ds = dicom_dataset(700, 800, StudyInstanceUID="1.2.3.4", SeriesInstanceUID="1.2.3.4.5")
    plain = write_dicom(dcm / "plain.dcm", ds, (np.arange(700 * 800, dtype=np.uint32) % 4000).astype(np.uint16)
                        .tobytes())
    raw = plain.read_bytes()
    nopre = _bytes(dcm / "no-preamble.dcm", raw[132:])
    _bytes(dcm / "no-preamble-noext", raw[132:])
    _json(dlm / "no-preamble.json", {"protocol": PROTO, "landmarks": lms})
    add("info-dicom-no-preamble", "valid", ["info", nopre], "ok")
    add("info-dicom-no-preamble-noext", "valid", ["info", dcm / "no-preamble-noext"], "ok")
    add("batch-dicom-sr-no-preamble", "valid", ["batch", nopre, "--protocol", PROTO, "--out", out / "d-nopre",
                                                "--landmarks-dir", dlm, "--dicom-sr", "--progress", "none"], "ok")

    # --- evaluate: truth and prediction of different protocols for the same film
    truth, pred = b / "eval-truth", b / "eval-pred"
    truth.mkdir()
    pred.mkdir()
    _json(truth / "img0.json", {"protocol": PROTO, "image": "img0.png", "landmarks": lms})
    _json(pred / "img0.json", {"protocol": "lumbar-dynamic", "image": "img0.png", "landmarks": lumbar_landmarks(0)})
    add("evaluate-protocols-differ", "silent", ["evaluate", "--truth", truth, "--pred", pred, "--out", out / "ev"],
        "refused", "protocol")

    # --- model folders: a shoulder model copied under the spine model's name; SPINEALIGN_MODELS naming nothing
    shoulder = REPO / "Resources" / "Models" / "coronal-shoulder-clavicles"
    wrong = b / "models-wrong" / "coronal-spine-landmarks"
    wrong.mkdir(parents=True)
    for f in shoulder.iterdir():
        (wrong / f.name).symlink_to(f)
    add("analyze-model-other-protocol", "model", ["analyze", good_png, "--protocol", PROTO, "--out", out / "m-wrong"],
        "refused", "coronal-shoulder", env={"SPINEALIGN_MODELS": str(wrong.parent)})
    add("models-env-missing", "model", ["models"], "warning", "spinealign_models",
        env={"SPINEALIGN_MODELS": str(b / "no-such-models")})


def _bytes(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    return path


# ------------------------------------------------------------------------------------- the runner

@dataclass
class Outcome:
    """What one case gave."""

    id: str
    cls: str
    outcome: str
    rc: int | None
    seconds: float  # wall time
    max_rss_mb: float
    stdout: str
    stderr: str
    hung: bool = False
    cpu_seconds: float = 0.0  # user + system time of the case's process (and the workers it waited for)


def _run_forked(case: Case, workdir: Path) -> Outcome:
    out_path, err_path = workdir / f"{case.id}.out", workdir / f"{case.id}.err"
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: run the command line as spine-align would
        try:
            os.setsid()
            with open(out_path, "wb") as o, open(err_path, "wb") as e:
                os.dup2(o.fileno(), 1)
                os.dup2(e.fileno(), 2)
            sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
            sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
            os.environ.update(case.env)
            from SpineAlignmentLib.cli import main

            try:
                rc = main(case.argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 2
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(rc or 0))
        except BaseException:  # noqa: BLE001 - the traceback is what the test looks for
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            os._exit(99)
    hung = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() - t0 > KILL_AFTER_S:
            hung = True
            os.killpg(pid, signal.SIGKILL)
            done, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    # kill whatever the case left behind in its session (pool workers must already be gone)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    rc = os.waitstatus_to_exitcode(status) if not hung else None
    return Outcome(case.id, case.cls, case.outcome, rc, seconds, usage.ru_maxrss / 1024.0,
                   out_path.read_text(errors="replace"), err_path.read_text(errors="replace"), hung,
                   usage.ru_utime + usage.ru_stime)


def run_cases(cases: list[Case], workdir: Path, *, preload_model: bool = False) -> list[Outcome]:
    """Run ``cases`` in this process's forks (call from a fresh interpreter: see :func:`run_in_subprocess`)."""
    import logging

    import SpineAlignmentLib.cli  # noqa: F401  (imported once, before the forks)
    from SpineAlignmentLib.cli import build_parser

    build_parser()  # imports every command module
    import pydicom  # noqa: F401
    from PIL import Image  # noqa: F401

    # What a command imports on first use (torch, matplotlib, pandas) is imported here once, as
    # start-up cost, so that a case's time is the time of its own work.
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import pandas  # noqa: F401
    import pingouin  # noqa: F401

    import SpineAlignmentLib.batch  # noqa: F401
    import SpineAlignmentLib.io.overlay  # noqa: F401
    import SpineAlignmentLib.models  # noqa: F401  (MONAI: 10 s to import on a busy machine)
    import SpineAlignmentLib.pipeline  # noqa: F401

    torch.set_num_threads(1)
    logging.getLogger().handlers.clear()
    if preload_model:
        from SpineAlignmentLib.models.registry import resolve_model

        resolve_model(None, PROTO)
    workdir.mkdir(parents=True, exist_ok=True)
    return [_run_forked(c, workdir) for c in cases]


def run_in_subprocess(cases: list[Case], workdir: Path, *, preload_model: bool = False,
                      timeout: float = 600) -> list[Outcome]:
    """Run ``cases`` by :func:`run_cases` in a fresh interpreter (so no case inherits a test's memory)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec, report = workdir / "cases.json", workdir / "outcomes.json"
    spec.write_text(json.dumps([asdict(c) for c in cases]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__)), "run", str(spec), str(report)] + (["--model"] if preload_model else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"corpus runner failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return [Outcome(**o) for o in json.loads(report.read_text())]


def error_lines(text: str) -> list[str]:
    """The one-sentence error lines: ours (``error: ...``) and argparse's (``spine-align CMD: error: ...``)."""
    return [ln for ln in text.splitlines() if re.match(r"(error: |spine-align [\w-]+: error: )", ln)]


def check(case: Case, got: Outcome, out_root: Path | None = None) -> list[str]:
    """Problems with a case's outcome (empty when it behaved): the suite's assertions in one place."""
    problems = []
    both = got.stdout + got.stderr
    if got.hung:
        return [f"hung (killed after {KILL_AFTER_S:.0f} s)"]
    if "Traceback" in both:
        problems.append("printed a traceback")
    # 10 s of the case's own CPU time; on a shared machine its wall time may be longer (hangs are caught above)
    if got.cpu_seconds > 10.0:
        problems.append(f"took {got.cpu_seconds:.1f} s of CPU")
    if got.max_rss_mb > 1536:
        problems.append(f"peaked at {got.max_rss_mb:.0f} MB")
    errs = error_lines(got.stderr)
    want = case.expect.lower()
    if case.outcome == "refused":
        if got.rc != 2:
            problems.append(f"exit code {got.rc}, expected 2")
        if len(errs) != 1:
            problems.append(f"{len(errs)} error lines, expected 1: {errs[:3]}")
        elif want and want not in errs[0].lower():
            problems.append(f"message does not say {case.expect!r}: {errs[0]}")
        if errs and "unexpected" in errs[0].lower():
            problems.append("an unexpected error, not a refusal with a reason")
    elif case.outcome == "ok":
        if got.rc != 0:
            problems.append(f"exit code {got.rc}, expected 0: {errs[:2]}")
    elif case.outcome == "warning":
        if got.rc != 0:
            problems.append(f"exit code {got.rc}, expected 0 with a warning: {errs[:2]}")
        if want and want not in both.lower():
            problems.append(f"no warning saying {case.expect!r}")
    elif case.outcome == "recorded":
        if got.rc != 1:
            problems.append(f"exit code {got.rc}, expected 1 (batch with a recorded failure): {errs[:2]}")
        out_dir = Path(case.argv[case.argv.index("--out") + 1])
        failures = (out_dir / "failures.csv").read_text() if (out_dir / "failures.csv").is_file() else ""
        if want and want not in failures.lower():
            problems.append(f"failures.csv does not say {case.expect!r}: {failures[-300:]}")
        if "unexpected error" in failures:
            problems.append("failures.csv records an unexpected error")
    elif case.outcome == "partial":
        if got.rc != 2:
            problems.append(f"exit code {got.rc}, expected 2 after the other images")
        if len(errs) != 1 or (want and want not in errs[0].lower()):
            problems.append(f"expected one error line saying {case.expect!r}: {errs[:3]}")
        if "2 analysed, 1 failed" not in got.stdout:
            problems.append(f"the other images were not all analysed: {got.stdout[-300:]}")
    return problems


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        for c in build_corpus(Path(argv[1])):
            print(c.id, c.outcome, " ".join(c.argv)[:150])
        return 0
    if argv[:1] == ["run"]:
        cases = [Case(**c) for c in json.loads(Path(argv[1]).read_text())]
        outcomes = run_cases(cases, Path(argv[2]).parent / "logs", preload_model="--model" in argv)
        Path(argv[2]).write_text(json.dumps([asdict(o) for o in outcomes]))
        return 0
    print("usage: hostile_corpus.py build DIR | run CASES.json OUTCOMES.json [--model]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
