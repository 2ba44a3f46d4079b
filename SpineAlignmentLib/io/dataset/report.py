"""What reading a dataset gives (:class:`LabelledImage`, :class:`Finding`, :class:`DatasetReport`) and the
limits its checks use (:mod:`SpineAlignmentLib.io.dataset`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import SpineAlignmentError

#: An image with fewer landmarks than this cannot teach anything: error.
MIN_LANDMARKS = 3
#: Fewer than this fraction of the expected landmarks present: warning.
MOST_MISSING_FRACTION = 0.5
#: More than this fraction of a file's IDs unknown to the protocol: the file belongs to another protocol (error).
WRONG_PROTOCOL_FRACTION = 0.5
#: Two label files of one image agree when every common landmark is within this many pixels.
AGREE_PX = 0.5
#: A pixel spacing outside this range (mm) is implausible for a radiograph (warning).
PLAUSIBLE_SPACING_MM = (0.02, 1.0)


class DatasetError(SpineAlignmentError):
    """The dataset folder itself cannot be used (missing, not a folder, unreadable)."""


@dataclass(frozen=True)
class LabelledImage:
    """One usable training film.

    Attributes:
        image: the image file.
        labels: its landmark file (``.json`` or ``.mrk.json``).
        landmarks: canonical ID -> ``(x, y)`` in original-image pixels (x right, y down, integer values at
            pixel centres); only the landmarks present and on the image, never invented.
        image_size: ``(rows, cols)``.
        spacing_mm: ``(row, col)`` mm per pixel, or None (pixels only).
        calibration: calibration label (definitions.md §7.4).
        patient_orientation: e.g. ``("A", "F")``, or None when unknown.
        patient: grouping key for patient-held-out splits.
        pair, role: the pair (``pairs.csv``) and this film's role in it, or None.
    """

    image: Path
    labels: Path
    landmarks: dict[str, tuple[float, float]]
    image_size: tuple[int, int]
    spacing_mm: tuple[float, float] | None
    calibration: str
    patient_orientation: tuple[str, str] | None
    patient: str
    pair: str | None = None
    role: str | None = None


@dataclass
class Finding:
    """One problem with one file.

    Attributes:
        path: the file (image, landmark file or table).
        severity: ``"error"`` (the image is not usable) or ``"warning"``.
        check: machine name of the check (``unknown_ids``, ``duplicate_ids``, ``outside_image``,
            ``level_order``, ``facing``, ``spacing``, ``wrong_protocol``, ``missing_landmarks``,
            ``no_labels``, ``orphan_labels``, ``unreadable_image``, ``unreadable_labels``,
            ``level_never_labelled``, ...).
        message: one sentence naming the file and what to do.
    """

    path: Path
    severity: str
    check: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "severity": self.severity, "check": self.check, "message": self.message}


@dataclass
class DatasetReport:
    """What :func:`read_dataset` found.

    Attributes:
        protocol: protocol ID checked against.
        folder: the dataset folder.
        items: the usable films (no error finding), sorted by path.
        findings: every problem, per file.
        summary: counts: ``images``, ``usable_images``, ``landmarks_present`` (per ID, usable films),
            ``facing``, ``calibration``, ``findings_by_check``, ``errors``, ``warnings``, ``patients``, ``pairs``.
        images: one row per image found (usable or not): image, labels, usable, landmark count, facing,
            spacing, calibration.
    """

    protocol: str
    folder: Path
    items: list[LabelledImage]
    findings: list[Finding]
    summary: dict
    images: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "folder": str(self.folder),
            "summary": self.summary,
            "images": self.images,
            "findings": [f.to_dict() for f in self.findings],
        }

    def format_text(self) -> str:
        """Per-file findings, then the summary, as lines a user reads."""
        lines = [f"Dataset {self.folder} (protocol {self.protocol})"]
        by_path: dict[str, list[Finding]] = {}
        for f in self.findings:
            by_path.setdefault(str(f.path), []).append(f)
        for path in sorted(by_path):
            lines.append(f"{path}:")
            for f in by_path[path]:
                lines.append(f"  {f.severity}: [{f.check}] {f.message}")
        s = self.summary
        lines.append(f"Images: {s['images']}, usable: {s['usable_images']}, errors: {s['errors']}, "
                     f"warnings: {s['warnings']}, patients: {s['patients']}, pairs: {s['pairs']}")
        if s["facing"]:
            lines.append("Facing: " + ", ".join(f"{k} {v}" for k, v in s["facing"].items()))
        if s["calibration"]:
            lines.append("Calibration: " + ", ".join(f"{k} {v}" for k, v in s["calibration"].items()))
        if s["landmarks_present"]:
            lines.append("Landmarks present (usable images):")
            width = max(len(k) for k in s["landmarks_present"])
            for k, v in s["landmarks_present"].items():
                lines.append(f"  {k:<{width}} {v}")
        return "\n".join(lines)
