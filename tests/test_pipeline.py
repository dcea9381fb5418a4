"""End-to-end runs with tiny random models: run folder, reload, resume, loss terms, NaN stop."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from transformers import TrainerCallback

import fairlora
from conftest import tiny_config
from fairlora import pipeline
from fairlora.errors import RunDirError, TrainingError
from fairlora.methods import MethodSetup
from fairlora.regularizers import constant
from fairlora.runs import SCHEMA_VERSION, load_results
from fairlora.training import LossTerm


def test_lora_run_writes_a_complete_run_folder(tiny):
    result = fairlora.train(tiny)
    run_dir = result.run_dir
    for name in ("config.yaml", "results.json", "predictions.parquet", "train_log.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert set(result.splits) == {"test", "train"}
    test = result.test
    n_test = len(pd.read_parquet(run_dir / "predictions.parquet").query("split == 'test'"))
    assert test.overall["accuracy"].n == n_test
    assert len(test.by_group) > 5 and sum(test.group_sizes.values()) >= n_test
    assert 0 < result.train["trainable_params"] < result.train["total_params"]
    assert result.train["train_runtime"] > 0
    on_disk = load_results(run_dir)
    assert on_disk.test.overall == test.overall
    assert json.loads((run_dir / "results.json").read_text())["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("method", ["lora", "pissa", "full", "none"])
def test_eval_reloads_saved_weights_and_reproduces_metrics(tmp_path, method):
    config = tiny_config(tmp_path, method=method, name=f"m-{method}", eval={"splits": ["test"]})
    trained = fairlora.train(config)
    before = pd.read_parquet(trained.run_dir / "predictions.parquet")
    again = fairlora.evaluate(trained.run_dir)
    after = pd.read_parquet(trained.run_dir / "predictions.parquet")
    pd.testing.assert_series_equal(before["pred"], after["pred"])
    assert after["prob_1"].to_numpy() == pytest.approx(before["prob_1"].to_numpy(), abs=1e-4)
    assert again.test.overall["accuracy"].value == pytest.approx(trained.test.overall["accuracy"].value)


def test_none_trains_only_the_head_and_full_trains_everything(tmp_path):
    none = fairlora.train(tiny_config(tmp_path, method="none", name="none"))
    assert none.train["trainable_params"] < 200  # only the 2-class head of a 32-dim encoder
    full = fairlora.train(tiny_config(tmp_path, method="full", name="full"))
    assert full.train["trainable_params"] == full.train["total_params"]


def test_existing_run_dir_is_never_overwritten_without_a_flag(tiny):
    first = fairlora.train(tiny)
    stamp = (first.run_dir / "results.json").stat().st_mtime_ns
    with pytest.raises(
        RunDirError, match="already holds a finished run; pass --resume .* --overwrite"
    ) as info:
        fairlora.train(tiny)
    assert info.value.exit_code == 3
    assert (first.run_dir / "results.json").stat().st_mtime_ns == stamp
    resumed = fairlora.train(tiny, resume=True)  # finished: returns the stored results
    assert resumed.test.overall == first.test.overall
    fairlora.train(tiny, overwrite=True)
    assert (first.run_dir / "results.json").stat().st_mtime_ns != stamp


class _KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _with_callback(monkeypatch, callback=None, term=None):
    original = pipeline.apply_method

    def patched(cfg, loaded) -> MethodSetup:
        setup = original(cfg, loaded)
        setup.callbacks += [callback] if callback else []
        setup.loss_terms += [term] if term else []
        return setup

    monkeypatch.setattr(pipeline, "apply_method", patched)


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, train={"max_steps": 6, "save_strategy": "steps", "save_steps": 2})
    _with_callback(monkeypatch, callback=_KillAt(3))
    with pytest.raises(KeyboardInterrupt):
        fairlora.train(config)
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "checkpoints" / "checkpoint-2").is_dir()
    assert not (run_dir / "results.json").exists()
    monkeypatch.undo()
    seen = _Steps()
    _with_callback(monkeypatch, callback=seen)
    result = fairlora.train(config, resume=True)
    assert seen.steps == [3, 4, 5, 6]  # steps 1-2 came from checkpoint-2
    log = json.loads((run_dir / "train_log.json").read_text())
    assert log[-1]["step"] == 6
    assert result.test.overall["accuracy"].n > 0


class _Steps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_resume_with_a_different_config_is_refused(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, train={"max_steps": 4, "save_strategy": "steps", "save_steps": 2})
    _with_callback(monkeypatch, callback=_KillAt(3))
    with pytest.raises(KeyboardInterrupt):
        fairlora.train(config)
    monkeypatch.undo()
    with pytest.raises(fairlora.errors.ConfigError, match="config differs"):
        fairlora.train(config, ["lora.r=2"], resume=True)


def test_method_loss_terms_are_added_and_logged(tiny, monkeypatch):
    term = LossTerm("l2_logits", lambda seen: seen.outputs.logits.pow(2).mean(), weight=constant(0.5))
    _with_callback(monkeypatch, term=term)
    result = fairlora.train(tiny)
    log = json.loads((result.run_dir / "train_log.json").read_text())
    logged = [entry for entry in log if "l2_logits" in entry]
    assert logged and all("task_loss" in entry for entry in logged)
    entry = logged[0]
    assert entry["loss"] == pytest.approx(entry["task_loss"] + 0.5 * entry["l2_logits"], rel=0.05)


def test_nan_loss_stops_the_run_naming_the_step(tiny, monkeypatch):
    def nan_at_step_3(seen):
        nan_at_step_3.calls += 1
        return seen.outputs.logits.sum() * (float("nan") if nan_at_step_3.calls == 3 else 0.0)

    nan_at_step_3.calls = 0
    _with_callback(monkeypatch, term=LossTerm("bad", nan_at_step_3))
    with pytest.raises(TrainingError, match=r"not finite at step 3 .*bad=nan") as info:
        fairlora.train(tiny)
    assert info.value.exit_code == 4
    assert not (Path(tiny["output_dir"]) / "tiny" / "results.json").exists()


def test_fractional_rank_puts_lora_on_the_front_share_of_modules(tmp_path):
    config = tiny_config(tmp_path, lora={"r": 1, "fraction": 0.5, "fraction_from": "front"})
    result = fairlora.train(config)
    adapter = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    targets = sorted(adapter["target_modules"])
    assert len(targets) == 2  # 2 layers x (query, value) = 4 modules; half of them
    assert all(".layer.0." in name for name in targets)


def test_causal_lm_with_prompt_masking_trains_and_reports_loss_per_group(tmp_path):
    rows = [
        {"prompt": f"Q{i}: say hi", "text": f"hello number {i}", "label": 0, "a": i % 2 == 0, "b": i % 3 == 0}
        for i in range(30)
    ]
    path = tmp_path / "lm.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    config = tiny_config(
        tmp_path,
        task="causal_lm",
        model={"name": "tiny-llama", "max_length": 32},
        data={"name": str(path), "prompt_column": "prompt", "group_columns": ["a", "b"]},
        lora={"target_modules": ["q_proj", "v_proj"]},
    )
    result = fairlora.train(config)
    assert set(result.test.by_group) == {"a", "b"}
    assert result.test.overall["loss"].value > 0


def test_report_to_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    result = fairlora.train(tiny_config(tmp_path, train={"report_to": ["tensorboard"]}))
    assert list(result.run_dir.rglob("events.out.tfevents.*"))
