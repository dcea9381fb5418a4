"""Every ready config in configs/ validates against the schema (they are documentation too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairlora.config import build_config, load_config
from fairlora.demo import demo_config

# collab-*.yaml are collab configs (`fairlora collab`): tests/test_collab_config.py validates them
CONFIGS = sorted(
    p for p in (Path(__file__).parents[1] / "configs").glob("*.yaml") if not p.name.startswith("collab-")
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_ready_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.name and cfg.method in ("none", "full", "lora", "pissa", "ba-lora", "vera", "aflora")


def test_packaged_demo_config_is_valid_and_biased():
    cfg = build_config(demo_config())
    assert cfg.data.identity.bias_groups and cfg.data.identity.bias_rate > 0
