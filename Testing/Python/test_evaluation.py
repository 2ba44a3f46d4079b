"""Tests of SpineAlignmentLib.evaluation against hand-worked and library-computed values."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="evaluation needs the stats extra (pandas)")
pytest.importorskip("pingouin", reason="evaluation needs the stats extra (pingouin)")

from scipy import stats  # noqa: E402

from SpineAlignmentLib.evaluation import compare_landmark_sets, compare_results, evaluate  # noqa: E402
from SpineAlignmentLib.evaluation import landmarks as lm  # noqa: E402
from SpineAlignmentLib.evaluation import statistics as st  # noqa: E402
from SpineAlignmentLib.evaluation.compare import EvaluationError, image_key, load_results  # noqa: E402

X = np.array([10.0, 20.0, 35.0, 41.0, 50.0])
VAR_X = 259.7  # sample variance (ddof=1) of X, by hand: 1038.8 / 4


# ----------------------------------------------------------------------------- parameter statistics

def test_perfect_agreement():
    s = st.parameter_statistics(X, X.copy(), "PI")
    assert s["n_pairs"] == 5
    assert s["abs_error_mean"] == 0 and s["abs_error_median"] == 0 and s["abs_error_iqr"] == 0
    assert s["ba_bias"] == 0 and s["ba_loa_lower"] == 0 and s["ba_loa_upper"] == 0
    assert s["icc2_1"] == pytest.approx(1.0, abs=1e-12)
    assert s["icc3_1"] == pytest.approx(1.0, abs=1e-12)
    assert s["pearson_r"] == pytest.approx(1.0)
    assert math.isnan(s["wilcoxon_p"])  # every difference zero: the test is undefined
    assert s["truth_mean"] == pytest.approx(31.2)
    assert s["truth_sd"] == pytest.approx(math.sqrt(VAR_X))
    assert math.isnan(s["smape_pct"])  # not a Cobb parameter


def test_constant_offset():
    s = st.parameter_statistics(X, X + 3.0, "AASCE_1")
    assert s["ba_bias"] == pytest.approx(3.0, abs=1e-12)
    assert s["ba_sd"] == pytest.approx(0.0, abs=1e-12)
    assert s["ba_loa_upper"] - s["ba_loa_lower"] == pytest.approx(0.0, abs=1e-12)
    assert s["abs_error_mean"] == pytest.approx(3.0) and s["abs_error_median"] == pytest.approx(3.0)
    # Consistency ICC ignores a constant offset; absolute agreement does not.
    assert s["icc3_1"] == pytest.approx(1.0, abs=1e-9)
    # By hand for k=2 raters, offset c=3, n=5: ICC(A,1) = MSR / (MSR + k*MSC/n), MSR = 2*var(X), MSC = n*c^2/2.
    assert s["icc2_1"] == pytest.approx(VAR_X / (VAR_X + 4.5), rel=1e-9)
    assert s["icc2_1"] < 1.0
    assert s["wilcoxon_p"] == pytest.approx(stats.wilcoxon(X + 3.0, X).pvalue)
    assert s["wilcoxon_p"] == pytest.approx(2 / 2**5)  # exact: all 5 differences positive, two-sided
    # SMAPE by hand: 100 * mean_i 3 / (2 x_i + 3)
    assert s["smape_pct"] == pytest.approx(100 * np.mean(3 / (2 * X + 3)))
    assert s["circular_mae"] == pytest.approx(3.0)


def test_pearson_and_error_summary_match_libraries():
    rng = np.random.default_rng(3)
    t = rng.normal(40, 10, 30)
    p = t + rng.normal(0.5, 2, 30)
    s = st.parameter_statistics(t, p)
    ref = stats.pearsonr(t, p)
    assert s["pearson_r"] == pytest.approx(ref.statistic)
    assert s["pearson_p"] == pytest.approx(ref.pvalue)
    err = pd.Series(np.abs(p - t))
    assert s["abs_error_mean"] == pytest.approx(err.mean())
    assert s["abs_error_sd"] == pytest.approx(err.std())
    assert s["abs_error_iqr"] == pytest.approx(err.quantile(0.75) - err.quantile(0.25))
    assert s["ba_loa_upper"] == pytest.approx(np.mean(p - t) + 1.96 * np.std(p - t, ddof=1))


def test_missing_values_are_excluded_pairwise_and_counted():
    t = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    p = np.array([1.5, np.nan, 3.0, 4.0, 5.0, 7.0])
    s = st.parameter_statistics(t, p)
    assert (s["n_truth"], s["n_pred"], s["n_pairs"]) == (5, 5, 4)
    assert s["n_missing_in_pred"] == 1 and s["n_missing_in_truth"] == 1
    assert s["abs_error_mean"] == pytest.approx((0.5 + 0 + 0 + 1) / 4)
    assert s["ba_bias"] == pytest.approx(0.375)
    assert s["truth_mean"] == pytest.approx(18 / 5)  # over every truth value, as in Table 1


def test_icc_three_raters_matches_pingouin_directly():
    import pingouin as pg

    rng = np.random.default_rng(7)
    base = rng.normal(30, 8, 12)
    wide = pd.DataFrame({"a": base, "b": base + rng.normal(0, 2, 12), "c": base + 1 + rng.normal(0, 2, 12)})
    wide.iloc[4, 1] = np.nan  # one incomplete target is dropped
    res = st.icc(wide)
    assert res["n"] == 11 and res["k"] == 3
    long = wide.dropna().reset_index(drop=True).rename_axis("t").reset_index().melt("t", var_name="r")
    ref = pg.intraclass_corr(long, targets="t", raters="r", ratings="value").set_index("Type")
    name2 = "ICC(A,1)" if "ICC(A,1)" in ref.index else "ICC2"
    assert res["icc2_1"] == pytest.approx(ref.loc[name2, "ICC"])
    assert res["icc2_1_ci_low"] <= res["icc2_1"] <= res["icc2_1_ci_high"]


def test_icc_undefined_cases_are_nan():
    assert math.isnan(st.icc(pd.DataFrame({"a": [1.0, 2.0], "b": [1.0, 2.0]}))["icc2_1"])  # n < 3
    assert math.isnan(st.icc(pd.DataFrame({"a": [5.0] * 4, "b": [5.0] * 4}))["icc3_1"])  # no variance


def test_smape_and_circular_mae_hand_worked():
    truth = np.array([[10.0, 20.0, 30.0], [40.0, 0.0, 0.0]])
    pred = np.array([[12.0, 18.0, 30.0], [40.0, 0.0, 0.0]])
    # image 1: (2+2+0)/(22+38+60) = 4/120; image 2: 0/80 -> mean 1/60
    assert st.smape(truth, pred) == pytest.approx(100 / 60)
    assert st.circular_mae(truth, pred) == pytest.approx(4 / 6)
    # A missing angle is left out of its image's sums: image 1 -> (2+0)/(22+60)
    pred_nan = pred.copy()
    pred_nan[0, 1] = np.nan
    assert st.smape(truth, pred_nan) == pytest.approx(100 * (2 / 82 + 0) / 2)
    # Lines are 180-periodic: 179 deg vs 1 deg are 2 deg apart.
    assert st.circular_abs_diff(np.array([179.0]), np.array([1.0]))[0] == pytest.approx(2.0)
    assert st.circular_mae(np.array([179.0, 10.0]), np.array([1.0, 14.0])) == pytest.approx(3.0)
    assert math.isnan(st.smape(np.array([np.nan]), np.array([1.0])))


def test_format_p():
    assert st.format_p(0.0001) == "< 0.001*"
    assert st.format_p(0.029) == "0.029*"
    assert st.format_p(0.587) == "0.587"
    assert st.format_p(float("nan")) == "–"


# ----------------------------------------------------------------------------- landmarks

def test_success_detection_rate_hand_made_points():
    truth = {"A": (0, 0), "B": (10, 0), "C": (0, 10), "D": (10, 10)}
    # offsets in px at 0.5 mm/px: 5 px -> 2.5 mm, 4 px -> 2 mm, 6 px -> 3 mm, 10 px -> 5 mm
    pred = {"A": (3, 4), "B": (14, 0), "C": (6, 10), "D": (18, 16)}
    rows = compare_landmark_sets(truth, pred, spacing_mm=(0.5, 0.5), calibration="calibrated:FIDUCIAL")
    mm = [r["error_mm"] for r in rows]
    assert mm == pytest.approx([2.5, 2.0, 3.0, 5.0])
    assert [r["error_px"] for r in rows] == pytest.approx([5.0, 4.0, 6.0, 10.0])
    assert {r["calibration"] for r in rows} == {"calibrated:FIDUCIAL"}
    sdr = lm.success_detection_rate(mm)
    assert sdr == {2.0: 0.25, 2.5: 0.5, 3.0: 0.75, 4.0: 0.75}
    assert lm.sdr_column(2.5) == "sdr_2_5mm" and lm.sdr_column(2.0) == "sdr_2mm"


def test_anisotropic_spacing_is_applied_per_axis():
    rows = compare_landmark_sets({"A": (0, 0), "B": (0, 100)}, {"A": (3, 4), "B": (0, 100)}, spacing_mm=(0.5, 1.0))
    # dx = 3 px * 1.0 mm (column spacing), dy = 4 px * 0.5 mm (row spacing)
    assert rows[0]["error_mm"] == pytest.approx(math.hypot(3.0, 2.0))
    assert rows[0]["nn_distance_mm"] == pytest.approx(50.0)
    assert rows[0]["normalised_error"] == pytest.approx(math.hypot(3.0, 2.0) / 50.0)


def test_nearest_neighbour_normalisation_hand_worked():
    truth = {"A": (0, 0), "B": (3, 4), "C": (10, 0)}
    pred = {"A": (1, 0), "B": (3, 4), "C": (10, 65 ** 0.5 / 2)}
    rows = {r["landmark"]: r for r in compare_landmark_sets(truth, pred)}
    assert rows["A"]["nn_distance_px"] == pytest.approx(5.0)  # A-B
    assert rows["B"]["nn_distance_px"] == pytest.approx(5.0)
    assert rows["C"]["nn_distance_px"] == pytest.approx(65 ** 0.5)  # C-B, closer than C-A = 10
    assert rows["A"]["normalised_error"] == pytest.approx(0.2)
    assert rows["B"]["normalised_error"] == 0.0
    assert rows["C"]["normalised_error"] == pytest.approx(0.5)
    assert all(r["calibration"] == "pixels-only" and math.isnan(r["error_mm"]) for r in rows.values())


def test_missing_landmarks_are_flagged_not_invented():
    rows = {r["landmark"]: r for r in compare_landmark_sets({"A": (0, 0), "B": (5, 0)},
                                                             {"A": {"x": 1, "y": 0}, "C": (9, 9)})}
    assert rows["A"]["status"] == "ok" and rows["A"]["error_px"] == pytest.approx(1.0)
    assert rows["B"]["status"] == "missing_in_pred" and math.isnan(rows["B"]["error_px"])
    assert rows["C"]["status"] == "missing_in_truth" and math.isnan(rows["C"]["normalised_error"])


def test_bad_spacing_raises_calibration_error():
    from SpineAlignmentLib.errors import CalibrationError

    with pytest.raises(CalibrationError):
        compare_landmark_sets({"A": (0, 0)}, {"A": (1, 1)}, spacing_mm=(0.0, 0.2))


def test_letter_values_quantile_boxes():
    v = np.arange(1, 101, dtype=float)
    boxes = lm.letter_values(v)
    assert len(boxes) == 3  # Tukey: floor(log2 100) - 3
    assert [b[0] for b in boxes] == [0.25, 0.125, 0.0625]
    assert boxes[0][1:] == pytest.approx(tuple(np.quantile(v, [0.25, 0.75])))


# ----------------------------------------------------------------------------- matching and end to end

def test_image_key():
    assert image_key({"image": "dir/sub/case 1 AP.jpg"}) == "case 1 AP"
    assert image_key({"image": "1.2.840.10008.5.1"}) == "1.2.840.10008.5.1"  # a UID keeps its dots
    assert image_key({"image": "scan.nii.gz"}) == "scan"
    assert image_key({}, fallback="stem") == "stem"


def _result(image, params, landmarks=None, spacing=None, calibration="pixels-only"):
    return {"schema": "spinealignment.result/1", "image": image, "protocol": "coronal-spine",
            "spacing_mm": spacing, "calibration": calibration,
            "landmarks": {k: {"x": x, "y": y} for k, (x, y) in (landmarks or {}).items()},
            "parameters": {k: {"value": v, "unit": "deg"} for k, v in params.items()}}


def test_compare_results_counts_missing_parameters_and_images():
    truth = [_result(f"im{i}.png", {"AASCE_1": 10.0 + 5 * i, "AASCE_2": 3.0 + i}) for i in range(6)]
    pred = [_result(f"im{i}.png", {"AASCE_1": 11.0 + 5 * i} | ({} if i == 2 else {"AASCE_2": 3.0 + i}))
            for i in range(1, 7)]
    rep = compare_results(truth, pred)
    c = rep.counts
    assert (c["matched"], c["missing_in_pred"], c["missing_in_truth"]) == (5, 1, 1)
    assert c["missing_in_pred_images"] == ["im0"] and c["missing_in_truth_images"] == ["im6"]
    p = rep.parameters.set_index("parameter")
    assert p.loc["AASCE_1", "ba_bias"] == pytest.approx(1.0)
    # missing: im2 (value left out) and im0 (no prediction file at all: every truth film counts)
    assert p.loc["AASCE_2", "n_pairs"] == 4 and p.loc["AASCE_2", "n_missing_in_pred"] == 2
    assert p.loc["AASCE_2", "abs_error_mean"] == 0.0
    assert any("AASCE_2" in n for n in rep.notes)
    with pytest.raises(EvaluationError):
        compare_results(truth[:1], [_result("other.png", {"AASCE_1": 1.0})])


def _write(folder: Path, name: str, obj) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")


def test_cli_end_to_end(tmp_path):
    from SpineAlignmentLib.cli import main

    rng = np.random.default_rng(11)
    ids = [f"T{v}_{c}" for v in (1, 2, 3) for c in ("TL", "TR", "BL", "BR")]
    for i in range(8):
        pts = {k: (100.0 + 40 * (j % 2), 50.0 + 20 * j + i) for j, k in enumerate(ids)}
        params = {"AASCE_1": 20.0 + 4 * i, "AASCE_2": 8.0 + i, "AASCE_3": 5.0 + 2 * i}
        _write(tmp_path / "truth", f"case{i}.json",
               _result(f"imgs/case{i}.jpg", params, pts, spacing=[0.2, 0.2], calibration="calibrated:GEOMETRY"))
        noisy = {k: (x + rng.normal(0, 3), y + rng.normal(0, 3)) for k, (x, y) in pts.items()}
        pparams = {k: v + rng.normal(0, 1) for k, v in params.items()}
        if i == 7:
            continue  # in truth only
        _write(tmp_path / "pred", f"case{i}.json",
               _result(f"case{i}.png", pparams, noisy, spacing=[0.2, 0.2], calibration="calibrated:GEOMETRY"))
        rparams = {k: v + rng.normal(0, 1) for k, v in params.items()}
        _write(tmp_path / "r1", f"x{i}.json", _result(f"case{i}.jpg", rparams, pts))
    _write(tmp_path / "pred", "broken.json", "{not json")
    _write(tmp_path / "pred", "orphan.json", _result("orphan.jpg", {"AASCE_1": 3.0}))
    out = tmp_path / "report"
    assert main(["evaluate", "--truth", str(tmp_path / "truth"), "--pred", str(tmp_path / "pred"),
                 "--rater", f"R1={tmp_path / 'r1'}", "--out", str(out)]) == 0

    expected = ["parameters.csv", "table1.csv", "landmarks.csv", "icc.csv", "icc_heatmap.png",
                "parameter_AASCE_1.png", "parameter_AASCE_2.png", "parameter_AASCE_3.png",
                "landmarks_boxen.png", "report.html"]
    for name in expected:
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text(encoding="utf-8")
    for name in expected[:-1]:
        assert name in html, name
    assert "broken.json" in html and "not readable as JSON" in html

    counts = json.loads((out / "counts.json").read_text())
    assert (counts["matched"], counts["missing_in_pred"], counts["missing_in_truth"], counts["failed"]) == (7, 1, 1, 1)
    params = pd.read_csv(out / "parameters.csv")
    assert list(params["parameter"]) == ["AASCE_1", "AASCE_2", "AASCE_3"]
    assert set(st.PARAMETER_COLUMNS) <= set(params.columns)
    assert (params["n_pairs"] == 7).all() and params["smape_pct"].notna().all()
    table1 = pd.read_csv(out / "table1.csv")
    assert list(table1.columns)[:4] == ["Parameter", "Unit", "N", "Ground truth mean (SD)"]
    icc = pd.read_csv(out / "icc.csv")
    assert set(icc["comparison"]) == {"truth-model", "truth-R1", "model-R1", "all"}
    marks = pd.read_csv(out / "landmarks.csv").set_index("landmark")
    assert len(marks) == len(ids) + 1 and marks.loc["ALL", "n"] == 7 * len(ids)
    assert marks.loc["ALL", "calibration"] == "calibrated:GEOMETRY"
    # mm = px * 0.2 for isotropic spacing
    assert marks.loc["ALL", "error_mm_mean"] == pytest.approx(0.2 * marks.loc["ALL", "error_px_mean"])
    assert 0 <= marks.loc["ALL", "sdr_2mm"] <= marks.loc["ALL", "sdr_4mm"] <= 1


def test_evaluate_without_calibration_says_why_no_sdr(tmp_path):
    pts = {"A": (0.0, 0.0), "B": (0.0, 10.0), "C": (5.0, 20.0)}
    for i in range(4):
        _write(tmp_path / "t", f"{i}.json", _result(f"{i}.png", {"AASCE_1": 10.0 + i}, pts))
        _write(tmp_path / "p", f"{i}.json", _result(f"{i}.png", {"AASCE_1": 10.5 + i},
                                                    {k: (x + 1, y) for k, (x, y) in pts.items()}))
    rep = evaluate(tmp_path / "t", tmp_path / "p")
    all_row = rep.landmarks.set_index("landmark").loc["ALL"]
    assert all_row["error_px_mean"] == pytest.approx(1.0)
    assert math.isnan(all_row["sdr_2mm"]) and all_row["calibration"] == "pixels-only"
    assert any("SDR" in n for n in rep.notes)
    assert load_results(tmp_path / "t").results.keys() == {"0", "1", "2", "3"}


def _datasets() -> Path:
    env = os.environ.get("SPINEALIGN_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


@pytest.mark.dataset
def test_demo_on_aasce_labels(tmp_path):
    if not (_datasets() / "aasce-train" / "labels").is_dir():
        pytest.skip("../shared/datasets/aasce-train not present (set SPINEALIGN_DATASETS)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo", Path(__file__).with_name("make_evaluation_demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main([str(tmp_path), "--limit", "25", "--sigma", "0"]) == 0
    params = pd.read_csv(tmp_path / "report" / "parameters.csv").set_index("parameter")
    # Zero noise: the recomputed triple must equal angles.csv to the port's precision (or exactly, fallback).
    assert params.loc[["AASCE_1", "AASCE_2", "AASCE_3"], "abs_error_mean"].max() < 0.01
    assert (tmp_path / "report" / "report.html").exists()


def test_evaluate_a_batch_folder_against_landmark_only_truth_counts_every_film(tmp_path, capsys):
    """Finding 8: .mrk.json files were listed as failed, landmark-only truth gave N = 0, refused films were
    silently dropped from SMAPE, the report named no model, version or date, and outliers were unnamed."""
    from spines import coronal_spine

    from SpineAlignmentLib import __version__
    from SpineAlignmentLib.cli import main
    from SpineAlignmentLib.pipeline import measure
    from SpineAlignmentLib.result import Landmark
    from SpineAlignmentLib.slicerio.markups_json import write_markups_json

    size = (900, 800)
    model = {"name": "coronal-spine-landmarks", "version": "1.1.0"}
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "batch"
    truth_dir.mkdir()
    pred_dir.mkdir()
    for k in range(10):
        thetas = [(8.0 + 2 * k) * math.sin(0.45 * i + 0.3 * k) for i in range(17)]
        truth = coronal_spine(thetas)
        (truth_dir / f"film{k}.json").write_text(json.dumps({"protocol": "coronal-spine", "image": f"film{k}.png",
                                                            "image_size": list(size), "landmarks": truth}))
        if k == 8:
            continue  # refused by the model: no result file (listed in the batch's failures.csv)
        scale = 3.0 if k == 5 else 1.05  # film5: a gross error
        lms = {key: Landmark(x, y, 0.9) for key, (x, y) in coronal_spine([scale * t for t in thetas]).items()}
        if k == 9:  # the model did not trust one corner: no Cobb values
            lms["T7_TL"] = Landmark(lms["T7_TL"].x, lms["T7_TL"].y, 0.1)
        res = measure(lms, "coronal-spine", image_size=size, image=f"film{k}.png", model=model)
        (pred_dir / f"film{k}.json").write_text(res.to_json())
        write_markups_json(pred_dir / f"film{k}.mrk.json", res.landmarks, np.eye(4), protocol="coronal-spine",
                           model=model)
    (pred_dir / "summary.csv").write_text("image\n")
    out = tmp_path / "report"
    assert main(["evaluate", "--truth", str(truth_dir), "--pred", str(pred_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    rep = evaluate(truth_dir, pred_dir)
    c = rep.counts
    assert (c["matched"], c["missing_in_pred"], c["failed"]) == (9, 1, 0)  # no .mrk.json among the failures
    assert len(c["ignored_files"]) == 9 and all(f.endswith(".mrk.json") for f, _ in c["ignored_files"])
    assert len(c["recomputed_files"]) == 10
    assert any("9 file(s) that are not results were ignored" in n for n in rep.notes)
    assert any("10 file(s) had landmarks but no parameters" in n for n in rep.notes)
    p = rep.parameters.set_index("parameter")
    assert p.loc["AASCE_1", "n_truth"] == 10 and p.loc["AASCE_1", "n_pairs"] == 8  # once N = 0
    assert p.loc["AASCE_1", "n_missing_in_pred"] == 2  # film8 (no file) and film9 (left out)
    truth_values = measure(json.loads((truth_dir / "film3.json").read_text())["landmarks"], "coronal-spine",
                           image_size=size)
    k3 = rep.images.index("film3")
    assert rep.values["AASCE_1"]["truth"][k3] == pytest.approx(truth_values.value("AASCE_1"))

    cobb = rep.cobb.set_index("set").loc["AASCE"]
    assert (cobb["n_images"], cobb["n_missing"]) == (8, 2)
    # two films without any angle, each 100 %: the figure with them is the weighted mean
    assert cobb["smape_pct_missing_as_failure"] == pytest.approx((8 * cobb["smape_pct"] + 2 * 100.0) / 10)
    assert cobb["circular_mae_missing_as_failure"] > cobb["circular_mae"]
    assert (f"SMAPE {cobb['smape_pct']:.2f} %" in printed
            and f"2 missing: SMAPE {cobb['smape_pct_missing_as_failure']:.2f} %" in printed)

    assert f"model: coronal-spine-landmarks 1.1.0; predictions by SpineAlignmentLib {__version__}" in printed
    assert f"truth {truth_dir.resolve()}" in printed
    html = (out / "report.html").read_text(encoding="utf-8")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["models"] == ["coronal-spine-landmarks 1.1.0"] and prov["software_version"] == __version__
    assert prov["date"] in html and "coronal-spine-landmarks 1.1.0" in html and str(pred_dir.resolve()) in html
    # the gross error is named in the plots' caption (and drawn with its name on both plots)
    assert "AASCE_1 outside the limits of agreement (prediction − truth): film5" in html
    from SpineAlignmentLib.evaluation.report import outliers

    row = rep.parameters.set_index("parameter").loc["AASCE_1"]
    named = outliers(rep.images, rep.values["AASCE_1"]["truth"], rep.values["AASCE_1"]["model"], row)
    assert [n for n, _, _ in named] == ["film5"]


def test_smape_and_circular_mae_with_missing_counted_as_failures_hand_worked():
    truth = np.array([[10.0, 20.0], [30.0, 40.0]])
    pred = np.array([[12.0, 20.0], [np.nan, np.nan]])  # the second film was refused
    assert st.smape(truth, pred) == pytest.approx(100 * 2 / 62)
    assert st.smape(truth, pred, count_missing=True) == pytest.approx(100 * (2 / 62 + 70 / 70) / 2)
    assert st.circular_mae(truth, pred) == pytest.approx(1.0)
    assert st.circular_mae(truth, pred, count_missing=True) == pytest.approx((2 + 0 + 90 + 90) / 4)
    # an angle missing in the truth is not the model's failure
    assert st.smape(np.array([[np.nan, 20.0]]), np.array([[5.0, 20.0]]), count_missing=True) == 0.0
