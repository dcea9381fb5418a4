"""Resume after a real kill: `fairlora train` is SIGKILLed mid-epoch (a checkpoint exists, later steps are
lost), `--resume` continues it, and the adapter and predictions equal an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

import fairlora
from conftest import tiny_config

LOST_STEP = 5  # checkpoints at steps 2 and 4 of a 10-step epoch; step 5 is lost with the kill
# The child runs the real CLI; a patch only holds it at one point so that the kill lands there every time:
# after step 5 (mid-epoch), or while checkpoint-4 is being written (its weights and optimizer are on disk,
# its trainer state or AFLoRA's freezer state not yet).
CHILD = """
import importlib, sys, time
from pathlib import Path
from transformers import Trainer, TrainerCallback
from fairlora import cli, pipeline

def hold():
    Path({marker!r}).write_text("held")
    time.sleep(600)

class Hold(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == {lost}:
            hold()

def holding(function):
    def wrapped(*args, **kwargs):
        if any(str(arg).endswith("checkpoint-4") for arg in args):
            hold()
        return function(*args, **kwargs)
    return wrapped

where = {where!r}
if where == "step":
    original = pipeline.apply_method
    def held(cfg, loaded):
        setup = original(cfg, loaded)
        setup.callbacks.append(Hold())
        return setup
    pipeline.apply_method = held
else:
    module, name = where.rsplit(":", 1)
    owner = Trainer if module == "Trainer" else importlib.import_module(module)
    setattr(owner, name, holding(getattr(owner, name)))
sys.argv = ["fairlora", "train", {config!r}]
cli.main()
"""
IN_CHECKPOINT = "Trainer:_save_rng_state"  # checkpoint-4 has weights + optimizer, no trainer state
IN_FREEZER = "fairlora.methods.aflora.freezer:save_freezer"  # checkpoint-4 complete but for the freezer

AFLORA = {"method": "aflora", "aflora": {"t_initial_steps": 1, "t_final_steps": 2, "window": 1}}
METHODS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora"},
    "pissa": {"method": "pissa"},
    "ba-lora": {"method": "ba-lora"},  # PiSSA base + the frozen `-init` copy as CR teacher
    "lora+balora": {"method": "lora", "balora": {"enabled": True}},  # teacher = adapter disabled
    "aflora": AFLORA,
}
CASES = [
    pytest.param("lora", IN_CHECKPOINT, id="lora-in-checkpoint"),
    pytest.param("aflora", IN_FREEZER, id="aflora-in-freezer-save"),
    *[pytest.param(name, "step", id=f"{name}-mid-epoch", marks=pytest.mark.slow) for name in METHODS],
]


def _config(tmp_path: Path, name: str, sections: dict[str, Any]) -> dict[str, Any]:
    train = {"epochs": 1, "max_steps": None, "batch_size": 8, "save_strategy": "steps", "save_steps": 2}
    data = {"identity": {"examples_per_group": 4}}  # 10 steps an epoch
    config = tiny_config(tmp_path, name=name, train=train, data=data, lora={"dropout": 0.1}, **sections)
    config["train"].pop("max_steps")
    return config


def _kill(config: dict[str, Any], tmp_path: Path, where: str) -> None:
    path, marker = tmp_path / "killed.yaml", tmp_path / "held"
    path.write_text(yaml.safe_dump(config))
    code = CHILD.format(lost=LOST_STEP, marker=str(marker), config=str(path), where=where)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if child.poll() is not None:
            error = child.stderr.read().decode()[-2000:]
            raise AssertionError(f"the run ended before the kill point {where}: {error}")
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError("the run did not reach the kill point in time")
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(run_dir.glob("*/adapter_model.safetensors"))))


@pytest.mark.parametrize(("method", "where"), CASES)
def test_a_sigkilled_run_resumes_to_the_uninterrupted_result(tmp_path, method, where):
    whole = fairlora.train(_config(tmp_path, "whole", METHODS[method]))
    config = _config(tmp_path, "killed", METHODS[method])
    _kill(config, tmp_path, where)
    run_dir = tmp_path / "runs" / "killed"
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2", "checkpoint-4"] and not (run_dir / "results.json").exists()
    resumed = fairlora.train(config, resume=True)
    expected, got = _adapter(whole.run_dir), _adapter(run_dir)
    assert expected.keys() == got.keys()
    for key, tensor in expected.items():  # bit-equal: same data order, dropout draws, teacher and state
        assert torch.equal(got[key], tensor), f"{method}: {key} differs after resume"
    columns = ["id", "split", "label", "pred", "loss", "prob_0", "prob_1"]
    whole_pred = pd.read_parquet(whole.run_dir / "predictions.parquet")
    resumed_pred = pd.read_parquet(run_dir / "predictions.parquet")
    pd.testing.assert_frame_equal(resumed_pred[columns], whole_pred[columns])
    if method == "aflora":
        assert resumed.train["aflora_freeze_steps"] == whole.train["aflora_freeze_steps"]
        assert resumed.train["trainable_params_end"] == whole.train["trainable_params_end"]
