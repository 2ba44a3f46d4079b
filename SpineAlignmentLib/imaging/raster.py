"""Non-DICOM radiographs: PNG/JPEG/TIFF/BMP (Pillow) and NRRD/MetaImage/NIfTI (SimpleITK).

These formats carry no trustworthy calibration, so the spacing is the one the
user gives (label ``manual:user``) or none at all (``pixels-only``: angles and
ratios only). A spacing stored in an NRRD header is recorded in
``metadata["file_spacing_mm"]`` but not used on its own: NRRD files of
radiographs are often written from SimpleITK's reading of a DICOM file, which
holds the detector-plane Imager Pixel Spacing (definitions.md §7.3), so the
user must confirm it with ``--spacing``.

Colour files are accepted only when every pixel is gray (R = G = B exactly,
alpha fully opaque), as grayscale radiographs are often saved as RGB; then
one channel is used. Any real colour is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import RadiographError
from ..safefiles import MAX_IMAGE_PIXELS, check_image_size
from .calibration import ManualCalibration, resolve_calibration
from ..geometry.orientation import parse_patient_orientation
from .image import Radiograph, check_finite_pixels

__all__ = ["read_raster", "pixels_from_array", "pillow_size"]

log = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112


class _Unreadable(RadiographError):
    """Pillow could not decode the file (another reader may still manage)."""


def _gray_from_channels(arr: np.ndarray, where: str, mode: str) -> np.ndarray:
    """``(rows, cols, C)`` -> ``(rows, cols)`` when the image is gray; refuse real colour."""
    channels = arr.shape[-1]
    colour = arr[..., : min(3, channels)]
    if channels in (2, 4):  # trailing alpha
        alpha = arr[..., -1]
        max_alpha = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0
        if not np.all(alpha == max_alpha):
            raise RadiographError(
                f"{where}: has transparent pixels ({mode}); save the radiograph without an alpha channel."
            )
        if channels == 2:
            return arr[..., 0]
    if colour.shape[-1] == 3 and not (
        np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2])
    ):
        raise RadiographError(
            f"{where}: is a colour image ({mode} with R, G and B different); SpineAlignment needs a grayscale "
            "radiograph, so save it as grayscale."
        )
    return colour[..., 0]


def _too_many_pixels(where: str) -> RadiographError:
    return RadiographError(
        f"{where}: the header announces more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels, more than "
        "SpineAlignment reads; downsample the image or check that it is a radiograph."
    )


def _open_pillow(path: Path):
    """``PIL.Image.open`` with PIL's decompression-bomb guard at our limit (it raises on the header alone)."""
    import warnings as _warnings

    from PIL import Image

    # The size is checked from the header (check_image_size) with our own limit and message;
    # PIL's bomb check stays as a second guard at the same limit.
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def pillow_size(path: Path, where: str) -> tuple[int, int]:
    """``(rows, cols)`` from the header of a PNG/JPEG/TIFF/BMP file, within the size limits; no pixel is decoded.

    Raises:
        RadiographError: not an image, or a header announcing more than the limits (a decompression bomb).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_pillow(path) as im:
            cols, rows = im.size
    except Image.DecompressionBombError:
        raise _too_many_pixels(where) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise RadiographError(f"{where}: cannot be read as an image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                              "export it again.") from None
    check_image_size(where, rows, cols, RadiographError)
    return rows, cols


def _read_pillow(path: Path, where: str) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    from PIL import Image, UnidentifiedImageError

    warnings: list[str] = []
    try:
        with _open_pillow(path) as im:
            cols, rows = im.size
            check_image_size(where, rows, cols, RadiographError)
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames > 1:
                raise RadiographError(
                    f"{where}: has {frames} frames/pages; SpineAlignment measures one radiograph at a time, "
                    "so save the one you want as a single image."
                )
            mode = im.mode
            exif_orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode == "1":
                im = im.convert("L")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                raise RadiographError(
                    f"{where}: is a colour image ({mode}); SpineAlignment needs a grayscale radiograph."
                )
            arr = np.asarray(im)
            fmt = im.format
    except RadiographError:
        raise
    except Image.DecompressionBombError:
        raise _too_many_pixels(where) from None
    except MemoryError:
        raise RadiographError(f"{where}: the image does not fit in memory; downsample it.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise _Unreadable(
            f"{where}: cannot be read as an image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "the file may be truncated or not an image, so export it again."
        ) from None
    if arr.ndim == 3:
        arr = _gray_from_channels(arr, where, mode)
    if arr.ndim != 2:
        raise RadiographError(f"{where}: decoded to shape {arr.shape}, not one grayscale image.")
    if exif_orientation not in (1, None):
        # Coordinates refer to the stored pixel grid (as in most tools); say so instead of rotating silently.
        warnings.append(
            f"{where}: has an EXIF orientation tag ({exif_orientation}) that was ignored; landmarks refer to "
            "the stored pixels, which a photo viewer may show rotated or mirrored."
        )
    return arr, {"format": (fmt or path.suffix.lstrip(".")).lower(), "mode": mode}, warnings


def _read_sitk(path: Path, where: str) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    import SimpleITK as sitk

    try:
        info = sitk.ImageFileReader()
        info.SetFileName(str(path))
        info.ReadImageInformation()  # header only: the size is checked before any pixel is read
        size = info.GetSize()
        check_image_size(where, int(size[1]) if len(size) > 1 else 1, int(size[0]), RadiographError,
                         frames=int(np.prod(size[2:])) if len(size) > 2 else 1,
                         bytes_per_pixel=float(info.GetNumberOfComponents()) * 8)
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise RadiographError(
            f"{where}: cannot be read as an image ({first[:160]}); the file may be truncated or damaged."
        ) from None
    size = img.GetSize()  # (x, y[, z])
    if img.GetDimension() > 3 or (img.GetDimension() == 3 and size[2] != 1):
        raise RadiographError(
            f"{where}: is a volume of size {list(size)}, not one radiograph; save a single 2-D image."
        )
    arr = sitk.GetArrayFromImage(img)  # (rows, cols[, C]) or (1, rows, cols[, C])
    if img.GetDimension() == 3:
        arr = arr[0]
    comps = img.GetNumberOfComponentsPerPixel()
    if comps > 1:
        arr = _gray_from_channels(arr, where, f"{comps} components")
    sx, sy = img.GetSpacing()[:2]
    md: dict[str, Any] = {
        "format": "nrrd" if path.suffix.lower() in (".nrrd", ".nhdr") else path.suffix.lower().lstrip("."),
        # ITK spacing is (x = column, y = row); the project's order is (row, col).
        "file_spacing_mm": [float(sy), float(sx)],
    }
    warnings: list[str] = []
    if not (sx == 1.0 and sy == 1.0):
        warnings.append(
            f"{where}: the file header gives spacing {float(sy):g} x {float(sx):g} mm (row x col), which was not "
            "used; pass it with --spacing ROW COL if you know it is the patient-plane spacing."
        )
    return arr, md, warnings


def pixels_from_array(arr: np.ndarray) -> np.ndarray:
    """Display/model pixels for formats without LUTs: the stored values as float32."""
    return np.asarray(arr, dtype=np.float32)


def read_raster(
    path: str | Path,
    fmt: str,
    *,
    spacing: Sequence[float] | ManualCalibration | None = None,
    patient_orientation: str | Sequence[str] | None = None,
) -> Radiograph:
    """Read a PNG/JPEG/TIFF/BMP (``fmt`` from :func:`detect_format`) or NRRD/ITK image.

    Args:
        path: image file.
        fmt: ``png``, ``jpeg``, ``tiff``, ``bmp``, ``nrrd`` or ``itk``.
        spacing: ``(row, col)`` mm per pixel or a :class:`ManualCalibration`;
            without it the result is ``pixels-only``.
        patient_orientation: e.g. ``"L,F"``; without it patient sides are unknown.

    Returns:
        A :class:`Radiograph` whose ``raw`` is the stored array (uint8, uint16,
        int32 or float32) and ``pixels`` its float32 copy.

    Raises:
        RadiographError: unreadable, truncated, multi-frame or colour file.
        CalibrationError: invalid spacing.
    """
    path = Path(path)
    where = str(path)
    orientation = parse_patient_orientation(patient_orientation)
    cal = resolve_calibration(None, spacing)
    if fmt in ("nrrd", "itk"):
        raw, md, warnings = _read_sitk(path, where)
    else:
        try:
            raw, md, warnings = _read_pillow(path, where)
        except _Unreadable:
            if fmt != "tiff":
                raise
            # Some scientific TIFFs (e.g. odd sample formats) only ITK reads.
            raw, md, warnings = _read_sitk(path, where)
    raw = np.ascontiguousarray(raw)
    check_finite_pixels(where, raw)
    md.update({
        "rows": int(raw.shape[0]),
        "columns": int(raw.shape[1]),
        "dtype": str(raw.dtype),
        "bits_allocated": int(raw.dtype.itemsize * 8),
        "photometric_interpretation": "MONOCHROME2",
        "calibration_source": cal.source,
    })
    for w in warnings:
        log.warning(w)
    return Radiograph(
        pixels=pixels_from_array(raw),
        raw=raw,
        spacing_mm=cal.spacing_mm,
        calibration=cal.label,
        patient_orientation=orientation,
        modality=None,
        metadata=md,
        path=path,
        warnings=warnings,
    )
