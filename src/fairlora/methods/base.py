"""What a method hands the trainer: the wrapped model, loss terms, callbacks, a saver, and the hooks
that later stages need (named adapters, trainable-state exchange, the teacher, parameter groups)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_pt_utils import get_parameter_names

from fairlora.errors import ConfigError
from fairlora.regularizers.teacher_cache import TeacherCache
from fairlora.regularizers.terms import LossTerm, TaskLoss

HEAD_MODULES = ("classifier", "score", "pre_classifier")
NO_DECAY_PATTERNS = [
    r"bias",
    r"layernorm",
    r"rmsnorm",
    r"(?:^|\.)norm(?:$|\.)",
    r"_norm(?:$|\.)",
]  # as HF Trainer


@dataclass
class StepContext:
    """What a step hook sees after backward, before the optimizer step: gradients are in place."""

    model: nn.Module
    optimizer: Any  # a torch optimizer (an accelerate wrapper is unwrapped by the hook)
    step: int  # 0-based index of the optimizer step about to be applied
    total_steps: int
    epoch: float | None = None  # progress in epochs when the loop knows it


StepHook = Callable[[StepContext], None]
Tensors = dict[str, torch.Tensor]


class ExtraState(Protocol):
    """Training state of a method beyond its tensors (AFLoRA's freezer): tensors + JSON-ready facts."""

    def get_extra_state(self) -> tuple[Tensors, dict[str, Any]]:
        """A copy of the state."""

    def set_extra_state(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        """Back to a state `get_extra_state` gave."""


def is_head_parameter(name: str) -> bool:
    """True for parameters of a task head the base model does not have (classifier / score)."""
    return any(part in HEAD_MODULES for part in name.split(".")[:3])  # also under PEFT's wrapper prefix


@dataclass
class MethodSetup:
    """A method applied to a model: everything the trainer and the collaboration need.

    `adapter_name` names the PEFT adapter this setup trains on a shared base (None: no adapter);
    `activate()` switches the shared base to it; `task_loss(outputs, inputs)`, when set, replaces
    the model's own loss. `teacher` is a context in which the model computes
    the ORIGINAL pre-trained model's outputs (None: the method cannot give them). `step_hooks` run
    once per optimizer step after backward, before clipping and the optimizer step (AFLoRA's freezer).
    `restore_trainable()` puts the method's own trainable set back after PEFT switched or re-enabled
    the adapter (which turns requires_grad on for ALL its tensors, AFLoRA's frozen matrices too): it
    runs on leaving every teacher context and in `activate()`.
    """

    model: nn.Module
    save: Callable[[Path], None]
    loss_terms: list[LossTerm] = field(default_factory=list)
    callbacks: list[TrainerCallback] = field(default_factory=list)
    trains: bool = True
    adapter_name: str | None = None
    teacher: Callable[[], AbstractContextManager[None]] | None = None
    activate: Callable[[], None] = lambda: None
    restore_trainable: Callable[[], None] = lambda: None  # after PEFT turned the whole adapter on
    task_loss: TaskLoss | None = None  # replaces the model's own loss (train.class_weight)
    step_hooks: list[StepHook] = field(default_factory=list)  # run by train_step AND the HF Trainer
    facts: Callable[[], dict[str, Any]] | None = None  # post-training facts for results.json `train`
    extra_state: ExtraState | None = None  # saved and restored with a collab client (AFLoRA's freezer)
    teacher_cache: TeacherCache | None = None  # classification: the teacher's logits of seen examples
    _exchanged: dict[str, nn.Parameter] = field(default_factory=dict, repr=False)

    def teacher_context(self) -> AbstractContextManager[None]:
        """Context in which a forward pass gives the original model's outputs (no grad, eval mode)."""
        if self.teacher is None:
            raise ConfigError(
                "this method keeps no copy of the original model (full fine-tuning changes every "
                "weight): loss terms that need the teacher work with adapter methods and `none`"
            )
        return _frozen_eval(self.model, self.teacher, self.restore_trainable)

    def exchanged_parameters(self) -> dict[str, nn.Parameter]:
        """What clients exchange, keyed without the adapter name: the parameters trainable at the first
        call (right after the method is applied); a matrix the method freezes later stays in."""
        if not self._exchanged:
            self.activate()
            self._exchanged = {self._key(n): p for n, p in self.model.named_parameters() if p.requires_grad}
        return self._exchanged

    def trainable_state(self) -> Tensors:
        """Detached copies of the exchanged tensors."""
        return {key: param.detach().clone() for key, param in self.exchanged_parameters().items()}

    def frozen_keys(self) -> set[str]:
        """Exchanged keys the method has frozen since (AFLoRA): a client's mixture leaves them as they are."""
        params = self.exchanged_parameters()
        self.activate()
        return {key for key, param in params.items() if not param.requires_grad}

    def load_trainable_state(self, state: Tensors) -> None:
        """Copy `state` (from `trainable_state`, possibly of another adapter) into this setup's tensors."""
        params = self.exchanged_parameters()
        missing, unknown = set(params) - set(state), set(state) - set(params)
        if missing or unknown:
            raise ValueError(
                f"trainable state does not match: missing {sorted(missing)[:3]}, "
                f"unknown {sorted(unknown)[:3]}"
            )
        self.activate()
        with torch.no_grad():
            for key, param in params.items():
                param.copy_(state[key].to(param.device, param.dtype))

    def method_state(self) -> tuple[Tensors, dict[str, Any]]:
        """A copy of the method's extra training state (empty when it has none)."""
        return self.extra_state.get_extra_state() if self.extra_state is not None else ({}, {})

    def load_method_state(self, tensors: Tensors, meta: dict[str, Any]) -> None:
        """Restore what `method_state` gave (this adapter made active first)."""
        if self.extra_state is not None:
            self.activate()
            self.extra_state.set_extra_state(tensors, meta)

    def param_groups(self, lr: float, head_lr: float | None, weight_decay: float) -> list[dict]:
        """Optimizer groups: adapter/backbone and head, each split into decayed and not decayed."""
        decayed = set(get_parameter_names(self.model, [nn.LayerNorm], NO_DECAY_PATTERNS))
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                groups.setdefault((is_head_parameter(name), name in decayed), []).append(param)
        return [
            {
                "params": params,
                "lr": head_lr if head and head_lr else lr,
                "weight_decay": weight_decay * decays,
            }
            for (head, decays), params in groups.items()
        ]

    def _key(self, name: str) -> str:
        if not self.adapter_name:
            return name
        suffix = f".{self.adapter_name}"  # VeRA's lambdas are ParameterDict entries: the name ends with it
        if name.endswith(suffix):
            name = name[: -len(suffix)]
        return name.replace(f"{suffix}.", ".")


@contextlib.contextmanager
def _frozen_eval(
    model: nn.Module, teacher: Callable[[], AbstractContextManager[None]], restore: Callable[[], None]
) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), teacher():
            yield
    finally:
        restore()  # leaving the teacher re-enabled the adapter: every tensor of it requires grad again
        model.train(was_training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
