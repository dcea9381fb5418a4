"""Loss composition: the task loss plus weighted, step-aware loss terms, all in one function.

The term types live in `fairlora.regularizers.terms` (methods build terms without importing training).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fairlora.regularizers.teacher_cache import TeacherCache
from fairlora.regularizers.terms import LossTerm, TaskLoss, TermInputs, label_positions


def compose_loss(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    terms: list[LossTerm],
    step: int,
    total_steps: int,
    teacher: Callable[[], AbstractContextManager[None]] | None = None,
    task_loss: TaskLoss | None = None,
    teacher_cache: TeacherCache | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
    """(total loss, every part by name for logging, model outputs) of one micro-batch.

    `task_loss(outputs, inputs)` replaces the model's own loss (e.g. a class-weighted cross-entropy);
    `teacher_cache` serves the teacher's outputs of examples it has seen (classification).
    """
    teacher_outputs = None
    if any(term.needs_teacher for term in terms):
        if teacher is None:
            raise ValueError("a loss term needs the teacher, but no teacher context was given")
        if teacher_cache is None:
            teacher_outputs = teacher_forward(model, inputs, teacher)
        else:
            teacher_outputs = teacher_cache.outputs(inputs, lambda: teacher_forward(model, inputs, teacher))
    routed = any(term.routes_logits for term in terms)
    outputs = model(**({k: v for k, v in inputs.items() if k != "labels"} if routed else inputs))
    seen = TermInputs(model, inputs, outputs, teacher_outputs, step, total_steps)
    values = {term.name: term.fn(seen) for term in terms}  # a routing term swaps outputs.logits here
    if task_loss is not None:
        loss = task_loss(outputs, inputs)
    else:
        loss = own_loss(model, outputs.logits, inputs["labels"]) if routed else outputs.loss
    parts = {"task_loss": loss} | values
    for term in terms:
        loss = loss + term.weight(step, total_steps) * values[term.name]
    return loss, parts, outputs


def teacher_forward(
    model: nn.Module, inputs: dict[str, torch.Tensor], teacher: Callable[[], AbstractContextManager[None]]
) -> Any:
    """The original model's outputs on the batch: the model run inside the teacher context."""
    with teacher():
        return model(**teacher_inputs(model, inputs))


def own_loss(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss the model computes itself from `logits` and `labels` (its `loss_function`, same call)."""
    base = getattr(model, "module", model)  # DDP
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return base.loss_function(logits=logits, labels=labels, vocab_size=base.config.vocab_size)


def teacher_inputs(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The teacher's forward inputs: no labels (its loss is never used), no key/value cache; for a causal
    LM, logits only where a position predicts a label (`logits_to_keep` mask: they come back (M, V))."""
    kept = {key: value for key, value in inputs.items() if key != "labels"}
    labels, ids = inputs.get("labels"), inputs.get("input_ids")
    token_labels = labels is not None and ids is not None and labels.shape == ids.shape
    if token_labels and _accepts(model, "logits_to_keep"):
        kept["logits_to_keep"] = label_positions(labels)
    if _accepts(model, "use_cache"):
        kept["use_cache"] = False  # the teacher's key/value cache would live through the whole step
    return kept


def _accepts(model: nn.Module, argument: str) -> bool:
    """True when the model's own forward (under any PEFT wrapper) names `argument`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return argument in inspect.signature(base.forward).parameters


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """sklearn's "balanced" weights n / (k * count_c) over the k classes present; absent classes get 0."""
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.float()


def weighted_cross_entropy(class_weights: torch.Tensor) -> TaskLoss:
    """A task loss: cross-entropy of the classification logits, each class weighted (train.class_weight)."""

    def loss(outputs: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs.logits.float()
        return F.cross_entropy(logits, inputs["labels"], weight=class_weights.to(logits.device))

    return loss
