"""A label map as a DICOM Segmentation (highdicom) referencing its source radiograph.

A protocol's segmentation model gives a label map on the film's pixel grid
(0 background, 1..N its segments). Each label becomes one segment of a binary
DICOM SEG, with the name, display colour, coded category and property type
(with a laterality modifier where there is one) listed for the protocol under
``segments`` in ``dicom_codes.json``. For example, ``coronal-shoulder`` has
1 = patient-left clavicle and 2 = patient-right clavicle. The SEG copies the
film's patient and study modules, references the film's SOP Instance, and
names the model as the segment algorithm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..errors import SpineAlignmentError
from .dicom_sr import code_table, new_instance, read_source_dataset, save_atomically, with_empty_type2

__all__ = ["SegmentSpec", "segments_for", "write_segmentation", "read_segmentation", "read_source_dataset"]


@dataclass(frozen=True)
class SegmentSpec:
    """One label of a label map as a DICOM segment.

    Attributes:
        label: the label-map value (1..N).
        name: Segment Label shown by viewers.
        color: display colour, RGB in 0..1.
        category, type, modifier: ``(code value, scheme, meaning)`` of the segmented property
            category, type and type modifier (laterality), modifier optional.
    """

    label: int
    name: str
    color: tuple[float, float, float]
    category: tuple[str, str, str]
    type: tuple[str, str, str]
    modifier: tuple[str, str, str] | None = None


def segments_for(protocol: str) -> list[SegmentSpec]:
    """The segments of ``protocol``'s label maps (``dicom_codes.json``).

    Raises:
        SpineAlignmentError: the protocol has no segmentation.
    """
    from ..protocols import get_protocol

    table = code_table()["segments"]
    specs = {s.value: s for s in get_protocol(protocol).segments}
    if protocol not in table or protocol == "comment" or not specs:
        have = ", ".join(k for k in table if k != "comment")
        raise SpineAlignmentError(f"protocol '{protocol}' has no segmentation labels; protocols with one: {have}.")
    # names and colours: the protocol table (one place); codes: dicom_codes.json
    return [SegmentSpec(int(s["label"]), specs[int(s["label"])].name, specs[int(s["label"])].color,
                        tuple(s["category"]), tuple(s["type"]), tuple(s["modifier"]) if s.get("modifier") else None)
            for s in table[protocol]]


def _code(c: Sequence[str]):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=c[0], scheme_designator=c[1], meaning=c[2])


def write_segmentation(
    label_map: np.ndarray,
    source: Dataset | str | Path,
    path: str | Path,
    *,
    protocol: str | None = None,
    segments: Sequence[SegmentSpec] | None = None,
    model: dict[str, str] | None = None,
    series_number: int = 9902,
    instance_number: int = 1,
) -> Path:
    """Write a label map as a binary DICOM SEG that references the source radiograph.

    Args:
        label_map: ``(rows, cols)`` integer array on the source image's pixel grid; 0 is background.
        source: the source film (a path, or its pydicom dataset; the header is enough).
        path: output file (written atomically).
        protocol: take the segments from this protocol's table entry ...
        segments: ... or give them.
        model: ``{"name": ..., "version": ...}`` of the model that made the label map
            (segment algorithm type AUTOMATIC), or None for a hand-drawn one (MANUAL).
        series_number, instance_number: of the new SEG.

    Returns:
        The path written.

    Raises:
        SpineAlignmentError: a label map of another size than the film, labels without a segment,
            or a source that is not DICOM.
    """
    import highdicom as hd
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentDescription, Segmentation, SegmentationTypeValues

    ds = with_empty_type2(source if isinstance(source, Dataset) else read_source_dataset(source))
    specs = list(segments) if segments is not None else segments_for(protocol or "")
    labels = np.asarray(label_map)
    if labels.ndim != 2 or labels.shape != (int(ds.Rows), int(ds.Columns)):
        raise SpineAlignmentError(
            f"the label map is {labels.shape}, the film {int(ds.Rows)} x {int(ds.Columns)}; "
            "give a label map on the film's own pixel grid."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise SpineAlignmentError(f"the label map has dtype {labels.dtype}; give integer labels (0 = background).")
    known = {s.label for s in specs}
    unknown = sorted(int(v) for v in np.unique(labels) if v != 0 and int(v) not in known)
    if unknown:
        raise SpineAlignmentError(
            f"the label map has values {unknown} with no segment; known labels: {sorted(known)} (0 = background)."
        )
    order = sorted(specs, key=lambda s: s.label)
    if [s.label for s in order] != list(range(1, len(order) + 1)):
        raise SpineAlignmentError(f"segment labels must be 1..N without gaps, got {[s.label for s in order]}.")

    if model and model.get("name"):
        algorithm = hd.AlgorithmIdentificationSequence(
            name=str(model["name"]), version=str(model.get("version") or "unknown"),
            family=_code(("123109", "DCM", "Artificial Intelligence")),
        )
        kind = SegmentAlgorithmTypeValues.AUTOMATIC
    else:
        algorithm, kind = None, SegmentAlgorithmTypeValues.MANUAL
    descriptions = []
    for s in order:
        d = SegmentDescription(
            segment_number=s.label, segment_label=s.name,
            segmented_property_category=_code(s.category), segmented_property_type=_code(s.type),
            algorithm_type=kind, algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in s.color)),
        )
        if s.modifier is not None:
            d.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [_code(s.modifier)]
        descriptions.append(d)
    from .. import __version__

    seg = Segmentation(
        source_images=[ds],
        pixel_array=labels.astype(np.uint8 if len(order) < 256 else np.uint16),
        segmentation_type=SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        manufacturer_model_name="SpineAlignment",
        software_versions=__version__,
        device_serial_number="none",
        omit_empty_frames=False,  # a segment the model did not find is still declared, as an empty frame
        **new_instance(series_number, instance_number, "SpineAlignment segmentation"),
    )
    if "PlaneOrientationSequence" not in seg.SharedFunctionalGroupsSequence[0]:
        # General Image: Patient Orientation (Type 2C) is needed without an image orientation; the film's own
        # value, else empty (unknown)
        seg.PatientOrientation = ds.get("PatientOrientation", "")
    return save_atomically(seg, path)


def read_segmentation(path: str | Path) -> tuple[np.ndarray, list[dict]]:
    """Read a SEG written by :func:`write_segmentation` back into a label map and its segments.

    Returns:
        ``(label_map, segments)``: ``(rows, cols)`` uint16 labels and, per segment,
        ``{"label", "name", "type", "modifier", "color_lab"}``.
    """
    import highdicom as hd

    seg = hd.seg.segread(path)
    labels = seg.get_total_pixel_matrix(combine_segments=True) if seg.is_tiled else None
    if labels is None:
        sop = seg.get_source_image_uids()[0][2]
        labels = seg.get_pixels_by_source_instance([sop], combine_segments=True)[0]
    segments = []
    for item in pydicom.dcmread(path, stop_before_pixels=True).SegmentSequence:
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        mod = prop.get("SegmentedPropertyTypeModifierCodeSequence")
        segments.append({
            "label": int(item.SegmentNumber), "name": str(item.SegmentLabel),
            "type": (str(prop.CodeValue), str(prop.CodingSchemeDesignator), str(prop.CodeMeaning)),
            "modifier": (str(mod[0].CodeValue), str(mod[0].CodingSchemeDesignator), str(mod[0].CodeMeaning))
            if mod else None,
            "color_lab": [int(v) for v in item.RecommendedDisplayCIELabValue],
        })
    return np.asarray(labels, dtype=np.uint16), segments
