"""README and docs claims that a test can hold (issue 24 item 9)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def test_dataset_format_names_the_roles_the_code_accepts():
    from SpineAlignmentLib.pairs import PAIRED_LATERAL_ROLES

    text = (REPO / "docs" / "dataset-format.md").read_text(encoding="utf-8")
    sentence = text[text.index("Roles are the protocol's"):].split(").")[0]
    named = re.findall(r"`(\w+)`", sentence.split("or", 1)[1])
    assert tuple(named[:2]) == PAIRED_LATERAL_ROLES, named


def test_the_demo_overlay_is_pixel_identical_to_the_screenshot(tmp_path, monkeypatch):
    """The README's picture is what `make demo` (batch on the sample film, 1 thread) draws, pixel for pixel."""
    import torch

    from SpineAlignmentLib.batch import analyze_one, default_model

    if default_model("coronal-spine") is None:
        pytest.skip("the shipped coronal-spine model is not in Resources/Models")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        analyze_one(REPO / "Resources" / "SampleData" / "aasce-sample-AP.jpg", "coronal-spine", tmp_path)
    finally:
        torch.set_num_threads(threads)
    made = np.asarray(Image.open(tmp_path / "aasce-sample-AP_overlay.png").convert("RGB"))
    shot = np.asarray(Image.open(REPO / "Resources" / "Screenshots" / "demo_overlay.png").convert("RGB"))
    assert made.shape == shot.shape
    assert int((made != shot).any(axis=-1).sum()) == 0
