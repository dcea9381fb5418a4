"""Every ready config in configs/ validates against the schema (they are documentation too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from fairlora.config import build_config, config_class, load_config
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


def _undocumented(model: type[BaseModel], documented: dict | None, prefix: str = "") -> list[str]:
    """Schema keys (nested) that a documented YAML mapping lacks."""
    missing = []
    for name, field in model.model_fields.items():
        key = prefix + name
        if name not in (documented or {}):
            missing.append(key)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            missing += _undocumented(field.annotation, documented[name], key + ".")
    return missing


def test_readme_config_reference_lists_every_key_with_its_default():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("## Config reference", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    documented = yaml.safe_load(block)
    assert _undocumented(config_class(), documented) == []
    assert build_config(documented).model_dump(mode="json") == build_config({}).model_dump(mode="json")
