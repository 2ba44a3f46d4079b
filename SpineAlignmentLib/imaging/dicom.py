"""DICOM projection radiographs through pydicom.

Pixel pipeline for :attr:`Radiograph.pixels` (PS3.4 grayscale pipeline, up to
the presentation step):

1. stored values (``Radiograph.raw``), decoded by pydicom's pixel handlers
   (compressed transfer syntaxes need the ``dicom`` extra: pylibjpeg and its
   plugins);
2. Modality LUT or Rescale Slope/Intercept (``apply_modality_lut``);
3. VOI LUT Sequence, else the first Window Center/Width (``apply_voi`` /
   ``apply_windowing``);
4. MONOCHROME1 only: inversion within the output range of the last step,
   ``v -> lo + hi - v``, so bone is bright as in MONOCHROME2. The range is
   the one pydicom's windowing maps into: ``[0, 2**BitsStored - 1]`` for
   unsigned (``[-2**(BitsStored-1), 2**(BitsStored-1) - 1]`` signed) data put
   through Rescale Slope/Intercept, ``[0, 2**n - 1]`` for an ``n``-bit
   Modality or VOI LUT. It is fixed by the header, not by the image content,
   so the same tissue keeps the same value across images.

Spacing and its label come from :mod:`.calibration` (definitions.md §7.4), never
from SimpleITK. Patient-identifying attributes are left out of ``metadata``
unless ``include_patient_data=True``; Study/Series Description count as
identifying because PS3.15's basic profile removes them (free text). The
Study/Series/SOP Instance UIDs are kept in ``metadata["dicom_uids"]`` (and
carried by results) so that a value can be linked back to its film in a PACS.
"""

from __future__ import annotations

import logging
import struct
import warnings as _warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.pixels.processing import apply_voi, apply_windowing
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import RadiographError
from ..safefiles import check_image_size
from .calibration import ManualCalibration, resolve_calibration
from ..geometry.orientation import format_patient_orientation, parse_patient_orientation
from .image import Radiograph, check_finite_pixels

__all__ = [
    "PATIENT_FIELDS",
    "PROJECTION_MODALITIES",
    "SAFE_FIELDS",
    "read_dicom",
    "read_dicom_header",
    "dataset_to_radiograph",
    "display_pixels",
    "safe_metadata",
]

log = logging.getLogger(__name__)

#: Modalities whose images are projection radiographs (no warning). OT/SC: secondary capture.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "MG", "RF", "XA", "IO", "PX", "OT", "SC", "DF", "DS"})
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_INSTALL_HINT = "install the DICOM extra: pip install 'SpineAlignmentLib[dicom]'"
#: Elements at least this long are read from the file only when used (the pixel data, after the size check).
_DEFER_SIZE = 256 * 1024


def read_dicom(
    path: str | Path,
    *,
    spacing: Sequence[float] | ManualCalibration | None = None,
    patient_orientation: str | Sequence[str] | None = None,
    include_patient_data: bool = False,
) -> Radiograph:
    """Read a single-frame grayscale DICOM radiograph (CR, DX, secondary capture, ...).

    Args:
        path: DICOM file (Part 10; a file without the 128-byte preamble is
            tried too).
        spacing: manual ``(row, col)`` mm or :class:`ManualCalibration`;
            overrides the tags (§7.4 first branch).
        patient_orientation: overrides (0020,0020) Patient Orientation.
        include_patient_data: also copy patient/study identifying fields into
            ``metadata``.

    Returns:
        A :class:`Radiograph` (``metadata["format"] == "dicom"``).

    Raises:
        RadiographError: not DICOM, truncated, no pixel data, multi-frame,
            colour, or pixel data that cannot be decoded.
        CalibrationError: invalid manual spacing.
    """
    path = Path(path)
    ds = _read_dataset(path)
    return dataset_to_radiograph(
        ds,
        path=path,
        spacing=spacing,
        patient_orientation=patient_orientation,
        include_patient_data=include_patient_data,
    )


