"""Segmentation on a radiograph: preprocess, label probabilities, map back to the original pixel grid, keypoints.

Public entries: :func:`segment_array` (probabilities on the original grid),
:func:`label_map` and :func:`masks_to_landmarks` (the protocol's segments to its
landmarks, e.g. clavicle masks to ``Clav_top``/``Clav_med``/``Clav_lat``).

Sides: the network labels the patient's left and right as it learnt them on
films displayed with the patient's left on the image right. A film whose
Patient Orientation says the patient's left is on the image left is mirrored
before the network and mirrored back (labels swapped), so the labels are always
the patient's. Without Patient Orientation the usual display is assumed and the
result says so (the sides are then image sides).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .preprocess import letterbox, normalise_intensity

__all__ = ["LabelMap", "mirror_permutation", "segment_array", "label_map", "masks_to_landmarks", "predict_from_masks"]


@dataclass
class LabelMap:
    """A label map on the original pixel grid of one film.

    Attributes:
        array: (rows, cols) uint8; 0 background, else a segment's ``value``.
        segments: the protocol's :class:`~SpineAlignmentLib.protocols.SegmentSpec` list.
        sides_from: ``"patient-orientation"`` or ``"assumed display"`` (patient's left on the image right).
    """

    array: np.ndarray
    segments: tuple = ()
    sides_from: str = "assumed display"


def mirror_permutation(segments) -> list[int]:
    """Channel permutation that a horizontal flip applies to (background + segments) channels."""
    by_id = {s.id: s.value for s in segments}
    n = 1 + max((s.value for s in segments), default=0)
    perm = list(range(n))
    for s in segments:
        if s.mirror:
            perm[s.value] = by_id[s.mirror]
    return perm


def segment_array(pixels: np.ndarray, network, input_shape: tuple[int, int], segments, *, intensity=(0.5, 99.5),
                  mirrored: bool = False, flip_tta: bool = False) -> np.ndarray:
    """Label probabilities of a 2-D image on its own pixel grid.

    Args:
        pixels: (rows, cols) intensities, bone bright.
        network: a segmentation network in eval mode (``(B, 1, H, W) -> (B, labels, H, W)`` logits).
        input_shape: (H, W) the network was trained at (letterboxed).
        segments: the protocol's segment specs (for the left/right swap of a mirror).
        intensity: (low, high) percentiles of the intensity normalisation.
        mirrored: the film shows the patient's left on the image left: run the network on the mirrored
            image and mirror the probabilities back (labels swapped), so the labels stay the patient's.
        flip_tta: also run on the other mirror image and average.

    Returns:
        (labels, rows, cols) float32 probabilities.
    """
    import torch
    import torch.nn.functional as F

    norm = normalise_intensity(pixels, intensity[0], intensity[1])
    x, geo = letterbox(norm, tuple(input_shape))
    perm = mirror_permutation(segments)
    views = [mirrored] + ([not mirrored] if flip_tta else [])
    batch = np.stack([x[:, ::-1] if m else x for m in views])[:, None]
    with torch.inference_mode():
        prob = torch.softmax(network(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))), dim=1)
    acc = None
    for k, m in enumerate(views):
        p = prob[k]
        if m:
            p = p.flip(-1)[perm]  # back to the film's own orientation, sides swapped back
        acc = p if acc is None else acc + p
    acc = acc / len(views)
    oy, ox = geo.offset
    nh = int(round(geo.scale[0] * geo.src_shape[0]))
    nw = int(round(geo.scale[1] * geo.src_shape[1]))
    inner = acc[:, oy:oy + nh, ox:ox + nw][None]
    rows, cols = pixels.shape
    out = F.interpolate(inner, size=(rows, cols), mode="bilinear", align_corners=False)[0]
    return out.numpy().astype(np.float32)


def label_map(probabilities: np.ndarray) -> np.ndarray:
    """(rows, cols) uint8 argmax of (labels, rows, cols) probabilities."""
    return np.argmax(probabilities, axis=0).astype(np.uint8)


def masks_to_landmarks(labels: np.ndarray, segments, frame, spacing=None, probabilities: np.ndarray | None = None,
                       min_pixels: int = 20):
    """The protocol's landmarks derived from each segment's mask.

    Args:
        labels: (rows, cols) label map.
        segments: segment specs whose ``landmarks`` name the keypoints (``top``, ``medial``, ``lateral`` order).
        frame: the film's coronal :class:`~SpineAlignmentLib.geometry.primitives.Frame` (``u_a`` = u_left, ``u_s``).
        spacing: (row, col) mm per pixel or ``None``.
        probabilities: (labels, rows, cols) for the confidence.

    Returns:
        ``(landmarks, found, details)``: landmark ID -> :class:`~SpineAlignmentLib.result.Landmark`,
        segment ID -> bool, segment ID -> :class:`~SpineAlignmentLib.inference.clavicles.ClavicleKeypoints`.
    """
    from ..result import Landmark
    from .clavicles import clavicle_keypoints

    u_left, u_sup = tuple(frame.u_a), tuple(frame.u_s)  # u_a is u_left on a coronal frame
    landmarks, found, details = {}, {}, {}
    for seg in segments:
        prob = None if probabilities is None else probabilities[seg.value]
        kp = clavicle_keypoints(labels == seg.value, seg.side, u_left, u_sup, spacing, prob, min_pixels=min_pixels)
        found[seg.id] = kp is not None
        if kp is None:
            continue
        details[seg.id] = kp
        for lid, p in zip(seg.landmarks, (kp.top, kp.medial, kp.lateral)):
            landmarks[lid] = Landmark(p[0], p[1], kp.confidence)
    return landmarks, found, details


#: a clavicle's length (principal-axis extent) as a fraction of the film's width, on the films the model knows
#: (JSRT chest films: 0.15-0.35); outside this range the mask is not a clavicle of a chest/shoulder film
CLAVICLE_LENGTH_RANGE = (0.08, 0.5)


def _shape_warnings(details: dict, segments, shape: tuple[int, int], frame) -> dict[str, str]:
    """Segment ID -> reason its mask does not look like that clavicle (size, position, shape)."""
    rows, cols = shape
    bad: dict[str, str] = {}
    u_left = np.asarray(frame.u_a, dtype=float)
    centre = np.array([(cols - 1) / 2.0, (rows - 1) / 2.0])
    for seg in segments:
        kp = details.get(seg.id)
        if kp is None:
            continue
        med, lat = np.array(kp.medial), np.array(kp.lateral)
        length = float(np.linalg.norm(lat - med)) / max(cols, 1)
        lo, hi = CLAVICLE_LENGTH_RANGE
        side_sign = 1.0 if seg.side == "L" else -1.0
        if kp.elongation < 2.0:
            bad[seg.id] = f"its mask is not elongated like a clavicle (axis ratio {kp.elongation:.1f})"
        elif not lo <= length <= hi:
            bad[seg.id] = f"its length is {100 * length:.0f} % of the film width (expected {100 * lo:.0f}-{100 * hi:.0f} %)"
        elif (np.array(kp.top) - centre) @ u_left * side_sign < 0:
            bad[seg.id] = "it lies on the other side of the film's midline"
    return bad


def predict_from_masks(radiograph, model, *, flip_tta: bool = False):
    """Segment a film with a ``mask-keypoints`` model and derive the protocol's landmarks.

    Args:
        radiograph: a :class:`~SpineAlignmentLib.imaging.Radiograph` (or a 2-D array: no spacing, no orientation).
        model: a loaded segmentation model (:class:`~SpineAlignmentLib.models.registry.LoadedModel`).
        flip_tta: average with the mirrored film's prediction (labels swapped back).

    Returns:
        ``(landmarks, warnings, label_map)``: landmark ID -> Landmark (original pixels, confidence in 0..1),
        image-level warnings, and the :class:`LabelMap` on the film's grid.
    """
    from ..geometry.frame import coronal_frame
    from ..protocols import get_protocol
    from .predict import _pixels, image_problems

    pixels = _pixels(radiograph)
    proto = get_protocol(model.protocol)
    segs = proto.segments
    orientation = getattr(radiograph, "patient_orientation", None)
    spacing = getattr(radiograph, "spacing_mm", None)
    finfo = coronal_frame(orientation)
    rows, cols = pixels.shape
    warns = image_problems(pixels, "the clavicles")
    blank = bool(warns)
    if not finfo.side_known:
        warns.append("Patient Orientation is unknown: the clavicles are named assuming the usual display (patient's "
                     "left on the image right), so _L/_R and every sign are by image side; give --patient-orientation "
                     "(e.g. L,F) to report patient sides.")
    mirrored = finfo.side_known and float(finfo.frame.u_a[0]) < 0  # patient's left on the image left
    inten = model.metadata["network_data_format"]["inputs"]["image"]["intensity"]
    prob = segment_array(pixels, model.network, tuple(model.input_shape), segs,
                         intensity=(inten["low_percentile"], inten["high_percentile"]), mirrored=mirrored,
                         flip_tta=flip_tta)
    labels = label_map(prob)
    dec = model.metadata["decoding"]
    min_px = max(1, int(round(float(dec.get("min_fraction_of_image", 2e-4)) * rows * cols)))
    landmarks, found, details = masks_to_landmarks(labels, segs, finfo.frame, spacing, prob, min_pixels=min_px)
    low = float(dec["low_confidence"])
    bad = _shape_warnings(details, segs, (rows, cols), finfo.frame)

    def untrust(ids) -> None:
        for lid in ids:
            lm = landmarks[lid]
            landmarks[lid] = type(lm)(lm.x, lm.y, min(lm.confidence, 0.05))

    for seg in segs:
        if blank and seg.id in details:
            bad[seg.id] = "the image is blank or too small"
        if not found[seg.id]:
            warns.append(f"No {seg.name} found (hidden, cut off, or not a chest/shoulder film): "
                         f"{', '.join(seg.landmarks)} are left out and so is every parameter that needs them.")
        elif seg.id in bad:
            warns.append(f"The {seg.name} found is implausible ({bad[seg.id]}); its points are not trusted.")
            untrust(seg.landmarks)
        elif details[seg.id].cut_ends:
            kp = details[seg.id]
            cut_ids = [lid for lid, end in zip(seg.landmarks, ("top", "medial", "lateral")) if end in kp.cut_ends]
            warns.append(f"The {seg.name} reaches the film's edge at its {' and '.join(kp.cut_ends)} end: the bone may "
                         f"go on beyond the film, so {', '.join(cut_ids)} {'is' if len(cut_ids) == 1 else 'are'} not "
                         "trusted.")
            untrust(cut_ids)
        elif details[seg.id].confidence < low:
            warns.append(f"The {seg.name} mask is uncertain (confidence {details[seg.id].confidence:.2f} < {low:.2f}); "
                         "check its points.")
    return landmarks, warns, LabelMap(labels, segs, "patient-orientation" if finfo.side_known else "assumed display")
