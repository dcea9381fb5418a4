"""Every input error before anything is written; run facts; validation split; head and sharded saves."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

import fairlora
from conftest import tiny_config
from fairlora import pipeline
from fairlora.cli import app
from fairlora.config import build_config
from fairlora.errors import RunDirError
from fairlora.methods import apply_method
from fairlora.models import load_model
from fairlora.tasks import IGNORE_INDEX, get_task


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name=./no-such-model", "no such folder"),
        ("train.report_to=[bogus]", "unknown integration"),
        ("eval.splits=[]", "eval.splits"),
        ("eval.splits=[val]", "no 'val' split"),
    ],
)
@pytest.mark.parametrize("method", ["full", "none"])
def test_bad_input_exits_with_one_message_and_no_run_folder(tmp_path, method, override, message):
    config = tmp_path / "run.yaml"
    config.write_text(build_config(tiny_config(tmp_path)).to_yaml())
    result = CliRunner().invoke(app, ["train", str(config), f"method={method}", override])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_results_record_trainable_parameters_at_start_end_and_on_average(tiny):
    facts = fairlora.train(tiny).train
    assert facts["trainable_params_start"] == facts["trainable_params_end"] == facts["trainable_params"]
    assert facts["trainable_params_mean"] == pytest.approx(facts["trainable_params"])


def test_validation_split_is_held_out_from_train_and_evaluated(tmp_path):
    config = tiny_config(tmp_path, data={"val_size": 0.25}, eval={"splits": ["val", "test"]})
    result = fairlora.train(config)
    predictions = pd.read_parquet(result.run_dir / "predictions.parquet")
    ids = {split: set(rows["id"]) for split, rows in predictions.groupby("split")}
    assert set(ids) == {"val", "test"} and not ids["val"] & ids["test"]
    data = fairlora.data.load_task_data(build_config(config).data, "classification", 3)
    assert not set(data.train["id"]) & ids["val"]
    assert set(result.splits) == {"val", "test"}


def test_missing_head_weights_fail_instead_of_evaluating_a_random_head(tmp_path):
    result = fairlora.train(tiny_config(tmp_path, method="none", eval={"splits": ["test"]}))
    (result.run_dir / "head" / "head.safetensors").unlink()
    with pytest.raises(RunDirError, match="head.safetensors not found"):
        fairlora.evaluate(result.run_dir)


@pytest.mark.parametrize("method", ["pissa", "none"])
def test_gathered_weights_are_saved_through_the_methods_saver(tmp_path, method):
    cfg = build_config(tiny_config(tmp_path, method=method))
    setup = apply_method(cfg, load_model(cfg.model, cfg.task))
    setup.save(tmp_path / "direct")
    pipeline.save_gathered(cfg, setup.model.state_dict(), 2, tmp_path / "gathered")
    direct = sorted(p.name for p in (tmp_path / "direct").iterdir())
    assert sorted(p.name for p in (tmp_path / "gathered").iterdir()) == direct
    if method == "pissa":
        import json

        assert json.loads((tmp_path / "gathered" / "adapter_config.json").read_text())["r"] == 2 * cfg.lora.r


def test_prompt_whitespace_moves_to_the_target_so_the_boundary_is_natural():
    tokenizer = load_model(
        build_config({"model": {"name": "tiny-llama"}, "task": "causal_lm"}).model, "causal_lm"
    ).tokenizer
    example = get_task("causal_lm").encode(
        pd.DataFrame({"prompt": ["English: "], "text": ["He"]}), tokenizer, 64
    )[0]
    target = [
        t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE_INDEX
    ]
    prompt = [
        t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label == IGNORE_INDEX
    ]
    assert tokenizer.decode(target) == " He" + tokenizer.eos_token
    assert tokenizer.decode(prompt, skip_special_tokens=True) == "English:"
    assert example["input_ids"][: len(prompt)] == prompt  # the prompt comes first, then the target


def test_sweep_cells_report_validation_figures_for_model_selection(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        build_config(
            tiny_config(tmp_path, data={"val_size": 0.25}, eval={"splits": ["val", "test"]})
        ).to_yaml()
    )
    result = fairlora.sweep(config, ["lora.r=2,4"])
    assert {"val_accuracy", "accuracy"} <= set(result.cells.columns)
    assert result.cells["val_accuracy"].between(0, 1).all()
