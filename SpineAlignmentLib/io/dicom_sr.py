"""A result as a DICOM Structured Report (TID 1500 Measurement Report), written and read back.

Written with highdicom as a Comprehensive SR that copies the patient and study
modules of the source radiograph (that is its purpose in a PACS). Content tree
(docs/dicom.md):

- TID 1500 "Imaging Measurement Report"; procedure reported = the protocol
  (project code); observer = the SpineAlignment software (device);
  image library = the source film(s).
- One TID 1501 measurement group per parameter: tracking identifier = the
  result's parameter ID; algorithm identification = the model's name and
  version (or the library's, for landmarks placed by hand); one TID 300
  numeric measurement with its concept (SNOMED CT where PS3.16 has one, else
  the project scheme ``99SPAL``), its UCUM unit, a finding site where one
  exists, and the landmarks used as an SCOORD MULTIPOINT on the image they
  were placed on (INFERRED FROM, referencing its SOP Instance UID). TEXT items
  of the group carry the calibration label, the landmark IDs in point order,
  the view (flexion/extension) and the measurement's own warnings.
- One group ``report`` with the result's warnings (level warnings included)
  and the parameters left out with their reasons.

SCOORD coordinates are DICOM's (0, 0 = top-left corner of the top-left pixel),
so a landmark at pixel ``(x, y)`` (integers at pixel centres) is stored as
``(x + 0.5, y + 0.5)``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..errors import RadiographError, SpineAlignmentError
from ..geometry.measurement import Measurement
from ..result import Landmark, Result, View

__all__ = [
    "SCHEME",
    "code_table",
    "concept_for",
    "read_source_dataset",
    "read_measurement_report",
    "write_measurement_report",
]

log = logging.getLogger(__name__)

#: Pixel centre (integer pixel coordinates) -> SCOORD (pixel corner origin).
SCOORD_OFFSET = 0.5
_TRACKING_REPORT = "report"
_UNPLACED = "not on this image"
#: Algorithm name of a result whose landmarks came from a person (the measurement code is still an algorithm).
_MANUAL_ALGORITHM = "SpineAlignment (landmarks placed by hand)"
_LEVEL = re.compile(r"_(L\dL\d|L5S1)(?:_|$)")


@lru_cache(maxsize=1)
def code_table() -> dict[str, Any]:
    """``dicom_codes.json``: the coded concepts of the SR and SEG outputs (docs/dicom.md)."""
    return json.loads(resources.files(__package__).joinpath("dicom_codes.json").read_text(encoding="utf-8"))


SCHEME = "99SPAL"


def _code(value: str, scheme: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _report_code(key: str) -> tuple[str, str, str]:
    """(code value, scheme, meaning) of a report item: ``[value, meaning]`` in the project scheme, or a
    standard ``[value, scheme, meaning]`` where PS3.16 has one (``dicom_codes.json``)."""
    entry = code_table()["report"][key]
    return (entry[0], SCHEME, entry[1]) if len(entry) == 2 else (entry[0], entry[1], entry[2])


def _project(key: str):
    return _code(*_report_code(key))


def short_meaning(text: str, limit: int = 64) -> str:
    """A Code Meaning (LO, 64 characters) from a title: whole words, a trailing parenthesis dropped rather
    than cut ("Radiographic shoulder height, bony surrogate (lateral clavicle ends)" -> "... bony surrogate")."""
    if len(text) <= limit:
        return text
    base = re.sub(r"\s*\([^()]*\)\s*$", "", text)
    if base and len(base) <= limit:
        return base
    cut = base[:limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return cut[:limit]


def _base_id(parameter_id: str, roles: tuple[str, ...]) -> tuple[str, str | None]:
    """``SA_L1L2_flexion`` -> (``SA_L1L2``, ``flexion``) for the views of a pair."""
    for role in roles:
        if parameter_id.endswith(f"_{role}"):
            return parameter_id[: -len(role) - 1], role
    return parameter_id, None


def concept_for(parameter_id: str, protocol: str) -> tuple[str, str, str]:
    """(code value, scheme, meaning) of a parameter's concept name.

    A standard code where PS3.16 has one for exactly this quantity, else the
    project scheme with the parameter ID as code value and its table title as meaning.
    """
    from ..protocols import get_protocol

    std = code_table()["concepts"].get(parameter_id)
    if std:
        return std[0], std[1], std[2]
    titles = {p.id: p.title for p in get_protocol(protocol).parameters}
    title = titles.get(parameter_id, parameter_id)
    return parameter_id, SCHEME, short_meaning(title)  # LO: 64 characters


def _finding_site(parameter_id: str):
    sites = code_table()["finding_sites"]
    site = sites.get(parameter_id)
    if site is None:
        m = _LEVEL.search(parameter_id)
        site = sites.get(m.group(1)) if m else None
    return None if site is None else _code(*site)


def _unit(unit: str):
    try:
        value, scheme, meaning = code_table()["units"][unit]
    except KeyError:
        raise SpineAlignmentError(f"unit '{unit}' has no UCUM code in dicom_codes.json.") from None
    return _code(value, scheme, meaning)


def _library_version() -> str:
    from .. import __version__

    return __version__


def read_source_dataset(path: str | Path) -> Dataset:
    """The source radiograph's header (no pixels), or one sentence saying it is not DICOM.

    Raises:
        RadiographError: the file is not a DICOM image with SOP Class/Instance UIDs.
    """
    from ..imaging.dicom import read_dicom_header

    path = Path(path)
    try:
        ds = read_dicom_header(path)
    except RadiographError:
        raise RadiographError(
            f"{path}: is not a DICOM file, so no DICOM SR/SEG can reference it; "
            "DICOM outputs (--dicom-sr) need a DICOM film."
        ) from None
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not ds.get(k)]
    if missing:
        raise RadiographError(f"{path}: the DICOM header lacks {', '.join(missing)}; a DICOM SR cannot reference it.")
    return ds


#: Attributes copied from the source into a report, by value representation, that must parse as such.
_COPIED_DATES = ("StudyDate", "PatientBirthDate", "SeriesDate", "ContentDate")
_COPIED_TIMES = ("StudyTime", "SeriesTime", "ContentTime")
_COPIED_NAMES = ("PatientName", "ReferringPhysicianName")
_REFERENCED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
#: the UIDs a report must copy or reference (the frame of reference is optional for a projection radiograph)
_REQUIRED_UIDS = _REFERENCED_UIDS[:4]


def source_problem(ds: Dataset) -> str | None:
    """Why a DICOM SR/SEG cannot reference or copy from this source header, in a few words; None when it can.

    Checked before any inference, so that a film whose header a report cannot carry is still analysed
    (its other outputs written) instead of failing after the model ran, or giving a report with invalid
    attributes (a malformed UID copied into the SR fails every DICOM validator).
    """
    from pydicom.charset import python_encoding
    from pydicom.uid import UID
    from pydicom.valuerep import DA, TM

    charsets = ds.get("SpecificCharacterSet") or []
    for cs in [charsets] if isinstance(charsets, str) else list(charsets):
        if str(cs).strip() not in python_encoding:
            return f"its Specific Character Set {str(cs)[:40]!r} is not a DICOM character set"
    for kw in _REFERENCED_UIDS:
        value = ds.get(kw)
        if not value and kw in _REQUIRED_UIDS:
            return f"it has no {kw}, which a report must reference"
        if value and not UID(str(value)).is_valid:
            return f"its {kw} {str(value)[:64]!r} is not a valid DICOM UID"
    sop_class = str(ds.get("SOPClassUID") or "")
    if sop_class:
        try:
            from highdicom._standard_utils import does_iod_have_pixel_data

            image = does_iod_have_pixel_data(sop_class)
        except KeyError:  # a private or retired SOP Class: no image IOD known
            image = False
        except ImportError:  # pragma: no cover - highdicom is what writes the report
            image = True
        if not image:
            return f"its SOP Class {sop_class} is not a DICOM image storage class"
    for kws, parse, what in ((_COPIED_DATES, DA, "date (YYYYMMDD)"), (_COPIED_TIMES, TM, "time (HHMMSS)")):
        for kw in kws:
            value = ds.get(kw)
            if value not in (None, ""):
                try:
                    parse(str(value))
                except (ValueError, TypeError):
                    return f"its {kw} {str(value)[:40]!r} is not a DICOM {what}"
    for kw in _COPIED_NAMES:
        if kw in ds and ds.data_element(kw).VM > 1:
            return f"its {kw} holds {ds.data_element(kw).VM} names where DICOM allows one"
    return None


def check_source(path: str | Path) -> str | None:
    """One sentence saying why no DICOM SR/SEG is written for the film at ``path`` (see :func:`source_problem`),
    or None when a report can reference it, or when it is not DICOM at all (that is said where the film is read)."""
    from ..imaging.dicom import read_dicom_header
    from ..imaging.radiograph import detect_format
    from ..safefiles import check_input_file

    try:
        check_input_file(path, RadiographError)  # never opens a FIFO or a device
        if detect_format(path) != "dicom":
            return None
        ds = read_dicom_header(Path(path))
    except (RadiographError, OSError):
        return None
    problem = source_problem(ds)
    if problem is None:
        return None
    return (f"{path}: no DICOM SR/SEG was written because {problem}; the other outputs were written, so fix the "
            "source's header (or leave out --dicom-sr) to get one.")


def _sources(result: Result, sources: Dataset | Mapping[str, Dataset]) -> dict[str, Dataset]:
    """Role -> dataset ("" for a single image); checks them against the UIDs the result carries."""
    if isinstance(sources, Dataset):
        mapped = {"": sources}
    else:
        mapped = dict(sources)
    roles = tuple(result.views)
    if roles and set(mapped) != set(roles):
        raise SpineAlignmentError(
            f"the result has the images {', '.join(roles)}; give one source DICOM for each "
            f"(got {', '.join(mapped) or 'none'})."
        )
    for role, ds in mapped.items():
        expected = (result.views[role].dicom if role else result.dicom) or {}
        uid = expected.get("sop_instance_uid")
        if uid and uid != str(ds.SOPInstanceUID):
            raise SpineAlignmentError(
                f"the source DICOM {ds.SOPInstanceUID} is not the image the result was measured on ({uid}); "
                "give the same file."
            )
    return mapped


def _landmarks_for(result: Result, role: str | None) -> dict[str, Landmark]:
    if role:
        return result.views[role].landmarks
    return result.landmarks


def _coordinates(m: Measurement, result: Result, role: str | None, sources: dict[str, Dataset]):
    """SCOORD MULTIPOINT (or POINT) items of the landmarks used, one per image they were placed on."""
    from highdicom.sr import CoordinatesForMeasurement, GraphicTypeValues, SourceImageForRegion

    roles = [role] if role else (list(result.views) if result.views else [""])
    items, ids_out = [], []
    for r in roles:
        lms = _landmarks_for(result, r or None)
        ids = [i for i in m.landmarks if i in lms]
        if not ids or r not in sources:
            continue
        ds = sources[r]
        pts = np.array([[lms[i].x + SCOORD_OFFSET, lms[i].y + SCOORD_OFFSET] for i in ids], dtype=np.float32)
        items.append(CoordinatesForMeasurement(
            graphic_type=GraphicTypeValues.MULTIPOINT if len(ids) > 1 else GraphicTypeValues.POINT,
            graphic_data=pts if len(ids) > 1 else pts[0],
            source_image=SourceImageForRegion(str(ds.SOPClassUID), str(ds.SOPInstanceUID)),
        ))
        ids_out.append((r, ids))
    return items, ids_out


def _text(key: str, value: str):
    from highdicom.sr import RelationshipTypeValues, TextContentItem

    return TextContentItem(name=_project(key), value=value, relationship_type=RelationshipTypeValues.CONTAINS)


def _algorithm(result: Result):
    from highdicom.sr import AlgorithmIdentification

    if result.model and result.model.get("name"):
        return AlgorithmIdentification(name=str(result.model["name"]), version=str(result.model.get("version") or "unknown"))
    return AlgorithmIdentification(name=_MANUAL_ALGORITHM, version=_library_version())


def build_report(result: Result, sources: Dataset | Mapping[str, Dataset]):
    """The TID 1500 content tree of ``result`` (a highdicom ``MeasurementReport``)."""
    import highdicom as hd
    from highdicom.sr import (
        FindingSite, MeasurementReport, MeasurementsAndQualitativeEvaluations, ObservationContext,
        ObserverContext, DeviceObserverIdentifyingAttributes, TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    srcs = _sources(result, sources)
    roles = tuple(result.views)
    algorithm = _algorithm(result)
    groups = []
    for pid, m in result.parameters.items():
        base, role = _base_id(pid, roles)
        site = _finding_site(base)
        coords, placed = _coordinates(m, result, role, srcs)
        measurement = hd.sr.Measurement(
            name=_code(*concept_for(base, result.protocol)),
            value=float(m.value),
            unit=_unit(m.unit),
            finding_sites=[FindingSite(site)] if site is not None else None,
            referenced_coordinates=coords or None,
        )
        group = MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=pid),
            algorithm_id=algorithm,
            measurements=[measurement],
        )
        content = group[0].ContentSequence
        if m.calibration is not None:
            content.append(_text("calibration", m.calibration))
        for r, ids in placed:
            content.append(_text("landmarks", (f"{r}: " if r else "") + ",".join(ids)))
        unplaced = [i for i in m.landmarks if not any(i in ids for _, ids in placed)]
        if unplaced:  # e.g. the paired lateral film's landmarks, which the result does not keep
            content.append(_text("landmarks", f"{_UNPLACED}: " + ",".join(unplaced)))
        if role:
            content.append(_text("view", role))
        if m.detail:
            content.append(_text("detail", json.dumps(m.detail, sort_keys=True)))
        for w in m.warnings:
            content.append(_text("warning", w))
        groups.append(group)
    report_group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=_TRACKING_REPORT),
        algorithm_id=algorithm,
    )
    for w in result.warnings:
        report_group[0].ContentSequence.append(_text("warning", w))
    for pid, reason in result.omitted.items():
        report_group[0].ContentSequence.append(_text("omitted", f"{pid}: {reason}"))
    groups.append(report_group)

    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="SpineAlignment", model_name=_library_version(),
        ),
    )
    return MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=_code(result.protocol, SCHEME, f"SpineAlignment protocol {result.protocol}"),
        imaging_measurements=groups,
        referenced_images=[_library_view(ds) for ds in srcs.values()],
    )


#: Type 2 patient/study attributes highdicom copies from the first source; empty when the source lacks them.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def with_empty_type2(ds: Dataset) -> Dataset:
    """The source header with absent Type 2 patient/study attributes present and empty (PS3.5 7.4: "unknown")."""
    missing = [kw for kw in _TYPE2 if kw not in ds]
    if not missing:
        return ds
    copy = Dataset(ds)
    for kw in missing:
        setattr(copy, kw, "")
    return copy


def _library_view(ds: Dataset) -> Dataset:
    """The header highdicom's image library entry is built from.

    highdicom's projection descriptors (TID 1603) read Patient Orientation and
    Imager Pixel Spacing unconditionally; a CR/DX header without them gets an
    entry with the common descriptors only (modality, rows, columns) rather than
    invented values.
    """
    if "PatientOrientation" in ds and "ImagerPixelSpacing" in ds:
        return ds
    view = Dataset()
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns",
               "FrameOfReferenceUID"):
        if kw in ds:
            setattr(view, kw, ds[kw].value)
    # highdicom only branches on Modality here (the entry's modality code comes from the SOP Class);
    # "OT" selects "no modality-specific descriptors" and is not written into the report.
    view.Modality = "OT"
    return view


def write_measurement_report(
    result: Result,
    sources: Dataset | Mapping[str, Dataset],
    path: str | Path,
    *,
    series_number: int = 9901,
    instance_number: int = 1,
) -> Path:
    """Write ``result`` as a DICOM Comprehensive SR (TID 1500) referencing its source film(s).

    Args:
        result: the analysed result (one image, or a pair with ``views``).
        sources: the source image's dataset (header is enough), or role -> dataset for a pair.
        path: output file (written atomically).
        series_number: Series Number of the new SR series.
        instance_number: Instance Number of the SR.

    Returns:
        The path written.

    Raises:
        SpineAlignmentError: sources that do not match the result's images, or a unit without a UCUM code.
    """
    import highdicom as hd

    report = build_report(result, sources)
    srcs = [with_empty_type2(ds) for ds in _sources(result, sources).values()]
    sr = hd.sr.ComprehensiveSR(
        evidence=srcs, content=report, is_complete=True,
        **new_instance(series_number, instance_number, "SpineAlignment measurements"),
    )
    scheme = code_table()["scheme"]
    item = Dataset()
    item.CodingSchemeDesignator = scheme["designator"]
    item.CodingSchemeName = scheme["name"]
    item.CodingSchemeVersion = scheme["version"]
    item.CodingSchemeResponsibleOrganization = "SpineAlignment project (docs/dicom.md)"
    sr.CodingSchemeIdentificationSequence = [item]  # the private scheme is declared (PS3.3 C.12.1.1.5)
    return save_atomically(sr, path)


def new_instance(series_number: int, instance_number: int, description: str) -> dict[str, Any]:
    """highdicom arguments of a new SpineAlignment series and instance (SR and SEG alike)."""
    import highdicom as hd

    return {"series_instance_uid": hd.UID(), "series_number": series_number, "sop_instance_uid": hd.UID(),
            "instance_number": instance_number, "manufacturer": "SpineAlignment",
            "series_description": description}


#: Specific Character Set of an SR/SEG with any non-ASCII text: UTF-8, so a warning with "°", "≥" or "é" is valid.
CHARACTER_SET = "ISO_IR 192"


def _has_non_ascii(ds: Dataset) -> bool:
    """True if any text value of ``ds`` (nested sequences included) has a character outside ASCII."""
    for elem in ds.iterall():
        if elem.VR in ("SH", "LO", "ST", "LT", "UT", "PN", "UC") and elem.value is not None:
            values = elem.value if elem.VM > 1 else [elem.value]
            if any(not str(v).isascii() for v in values):
                return True
    return False


def save_atomically(ds: Dataset, path: str | Path) -> Path:
    """Write a Part 10 file through ``<path>.part`` (an interrupted write never leaves a half file).

    A dataset with any non-ASCII text is written as UTF-8 (Specific Character Set ``ISO_IR 192``): warnings
    carry degrees and other non-ASCII characters, and the copied patient module may too. An all-ASCII one
    keeps the default repertoire (DCMTK's VR checker does not cover ISO_IR 192).
    """
    path = Path(path)
    if _has_non_ascii(ds):
        ds.SpecificCharacterSet = CHARACTER_SET
    tmp = path.with_name(path.name + ".part")
    ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------------
# reading back


def _meaning_key(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    value = code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue")
    return str(value), str(code.CodingSchemeDesignator)


def _key_of(key: str) -> tuple[str, str]:
    value, scheme, _ = _report_code(key)
    return value, scheme


def read_measurement_report(path: str | Path) -> Result:
    """Read a report written by :func:`write_measurement_report` back into a :class:`Result`.

    Values, units, calibration labels, landmark IDs and positions of every
    parameter, the warnings, left-out parameters, the model and the source
    UIDs come back; the construction lines are not stored in the SR.

    Raises:
        SpineAlignmentError: not a SpineAlignment TID 1500 report.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception:  # noqa: BLE001
        raise SpineAlignmentError(f"{path}: is not a DICOM file.") from None
    root = ds.get("ContentTemplateSequence", [None])[0]
    if root is None or str(root.get("TemplateIdentifier")) != "1500":
        raise SpineAlignmentError(f"{path}: is not a TID 1500 Measurement Report.")
    protocol = None
    software_version = None
    groups = []
    uid_of: dict[str, dict[str, str]] = {}
    for item in ds.ContentSequence:
        value, scheme = _meaning_key(item)
        if (value, scheme) == ("121058", "DCM"):  # Procedure reported
            protocol = str(item.ConceptCodeSequence[0].get("CodeValue") or item.ConceptCodeSequence[0].get("LongCodeValue"))
        elif (value, scheme) == ("111028", "DCM"):  # Image Library
            for entry_group in item.ContentSequence:
                for entry in entry_group.get("ContentSequence", []):
                    if entry.get("ReferencedSOPSequence"):
                        ref = entry.ReferencedSOPSequence[0]
                        uid_of[str(ref.ReferencedSOPInstanceUID)] = {"sop_class_uid": str(ref.ReferencedSOPClassUID)}
        elif (value, scheme) == ("126010", "DCM"):  # Imaging Measurements
            groups = list(item.ContentSequence)
        elif (value, scheme) == ("121015", "DCM"):  # Device Observer Model Name: the library version
            software_version = str(item.TextValue)
    if protocol is None:
        raise SpineAlignmentError(f"{path}: has no procedure reported (protocol); not a SpineAlignment report.")
    result = Result(protocol=protocol, software_version=software_version)
    study_uids = {str(r.ReferencedSOPInstanceUID): (str(e.StudyInstanceUID), str(s.SeriesInstanceUID))
                  for seq in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence")
                  for e in ds.get(seq, [])
                  for s in e.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
    for sop, (study, series) in study_uids.items():
        uid_of.setdefault(sop, {}).update({"study_instance_uid": study, "series_instance_uid": series,
                                           "sop_instance_uid": sop})
    for group in groups:
        _read_group(group, result, uid_of)
    if not result.views and len(uid_of) == 1:
        result.dicom = next(iter(uid_of.values()))
    return result


def _read_group(group: Dataset, result: Result, uid_of: dict[str, dict[str, str]]) -> None:
    pid = None
    texts: dict[tuple[str, str], list[str]] = {}
    numeric = None
    for item in group.ContentSequence:
        key = _meaning_key(item)
        if key == ("112039", "DCM"):  # Tracking Identifier
            pid = str(item.TextValue)
        elif item.ValueType == "TEXT":
            texts.setdefault(key, []).append(str(item.TextValue))
        elif item.ValueType == "NUM":
            numeric = item
    # TID 4019: Algorithm Name (111001) and Algorithm Version (111003) are siblings in the group
    name = (texts.get(("111001", "DCM")) or [None])[0]
    if name and name != _MANUAL_ALGORITHM:
        result.model = {"name": name, "version": (texts.get(("111003", "DCM")) or [None])[0]}
    if pid == _TRACKING_REPORT:
        result.warnings = texts.get(_key_of("warning"), [])
        for line in texts.get(_key_of("omitted"), []):
            k, _, reason = line.partition(": ")
            result.omitted[k] = reason
        return
    if pid is None or numeric is None:
        return
    mv = numeric.MeasuredValueSequence[0]
    unit_code = str(mv.MeasurementUnitsCodeSequence[0].CodeValue)
    unit = next(k for k, v in code_table()["units"].items() if v[0] == unit_code)
    role = (texts.get(_key_of("view")) or [None])[0]
    used: list[str] = []
    lines = texts.get(_key_of("landmarks"), [])
    unplaced = [i for line in lines if line.startswith(f"{_UNPLACED}: ") for i in line.split(": ", 1)[1].split(",")]
    placed = [line for line in lines if not line.startswith(f"{_UNPLACED}: ")]
    for line, scoord in zip(placed, [c for c in numeric.get("ContentSequence", []) if c.ValueType == "SCOORD"]):
        r, _, ids_text = line.rpartition(": ")
        ids = ids_text.split(",")
        pts = np.asarray(scoord.GraphicData, dtype=float).reshape(-1, 2) - SCOORD_OFFSET
        sop = str(scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        if r:
            view = result.views.setdefault(r, View(landmarks={}))
            target = view.landmarks
            view.dicom = uid_of.get(sop)
        else:
            target = result.landmarks
        for i, (x, y) in zip(ids, pts):
            target.setdefault(i, Landmark(float(x), float(y)))
        used.extend(i for i in ids if i not in used)
    used.extend(unplaced)
    detail = (texts.get(_key_of("detail")) or [None])[0]
    calibration = (texts.get(_key_of("calibration")) or [None])[0]
    result.parameters[pid] = Measurement(
        id=pid, value=float(mv.NumericValue), unit=unit, landmarks=tuple(used), calibration=calibration,
        detail=json.loads(detail) if detail else {}, warnings=texts.get(_key_of("warning"), []),
    )
    if calibration and not role and result.calibration == "pixels-only":
        result.calibration = calibration
