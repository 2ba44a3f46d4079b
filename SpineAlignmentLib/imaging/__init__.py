"""Reading radiographs: pixels, spacing with its calibration label, orientation, safe metadata.

Entry point: :func:`read_radiograph`. Calibration (definitions.md §7.4) is a
pure function of tag values, :func:`resolve_spacing`, usable without a file.
"""

from .calibration import (
    Calibration,
    ManualCalibration,
    has_mm,
    resolve_calibration,
    resolve_spacing,
    validate_spacing,
)
from ..geometry.orientation import (
    ImageAxes,
    direction_vector,
    format_patient_orientation,
    image_axes,
    parse_patient_orientation,
)
from .radiograph import Radiograph, detect_format, read_radiograph

__all__ = [
    "Calibration",
    "ImageAxes",
    "ManualCalibration",
    "Radiograph",
    "detect_format",
    "direction_vector",
    "format_patient_orientation",
    "has_mm",
    "image_axes",
    "parse_patient_orientation",
    "read_radiograph",
    "resolve_calibration",
    "resolve_spacing",
    "validate_spacing",
]
