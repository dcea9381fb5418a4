"""AFLoRA runs end to end: facts in results.json, identical reload, plain-PEFT load, audit, BA-LoRA terms."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from peft import PeftModel

import fairlora
from conftest import tiny_config
from fairlora.config import build_config
from fairlora.models import load_model
from fairlora.report.training import freeze_grid, freeze_heatmap


def test_aflora_run_records_accounting_reloads_identically_and_is_audited(tmp_path):
    config = tiny_config(
        tmp_path,
        method="aflora",
        train={"max_steps": 30, "lr": 1e-2, "head_lr": 4e-2},
        aflora={"t_initial_steps": 10, "t_final_steps": 10},
    )
    result = fairlora.train(config)
    facts = json.loads((result.run_dir / "results.json").read_text())["train"]
    steps = facts["aflora_freeze_steps"]
    assert set(steps) and all(s is not None and 0 <= s <= 20 for s in steps.values())
    assert facts["trainable_params_end"] < facts["trainable_params_mean"] < facts["trainable_params_start"]
    assert facts["trainable_params_no_head_start"] < facts["trainable_params_start"]

    before = pd.read_parquet(result.run_dir / "predictions.parquet")
    fairlora.evaluate(result.run_dir)
    after = pd.read_parquet(result.run_dir / "predictions.parquet")
    assert (after["prob_1"].to_numpy() == before["prob_1"].to_numpy()).all()  # raw tensors: identical

    adapter = result.run_dir / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    base = load_model(build_config(config).model, "classification")
    plain = PeftModel.from_pretrained(base.model, str(adapter)).eval()  # no fairlora layer involved
    _, _, loaded = fairlora.pipeline.load_run(result.run_dir)
    text = base.tokenizer(["a plain peft load of a folded adapter"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(plain(**text).logits, loaded.model(**text).logits, atol=1e-5)

    audit = fairlora.audit([result.run_dir], tmp_path / "audit", ["audit.n_boot=20"])
    assert "utility/test" in audit.runs[0].sections
    html = (tmp_path / "audit" / "report.html").read_text()
    assert 'id="params-table"' in html and 'data-plot="freeze-heatmap"' in html
    markdown = (tmp_path / "audit" / "report.md").read_text()
    assert f"| tiny | without head | {facts['trainable_params_no_head_start']:,}" in markdown


def test_freeze_grid_is_layers_by_matrices():
    steps = {
        "bert.encoder.layer.0.attention.self.query.A": 0,
        "bert.encoder.layer.0.intermediate.dense.A": 12,
        "bert.encoder.layer.1.intermediate.dense.A": None,
        "bert.encoder.layer.1.output.dense.B": 30,
    }
    layers, columns, grid = freeze_grid(steps)
    assert layers == ["layer 0", "layer 1"]
    assert columns == ["attention.query.A", "intermediate.A", "output.B"]
    assert grid[0][:2] == [0.0, 12.0] and math.isnan(grid[0][2])
    assert math.isnan(grid[1][1]) and grid[1][2] == 30.0  # never froze: NaN
    assert freeze_heatmap(steps).startswith(b"\x89PNG")


def test_aflora_with_a_balora_block_trains_both(tmp_path):
    config = tiny_config(
        tmp_path,
        method="aflora",
        balora={"enabled": True},
        train={"max_steps": 12, "logging_steps": 4},
        aflora={"t_initial_steps": 2, "t_final_steps": 4},
    )
    result = fairlora.train(config)
    log = json.loads((result.run_dir / "train_log.json").read_text())
    logged = {key for entry in log for key in entry}
    assert {"balora_cr", "balora_dr", "balora_svdr"} <= logged  # BA-LoRA's terms were part of the loss
    assert all(s is not None for s in result.train["aflora_freeze_steps"].values())


def test_window_longer_than_training_fails_before_writing(tmp_path):
    config = tiny_config(tmp_path, method="aflora", aflora={"t_initial_steps": 3, "t_final_steps": 2})
    with pytest.raises(fairlora.errors.ConfigError, match=r"t_initial \(3 steps\) \+ t_final \(2 steps\)"):
        fairlora.train(config)
    assert not (tmp_path / "runs" / "tiny").exists()


def test_window_longer_than_the_epochs_fails_before_writing(tmp_path):
    config = tiny_config(tmp_path, method="aflora", aflora={"t_initial_steps": 30, "t_final_steps": 30})
    config["train"] = {**config["train"], "max_steps": None, "epochs": 1}
    with pytest.raises(fairlora.errors.ConfigError, match=r"t_initial \(30 steps\) \+ t_final \(30 steps\)"):
        fairlora.train(config)
    assert not (tmp_path / "runs" / "tiny").exists()
