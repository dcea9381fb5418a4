"""A task: what the model is trained to do, and everything that depends on it.

A task owns its auto model class, PEFT task type, encoding of a task frame into model inputs, the
padding collator, and the per-example loss / probabilities of the prediction pass. Tasks are
registered by name; `config.task` names one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pandas as pd
import torch
from peft import TaskType
from transformers import PreTrainedTokenizerBase

from fairlora.errors import ConfigError

IGNORE_INDEX = -100


class Task(ABC):
    """One task; subclasses set the class attributes and implement the four methods."""

    name: str
    description: str
    auto_class: Any  # transformers Auto* class with from_pretrained / from_config
    peft_task_type: TaskType
    classifies: bool  # True: a label column and a classification head (prediction has pred / prob_k)
    needs_decoder: bool = False

    def check_frame(self, frame: pd.DataFrame) -> None:
        """Raise DataError when `frame` lacks the task's input columns (checked before a run writes)."""
        return None  # text tasks: the loaders guarantee the text column

    def model_kwargs(self, num_labels: int) -> dict[str, Any]:
        """Extra from_pretrained / config arguments (a classification head's num_labels)."""
        return {"num_labels": num_labels} if self.classifies else {}

    @abstractmethod
    def encode(
        self, frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> list[dict[str, Any]]:
        """Model inputs with labels, one dict per row of the task frame."""

    @abstractmethod
    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        """A callable that pads a list of encoded examples into a batch of tensors."""

    @abstractmethod
    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example loss (n,) from a batch's logits and labels."""

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor | None:
        """Per-example class probabilities (n, k), or None where the task has no classes."""
        return logits.softmax(-1) if self.classifies else None


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Make `task` available by its name (config `task:`)."""
    _TASKS[task.name] = task
    return task


def task_names() -> list[str]:
    """Names of the registered tasks."""
    _load_builtin()
    return list(_TASKS)


def get_task(name: str | Task) -> Task:
    """The registered task called `name` (a Task is returned as it is)."""
    if isinstance(name, Task):
        return name
    _load_builtin()
    if name not in _TASKS:
        raise ConfigError(f"task: unknown task {name!r}; allowed: {', '.join(_TASKS)}")
    return _TASKS[name]


def _load_builtin() -> None:
    import fairlora.tasks.causal_lm  # noqa: F401 - registers causal_lm
    import fairlora.tasks.classification  # noqa: F401 - registers classification
    import fairlora.tasks.image_classification  # noqa: F401 - registers image_classification
