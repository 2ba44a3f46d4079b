"""Evaluation: agreement of predicted results with ground truth and between raters.

Reproduces the statistics of the source studies (study 001 Table 1, ICC heat
map, per-landmark errors normalised by the nearest-neighbour distance and
letter-value plots; study 003 ICC/MAE/Bland–Altman; AASCE SMAPE and circular
MAE for Cobb angles).

Python API::

    from SpineAlignmentLib.evaluation import evaluate, compare_results, compare_landmark_sets
    report = evaluate("truth/", "pred/", raters={"R1": "r1/"}, out_dir="report/")
    report.parameters          # pandas DataFrame, one row per parameter
    rows = compare_landmark_sets({"T1_TL": (10, 20)}, {"T1_TL": (13, 24)}, spacing_mm=(0.2, 0.2))

``compare_landmark_sets`` and :mod:`.landmarks` need only NumPy; everything
else needs the ``stats`` extra (pandas, pingouin, scipy; seaborn for boxen plots).
"""

from .landmarks import (
    LANDMARK_COLUMNS,
    SDR_THRESHOLDS_MM,
    compare_landmark_sets,
    letter_values,
    nearest_neighbour_distances,
    normalised_errors,
    success_detection_rate,
)

__all__ = [
    "LANDMARK_COLUMNS", "SDR_THRESHOLDS_MM", "compare_landmark_sets", "letter_values",
    "nearest_neighbour_distances", "normalised_errors", "success_detection_rate",
    "EvaluationReport", "EvaluationError", "compare_results", "evaluate", "load_results", "image_key",
]


def __getattr__(name):
    # The pandas/pingouin side is imported lazily so that the Slicer module can use
    # compare_landmark_sets without the stats extra installed.
    if name in ("EvaluationReport", "EvaluationError", "compare_results", "evaluate", "load_results", "image_key"):
        from . import compare

        return getattr(compare, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
