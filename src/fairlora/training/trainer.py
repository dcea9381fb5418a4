"""The one HF Trainer for every method and task: the loss is `compose_loss`, each part is logged."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from fairlora.config import RunConfig, TrainConfig
from fairlora.methods.adapters import vectors_in_lora_modules
from fairlora.methods.base import MethodSetup
from fairlora.tasks import get_task
from fairlora.training.losses import compose_loss
from fairlora.training.step import TrainableCounter, make_optimizer, run_step_hooks, stop_if_not_finite


class FairloraTrainer(Trainer):
    """HF Trainer whose loss is `compose_loss` (task loss + step-aware method terms), each part logged."""

    # compute_loss returns the mean of one micro-batch; HF divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, setup: MethodSetup, train_config: TrainConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup, self.train_config = setup, train_config
        self.model_accepts_loss_kwargs = False  # releases without loss_is_scaled_for_ga decide from this
        self.counter = TrainableCounter()
        self._part_sums: dict[str, torch.Tensor] = {}
        self._part_steps = 0

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW over the method's parameter groups (a head at train.head_lr), as in `train_step`."""
        if self.optimizer is None:
            self.optimizer, _ = make_optimizer(self.setup, self.train_config, 1)
        return self.optimizer

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """`compose_loss` at the current step; stops every process on a NaN/inf loss."""
        terms = self.setup.loss_terms if model.training else []
        step, total = self.state.global_step, max(self.state.max_steps, 1)
        loss, parts, outputs = compose_loss(
            model, inputs, terms, step, total, self.setup.teacher_context, self.setup.task_loss
        )
        if model.training:
            hint = (
                f"Lower train.lr (now {self.args.learning_rate:g}) or check the data; checkpoints written "
                f"so far are kept in {self.args.output_dir}"
            )
            stop_if_not_finite(loss, parts, step, hint)
            self._record(parts)
        return (loss, outputs) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        """HF's save (checkpoints, final model); AFLoRA's 1-D d/b tensors are expected under lora_A/B."""
        with vectors_in_lora_modules():
            super()._save(output_dir, state_dict)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """HF recounts every parameter each step for this estimate; count them once."""
        if not hasattr(self, "_flops_per_token"):
            self._flops_per_token = 6 * sum(p.numel() for p in self.model.parameters())
        ids = inputs.get("input_ids")
        return self._flops_per_token * (ids.numel() if ids is not None else 0)

    def _record(self, parts: dict[str, torch.Tensor]) -> None:
        if not self.setup.loss_terms:
            return
        for name, value in parts.items():
            self._part_sums[name] = self._part_sums.get(name, 0.0) + value.detach().float()
        self._part_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss part (and each term's current weight) since the last log."""
        if "loss" in logs and self._part_steps:
            for name, total in self._part_sums.items():
                logs[name] = round(total.item() / self._part_steps, 6)
            for term in self.setup.loss_terms:
                logs[f"{term.name}_weight"] = term.weight(
                    self.state.global_step, max(self.state.max_steps, 1)
                )
            self._part_sums.clear()
            self._part_steps = 0
        super().log(logs, start_time)


class CountTrainable(TrainerCallback):
    """Counts trainable parameters at the start of every step (AFLoRA freezes them as it goes)."""

    def __init__(self, counter: TrainableCounter) -> None:
        self.counter = counter

    def on_step_begin(
        self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any
    ) -> None:
        """Record the count for this step."""
        if model is not None:
            self.counter.record(model)


class StepHooks(TrainerCallback):
    """Runs the method's step hooks before each optimizer step (after clipping), as `train_step` does."""

    def __init__(self, setup: MethodSetup) -> None:
        self.setup = setup

    def on_pre_optimizer_step(
        self, args: Any, state: Any, control: Any, optimizer: Any = None, **kw: Any
    ) -> None:
        """Hand the hooks the gradients of the step about to be applied."""
        run_step_hooks(self.setup, optimizer, state.global_step, max(state.max_steps, 1), state.epoch)


def on_cpu() -> bool:
    """True when no GPU-like accelerator is present (processes then talk over gloo)."""
    xpu = getattr(torch, "xpu", None)
    return not (
        torch.cuda.is_available()
        or torch.backends.mps.is_available()
        or (xpu is not None and xpu.is_available())
    )


def training_arguments(cfg: RunConfig, output_dir: Path) -> TrainingArguments:
    """HF TrainingArguments from the `train` section."""
    train: TrainConfig = cfg.train
    cpu = on_cpu()
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        learning_rate=train.lr,
        weight_decay=train.weight_decay,
        warmup_steps=train.warmup_ratio,
        lr_scheduler_type=train.scheduler,
        max_grad_norm=train.max_grad_norm,
        logging_steps=train.logging_steps,
        logging_nan_inf_filter=False,  # the trainer stops on a non-finite loss itself
        save_strategy=train.save_strategy,
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        report_to=train.report_to or "none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=not train.progress_bar,
        remove_unused_columns=False,
        activation_checkpointing=train.gradient_checkpointing,
        bf16=train.precision == "bf16",
        fp16=train.precision == "fp16",
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        dataloader_num_workers=0,
        dataloader_pin_memory=not cpu,
        use_cpu=cpu,
    )


@contextlib.contextmanager
def keep_freed_memory(enabled: bool) -> Iterator[None]:
    """CPU/glibc, opt-in (train.keep_freed_memory): keep freed memory in the heap while training.

    Without it, every step page-faults its activation memory back (5k-21k faults per step, 1.5-4%
    slower steps, measured with benchmarks/step_overhead.py). glibc's defaults are restored after.
    """
    libc = None
    if enabled and on_cpu() and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            libc = ctypes.CDLL("libc.so.6")
    if libc is not None:
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: the glibc maximum
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(-3, 128 * 1024)  # glibc's defaults
            libc.mallopt(-1, 128 * 1024)


def build_trainer(
    cfg: RunConfig,
    setup: MethodSetup,
    tokenizer: PreTrainedTokenizerBase,
    train_frame: pd.DataFrame,
    output_dir: Path,
) -> FairloraTrainer:
    """The Trainer for this run, with the method's loss terms and callbacks."""
    task = get_task(cfg.task)
    trainer = FairloraTrainer(
        model=setup.model,
        args=training_arguments(cfg, output_dir),
        train_dataset=task.encode(train_frame, tokenizer, cfg.model.max_length),
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        callbacks=setup.callbacks,
        setup=setup,
        train_config=cfg.train,
    )
    trainer.add_callback(CountTrainable(trainer.counter))
    if setup.step_hooks:
        trainer.add_callback(StepHooks(setup))
    return trainer


def run_training(trainer: FairloraTrainer, checkpoint_dir: Path, resume: bool) -> dict[str, float]:
    """Train (resuming from the last checkpoint when asked and one exists); return train metrics and facts."""
    last = get_last_checkpoint(str(checkpoint_dir)) if resume and checkpoint_dir.is_dir() else None
    with keep_freed_memory(trainer.train_config.keep_freed_memory):
        output = trainer.train(resume_from_checkpoint=last)
    if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        checkpoint_dir.rmdir()  # save_strategy=no leaves an empty folder behind
    metrics = {key: float(value) for key, value in output.metrics.items()}
    facts = trainer.setup.facts() if trainer.setup.facts is not None else {}
    return metrics | trainer.counter.facts(trainer.setup.model) | facts
