"""Batch analysis: many radiographs, one result JSON + ``.mrk.json`` + overlay PNG each, resumable.

Every image is analysed by :func:`analyze_one` (also used by ``spine-align
analyze``). A :class:`BatchRunner` feeds images to an executor: in this
process (``workers=1``), a local :class:`concurrent.futures.ProcessPoolExecutor`
(``workers=N``) or an existing Dask cluster (``scheduler=ADDRESS`` or a
``distributed.Client``). Workers write each image's files as soon as they exist
(atomic renames; the result JSON last, so its presence means the image is
complete). With Dask, the input and output folders must be visible to the
workers under the same paths (a shared file system); inputs and outputs are made
absolute before they are sent, and the client checks that each result a worker
reports is where it expects it.

Progress is reported as :class:`Progress` events to a callback; :meth:`BatchRunner.cancel`
stops submitting new work, lets running items finish and returns cleanly. A bad
image is recorded in ``failures.csv`` with its reason and the rest go on.

Resume: every result JSON carries the run's :func:`batch_fingerprint` (protocol,
model name, version and the SHA-256 of each weights file, the options that change
values, the software version, and the landmark file's SHA-256 with
``landmarks_dir``). A re-run re-uses a result only when its fingerprint equals
the new one; the others are analysed again (the old JSON is kept as
``<name>.json.stale`` until the new one is written) and the run says how many and
why. Earlier failures are re-tried unless ``retry_failures=False``; ``force=True``
analyses everything again.

The package, by concern: :mod:`~SpineAlignmentLib.io.naming` (output names, :class:`BatchItem`; on the
formats floor, for the readers of a results folder), :mod:`.inputs` (the image files of the inputs),
:mod:`.landmarks` (landmark files matched and read, or a model), :mod:`.resume` (fingerprints, complete
and stale results), :mod:`.analysis` (one film), :mod:`.outputs` (each item's files, ``summary.csv``,
``failures.csv``), :mod:`.workers` (the worker entry point and the local pool), :mod:`.runner`
(:class:`BatchRunner`) and :mod:`.pairs` (pairs of films). Their public names are re-exported here.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ..io.naming import FAILURES_CSV, IMAGE_EXTENSIONS, SUMMARY_CSV, BatchItem, PairFilm, make_items, output_name
from .analysis import analyze_one, dicom_source_problems, not_dicom, read_film
from .inputs import collect_inputs
from .landmarks import FilmLandmarks, film_landmarks, find_landmarks_file, match_landmarks, read_landmarks_file
from .options import BatchEvent, BatchOptions, BatchSummary, Progress, progress_dict
from .outputs import FAILURE_COLUMNS, read_failures, remove_part_files, write_failures, write_or_stop
from .resume import (STALE_SUFFIX, batch_fingerprint, default_model, fingerprint_difference, item_fingerprint,
                     landmarks_file_fingerprint, model_fingerprint, result_is_complete, result_state)
from .runner import BatchRunner, run_batch
from .workers import WORKER_HEARTBEAT_S, _task  # noqa: F401 - the worker entry point, which tests replace

__all__ = [
    "FAILURES_CSV", "IMAGE_EXTENSIONS", "SUMMARY_CSV", "BatchItem", "PairFilm", "make_items", "output_name",
    "analyze_one", "dicom_source_problems", "not_dicom", "read_film", "collect_inputs", "FilmLandmarks",
    "film_landmarks", "find_landmarks_file", "match_landmarks", "read_landmarks_file", "BatchEvent", "BatchOptions",
    "BatchSummary", "Progress", "progress_dict", "FAILURE_COLUMNS", "read_failures", "remove_part_files",
    "write_failures", "write_or_stop", "STALE_SUFFIX", "batch_fingerprint", "default_model", "fingerprint_difference",
    "item_fingerprint", "landmarks_file_fingerprint", "model_fingerprint", "result_is_complete", "result_state",
    "BatchRunner", "run_batch", "WORKER_HEARTBEAT_S",
]

_ABSENT = object()


class _Package(types.ModuleType):
    """Setting a name of the package (``monkeypatch.setattr(batch, "analyze_one", ...)`` in a test) also sets it in
    each of its modules that holds the same object, so the code that calls it there calls the new one; setting it
    back (the patch undone) restores them all."""

    def __setattr__(self, name: str, value: Any) -> None:
        old = self.__dict__.get(name, _ABSENT)
        if old is not _ABSENT and not isinstance(old, types.ModuleType):
            prefix = self.__name__ + "."
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith(prefix) and module.__dict__.get(name, _ABSENT) is old:
                    setattr(module, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
