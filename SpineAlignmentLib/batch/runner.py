"""The batch runner: collects the items, skips what is complete, feeds the rest to an executor, and
reports :class:`~SpineAlignmentLib.batch.options.Progress` (see :mod:`SpineAlignmentLib.batch`)."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import OutputError, SpineAlignmentError
from ..io.naming import FAILURES_CSV, SUMMARY_CSV, BatchItem, make_items
from ..safefiles import check_output_dir, describe_os_error
from .inputs import collect_inputs
from .landmarks import match_landmarks
from .options import BatchEvent, BatchOptions, BatchSummary, Progress
from .outputs import read_failures, remove_part_files, write_failures, write_summary
from .resume import batch_fingerprint, drop_stale, fingerprint_of, result_is_complete, result_state, set_aside
from .workers import _InlineExecutor, _task, _wait_first, _worker_init

log = logging.getLogger(__name__)


class BatchRunner:
    """Run a batch with progress events, cancel and resume.

    Args:
        inputs: image files and/or folders.
        options: :class:`BatchOptions`.
        workers: local processes (1 = in this process).
        scheduler: Dask scheduler address (``tcp://host:8786``) or a ``distributed.Client``.
        callback: called with each :class:`Progress` (in the calling thread).
        retry_failures: re-try images listed in an earlier ``failures.csv``.
        force: analyse every image again, whatever results and failures exist.
        pairs: a pairs manifest (:mod:`SpineAlignmentLib.batch.pairs`) instead of ``inputs``: one result per
            pair of films (lumbar flexion + extension, a coronal film + its paired lateral).
    """

    def __init__(self, inputs: Iterable[str | Path], options: BatchOptions, *, workers: int = 1,
                 scheduler: Any = None, callback: Callable[[Progress], None] | None = None,
                 retry_failures: bool = True, force: bool = False, pairs: str | Path | None = None) -> None:
        self.inputs = list(inputs)
        self.pairs = pairs
        self.options = options
        self.workers = max(1, int(workers))
        self.scheduler = scheduler
        self.callback = callback
        self.retry_failures = retry_failures
        self.force = force
        self._cancel = threading.Event()
        self._worker_cancel: Any = None  # the pool workers' copy of the cancel flag (workers > 1)

    def cancel(self) -> None:
        """Stop submitting new images; running ones finish and are written, queued ones never start."""
        self._cancel.set()
        if self._worker_cancel is not None:
            self._worker_cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _abort_workers(self, executor: Any) -> None:
        """Kill the local pool's worker processes so that nothing is written after an abort."""
        if self._worker_cancel is not None:
            self._worker_cancel.set()
        # ProcessPoolExecutor has no public kill; its process table is the only handle on the workers
        for proc in list((getattr(executor, "_processes", None) or {}).values()):
            try:
                proc.kill()
            except (OSError, ValueError, AttributeError):
                pass

    def _emit(self, progress: Progress) -> None:
        if self.callback is not None:
            try:
                self.callback(progress)
            except Exception:  # noqa: BLE001 - a broken progress display must not lose results
                log.exception("progress callback failed")

    def _executor(self) -> tuple[Any, bool, Callable[[], None]]:
        if self.scheduler is not None:
            try:
                from distributed import Client
            except ImportError as exc:
                raise SpineAlignmentError(
                    f"--scheduler needs dask.distributed ({exc}); install the 'batch' extra.") from None
            if isinstance(self.scheduler, Client):
                return self.scheduler, True, lambda: None
            client = Client(self.scheduler)
            return client, True, client.close
        if self.workers > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            self._worker_cancel = ctx.Event()
            pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_worker_init,
                                          initargs=(os.getpid(), self._worker_cancel))
            return pool, False, lambda: pool.shutdown(wait=True, cancel_futures=True)
        return _InlineExecutor(), False, lambda: None

    def run(self) -> BatchSummary:
        """Process every image whose result is not complete with this run's fingerprint; returns the counts."""
        # absolute paths before anything goes to a worker: a Dask worker has its own working directory
        opts = replace(self.options, out_dir=os.path.abspath(self.options.out_dir),
                       landmarks_dir=os.path.abspath(self.options.landmarks_dir) if self.options.landmarks_dir else None)
        out = Path(opts.out_dir)
        check_output_dir(out, OutputError)  # before any work: an unwritable folder fails now, not after inference
        bad_rows: dict[str, dict[str, str]] = {}  # pairs manifest rows that make no pair: failures from the start
        if self.pairs is not None:
            from .pairs import pair_items

            if self.inputs:
                raise SpineAlignmentError("give either image files/folders or --pairs MANIFEST, not both.")
            items, bad_rows = pair_items(self.pairs, opts)  # each film's landmark file matched there
        else:
            items = make_items([Path(os.path.abspath(p)) for p in collect_inputs(self.inputs, exclude=out)])
            if not items:
                raise SpineAlignmentError(
                    f"{', '.join(str(p) for p in self.inputs)}: no image found (DICOM, PNG, JPEG, TIFF, NRRD); "
                    "give the folder that holds the films, or the files themselves.")
        failures_path = out / FAILURES_CSV
        old_failures = {} if self.force else read_failures(failures_path)
        failures: dict[str, dict[str, str]] = {}
        total = len(items) + len(bad_rows)
        counts = {"done": 0, "failed": 0, "skipped": 0}
        if opts.landmarks_dir and self.pairs is None:  # matched once, so workers and the fingerprint use one file
            matched = match_landmarks(items, opts.landmarks_dir)
            items = [replace(i, landmarks=str(matched[i.name][0]) if matched[i.name][0] else None,
                             landmarks_reason=matched[i.name][1]) for i in items]
        if opts.level_anchors:
            items = _with_level_anchors(items, opts.level_anchors, self.pairs is not None)
        base = batch_fingerprint(opts)
        fingerprints = {item.name: fingerprint_of(base, item) for item in items}
        stale: dict[str, int] = {}

        def progress(event: BatchEvent, image: str | None = None, message: str = "", seconds=None) -> None:
            self._emit(Progress(event, total, counts["done"], counts["failed"], counts["skipped"], image, message,
                                seconds))

        todo: list[BatchItem] = []
        skipped: list[tuple[BatchItem, str]] = []
        for item in items:
            state, why = result_state(item, opts, fingerprints[item.name])
            if state == "complete" and self.force:
                state, why = "stale", "--force"
            if state == "complete":
                skipped.append((item, "result exists with the same fingerprint"))
            elif item.name in old_failures and not self.retry_failures:
                failures[item.name] = old_failures[item.name]
                skipped.append((item, f"failed before: {old_failures[item.name].get('reason', '')}"))
            else:
                if state == "stale":
                    stale[why] = stale.get(why, 0) + 1
                todo.append(item)
        n_stale = sum(stale.values())
        message = (f"{total} {'pairs' if self.pairs is not None else 'images'}, output in {out}: "
                   f"{len(skipped)} results re-used, {len(todo)} to analyse"
                   + (f", {len(bad_rows)} not pairs (failures.csv says why)" if bad_rows else ""))
        if n_stale:
            message += f" ({n_stale} of them had a result made differently: " + "; ".join(
                f"{n} {why}" for why, n in sorted(stale.items(), key=lambda kv: -kv[1])) + ")"
        progress(BatchEvent.STARTED, message=message)  # said once: the progress line (and the summary JSON)
        for item, why in skipped:
            counts["skipped"] += 1
            progress(BatchEvent.SKIPPED, item.image, why)
        for name, row in bad_rows.items():
            counts["failed"] += 1
            failures[name] = row
            progress(BatchEvent.FAILED, row["image"], row["reason"])

        executor, is_dask, close = self._executor()
        in_flight_limit = self.workers * 2 if self.scheduler is None else 10**6
        if is_dask:  # enough to keep every Dask worker thread busy, not the whole list at once
            try:
                in_flight_limit = max(2, 2 * sum(executor.nthreads().values()))
            except Exception:  # noqa: BLE001
                in_flight_limit = 16
        pending: dict[Any, BatchItem] = {}
        ran: set[str] = set()
        write_error = ""
        queue = list(reversed(todo))
        try:
            while queue or pending:
                while queue and len(pending) < in_flight_limit and not self.cancelled and not write_error:
                    item = queue.pop()
                    set_aside(item, opts)
                    fp = fingerprints[item.name]
                    fut = executor.submit(_task, item, opts, fp) if not is_dask else executor.submit(
                        _task, item, opts, fp, pure=False, key=f"spinealign-{item.name}-{time.time_ns()}")
                    pending[fut] = item
                    progress(BatchEvent.SUBMITTED, item.image)
                if (self.cancelled or write_error) and queue:
                    progress(BatchEvent.CANCELLED, message=f"{len(queue)} images not started"
                                                           + (f": {write_error}" if write_error else ""))
                    queue.clear()
                if not pending:
                    break
                done, _ = _wait_first(set(pending), is_dask)
                for fut in done:
                    item = pending.pop(fut)
                    ran.add(item.name)
                    try:
                        record = fut.result()
                    except BaseException as exc:  # noqa: BLE001 - a crashed worker is a failure of this item
                        record = {"status": "failed", "item": item, "error": type(exc).__name__,
                                  "reason": f"worker crashed: {exc}", "seconds": None}
                    if record["status"] == "cancelled":
                        continue
                    if record["status"] == "write_error":
                        # the folder, not the image: stop here (every later image would fail the same way);
                        # the image is not a failure, so a re-run analyses it again
                        write_error = write_error or record["reason"]
                        progress(BatchEvent.FAILED, item.image, record["reason"], record.get("seconds"))
                        continue
                    if record["status"] == "done":
                        record = _check_written(record, item, opts, fingerprints[item.name])
                    if record["status"] == "done":
                        counts["done"] += 1
                        failures.pop(item.name, None)
                        drop_stale(item, opts)
                        progress(BatchEvent.DONE, item.image, seconds=record.get("seconds"))
                    else:
                        counts["failed"] += 1
                        failures[item.name] = {"image": item.image, "name": item.name, "error": record["error"],
                                               "reason": record["reason"]}
                        progress(BatchEvent.FAILED, item.image, record["reason"], record.get("seconds"))
        except BaseException:
            self._abort_workers(executor)  # aborted (a second Ctrl-C, an error here): workers stop now
            raise
        finally:
            close()
        # earlier failures stay listed unless the image ran again (or is complete) in this run
        complete = {i.name for i in items if i.name not in ran and result_is_complete(i, opts, fingerprints[i.name])}
        for name, row in old_failures.items():
            if name not in ran and name not in complete:
                failures.setdefault(name, row)
        # the tables: each one that can be written is (a full disk may still take a small file)
        for write_table in (lambda: write_summary(items, opts, fingerprints), lambda: write_failures(failures_path, failures)):
            try:
                write_table()
            except OSError as exc:
                write_error = write_error or (
                    f"{out}: cannot write {Path(exc.filename or SUMMARY_CSV).name} ({describe_os_error(exc)}); "
                    "free space or fix the folder's permissions, then run again (finished results are kept).")
        summary_path = out / SUMMARY_CSV
        if write_error:
            for item in items:
                remove_part_files(item, out)
            for table in (SUMMARY_CSV, FAILURES_CSV):
                (out / f"{table}.part").unlink(missing_ok=True)
        progress(BatchEvent.FINISHED, message=f"{counts['done']} done, {counts['failed']} failed, "
                                              f"{counts['skipped']} skipped")
        return BatchSummary(total, counts["done"], counts["failed"], counts["skipped"], self.cancelled,
                            summary_path, failures_path, {k: v["reason"] for k, v in failures.items()}, stale,
                            write_error=write_error)


