"""The one reader entry point, and the radiograph object every later layer works on (from :mod:`.image`).

:func:`read_radiograph` chooses the reader from the file's content (falling back
to its extension): DICOM through pydicom (:mod:`.dicom`), PNG/JPEG/TIFF/BMP
through Pillow and NRRD/MetaImage/NIfTI through SimpleITK (:mod:`.raster`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from ..errors import RadiographError
from ..safefiles import MAX_IMAGE_FILE_BYTES, check_input_file
from .calibration import ManualCalibration
from .image import Radiograph, check_finite_pixels  # re-exported: the object lives below the readers

__all__ = ["Radiograph", "read_radiograph", "detect_format", "check_finite_pixels", "calibration_of_file"]

PathLike = str | os.PathLike


# Magic numbers of the formats we read; anything else is tried as DICOM only by extension.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
    (b"BM", "bmp"),
    (b"NRRD", "nrrd"),
)
_EXTENSIONS = {
    ".dcm": "dicom", ".dicom": "dicom", ".dic": "dicom",
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp",
    ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "itk", ".mhd": "itk", ".nii": "itk", ".nii.gz": "itk",
}


def detect_format(path: PathLike) -> str:
    """Guess the reader for a file: ``dicom``, ``png``, ``jpeg``, ``tiff``, ``bmp``, ``nrrd`` or ``itk``.

    Content wins over the extension (a PNG named ``.dcm`` is read as PNG); a
    file with an unknown extension and no known signature is tried as DICOM,
    since DICOM files often have no extension at all.
    """
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    name = p.name.lower()
    if name.endswith(".nii.gz"):
        return "itk"
    return _EXTENSIONS.get(p.suffix.lower(), "dicom")


def read_radiograph(
    path: PathLike,
    *,
    spacing: Sequence[float] | ManualCalibration | None = None,
    patient_orientation: str | Sequence[str] | None = None,
    include_patient_data: bool = False,
) -> Radiograph:
    """Read a radiograph from DICOM, PNG, JPEG, TIFF, BMP, NRRD or another ITK format.

    Args:
        path: the image file.
        spacing: ``(row, col)`` mm per pixel given by the user (label
            ``manual:user``), or a :class:`~.calibration.ManualCalibration`
            (label ``manual:<where>``). It overrides DICOM tags. Without it a
            DICOM file is calibrated by definitions.md §7.4 and any other file
            is ``pixels-only`` (angles and ratios only).
        patient_orientation: DICOM-style Patient Orientation of the image, e.g.
            ``"L,F"`` or ``("L", "F")`` when image +x is the patient's left and
            image +y points to the feet. Overrides the DICOM tag. Without it
            (and without the tag) patient sides are unknown.
        include_patient_data: put patient-identifying fields (name, ID, birth
            date, UIDs, descriptions, ...) into ``metadata``. Off by default.

    Returns:
        A :class:`Radiograph`.

    Raises:
        RadiographError: missing, not a regular file, unreadable, truncated,
            larger than the limits of :mod:`SpineAlignmentLib.safefiles`,
            multi-frame, colour or pixel-less file, non-finite pixels, or an
            invalid ``patient_orientation``.
        CalibrationError: ``spacing`` is zero, negative or not finite.
    """
    p = Path(path)
    check_input_file(p, RadiographError, what="image file", max_bytes=MAX_IMAGE_FILE_BYTES)  # before any open: a FIFO or device never blocks
    try:
        fmt = detect_format(p)
    except OSError as exc:
        raise RadiographError(f"{p}: cannot be opened ({exc.strerror or exc}); check permissions.") from None
    if fmt == "dicom":
        from .dicom import read_dicom

        return read_dicom(
            p, spacing=spacing, patient_orientation=patient_orientation, include_patient_data=include_patient_data
        )
    from .raster import read_raster

    return read_raster(p, fmt, spacing=spacing, patient_orientation=patient_orientation)


def calibration_of_file(path: PathLike) -> tuple[tuple[float, float] | None, str]:
    """``(spacing_mm or None, calibration label)`` of an image file, from its header only.

    The same decision as :func:`read_radiograph` without a manual spacing
    (definitions.md §7.4 for DICOM; ``pixels-only`` for other formats), for a
    viewer that shows the label while the user changes other settings: the
    pixels are never decoded, and the answer is kept per file version (path,
    modification time, size), so the file is read once until it changes.

    Raises:
        RadiographError: missing or unreadable file.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise RadiographError(f"{p}: file not found; check the path.") from None
    return _calibration_of_file(str(p.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _calibration_of_file(path: str, mtime_ns: int, size: int) -> tuple[tuple[float, float] | None, str]:
    if detect_format(path) != "dicom":
        return None, "pixels-only"
    from .calibration import resolve_calibration
    from .dicom import read_dicom_header

    cal = resolve_calibration(read_dicom_header(Path(path)))
    return cal.spacing_mm, cal.label