def read_dicom_header(path: str | Path) -> Dataset:
    """The dataset without its pixel data (tags only: calibration, UIDs), or one sentence saying why not.

    Raises:
        RadiographError: not a DICOM file, or a damaged header.
    """
    path = Path(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return _read_without_preamble(path)  # an old file without preamble is still DICOM when it holds an image
    except (EOFError, OSError, ValueError, KeyError, TypeError, NotImplementedError) as exc:
        raise RadiographError(
            f"{path}: cannot be read as DICOM ({_short(exc)}); the file may be truncated or damaged, so export it again."
        ) from None


def _read_dataset(path: Path) -> Dataset:
    """dcmread with the failure modes turned into one-sentence errors."""
    pydicom_log = logging.getLogger("pydicom")
    saved_level = pydicom_log.level
    # pydicom both warns and logs; the warnings are turned into our own messages below,
    # so keep its log quiet while reading (a user sees one sentence, not three).
    pydicom_log.setLevel(logging.CRITICAL)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        try:
            # Large elements (the pixel data) are read only when used, after the size check of _check_image.
            ds = pydicom.dcmread(path, defer_size=_DEFER_SIZE)
        except InvalidDicomError:
            ds = _read_without_preamble(path)
        except MemoryError:
            raise RadiographError(
                f"{path}: the DICOM header announces an element too large for memory; the file is damaged or "
                "not a radiograph."
            ) from None
        except (EOFError, OSError, ValueError, KeyError, TypeError, NotImplementedError, IndexError,
                AttributeError, OverflowError, struct.error) as exc:
            raise RadiographError(
                f"{path}: cannot be read as DICOM ({_short(exc)}); the file may be truncated or damaged, "
                "so export it again."
            ) from None
        finally:
            pydicom_log.setLevel(saved_level)
    messages = [str(w.message) for w in caught]
    if any("End of file reached" in m or "truncated" in m.lower() for m in messages):
        raise RadiographError(
            f"{path}: the DICOM file ends before its data does (truncated); copy or export it again."
        )
    for m in messages:
        log.debug("pydicom while reading %s: %s", path, m)
    return ds


def _read_without_preamble(path: Path) -> Dataset:
    """Old files may lack the preamble and 'DICM'; accept them only if they look like an image."""
    not_dicom = RadiographError(
        f"{path}: is not a DICOM file (no DICOM header); give a DICOM, PNG, JPEG, TIFF or NRRD radiograph."
    )
    try:
        ds = pydicom.dcmread(path, force=True, defer_size=_DEFER_SIZE)
        ok = "Rows" in ds and "Columns" in ds and any(k in ds for k in _PIXEL_KEYWORDS)
    except Exception:  # noqa: BLE001 - anything a forced parse of a non-DICOM file throws means "not DICOM"
        raise not_dicom from None
    if not ok:
        raise not_dicom
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        # Without file meta pydicom needs to be told how the pixel data is encoded.
        implicit = getattr(ds, "original_encoding", (True, True))[0]
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return ds


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200].rstrip(". ")


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)) if uid else None


