"""What a batch is asked to do (:class:`BatchOptions`) and what it reports (:class:`Progress` events,
:class:`BatchSummary`)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class BatchEvent(enum.Enum):
    """What a :class:`Progress` report is about."""

    STARTED = "started"  #: inputs collected; ``total`` is known
    SKIPPED = "skipped"  #: result complete with the same fingerprint (or an earlier failure not re-tried)
    SUBMITTED = "submitted"  #: handed to a worker
    DONE = "done"  #: result and sidecar files written
    FAILED = "failed"  #: recorded in failures.csv with ``message``
    CANCELLED = "cancelled"  #: cancel requested; no new work is submitted
    FINISHED = "finished"  #: summary.csv and failures.csv written; the run is over


@dataclass
class Progress:
    """One structured progress report."""

    event: BatchEvent
    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    image: str | None = None
    message: str = ""
    seconds: float | None = None

    @property
    def finished_items(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def fraction(self) -> float:
        return 1.0 if self.total == 0 else self.finished_items / self.total


@dataclass(frozen=True)
class BatchOptions:
    """What to do with every image (picklable: it travels to workers)."""

    protocol: str
    out_dir: str
    model: str | None = None
    spacing: tuple[float, float] | None = None
    landmarks_dir: str | None = None
    flip_tta: bool = False
    write_markups: bool = True
    write_overlay: bool = True
    write_masks: bool = False
    patient_orientation: str | None = None
    min_confidence: float | None = None
    write_dicom_sr: bool = False
    level_anchors: str | None = None  #: a level-anchor CSV (:mod:`SpineAlignmentLib.io.level_anchors`)


@dataclass
class BatchSummary:
    """Counts of a finished (or cancelled) run and where its tables are."""

    total: int
    done: int
    failed: int
    skipped: int
    cancelled: bool
    summary_csv: Path
    failures_csv: Path
    failures: dict[str, str] = field(default_factory=dict)
    #: results found but analysed again: why (fingerprint differences, ``--force``) -> how many
    stale: dict[str, int] = field(default_factory=dict)
    #: why the batch stopped early because its output folder could not be written ("" when it did not)
    write_error: str = ""


def progress_dict(p: Progress) -> dict[str, Any]:
    """JSON-ready form of a progress event (for logs and JSON Lines output)."""
    d = asdict(p)
    d["event"] = p.event.value
    return d
