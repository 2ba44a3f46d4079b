"""Shared test fixtures: dataset location and synthetic landmark sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def datasets_dir() -> Path:
    """../shared/datasets relative to the repository, or $SPINEALIGN_DATASETS."""
    env = os.environ.get("SPINEALIGN_DATASETS")
    return Path(env) if env else REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def aasce_dir() -> Path:
    d = datasets_dir() / "aasce-train"
    if not (d / "labels" / "angles.csv").is_file():
        pytest.skip(f"AASCE training data not found at {d} (set SPINEALIGN_DATASETS to the datasets folder)")
    return d


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path_factory, monkeypatch):
    """Tests never see the developer's own ~/.spinealignment/models (a test that wants one sets its own)."""
    monkeypatch.setenv("SPINEALIGN_USER_MODELS", str(tmp_path_factory.getbasetemp() / "no-user-models"))
