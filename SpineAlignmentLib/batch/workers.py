"""Where a batch's items run: the worker entry point (:func:`_task`), the local process pool's set-up
(Ctrl-C, parent death, cancel) and the in-process executor."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import LandmarkError, OutputError, SpineAlignmentError
from ..io.naming import BatchItem
from .analysis import analyze_one
from .options import BatchOptions

log = logging.getLogger(__name__)


def _error_name(exc: BaseException) -> str:
    """The public class name of an error (a private subclass reports its public parent)."""
    for cls in type(exc).__mro__:
        if not cls.__name__.startswith("_"):
            return cls.__name__
    return type(exc).__name__


def _task(item: BatchItem, options: BatchOptions, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Worker entry point: never raises for a bad image, returns a status record instead.

    ``item`` and ``options`` hold absolute paths (see :meth:`BatchRunner.run`); the record
    names the result file written, which the client checks.
    """
    t0 = time.perf_counter()
    if _WORKER_CANCEL is not None and _WORKER_CANCEL.is_set():
        # queued in the pool before the batch was cancelled: never start (nor write) after a cancel
        return {"status": "cancelled", "item": item, "seconds": 0.0}
    landmarks_path = None
    try:
        if item.films:
            from .pairs import analyze_pair

            result = analyze_pair(item, options, fingerprint)
        else:
            if options.landmarks_dir:
                if item.landmarks is None:
                    raise LandmarkError(f"{item.image}: {item.landmarks_reason or 'no landmark file'}.")
                landmarks_path = Path(item.landmarks)
            result = analyze_one(
                item.image, options.protocol, options.out_dir, model=options.model, spacing=options.spacing,
                landmarks_path=landmarks_path, flip_tta=options.flip_tta, write_markups=options.write_markups,
                write_overlay=options.write_overlay, patient_orientation=options.patient_orientation,
                name=item.name, min_confidence=options.min_confidence, fingerprint=fingerprint,
                write_dicom_sr=options.write_dicom_sr, write_masks=options.write_masks, sr_only_for_dicom=True,
                level_anchor=item.level_anchor,
            )
    except OutputError as exc:  # the output folder, not the image: the runner stops the batch
        return {"status": "write_error", "item": item, "error": "OutputError", "reason": str(exc),
                "seconds": time.perf_counter() - t0}
    except SpineAlignmentError as exc:
        return {"status": "failed", "item": item, "error": _error_name(exc), "reason": str(exc),
                "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - one unexpected failure must not stop the batch
        log.debug("unexpected failure on %s\n%s", item.image, traceback.format_exc())
        return {"status": "failed", "item": item, "error": type(exc).__name__,
                "reason": f"unexpected error: {exc}", "seconds": time.perf_counter() - t0}
    return {"status": "done", "item": item, "seconds": time.perf_counter() - t0,
            "warnings": len(result.warnings), "result_path": str(item.result_path(options.out_dir)),
            "cwd": os.getcwd()}


#: Set in worker processes of a local pool (:func:`_worker_init`): the batch's cancel flag.
_WORKER_CANCEL: Any = None


def _worker_init(parent_pid: int, cancel: Any) -> None:
    """Make a pool worker die with the batch process and ignore the terminal's Ctrl-C.

    The parent handles Ctrl-C (cancel, then abort) and tells the workers through
    ``cancel``. If the parent dies (killed, crashed), the worker must not go on
    analysing and writing: on Linux the kernel kills it (``PR_SET_PDEATHSIG``);
    elsewhere, and as a second guard, a watchdog thread ends it within a
    second of noticing it has been re-parented.
    """
    global _WORKER_CANCEL
    import signal

    _WORKER_CANCEL = cancel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "getppid"):
        _set_parent_death_signal()
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(1)

        def watchdog() -> None:
            while True:
                time.sleep(WORKER_HEARTBEAT_S)
                if os.getppid() != parent_pid:
                    os._exit(1)

        threading.Thread(target=watchdog, name="spinealign-parent-watchdog", daemon=True).start()


#: How often a pool worker checks that its parent batch process is still alive (seconds).
WORKER_HEARTBEAT_S = 1.0


def _set_parent_death_signal() -> None:
    """Linux: SIGKILL this process when its parent dies (no-op elsewhere)."""
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError) as exc:  # the watchdog still guards
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable (%s)", exc)


class _InlineExecutor:
    """Runs each task at submission, in this process (workers=1; also what the GUI thread uses)."""

    def submit(self, fn, *args):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future like a pool would
            fut.set_exception(exc)
        return fut

    def shutdown(self) -> None:
        pass


def _wait_first(pending: set, dask: bool) -> tuple[set, set]:
    if dask:
        from distributed import wait

        res = wait(list(pending), return_when="FIRST_COMPLETED")
        return set(res.done), set(res.not_done)
    done, not_done = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
    return set(done), set(not_done)