def _check_image(ds: Dataset, where: str) -> None:
    """Refuse what cannot be a single-frame grayscale radiograph, with one sentence each."""
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        if len(ds) == 0 or ("Rows" in ds and "Columns" in ds):
            # A header with image attributes (or nothing at all) but no pixels: the file was cut short.
            raise RadiographError(
                f"{where}: the DICOM file stops before its pixel data (truncated or empty); "
                "copy or export it again."
            )
        raise RadiographError(
            f"{where}: the DICOM file has no pixel data (it may be a report, structured report or "
            "presentation state); give the image itself."
        )
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        raise RadiographError(
            f"{where}: is a multi-frame DICOM image ({frames} frames); SpineAlignment measures one "
            "radiograph at a time, so export the frame you want as a single-frame image."
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise RadiographError(
            f"{where}: is a colour DICOM image ({photometric or 'unknown photometric interpretation'}, "
            f"{samples} samples per pixel); SpineAlignment needs a grayscale radiograph (MONOCHROME1/2)."
        )
    # Rows x Columns x frames x bytes against the limits, before the pixel data is read or decoded.
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (AttributeError, TypeError, ValueError):
        raise RadiographError(
            f"{where}: the DICOM header has no usable Rows, Columns or Bits Allocated; the file cannot be decoded."
        ) from None
    if bits not in (1, 8, 16, 32, 64):
        raise RadiographError(f"{where}: Bits Allocated is {bits}, which no radiograph uses; the header is damaged.")
    check_image_size(where, rows, cols, RadiographError, frames=frames, bytes_per_pixel=max(bits, 8) / 8 * samples)


def _compressed(ts: UID | None) -> bool:
    """True for an encapsulated transfer syntax; an unknown (private) UID counts as compressed."""
    if ts is None:
        return False
    try:
        return bool(ts.is_compressed)
    except ValueError:  # pydicom: "UID is not a transfer syntax"
        return True


def _decoder_available(ts: UID | None) -> bool | None:
    """Whether pydicom has a working decoder for ``ts`` (None: pydicom does not know the syntax)."""
    if not _compressed(ts):
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(ts).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return None


def _decode(ds: Dataset, where: str) -> np.ndarray:
    ts = _transfer_syntax(ds)
    ts_name = ts.name if ts is not None else "an unknown transfer syntax"
    if _compressed(ts) and _decoder_available(ts) is False:
        raise RadiographError(
            f"{where}: is compressed with {ts_name} and no decoder for it is installed; {_INSTALL_HINT}."
        )
    pydicom_log = logging.getLogger("pydicom")
    saved_level = pydicom_log.level
    # pydicom logs each failed decoder with its traceback; the failure is reported below as one sentence.
    pydicom_log.setLevel(logging.CRITICAL)
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except MemoryError:
        raise RadiographError(f"{where}: the pixel data does not fit in memory; export a smaller image.") from None
    except ValueError as exc:
        if "less than expected" in str(exc) or "truncat" in str(exc).lower():
            raise RadiographError(
                f"{where}: the pixel data is shorter than Rows x Columns requires (truncated file); "
                "copy or export it again."
            ) from None
        if _compressed(ts):
            raise RadiographError(f"{where}: the compressed pixel data is corrupt ({ts_name}); "
                                  "export the image again.") from None
        raise RadiographError(f"{where}: the pixel data cannot be decoded ({_short(exc)}).") from None
    except (NotImplementedError, RuntimeError, ImportError, OSError, EOFError, IndexError, struct.error) as exc:
        if _decoder_available(ts) is None:
            raise RadiographError(
                f"{where}: uses {ts_name}, which no installed DICOM decoder supports; export it uncompressed or "
                "as JPEG / JPEG 2000."
            ) from None
        log.debug("decoding %s failed: %s", where, exc)
        raise RadiographError(f"{where}: the compressed pixel data is corrupt ({ts_name}); "
                              "export the image again.") from None
    except (AttributeError, KeyError, TypeError) as exc:
        raise RadiographError(
            f"{where}: the image header is incomplete ({_short(exc)}); the file cannot be decoded."
        ) from None
    finally:
        pydicom_log.setLevel(saved_level)
    if arr.ndim != 2:
        raise RadiographError(
            f"{where}: decoded to an array of shape {arr.shape}, not one grayscale image; "
            "give a single-frame grayscale radiograph."
        )
    check_finite_pixels(where, arr)
    return arr


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """Range of stored values allowed by Bits Stored and Pixel Representation."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 0:
        return 0.0, float(2**bits - 1)
    return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)


def _lut_range(item: Dataset) -> tuple[float, float]:
    bits = int(item.LUTDescriptor[2])
    return 0.0, float(2**bits - 1)


def display_pixels(ds: Dataset, raw: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored values -> display values: modality LUT, VOI LUT/window, MONOCHROME1 inversion.

    Args:
        ds: the dataset (Modality LUT, VOI LUT and Photometric Interpretation).
        raw: ``(rows, cols)`` stored values from ``ds.pixel_array``.

    Returns:
        ``(pixels, steps)``: ``pixels`` is ``(rows, cols)`` float32, bone
        bright; ``steps`` records what was applied (``modality``: ``"lut"``,
        ``"rescale"`` or ``None``; ``voi``: ``"lut"``, ``"window"`` or
        ``None``; ``inverted``: bool; ``range``: the ``[lo, hi]`` used).
    """
    steps: dict[str, Any] = {"modality": None, "voi": None, "inverted": False}
    if ds.get("ModalityLUTSequence"):
        steps["modality"] = "lut"
        lo, hi = _lut_range(ds.ModalityLUTSequence[0])
    else:
        lo, hi = _stored_range(ds)
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        if slope is not None and intercept is not None:
            steps["modality"] = "rescale"
            lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    values = apply_modality_lut(raw, ds) if steps["modality"] else raw

    if ds.get("VOILUTSequence"):
        try:
            values = apply_voi(values, ds, index=0)
            steps["voi"] = "lut"
            lo, hi = _lut_range(ds.VOILUTSequence[0])
        except (ValueError, AttributeError, IndexError, KeyError) as exc:
            log.warning("VOI LUT Sequence not applied (%s)", _short(exc))
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            values = apply_windowing(values, ds, index=0)
            steps["voi"] = "window"
        except (ValueError, TypeError, IndexError) as exc:
            log.warning("Window Center/Width not applied (%s)", _short(exc))
    pixels = np.asarray(values, dtype=np.float64)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        pixels = (lo + hi) - pixels
        steps["inverted"] = True
    steps["range"] = [min(lo, hi), max(lo, hi)]
    return pixels.astype(np.float32), steps


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value)


