"""Validation while training: the kept adapter is the best checkpoint by a val figure; early stopping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from peft import PeftModel
from transformers import TrainerCallback, set_seed

from conftest import tiny_config
from fairlora import pipeline
from fairlora.config import build_config
from fairlora.data import load_task_data
from fairlora.errors import ConfigError
from fairlora.models import load_model
from fairlora.pipeline import evaluate_run, train
from fairlora.runs import PREDICTIONS_FILE
from fairlora.tasks.predict import predict_frame
from fairlora.training.validation import lower_is_better

FIGURE = "val_worst_group_accuracy"


def selecting_config(tmp_path: Path, **train: Any) -> dict[str, Any]:
    """A high learning rate on biased generated data: worst-group accuracy on val peaks early."""
    return tiny_config(
        tmp_path,
        data={"val_size": 0.3, "identity": {"examples_per_group": 10}},
        train={
            "max_steps": 40,
            "lr": 0.05,
            "eval_every": 4,
            "early_stopping_patience": 2,
            "select_best": FIGURE,
            **train,
        },
        eval={"n_boot": 0, "splits": ["val", "test"]},
    )


@pytest.fixture(scope="module")
def selected(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Any]:
    """One run that stops early and keeps its best checkpoint."""
    config = selecting_config(tmp_path_factory.mktemp("select"))
    return config, train(config)


def checkpoint_predictions(config: dict[str, Any], step: int, split: str) -> pd.DataFrame:
    """Predictions of checkpoint-<step>, loaded with plain PEFT on a fresh base model."""
    cfg = build_config(config)
    data = load_task_data(cfg.data, cfg.task, cfg.seed)
    set_seed(cfg.seed)
    loaded = load_model(cfg.model, cfg.task, max(len(data.label_names), 2))
    model = PeftModel.from_pretrained(loaded.model, str(cfg.run_dir / "checkpoints" / f"checkpoint-{step}"))
    return predict_frame(model, loaded.tokenizer, data.split(split), cfg.task, 48, 64, split, progress=False)


def test_the_kept_adapter_is_the_best_checkpoint_not_the_last(selected) -> None:
    config, result = selected
    facts = result.train["validation"]
    values = [e[FIGURE] for e in facts["evaluations"]]
    steps = [e["step"] for e in facts["evaluations"]]
    assert facts["stopped_early"] and facts["last_step"] < 40
    assert facts["figure"] == FIGURE and facts["direction"] == "higher"
    assert facts["kept_step"] == steps[int(np.argmax(values))] and facts["kept_value"] == max(values)
    assert facts["kept_step"] != steps[-1]  # patience 2: the last two evaluations did not improve
    # the figure means what the audit means: the run's own val results of the kept model
    kept = result.splits["val"].summary["worst_group_accuracy"].value
    assert kept == pytest.approx(facts["kept_value"])

    saved = pd.read_parquet(Path(config["output_dir"]) / "tiny" / PREDICTIONS_FILE)
    saved = saved[saved["split"] == "test"].reset_index(drop=True)
    best = checkpoint_predictions(config, facts["kept_step"], "test")
    last = checkpoint_predictions(config, steps[-1], "test")
    probs = [c for c in saved.columns if c.startswith("prob_")]
    np.testing.assert_allclose(saved[probs].to_numpy(), best[probs].to_numpy(), atol=1e-5)
    assert not np.allclose(saved[probs].to_numpy(), last[probs].to_numpy(), atol=1e-3)
    reloaded = evaluate_run(result.run_dir)  # the saved adapter, loaded from disk
    accuracy = result.splits["test"].overall["accuracy"].value
    assert reloaded.splits["test"].overall["accuracy"].value == accuracy


class Interrupt(Exception):
    """Stands for a killed process."""


class InterruptAt(TrainerCallback):
    """Raises after optimizer step `step` (checkpoints written before it stay)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Stop the process like a kill would."""
        if state.global_step == self.step:
            raise Interrupt


def test_resume_keeps_the_best_so_far_and_the_patience_count(selected, tmp_path, monkeypatch) -> None:
    _, uninterrupted = selected
    expected = uninterrupted.train["validation"]
    config = selecting_config(tmp_path)
    build = pipeline.build_trainer

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        trainer = build(*args, **kwargs)
        trainer.add_callback(InterruptAt(expected["kept_step"] + 5))  # after the best, before the stop
        return trainer

    monkeypatch.setattr(pipeline, "build_trainer", interrupted)
    with pytest.raises(Interrupt):
        train(config)
    monkeypatch.setattr(pipeline, "build_trainer", build)
    resumed = train(config, resume=True).train["validation"]
    assert resumed["kept_step"] == expected["kept_step"] and resumed["last_step"] == expected["last_step"]
    assert [e["step"] for e in resumed["evaluations"]] == [e["step"] for e in expected["evaluations"]]
    assert resumed["kept_value"] == pytest.approx(expected["kept_value"])


@pytest.mark.parametrize(
    ("train_keys", "data_keys", "message"),
    [
        ({"select_best": "val_bleu"}, {"val_size": 0.3}, "'val_bleu' is not computed"),
        ({"select_best": "val_positive_rate"}, {"val_size": 0.3}, "has no better direction"),
        ({"early_stopping_patience": 2}, {}, "train.early_stopping_patience: 2 evaluates on a validation"),
        ({"eval_every": 5}, {"val_size": 0.0}, "train.eval_every: 5 evaluates on a validation split"),
    ],
)
def test_bad_validation_settings_fail_before_anything_is_written(
    tmp_path: Path, train_keys: dict, data_keys: dict, message: str
) -> None:
    config = tiny_config(tmp_path, train=train_keys, data=data_keys)
    with pytest.raises(ConfigError, match=message) as error:
        train(config)
    assert "data.val_size" in str(error.value) or "choose one of" in str(error.value)
    assert not (tmp_path / "runs").exists()


def test_select_best_lists_the_figures_a_run_computes(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"select_best": "val_rouge"}, data={"val_size": 0.3})
    with pytest.raises(ConfigError) as error:
        train(config)
    listed = str(error.value).split("choose one of ", 1)[1]
    assert {"val_loss", "val_accuracy", FIGURE, "val_dp_difference"} <= set(listed.split(" (")[0].split(", "))


@pytest.mark.parametrize(
    ("figure", "lower"),
    [
        ("val_loss", True),
        ("val_worst_group_loss", True),
        ("val_perplexity", True),
        ("val_best_worst_gap", True),
        ("val_eo_difference", True),
        ("val_fpr", True),
        ("val_accuracy", False),
        (FIGURE, False),
        ("val_dp_ratio", False),
        ("val_f1", False),
    ],
)
def test_direction_rule(figure: str, lower: bool) -> None:
    assert lower_is_better(figure) is lower


def test_results_and_report_say_which_checkpoint_was_kept_and_why(selected, tmp_path: Path) -> None:
    import fairlora
    from fairlora.runs import load_results

    _, result = selected
    facts = load_results(result.run_dir).train["validation"]
    assert facts["kept_step"] == result.train["validation"]["kept_step"] and facts["evaluations"]
    fairlora.audit(result.run_dir, tmp_path / "audit", ["audit.sections=[utility]", "audit.n_boot=0"])
    steps = ", ".join(f"{e['step']}: {e[FIGURE]:.4g}" for e in facts["evaluations"])
    sentence = (
        f"kept the checkpoint of step {facts['kept_step']}: best {FIGURE} ({facts['kept_value']:.4g}, "
        f"higher is better); {FIGURE} by step: {steps}; stopped early at step {facts['last_step']}"
    )
    assert sentence in (tmp_path / "audit" / "report.md").read_text()
    assert sentence in (tmp_path / "audit" / "report.html").read_text()
