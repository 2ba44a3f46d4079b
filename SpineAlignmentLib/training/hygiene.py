"""Label hygiene for four-corner vertebra annotations (AASCE layout).

The AASCE training labels contain known errors: corners swapped within a
vertebra, vertebrae out of top-to-bottom order and a few misplaced points. This
module finds them with explicit geometric checks and either fixes them (when
the fix is unambiguous: re-sorting corners or vertebrae) or excludes the image,
always with a reason that names the file. Nothing is dropped or changed
silently.

The checks themselves (:func:`check_labels`, :class:`Finding`,
:class:`HygieneResult`) are pure geometry and live in
:mod:`SpineAlignmentLib.geometry.label_checks`, which inference and datasets
use too; they are re-exported here. This module runs them over a training
set, logs every finding and writes the report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import numpy as np

from ..geometry.label_checks import Finding, HygieneResult, check_labels

__all__ = ["Finding", "HygieneResult", "check_labels", "run_hygiene", "write_report"]

log = logging.getLogger(__name__)


def run_hygiene(items: Iterable[tuple[str, np.ndarray, tuple[int, int] | None]], **kwargs) -> dict[str, HygieneResult]:
    """Run :func:`check_labels` on ``(file, points, image_shape)`` items and log every finding."""
    out: dict[str, HygieneResult] = {}
    for file, pts, shape in items:
        r = check_labels(pts, file, shape, **kwargs)
        for f in r.findings:
            log.warning("label hygiene: %s: %s (%s)", f.file, f.detail, f.action)
        out[file] = r
    return out


def summarise(results: dict[str, HygieneResult]) -> dict:
    """Counts for the run log and model metadata."""
    findings = [f for r in results.values() for f in r.findings]
    by_check: dict[str, int] = {}
    for f in findings:
        by_check[f.check] = by_check.get(f.check, 0) + 1
    return {
        "images_checked": len(results),
        "images_fixed": sum(1 for r in results.values() if r.fixed),
        "images_excluded": sum(1 for r in results.values() if r.excluded),
        "findings_by_check": dict(sorted(by_check.items())),
    }


def write_report(results: dict[str, HygieneResult], path: Path) -> dict:
    """Write a JSON report (summary + every finding with its file name); return the summary."""
    summary = summarise(results)
    findings = [asdict(f) for r in results.values() for f in r.findings]
    Path(path).write_text(json.dumps({"summary": summary, "findings": findings}, indent=1))
    return summary