def _with_level_anchors(items: list[BatchItem], path: str, pairs: bool) -> list[BatchItem]:
    """The items with their rows of the level-anchor file; a row that names no film of the run is logged.

    Raises:
        SpineAlignmentError: an unreadable or malformed file, or a pairs run (anchors name single films).
    """
    from ..io.level_anchors import match_level_anchors, read_level_anchors

    if pairs:
        raise SpineAlignmentError(f"{path}: level anchors name single films; leave out --level-anchors with --pairs.")
    matched, problems = match_level_anchors(read_level_anchors(path), items, Path(path).parent)
    for text in problems:
        log.warning("%s", text)
    return [replace(i, level_anchor=matched[i.name]) if i.name in matched else i for i in items]


def _check_written(record: dict[str, Any], item: BatchItem, opts: BatchOptions,
                   fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A worker's "done" stands only if its result is where this process expects it, with this run's fingerprint."""
    expected = item.result_path(opts.out_dir)
    state, why = result_state(item, opts, fingerprint)
    if state == "complete":
        return record
    where = record.get("result_path")
    reason = (f"the worker reported {Path(item.image).name} done, but its result is not at {expected} "
              f"({why}; the worker wrote {where} with working directory {record.get('cwd')}); the input and "
              "output folders must be visible to every worker under the same absolute paths")
    log.error("%s", reason)
    return {**record, "status": "failed", "error": "OutputMissing", "reason": reason}


def run_batch(inputs: Iterable[str | Path], options: BatchOptions, **kwargs: Any) -> BatchSummary:
    """Convenience wrapper: ``BatchRunner(inputs, options, **kwargs).run()``."""
    return BatchRunner(inputs, options, **kwargs).run()
