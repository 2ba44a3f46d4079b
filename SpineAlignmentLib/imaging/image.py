"""The radiograph object every reader returns, and the pixel check every reader applies.

It sits below the readers (:mod:`.dicom`, :mod:`.raster`) and the entry point
that chooses between them (:mod:`.radiograph`), so all three use it without
importing each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RadiographError
from ..geometry.orientation import format_patient_orientation, image_axes

__all__ = ["Radiograph", "check_finite_pixels"]


@dataclass
class Radiograph:
    """A single-frame grayscale projection radiograph.

    Attributes:
        pixels: ``(rows, cols)`` float32 display/model-ready intensities in the
            MONOCHROME2 sense (higher = brighter = more attenuation, bone
            bright): DICOM Modality LUT/rescale, then VOI LUT/window, then
            MONOCHROME1 inversion; for other formats the stored values.
        raw: ``(rows, cols)`` stored values exactly as decoded (DICOM stored
            pixel values before any LUT; integer dtype of the file).
        spacing_mm: ``(row, col)`` mm per pixel, or ``None`` when unknown.
        calibration: label of definitions.md §7.4 (``pixels-only`` when
            ``spacing_mm`` is ``None``).
        patient_orientation: ``(x_direction, y_direction)`` such as
            ``("L", "F")`` (DICOM Patient Orientation), or ``None`` when the
            patient sides are unknown.
        modality: DICOM Modality (``"DX"``, ``"CR"``, ...) or ``None``.
        metadata: JSON-serialisable dict of technical fields only (no patient
            data unless the reader was asked to include it).
        path: the file read, or ``None`` for an in-memory object.
        warnings: problems a user should know about (text they can act on).
    """

    pixels: np.ndarray
    raw: np.ndarray
    spacing_mm: tuple[float, float] | None = None
    calibration: str = "pixels-only"
    patient_orientation: tuple[str, str] | None = None
    modality: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the image."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """Same as :attr:`shape`; the name used by the result file (``[rows, columns]``)."""
        return self.shape

    def info(self) -> dict[str, Any]:
        """JSON-ready summary (what ``spine-align info`` prints); no patient data."""
        md = self.metadata
        axes = image_axes(self.patient_orientation)
        return {
            "image": str(self.path) if self.path is not None else None,
            "format": md.get("format"),
            "size": list(self.shape),
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm is not None else None,
            "calibration": self.calibration,
            "patient_orientation": format_patient_orientation(self.patient_orientation),
            "orientation": axes.describe() if axes is not None else None,
            "modality": self.modality,
            "sop_class": md.get("sop_class"),
            "view_position": md.get("view_position"),
            "photometric": md.get("photometric_interpretation"),
            "bits_allocated": md.get("bits_allocated"),
            "bits_stored": md.get("bits_stored"),
            "transfer_syntax": md.get("transfer_syntax"),
            "warnings": list(self.warnings),
        }


def check_finite_pixels(where: str, arr: np.ndarray) -> None:
    """Refuse an image with NaN or infinite pixel values (floating-point TIFF/NRRD/DICOM).

    Such pixels would silently shift every intensity statistic the model and
    the overlay use; no radiograph has them, so the file was made wrongly.
    """
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise RadiographError(
            f"{where}: {bad} of {arr.size} pixels are NaN or infinite; a radiograph has finite values, so export "
            "the image again (or replace them with a real value)."
        )
