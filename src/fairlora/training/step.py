"""One training step outside the HF Trainer: forward, loss, backward, clip, optimizer step.

The HF Trainer path (training/trainer.py) composes its loss with the same `compose_loss` and builds
its optimizer with the same `make_optimizer`; collaboration steps many clients through `train_step`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from transformers import get_scheduler

from fairlora.config import TrainConfig
from fairlora.errors import TrainingError
from fairlora.methods.base import MethodSetup, StepContext, is_head_parameter
from fairlora.training.losses import compose_loss


def make_optimizer(setup: MethodSetup, train: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW over the setup's parameter groups (head at train.head_lr) and the train.scheduler LR schedule."""
    groups = setup.param_groups(train.lr, train.head_lr, train.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=train.lr)
    warmup = round(train.warmup_ratio * total_steps)
    scheduler = get_scheduler(
        train.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps
    )
    return optimizer, scheduler


def trainable_count(model: nn.Module, head: bool = True) -> int:
    """Number of parameters that currently require a gradient (`head=False`: outside the task head)."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and (head or not is_head_parameter(name))
    )


@dataclass
class TrainableCounter:
    """Trainable parameters at the start, at the end, and averaged over the steps (with and without head)."""

    counts: list[int] = field(default_factory=list)
    counts_no_head: list[int] = field(default_factory=list)

    def record(self, model: nn.Module) -> None:
        """Count the trainable parameters now (call at the start of every step)."""
        self.counts.append(trainable_count(model))
        self.counts_no_head.append(trainable_count(model, head=False))

    def facts(self, model: nn.Module) -> dict[str, float]:
        """trainable_params_start / _end / _mean, and the same without the head (`_no_head_`)."""
        facts: dict[str, float] = {}
        for suffix, counts, head in (("", self.counts, True), ("_no_head", self.counts_no_head, False)):
            end = trainable_count(model, head=head)
            counts = counts or [end]
            facts |= {
                f"trainable_params{suffix}_start": counts[0],
                f"trainable_params{suffix}_end": end,
                f"trainable_params{suffix}_mean": sum(counts) / len(counts),
            }
        return facts


def stop_if_not_finite(loss: torch.Tensor, parts: dict[str, torch.Tensor], step: int, hint: str) -> None:
    """Raise TrainingError on a NaN/inf loss, on EVERY process when one of them sees it (no hang)."""
    bad = torch.tensor(0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0, device=loss.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if bad.item() == 0.0:
        return
    shown = ", ".join(f"{name}={value.detach().float().mean().item():.4g}" for name, value in parts.items())
    raise TrainingError(
        f"training diverged: the loss is not finite at step {step + 1} on at least one process "
        f"(here: {shown}). {hint}"
    )


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepState:
    """What one learner owns between steps: its setup, optimizer, LR schedule and progress.

    `precision` (train.precision) runs forward and loss under autocast; fp16 scales the loss.
    """

    setup: MethodSetup
    optimizer: Any
    scheduler: Any
    total_steps: int
    max_grad_norm: float = 1.0
    step: int = 0
    counter: TrainableCounter = field(default_factory=TrainableCounter)
    precision: str = "fp32"
    scaler: Any = None

    def __post_init__(self) -> None:
        if self.precision == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device_type)

    @property
    def device_type(self) -> str:
        """Device type of the model's parameters ("cpu", "cuda", ...)."""
        return next(self.setup.model.parameters()).device.type

    def autocast(self) -> torch.autocast:
        """Autocast to train.precision (disabled for fp32)."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(self.device_type, dtype=dtype, enabled=dtype is not None)


def train_step(state: StepState, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """One optimizer step over `micro_batches` (gradient accumulation); returns the mean of each loss part."""
    setup, model = state.setup, state.setup.model
    setup.activate()
    model.train()
    state.counter.record(model)  # the parameters this step trains
    sums: dict[str, float] = {}
    scaler = state.scaler
    for batch in micro_batches:
        with state.autocast():
            loss, parts, _ = compose_loss(
                model,
                batch,
                setup.loss_terms,
                state.step,
                state.total_steps,
                setup.teacher_context,
                setup.task_loss,
                setup.teacher_cache,
            )
        stop_if_not_finite(loss, parts, state.step, "Lower train.lr or check the data")
        scaled = loss.float() / len(micro_batches)
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float().item() / len(micro_batches)
    if scaler is not None:
        scaler.unscale_(state.optimizer)  # clipping and the step hooks see true gradients
    run_step_hooks(setup, state.optimizer, state.step, state.total_steps)  # unclipped gradients
    params = [p for p in model.parameters() if p.requires_grad]
    if state.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, state.max_grad_norm)
    if scaler is not None:
        scaler.step(state.optimizer)  # skipped when the scaled gradients overflowed
        scaler.update()
    else:
        state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    return sums


def run_step_hooks(
    setup: MethodSetup, optimizer: Any, step: int, total_steps: int, epoch: float | None = None
) -> None:
    """Run the method's step hooks (after backward, before clipping and the optimizer step)."""
    if setup.step_hooks:
        context = StepContext(setup.model, optimizer, step, total_steps, epoch)
        for hook in setup.step_hooks:
            hook(context)
