"""The names of a batch's output files: one stem per film (or pair) and the files named after it.

The one rule for output names (``analyze``, ``batch``, the Slicer module, ``review`` and the training
export use it): :func:`output_name` and :func:`make_items`. It sits on the formats floor
(docs/architecture.md) so that a reader of a results folder (:mod:`SpineAlignmentLib.io.review`) maps
``summary.csv``'s films to result stems without importing the batch runner.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..safefiles import output_stem

#: Image files a folder input contributes (DICOM files often have no extension: see ``include_extensionless``).
IMAGE_EXTENSIONS = (".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nrrd", ".nhdr", ".mha",
                    ".mhd", ".nii", ".nii.gz")
SUMMARY_CSV = "summary.csv"
FAILURES_CSV = "failures.csv"


@dataclass(frozen=True)
class PairFilm:
    """One film of a pair (a row of a pairs manifest, :mod:`SpineAlignmentLib.batch.pairs`)."""

    role: str
    image: str  #: absolute path
    listed: str  #: the image as the manifest gives it (relative to the manifest's folder): the fingerprint's
    landmarks: str | None = None  #: its landmark file (manifest column or ``landmarks_dir``), else a model finds them
    landmarks_reason: str = ""  #: why ``landmarks_dir`` has none for it
    patient_orientation: str | None = None  #: the manifest's, for a film whose file does not say


@dataclass(frozen=True)
class BatchItem:
    """One image (or one pair of films) and the file stem its outputs get (:func:`make_items`).

    ``folders`` are the parent folder names in ``name`` (when stems collide): a
    landmark folder mirroring the input tree is searched under them. A pair
    (``films``) writes one result, one markups file and one overlay per film
    (``<name>_<role>.mrk.json``, ``<name>_<role>_overlay.png``); its ``image`` is the pair's ID.
    """

    image: str
    name: str
    folders: tuple[str, ...] = ()
    landmarks: str | None = None  #: its landmark file with ``landmarks_dir`` (:func:`match_landmarks`)
    landmarks_reason: str = ""  #: why there is none
    films: tuple[PairFilm, ...] = ()
    level_anchor: Any = None  #: its row of the level-anchor file (:class:`~SpineAlignmentLib.io.level_anchors.AnchorRow`)

    def result_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"{self.name}.json"

    def markups_path(self, out_dir: str | Path, role: str = "") -> Path:
        return Path(out_dir) / f"{self.name}{'_' + role if role else ''}.mrk.json"

    def overlay_path(self, out_dir: str | Path, role: str = "") -> Path:
        return Path(out_dir) / f"{self.name}{'_' + role if role else ''}_overlay.png"

    def markups_paths(self, out_dir: str | Path) -> list[Path]:
        """The markups file of the image, or one per film of a pair."""
        return [self.markups_path(out_dir, f.role) for f in self.films] or [self.markups_path(out_dir)]

    def overlay_paths(self, out_dir: str | Path) -> list[Path]:
        """The overlay of the image, or one per film of a pair."""
        return [self.overlay_path(out_dir, f.role) for f in self.films] or [self.overlay_path(out_dir)]

    def dicom_sr_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"{self.name}_sr.dcm"

    def dicom_seg_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"{self.name}_seg.dcm"

    def masks_path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / f"{self.name}.seg.nrrd"


def image_stem(p: Path) -> str:
    name = p.name
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def output_name(path: str | Path, *, folders: int = 0) -> str:
    """The output file stem of an image, shortened to the file-name limit when needed.

    Args:
        path: the image.
        folders: how many parent folder names to put in front (when two inputs share a stem).

    The one rule for output names (``analyze``, ``batch`` and the Slicer module
    use it through :func:`make_items`): ``<stem>``, or for inputs sharing a stem
    ``<folder>__<stem>`` with as many parent folders as it takes to tell them
    apart (``IM0001`` in ``p1/`` and ``p2/``: ``p1__IM0001``, ``p2__IM0001``), so
    a name stays the same when the study folder moves; cut with a stable hash by
    :func:`~SpineAlignmentLib.safefiles.output_stem` so that
    ``<name>_overlay.png.part`` fits 255 bytes.
    """
    p = Path(path)
    parts = _folders(p, folders)
    return output_stem("__".join([*parts, image_stem(p)]))


def _folders(p: Path, n: int) -> tuple[str, ...]:
    names = [x for x in p.parent.parts if x not in (p.anchor, "")]
    return tuple(names[len(names) - n:]) if n > 0 else ()


def make_items(paths: Sequence[Path]) -> list[BatchItem]:
    """Give each image a unique output name by :func:`output_name` (the same inputs always get the same names).

    Inputs sharing a stem get the fewest parent folders that tell them apart; names that
    still collide (one stem with two extensions in one folder, or a file already named like
    ``p1__IM0001``) get ``-`` and 8 hex digits of the SHA-1 of the image's real path.
    """
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(image_stem(p), []).append(Path(p))
    depth: dict[Path, int] = {}
    for group in groups.values():
        k = 0
        if len(group) > 1:
            deepest = max(len(_folders(p, 10**6)) for p in group)
            k = 1
            while k < deepest and len({_folders(p, k) for p in group}) < len(group):
                k += 1
        for p in group:
            depth[p] = k
    names = {p: output_name(p, folders=depth[p]) for p in depth}
    seen: dict[str, int] = {}
    for n in names.values():
        seen[n] = seen.get(n, 0) + 1
    items = []
    for p in paths:
        p = Path(p)
        name = names[p]
        if seen[name] > 1:
            digest = hashlib.sha1(os.path.realpath(p).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            name = output_stem(f"{name}-{digest}")
        items.append(BatchItem(str(p), name, _folders(p, depth[p])))
    return items
