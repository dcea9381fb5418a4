"""Validation while training: evaluate the val split, keep the best checkpoint, stop early.

The figures are those of the run's own results (`utility_table` on the val split's predictions), so
`val_worst_group_accuracy` means exactly what `fairlora audit` reports as worst-group accuracy.
Direction: a figure is better when LOWER if it is a loss, perplexity, gap, difference, FPR or FNR
(`lower_is_better`); every other figure is better when higher. `positive_rate` and
`mean_p_positive` have no better direction and cannot be selected on.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import EarlyStoppingCallback, EvalPrediction, PreTrainedTokenizerBase, TrainingArguments

from fairlora.config import RunConfig, TrainConfig
from fairlora.data import TaskData
from fairlora.errors import ConfigError
from fairlora.metrics.utility import utility_table
from fairlora.tasks import get_task
from fairlora.tasks.base import Task
from fairlora.tasks.predict import prediction_table

PREFIX = "val_"
NO_DIRECTION = ("positive_rate", "mean_p_positive")
TRAJECTORY = ("val_loss", "val_accuracy", "val_worst_group_accuracy")  # kept per evaluation in results


def lower_is_better(figure: str) -> bool:
    """Loss-like figures (loss, perplexity, *_gap, *_difference, fpr, fnr) are better when lower."""
    name = figure.removeprefix(PREFIX)
    return bool(re.search(r"loss|perplexity|gap|difference", name)) or name in ("fpr", "fnr")


def evaluation_every(train: TrainConfig) -> int | str | None:
    """Steps (or "epoch") between evaluations: eval_every, else each epoch when selection needs it."""
    if train.eval_every is not None:
        return train.eval_every
    return "epoch" if train.select_best or train.early_stopping_patience else None


def selected_figure(train: TrainConfig) -> str | None:
    """The figure that picks the kept checkpoint: select_best, else val_loss when stopping early."""
    return train.select_best or ("val_loss" if train.early_stopping_patience else None)


def validation_arguments(cfg: RunConfig) -> dict[str, Any]:
    """TrainingArguments for evaluating the val split while training (empty when it is not asked for)."""
    every = evaluation_every(cfg.train)
    if every is None:
        return {}
    strategy = "epoch" if every == "epoch" else "steps"
    steps = every if isinstance(every, int) else None
    arguments: dict[str, Any] = {
        "eval_strategy": strategy,
        "eval_steps": steps,
        "per_device_eval_batch_size": cfg.eval.batch_size,
        "label_names": ["labels"],
    }
    figure = selected_figure(cfg.train)
    if figure is not None:  # a checkpoint at every evaluation; HF keeps the best one beside the newest
        arguments |= {
            "save_strategy": strategy,
            "save_steps": steps or cfg.train.save_steps,
            "metric_for_best_model": figure,
            "greater_is_better": not lower_is_better(figure),
            "load_best_model_at_end": True,
            "restore_callback_states_from_checkpoint": True,  # --resume keeps the patience count
        }
    return arguments


def with_validation(arguments: TrainingArguments, cfg: RunConfig) -> TrainingArguments:
    """`arguments` with the evaluation / best-checkpoint settings (they replace train.save_strategy)."""
    extra = validation_arguments(cfg)
    return dataclasses.replace(arguments, **extra) if extra else arguments


@dataclass
class ValidationPlan:
    """The val split the trainer scores while training, and how its figures are computed."""

    frame: pd.DataFrame
    group_columns: list[str]
    task: Task
    min_group_size: int
    figure: str | None
    patience: int | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def reduce_logits(self, logits: Any, labels: torch.Tensor) -> torch.Tensor:
        """Per-example [loss, P(class)...] of a batch (the trainer keeps these, not the logits)."""
        logits = logits[0] if isinstance(logits, tuple) else logits
        losses = self.task.example_losses(logits.float(), labels)[:, None]
        probs = self.task.probabilities(logits.float())
        return losses if probs is None else torch.cat([losses, probs], dim=-1)

    def compute_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        """Every figure of the run's utility table on the val split, named val_<figure>."""
        return figures(
            self.table(np.asarray(prediction.predictions)), self.group_columns, self.min_group_size
        )

    def table(self, reduced: np.ndarray) -> pd.DataFrame:
        """The val predictions table from the reduced rows (as `predict_frame` would write it)."""
        reduced = torch.from_numpy(reduced[: len(self.frame)].astype(np.float32))
        probs = [reduced[:, 1:]] if reduced.shape[1] > 1 else []
        return prediction_table(self.frame, "val", self.group_columns, [reduced[:, 0]], probs)

    def trainer_kwargs(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict[str, Any]:
        """The Trainer's eval_dataset, compute_metrics and preprocess_logits_for_metrics."""
        return {
            "eval_dataset": self.task.encode(self.frame, tokenizer, max_length),
            "compute_metrics": self.compute_metrics,
            "preprocess_logits_for_metrics": self.reduce_logits,
        }

    def callbacks(self) -> list[Any]:
        """EarlyStoppingCallback when train.early_stopping_patience is set."""
        return [EarlyStoppingCallback(self.patience)] if self.patience else []


def figures(table: pd.DataFrame, group_columns: list[str], min_group_size: int) -> dict[str, float]:
    """val_<figure> -> value for the overall and summary figures of `utility_table` (NaN if undefined)."""
    metrics = utility_table(table, group_columns, min_group_size=min_group_size, n_boot=0)
    values = {**metrics.overall, **metrics.summary}
    return {PREFIX + name: np.nan if e.value is None else float(e.value) for name, e in values.items()}


def computed_figures(
    frame: pd.DataFrame, group_columns: list[str], task: Task, num_labels: int, size: int
) -> list[str]:
    """The val_<figure> names defined on this val split (a dry run of the metrics on perfect predictions)."""
    losses = [torch.zeros(len(frame))]
    probs = []
    if task.classifies:
        probs = [torch.nn.functional.one_hot(torch.tensor(frame["label"].to_numpy()), num_labels).float()]
    table = prediction_table(frame, "val", group_columns, losses, probs)
    return [name for name, value in figures(table, group_columns, size).items() if not np.isnan(value)]


def validation_plan(cfg: RunConfig, data: TaskData, num_labels: int) -> ValidationPlan | None:
    """The run's validation plan, or ConfigError (before anything is written) for settings that fail."""
    train = cfg.train
    asked = {
        "train.eval_every": train.eval_every,
        "train.early_stopping_patience": train.early_stopping_patience,
        "train.select_best": train.select_best,
    }
    asked = {key: value for key, value in asked.items() if value is not None}
    if not asked:
        return None
    if data.val is None or data.val.empty:
        key = next(iter(asked))
        raise ConfigError(
            f"{key}: {asked[key]} evaluates on a validation split, but the run has none; "
            f"set data.val_size (e.g. data.val_size=0.2) or remove {key}"
        )
    task = get_task(cfg.task)
    figure = selected_figure(train)
    if figure is not None:
        check_figure(
            figure, computed_figures(data.val, data.group_columns, task, num_labels, cfg.eval.min_group_size)
        )
    return ValidationPlan(
        data.val, data.group_columns, task, cfg.eval.min_group_size, figure, train.early_stopping_patience
    )


def check_figure(figure: str, available: list[str]) -> None:
    """ConfigError unless `figure` is one the run computes on validation and has a better direction."""
    if figure in available and figure.removeprefix(PREFIX) not in NO_DIRECTION:
        return
    choices = [name for name in available if name.removeprefix(PREFIX) not in NO_DIRECTION]
    why = "has no better direction" if figure.removeprefix(PREFIX) in NO_DIRECTION else "is not computed"
    raise ConfigError(
        f"train.select_best: {figure!r} {why} on this run's validation split; choose one of "
        f"{', '.join(choices)} (worst-group figures need a val group of at least eval.min_group_size rows)"
    )


def selection_facts(
    log_history: list[dict[str, Any]],
    best_checkpoint: str | None,
    figure: str | None,
    global_step: int,
    max_steps: int,
) -> dict[str, Any]:
    """Which checkpoint was kept and why: the figure, its direction and value, and every evaluation."""
    shown = dict.fromkeys([figure, *TRAJECTORY] if figure else TRAJECTORY)
    evaluations = [
        {"step": int(entry["step"]), "epoch": entry.get("epoch")}
        | {name: _finite(entry[f"eval_{name}"]) for name in shown if f"eval_{name}" in entry}
        for entry in log_history
        if any(key.startswith(f"eval_{PREFIX}") for key in entry)
    ]
    selected = bool(figure and best_checkpoint)
    kept = int(str(best_checkpoint).rstrip("/").rsplit("-", 1)[1]) if selected else global_step
    return {
        "figure": figure,
        "direction": None if figure is None else ("lower" if lower_is_better(figure) else "higher"),
        "kept_step": kept,
        "kept_value": next((e.get(figure) for e in evaluations if e["step"] == kept), None)
        if figure
        else None,
        "reason": f"best {figure} on the val split" if selected else "the last step (no train.select_best)",
        "stopped_early": global_step < max_steps,
        "last_step": global_step,
        "evaluations": evaluations,
    }


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