def _num_list(value: Any) -> Any:
    try:
        if type(value).__name__ == "MultiValue" or isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        return float(value)
    except (TypeError, ValueError):
        return _jsonable(value)


#: Technical attributes copied into metadata: metadata key -> DICOM keyword.
SAFE_FIELDS = {
    "modality": "Modality",
    "sop_class_uid": "SOPClassUID",
    "view_position": "ViewPosition",
    "image_laterality": "ImageLaterality",
    "body_part": "BodyPartExamined",
    "manufacturer": "Manufacturer",
    "manufacturer_model": "ManufacturerModelName",
    "rows": "Rows",
    "columns": "Columns",
    "bits_allocated": "BitsAllocated",
    "bits_stored": "BitsStored",
    "pixel_representation": "PixelRepresentation",
    "photometric_interpretation": "PhotometricInterpretation",
    "presentation_intent": "PresentationIntentType",
    "rescale_slope": "RescaleSlope",
    "rescale_intercept": "RescaleIntercept",
    "window_center": "WindowCenter",
    "window_width": "WindowWidth",
    "voi_lut_function": "VOILUTFunction",
    "pixel_spacing": "PixelSpacing",
    "imager_pixel_spacing": "ImagerPixelSpacing",
    "nominal_scanned_pixel_spacing": "NominalScannedPixelSpacing",
    "pixel_spacing_calibration_type": "PixelSpacingCalibrationType",
    "estimated_radiographic_magnification_factor": "EstimatedRadiographicMagnificationFactor",
    "distance_source_to_detector": "DistanceSourceToDetector",
    "distance_source_to_patient": "DistanceSourceToPatient",
}
_NUMERIC = {
    "rescale_slope", "rescale_intercept", "window_center", "window_width", "pixel_spacing",
    "imager_pixel_spacing", "nominal_scanned_pixel_spacing", "estimated_radiographic_magnification_factor",
    "distance_source_to_detector", "distance_source_to_patient",
}

#: Identifying attributes, copied only with include_patient_data=True.
PATIENT_FIELDS = {
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "patient_age": "PatientAge",
    "other_patient_ids": "OtherPatientIDs",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "accession_number": "AccessionNumber",
    "study_id": "StudyID",
    "institution_name": "InstitutionName",
    "referring_physician_name": "ReferringPhysicianName",
    "study_description": "StudyDescription",
    "series_description": "SeriesDescription",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
}


#: UIDs that link a result back to its film in a PACS: kept always (they name no patient), metadata["dicom_uids"].
REFERENCE_UIDS = {
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
}


def reference_uids(ds: Dataset) -> dict[str, str]:
    """The film's Study/Series/SOP Instance UIDs and SOP Class UID (those present)."""
    return {key: str(ds.get(kw)) for key, kw in REFERENCE_UIDS.items() if ds.get(kw)}


