"""Quiet where asked, loud where needed (issue 24 item 8): -q, one notice per event, no third-party INFO lines,
an empty input folder refused, no 'nan' training figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_dicom_sr import SHOULDER, _film

from SpineAlignmentLib.cli import main as cli_main


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "SpineAlignmentLib.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_batch_progress_notices_and_third_party_logs(tmp_path):
    (tmp_path / "in").mkdir()
    _film(tmp_path / "in" / "film.dcm")
    lms = tmp_path / "lms"
    lms.mkdir()
    (lms / "film.json").write_text(json.dumps({"protocol": "coronal-shoulder",
                                               "landmarks": {k: list(v) for k, v in SHOULDER.items()}}))
    base = ["batch", str(tmp_path / "in"), "--protocol", "coronal-shoulder", "--out", str(tmp_path / "out"),
            "--landmarks-dir", str(lms), "--dicom-sr"]
    first = _cli(*base)
    assert first.returncode == 0, first.stderr
    # highdicom logs 16 INFO lines per SR: off by default
    assert "highdicom" not in first.stderr and "INFO" not in first.stderr, first.stderr
    assert "[1/1] done" in first.stderr
    # a changed option re-analyses: the notice is said once
    again = _cli(*base, "--min-confidence", "0.5")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("had a result made differently") == 1, again.stderr
    # -q: no progress lines, the summary JSON still on stdout
    quiet = _cli("-q", *base, "--force")
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr
    assert json.loads(quiet.stdout)["done"] == 1


def test_batch_on_a_folder_without_images_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no film here")
    rc = cli_main(["batch", str(tmp_path / "empty"), "--protocol", "coronal-shoulder", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "empty: no image found" in err and "Traceback" not in err


@pytest.mark.parametrize("row, text", [
    ({"stage": 2, "epoch": 3}, " (not validated this epoch)"),
    ({"stage": 2, "epoch": 3, "val_median_error_px": float("nan")}, " (not validated this epoch)"),
    ({"stage": 1, "epoch": 4, "val_median_error_px": 12.34}, ": val median 12.3 px"),
])
def test_training_epoch_lines_never_print_nan(row, text):
    from SpineAlignmentLib.training.generic import epoch_figure

    assert epoch_figure(row) == text
