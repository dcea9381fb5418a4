"""The types of step-aware loss terms, shared by the methods that make them and the loop that adds them.

A leaf beside the weight schedules: methods and regularizers build `LossTerm`s from here, and
`fairlora.training` composes them, so no method imports the training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fairlora.regularizers.schedules import Schedule, constant

IGNORE_INDEX = -100
TaskLoss = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class TermInputs:
    """What a loss term sees: the model, the batch, its outputs, the teacher's outputs and the progress."""

    model: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: Any
    teacher: Any | None
    step: int
    total_steps: int
    shared: dict[str, Any] = field(default_factory=dict)  # work terms share within this batch (one pass)


@dataclass
class LossTerm:
    """An extra loss term: total = task loss + sum over terms of weight(step, total) * fn(TermInputs).

    `needs_teacher`: the term reads `TermInputs.teacher`, the original model's outputs on the batch;
    one teacher forward per batch serves every term that needs it. `routes_logits`: the term swaps
    `TermInputs.outputs.logits` for a tensor that passes the task loss's gradient through its own
    backward, so both share ONE logits-sized gradient buffer; the model is then called without labels
    and the task loss computed from the swapped logits after the terms.
    """

    name: str
    fn: Callable[[TermInputs], torch.Tensor]
    weight: Schedule = field(default_factory=lambda: constant(1.0))
    needs_teacher: bool = False
    routes_logits: bool = False


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: position t predicts a label (labels[t + 1] != -100); prompt and padding drop out."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask
