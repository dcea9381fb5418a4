"""What a method hands the trainer: the wrapped model, extra loss terms, callbacks and a saver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

LossFn = Callable[[nn.Module, dict[str, torch.Tensor], Any], torch.Tensor]


@dataclass
class LossTerm:
    """An extra loss term: total loss = task loss + sum(weight * fn(model, inputs, outputs))."""

    name: str
    weight: float
    fn: LossFn


@dataclass
class MethodSetup:
    """A method applied to a model: everything the trainer needs, nothing it must know about."""

    model: nn.Module
    save: Callable[[Path], None]
    loss_terms: list[LossTerm] = field(default_factory=list)
    callbacks: list[TrainerCallback] = field(default_factory=list)
    trains: bool = True


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
