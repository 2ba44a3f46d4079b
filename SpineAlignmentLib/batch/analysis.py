"""One film analysed and written: :func:`analyze_one` (also ``spine-align analyze`` and ``measure``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from ..errors import RadiographError
from ..io.naming import BatchItem, output_name
from ..result import Result
from .landmarks import film_landmarks
from .outputs import write_or_stop, write_outputs

log = logging.getLogger(__name__)


def analyze_one(
    path: str | Path,
    protocol: str,
    out_dir: str | Path | None,
    *,
    model: str | None = None,
    spacing: Sequence[float] | None = None,
    landmarks_path: str | Path | None = None,
    flip_tta: bool = False,
    write_markups: bool = True,
    write_overlay: bool = True,
    patient_orientation: str | None = None,
    name: str | None = None,
    min_confidence: float | None = None,
    fingerprint: dict[str, Any] | None = None,
    write_dicom_sr: bool = False,
    min_curve_deg: float | None = None,
    write_masks: bool = False,
    level_anchor: Any = None,
    sr_only_for_dicom: bool = False,
) -> Result:
    """Analyse one radiograph and write its files.

    Landmarks come from ``landmarks_path`` when given (re-measured; works for
    every protocol), else from ``model`` (or the protocol's default model).

    Args:
        path: the radiograph (DICOM, PNG, JPEG, TIFF, NRRD...).
        protocol: protocol ID.
        out_dir: folder for ``<name>.json``, ``<name>.mrk.json`` and ``<name>_overlay.png``; None writes nothing.
        model: registered model name.
        spacing: ``(row, col)`` mm per pixel override (label ``manual:user``).
        landmarks_path: landmark JSON (result format) or ``.mrk.json`` of this image.
        flip_tta: average the prediction with the mirrored image's.
        write_markups: write the Slicer markups file.
        write_overlay: write the overlay PNG.
        write_dicom_sr: write ``<name>_sr.dcm``, a DICOM SR (TID 1500) referencing the film (DICOM input only).
        write_masks: write ``<name>.seg.nrrd`` when the model segments (label map on the input's grid).
        sr_only_for_dicom: with ``write_dicom_sr``, a non-DICOM film gets its other outputs and a warning that no
            SR can reference it (a batch over a mixed folder) instead of being refused.
        patient_orientation: e.g. ``"L,F"`` when the file does not say.
        name: output file stem (default: the image's stem).
        min_confidence: landmarks below this confidence are not trusted (default: the pipeline's).
        min_curve_deg: smallest coronal curve reported (default: the pipeline's).
        fingerprint: stored in the result JSON (:func:`batch_fingerprint`); resume compares it.
        level_anchor: the film's row of a level-anchor file
            (:class:`~SpineAlignmentLib.io.level_anchors.AnchorRow`): the model's chain is re-named by it.

    Returns:
        The :class:`~SpineAlignmentLib.result.Result` (also written as JSON, last).

    Raises:
        SpineAlignmentError: unreadable image or landmarks, or no landmark source.
    """
    from ..pipeline import measure

    path = Path(path)
    extra_kw = {k: v for k, v in (("min_confidence", min_confidence), ("min_curve_deg", min_curve_deg))
                if v is not None}
    radiograph = read_film(path, spacing=spacing, patient_orientation=patient_orientation,
                           dicom=write_dicom_sr and not sr_only_for_dicom)
    no_sr = write_dicom_sr and radiograph.metadata.get("format") != "dicom"
    source_problems = dicom_source_problems([path], [radiograph]) if write_dicom_sr and not no_sr else []
    write_dicom_sr = write_dicom_sr and not no_sr and not source_problems  # said before inference; the rest still comes
    film = film_landmarks(path, radiograph, protocol, model=model, landmarks_path=landmarks_path, flip_tta=flip_tta)
    if level_anchor is not None:
        from ..io.level_anchors import anchor_film

        film = anchor_film(film, level_anchor)
    view = film.view
    result = measure(
        view.landmarks, protocol, spacing_mm=view.spacing_mm,
        calibration=view.calibration if view.spacing_mm else None, image_size=view.image_size,
        patient_orientation=view.patient_orientation, image=view.image, model=film.model, source=film.source,
        **extra_kw,
    )
    result.warnings[:0] = film.warnings + source_problems
    if no_sr:
        result.warnings.append(f"{not_dicom(path.name)}; its other outputs are written.")
    result.dicom, result.levels, result.segmentation = view.dicom, film.levels, film.segmentation
    result.fingerprint = fingerprint
    if out_dir is not None:
        item = BatchItem(str(path), name or output_name(path))
        write_or_stop(item, out_dir, path.name, lambda: write_outputs(
            item, Path(out_dir), result, radiograph, protocol, write_markups, write_overlay, write_dicom_sr,
            write_masks))
    return result


def read_film(path: str | Path, *, spacing: Sequence[float] | None = None, patient_orientation: str | None = None,
              dicom: bool = False) -> Any:
    """Read one film for a batch; with ``dicom`` (DICOM outputs asked for) refuse a non-DICOM film before any work."""
    from ..imaging import read_radiograph

    path = Path(path)
    radiograph = read_radiograph(path, spacing=tuple(spacing) if spacing else None,
                                 patient_orientation=patient_orientation)
    if dicom and radiograph.metadata.get("format") != "dicom":
        # said before any work is done, not after the model ran
        raise RadiographError(f"{not_dicom(path)}; leave out --dicom-sr for PNG/JPEG/TIFF/NRRD input.")
    return radiograph


def not_dicom(path: str | Path) -> str:
    """The sentence (without its end) for a film that no DICOM SR can reference."""
    return f"{path}: is not a DICOM file, so no DICOM SR can reference it"


def dicom_source_problems(paths: Sequence[str | Path], radiographs: Sequence[Any]) -> list[str]:
    """One sentence (also logged) per DICOM film whose header a DICOM SR/SEG cannot carry
    (:func:`~SpineAlignmentLib.io.dicom_sr.check_source`); checked after the film is read, before inference."""
    from ..io.dicom_sr import check_source

    problems = [check_source(p) for p, rg in zip(paths, radiographs) if rg.metadata.get("format") == "dicom"]
    for problem in filter(None, problems):
        log.warning("%s", problem)
    return [p for p in problems if p]
