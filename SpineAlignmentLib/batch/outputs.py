"""A batch's files: each item's outputs (written atomically, the result JSON last) and the tables
``summary.csv`` and ``failures.csv``."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import OutputError, SpineAlignmentError
from ..io.naming import SUMMARY_CSV, BatchItem
from ..result import Result
from ..safefiles import describe_os_error
from .options import BatchOptions
from .resume import result_is_complete

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ("image", "name", "error", "reason")


def write_or_stop(item: BatchItem, out_dir: str | Path, what: str, write: Callable[[], None]) -> None:
    """Run ``write`` (an item's output files); a file-system failure removes its ``.part`` files and
    becomes one :class:`~SpineAlignmentLib.errors.OutputError` (the batch stops, finished results stay)."""
    try:
        write()
    except OSError as exc:
        remove_part_files(item, out_dir)
        raise OutputError(
            f"{out_dir}: cannot write the results of {what} ({describe_os_error(exc)}); free space or fix "
            "the folder's permissions, then run again (finished results are kept)."
        ) from None
    except BaseException:  # any other failure while writing (a refusal, a bug, Ctrl-C) leaves no .part behind
        remove_part_files(item, out_dir)
        raise


def write_outputs(item: BatchItem, out: Path, result: Result, radiograph: Any, protocol: str, write_markups: bool,
                   write_overlay: bool, write_dicom_sr: bool = False, write_masks: bool = False) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if write_masks and result.segmentation is not None:
        from ..io.masks import write_segmentation_nrrd
        from ..slicerio.geometry import ijk_to_ras_for_file

        seg = result.segmentation
        write_segmentation_nrrd(item.masks_path(out), seg.array, seg.segments, ijk_to_ras_for_file(item.image))
        result.masks = {"file": item.masks_path(out).name, "labels": {str(s.value): s.id for s in seg.segments},
                        "sides": seg.sides_from}
    if write_markups:
        from ..slicerio.geometry import ijk_to_ras_for_file
        from ..slicerio.markups_json import write_markups_json

        write_markups_json(item.markups_path(out), result.landmarks, ijk_to_ras_for_file(item.image),
                           protocol=protocol, model=result.model)
    if write_overlay:
        from ..io.overlay import render_overlay

        render_overlay(radiograph.pixels, result, item.overlay_path(out))
    if write_dicom_sr:
        from ..io.dicom_sr import read_source_dataset, write_measurement_report

        source = read_source_dataset(item.image)
        if result.segmentation is not None:  # a segmentation model's masks as a DICOM SEG beside the SR
            from ..io.dicom_seg import write_segmentation

            write_segmentation(result.segmentation.array, source, item.dicom_seg_path(out), protocol=protocol,
                               model=result.model)
            result.masks = {**(result.masks or {}), "dicom_seg": item.dicom_seg_path(out).name,
                            "labels": {str(s.value): s.id for s in result.segmentation.segments}}
        write_measurement_report(result, source, item.dicom_sr_path(out))
    result.write_json(item.result_path(out))  # last: its presence marks the image complete


def remove_part_files(item: BatchItem, out_dir: str | Path) -> None:
    """Remove the half-written ``.part`` files an interrupted write of ``item`` left behind."""
    for p in (*item.markups_paths(out_dir), *item.overlay_paths(out_dir), item.dicom_sr_path(out_dir),
              item.dicom_seg_path(out_dir), item.masks_path(out_dir), item.result_path(out_dir)):
        try:
            p.with_name(p.name + ".part").unlink(missing_ok=True)
        except OSError as exc:
            log.debug("cannot remove %s.part (%s)", p, exc)


def read_failures(path: Path) -> dict[str, dict[str, str]]:
    """Earlier failures by output name."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["name"]: row for row in csv.DictReader(fh) if row.get("name")}


def write_failures(path: Path, failures: dict[str, dict[str, str]]) -> Path:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FAILURE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for name in sorted(failures):
            writer.writerow(failures[name])
    os.replace(tmp, path)
    return path


def write_summary(items: Sequence[BatchItem], opts: BatchOptions, fingerprints: dict[str, dict[str, Any]]) -> Path:
    """summary.csv over every result of this batch complete with this run's fingerprint (also earlier runs')."""
    from ..io.tables import summary_row, write_summary_csv

    rows = []
    for item in items:
        if not result_is_complete(item, opts, fingerprints[item.name]):
            continue
        try:
            res = Result.read_json(item.result_path(opts.out_dir))
        except SpineAlignmentError as exc:
            log.warning("%s: %s", item.image, exc)
            continue
        rows.append(summary_row(res, item.image))
    return write_summary_csv(Path(opts.out_dir) / SUMMARY_CSV, rows, opts.protocol)
