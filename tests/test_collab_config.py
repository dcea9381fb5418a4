"""The collab.yaml schema: shared run sections, `collab:` / `flower:`, clear errors, ready configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairlora.collab.config import STRATEGIES, build_collab_config, load_collab_config
from fairlora.errors import ConfigError

COLLAB_CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("collab-*.yaml"))


@pytest.mark.parametrize("path", COLLAB_CONFIGS, ids=lambda p: p.name)
def test_ready_collab_config_is_valid(path: Path) -> None:
    cfg = load_collab_config(path)
    assert cfg.collab.strategies and cfg.run.task == "causal_lm"
    assert (
        path.read_text().startswith("#")
        and f"fairlora collab {path.relative_to(path.parents[1])}" in path.read_text()
    )


def test_defaults_and_round_trip() -> None:
    cfg = build_collab_config({}, ["collab.clients=6", "model.name=tiny-llama"])
    assert cfg.run.task == "causal_lm" and cfg.collab.clients == 6 and cfg.engine == "simulation"
    again = build_collab_config(cfg.to_dict())
    assert again.collab == cfg.collab and again.run.model == cfg.run.model
    assert "dynamic-token-topk" in STRATEGIES and "naive-thresh" in STRATEGIES


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"collab": {"strategy": "naive"}}, r"collab.strategy: unknown key; allowed keys here: clients"),
        ({"collab": {"strategies": ["fedprox"]}}, r"collab.strategies.0"),
        ({"collab": {"clients": 2, "topk": 3, "strategies": ["dynamic-topk"]}}, "topk=3 exceeds clients=2"),
        ({"engine": "grpc"}, "engine: unknown engine 'grpc'"),
        ({"flower": {"mode": "cloud"}}, "flower.mode"),
        ({"data": {"name": "identity"}}, "collab.corpus"),
        ({"train": {"lr": -1}}, "train.lr"),
    ],
)
def test_bad_config_is_a_clear_error(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_collab_config(data)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_collab_config(tmp_path / "nope.yaml")