def safe_metadata(ds: Dataset, include_patient_data: bool = False) -> dict[str, Any]:
    """Technical DICOM fields as a JSON-ready dict; identifying ones only when asked.

    Args:
        ds: the dataset.
        include_patient_data: add the fields of :data:`PATIENT_FIELDS`.

    Returns:
        Dict with snake_case keys (see :data:`SAFE_FIELDS`) plus ``format``,
        ``sop_class`` (name), ``transfer_syntax_uid``, ``transfer_syntax``
        (name) and ``patient_orientation_tag``; absent attributes are left out.
    """
    md: dict[str, Any] = {"format": "dicom"}
    for key, keyword in SAFE_FIELDS.items():
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        md[key] = _num_list(value) if key in _NUMERIC else _jsonable(value)
    if "sop_class_uid" in md:
        md["sop_class"] = UID(md["sop_class_uid"]).name
    ts = _transfer_syntax(ds)
    if ts is not None:
        md["transfer_syntax_uid"] = str(ts)
        md["transfer_syntax"] = ts.name
    if ds.get("PatientOrientation"):
        md["patient_orientation_tag"] = _jsonable(ds.PatientOrientation)
    if include_patient_data:
        for key, keyword in PATIENT_FIELDS.items():
            value = ds.get(keyword)
            if value is not None and value != "":
                md[key] = _jsonable(value)
    return md


def dataset_to_radiograph(
    ds: Dataset,
    *,
    path: str | Path | None = None,
    spacing: Sequence[float] | ManualCalibration | None = None,
    patient_orientation: str | Sequence[str] | None = None,
    include_patient_data: bool = False,
) -> Radiograph:
    """Build a :class:`Radiograph` from a pydicom dataset already in memory.

    Same arguments and errors as :func:`read_dicom`; ``path`` is only used in
    messages and in ``Radiograph.path``.
    """
    where = str(path) if path is not None else "DICOM dataset"
    _check_image(ds, where)
    raw = _decode(ds, where)
    pixels, steps = display_pixels(ds, raw)

    warnings: list[str] = []
    modality = str(ds.get("Modality", "")).strip().upper() or None
    sop_class = str(ds.get("SOPClassUID", ""))
    if modality not in PROJECTION_MODALITIES and not sop_class.startswith(_SECONDARY_CAPTURE_PREFIX):
        warnings.append(
            f"{where}: modality {modality or 'unknown'} is not a projection radiograph (CR/DX); "
            "landmarks and mm values assume one, so check the image."
        )

    cal = resolve_calibration(ds, spacing)  # logs its own warnings
    cal_warnings = [f"{where}: {w}" for w in cal.warnings]

    file_orientation = None
    if ds.get("PatientOrientation"):
        try:
            file_orientation = parse_patient_orientation(ds.PatientOrientation)
        except Exception as exc:  # noqa: BLE001 - a bad tag must not stop reading; it is reported instead
            warnings.append(f"{where}: Patient Orientation in the file is unusable ({exc}); patient sides unknown.")
    orientation = file_orientation
    if patient_orientation is not None:
        given = parse_patient_orientation(patient_orientation)
        if given is not None:
            if file_orientation is not None and given != file_orientation:
                warnings.append(
                    f"{where}: patient orientation {format_patient_orientation(given)} was given but the file says "
                    f"{format_patient_orientation(file_orientation)}; using the one given."
                )
            orientation = given

    metadata = safe_metadata(ds, include_patient_data)
    metadata["display"] = steps
    metadata["dicom_uids"] = reference_uids(ds)
    metadata["calibration_source"] = cal.source
    if cal.magnification is not None:
        metadata["magnification"] = cal.magnification
    if cal.description:
        metadata["pixel_spacing_calibration_description"] = cal.description

    for w in warnings:
        log.warning(w)
    return Radiograph(
        pixels=pixels,
        raw=raw,
        spacing_mm=cal.spacing_mm,
        calibration=cal.label,
        patient_orientation=orientation,
        modality=modality,
        metadata=metadata,
        path=Path(path) if path is not None else None,
        warnings=cal_warnings + warnings,
    )
