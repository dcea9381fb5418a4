"""Shared fixtures: a tiny, fast run config on the generated identity dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import pytest

# Tests never reach a hub: unknown ids fail at once instead of retrying over the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def in_ci() -> bool:
    """True under CI (CI=true, as CI services and .ci/run set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip a test whose prerequisite (browser, Flower binary, packaged data) is missing; under CI fail
    it instead, so that CI cannot pass by skipping."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite fails the run)", pytrace=False)
    pytest.skip(reason)


def tiny_config(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A run config that trains a tiny random BERT for a few steps (seconds on a CPU)."""
    config: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "seed": 3,
        "model": {"name": "tiny-bert", "max_length": 48},
        "data": {"name": "identity", "identity": {"examples_per_group": 6}},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "logging_steps": 2, "progress_bar": False},
        "eval": {"batch_size": 64, "min_group_size": 2},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Any]:
    """A tiny run config writing under tmp_path."""
    return tiny_config(tmp_path)
