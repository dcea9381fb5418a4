"""The method registry: a method defined in this file alone trains, saves and reloads; VeRA is listed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import fairlora
from conftest import tiny_config
from fairlora.cli import app
from fairlora.config import build_config
from fairlora.errors import ConfigError
from fairlora.methods import MethodSetup, registry
from fairlora.methods.registry import Method, register_method


class BiasSection(BaseModel):
    """`biasonly:` settings of the toy method."""

    model_config = ConfigDict(extra="forbid")
    include_head: bool = True


def _apply(cfg, loaded, adapter_name) -> MethodSetup:
    model = loaded.model
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith(".bias") or (cfg.biasonly.include_head and "classifier" in name))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]

    def save(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        state = {n: p.detach().contiguous() for n, p in model.named_parameters() if n in trained}
        save_file(state, str(path / "biases.safetensors"))

    return MethodSetup(model=model, save=save)


def _load(cfg, loaded, weights_dir: Path) -> torch.nn.Module:
    loaded.model.load_state_dict(load_file(str(weights_dir / "biases.safetensors")), strict=False)
    return loaded.model


@pytest.fixture
def toy_method(monkeypatch):
    registry.load_builtin_methods()
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_SECTIONS", dict(registry._SECTIONS))
    register_method(
        Method("biasonly", "toy: train only the biases", _apply, _load, "biases", ("biasonly", BiasSection))
    )
    yield "biasonly"


def test_a_method_registered_in_a_test_file_trains_saves_and_reloads(tmp_path, toy_method):
    config = tiny_config(
        tmp_path, method=toy_method, biasonly={"include_head": True}, eval={"splits": ["test"]}
    )
    result = fairlora.train(config)
    assert (result.run_dir / "biases" / "biases.safetensors").is_file()
    assert "biasonly:" in (result.run_dir / "config.yaml").read_text()
    before = pd.read_parquet(result.run_dir / "predictions.parquet")
    fairlora.evaluate(result.run_dir)
    after = pd.read_parquet(result.run_dir / "predictions.parquet")
    assert after["prob_1"].to_numpy() == pytest.approx(before["prob_1"].to_numpy(), abs=1e-6)
    assert 0 < result.train["trainable_params"] < result.train["total_params"]


def test_registered_sections_are_validated_and_unknown_methods_list_the_registry(toy_method):
    with pytest.raises(ConfigError, match=r"biasonly.nope: unknown key; allowed keys here: include_head"):
        build_config({"method": "biasonly", "biasonly": {"nope": 1}})
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; allowed: .*vera.*biasonly"):
        build_config({"method": "nope"})


def test_list_methods_reads_the_registry():
    output = CliRunner().invoke(app, ["list", "methods"]).output
    for name in ("none", "full", "lora", "pissa", "vera"):
        assert name in output
