"""*Export for training*: the film in the scene and its current (corrected) landmarks into a dataset folder.

The dataset format is docs/dataset-format.md (:mod:`SpineAlignmentLib.io.dataset`). The landmarks are read
from the scene the way the analysis measures them (control points by canonical ID, RAS mapped back to pixels
through the volume's IJK-to-RAS), so what is exported is what the user sees. The image is the volume's
source file when it is on disk and has the volume's size (copied byte for byte, a DICOM keeps its own
calibration), else the volume's pixels (PNG, or NRRD when the analysis has a spacing). Exporting the same
film again replaces its label file; nothing is duplicated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import LandmarkError, SpineAlignmentError

__all__ = ["export_for_training", "training_name"]


def training_name(source_file: str | Path | None, volume_node: Any) -> str:
    """The dataset stem of a film: its source file's output name (as ``batch`` names it), else the volume's name."""
    from ..io.naming import output_name
    from ..safefiles import output_stem

    if source_file:
        return output_name(source_file)
    name = re.sub(r"[^\w.\-]+", "_", str(volume_node.GetName() or "film")).strip("._") or "film"
    return output_stem(name)


def export_for_training(node: Any, folder: str | Path, *, protocol: str | None = None, volume_node: Any = None,
                        source_file: str | Path | None = None, name: str | None = None, patient: str | None = None,
                        pair: str | None = None, role: str | None = None) -> Path:
    """Write a film and its landmarks into a dataset folder (created; appended to); return the label file.

    Args:
        node: a :class:`~.mrml.SceneAnalysis`, or a landmark fiducial node (of an analysis, or a loaded
            ``.mrk.json`` whose control-point IDs are canonical; then ``protocol`` and ``volume_node``
            are needed unless the node carries them).
        folder: the dataset folder.
        source_file: the file the volume was loaded from (copied when its size is the volume's).
        name: the film's file stem in the dataset (default :func:`training_name`); the same film
            exported again gets the same name, so its files are replaced.
        patient, pair, role: written to ``patients.csv`` / ``pairs.csv``.

    Raises:
        LandmarkError: no landmark placed, or the node has no protocol / volume.
        SpineAlignmentError: the folder cannot be written or the source file cannot be read.
    """
    from ..io.dataset import write_labelled_image
    from ..io.dataset.files import image_facts
    from .mrml import SceneAnalysis, analysis_for_node, volume_image_size, volume_pixels

    analysis = node if isinstance(node, SceneAnalysis) else analysis_for_node(node, protocol, volume_node)
    landmarks, _ = analysis.read_landmarks()
    if not landmarks:
        raise LandmarkError(f"No landmark of {analysis.protocol.id} is placed on '{analysis.volume_node.GetName()}'; "
                            "place or detect the landmarks before exporting the film for training.")
    size = volume_image_size(analysis.volume_node)
    image: Any = None
    if source_file is not None and Path(source_file).is_file():
        try:
            if image_facts(Path(source_file), check_images=False).size == size:
                image = Path(source_file)
        except SpineAlignmentError:
            image = None  # an unreadable source: the displayed pixels are exported instead
    if image is None:
        image = volume_pixels(analysis.volume_node)
    info = analysis.info or {}
    spacing = info.get("spacing_mm")
    return write_labelled_image(
        folder, image, landmarks, analysis.protocol.id, name=name or training_name(source_file, analysis.volume_node),
        spacing_mm=spacing, calibration=info.get("calibration") if spacing else None, patient=patient, pair=pair,
        role=role, patient_orientation=info.get("patient_orientation"))
