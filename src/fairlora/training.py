"""The one Trainer for every method and task: task loss + the method's loss terms, each logged."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from fairlora.config import RunConfig, TrainConfig
from fairlora.data.encode import make_collator, tokenize_frame
from fairlora.errors import TrainingError
from fairlora.methods.base import LossTerm, MethodSetup


class FairloraTrainer(Trainer):
    """HF Trainer whose loss is the task loss plus weighted method terms (BA-LoRA, AFLoRA, ...)."""

    loss_is_scaled_for_ga = False  # compute_loss returns a per-micro-batch mean

    def __init__(self, *args: Any, loss_terms: list[LossTerm] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_terms = list(loss_terms or [])
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_steps = 0

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Task loss from the model + sum of weight * term; stops on a NaN/inf loss."""
        outputs = model(**inputs)
        loss = outputs.loss
        terms = {"task_loss": loss}
        for term in self.loss_terms:
            terms[term.name] = term.fn(model, inputs, outputs)
            loss = loss + term.weight * terms[term.name]
        if model.training:
            self._check_finite(loss, terms)
            self._record(terms)
        return (loss, outputs) if return_outputs else loss

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """HF recounts every parameter each step for this estimate; count them once."""
        if not hasattr(self, "_flops_per_token"):
            self._flops_per_token = 6 * sum(p.numel() for p in self.model.parameters())
        ids = inputs.get("input_ids")
        return self._flops_per_token * (ids.numel() if ids is not None else 0)

    def _check_finite(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        if torch.isfinite(loss.detach()).all():
            return
        parts = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
        raise TrainingError(
            f"training diverged: the loss is {loss.item()} at step {self.state.global_step + 1} "
            f"({parts}). Lower train.lr (now {self.args.learning_rate:g}) or check the data; "
            f"checkpoints written so far are kept in {self.args.output_dir}"
        )

    def _record(self, terms: dict[str, torch.Tensor]) -> None:
        if not self.loss_terms:
            return
        for name, value in terms.items():
            self._term_sums[name] = self._term_sums.get(name, 0.0) + value.detach().float()
        self._term_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term since the last log to the training logs."""
        if "loss" in logs and self._term_steps:
            for name, total in self._term_sums.items():
                logs[name] = round(total.item() / self._term_steps, 6)
            self._term_sums.clear()
            self._term_steps = 0
        super().log(logs, start_time)


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
        dataloader_num_workers=0,
        dataloader_pin_memory=not cpu,
        use_cpu=cpu,
    )


def keep_freed_memory() -> None:
    """CPU/glibc: keep freed activation memory in the heap so each step doesn't page-fault it back.

    Measured with benchmarks/step_overhead.py: without it, 5k-21k page faults per step and 1.5-4%
    slower steps (MiniLM, SmolLM2). Both thresholds must be set; memory stays at its peak between steps.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: the glibc maximum
    libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD


def build_trainer(
    cfg: RunConfig,
    setup: MethodSetup,
    tokenizer: PreTrainedTokenizerBase,
    train_frame: pd.DataFrame,
    output_dir: Path,
) -> FairloraTrainer:
    """The Trainer for this run, with the method's loss terms and callbacks."""
    if on_cpu():
        keep_freed_memory()
    return FairloraTrainer(
        model=setup.model,
        args=training_arguments(cfg, output_dir),
        train_dataset=tokenize_frame(train_frame, tokenizer, cfg.task, cfg.model.max_length),
        data_collator=make_collator(tokenizer, cfg.task),
        processing_class=tokenizer,
        callbacks=setup.callbacks,
        loss_terms=setup.loss_terms,
    )


def run_training(trainer: FairloraTrainer, checkpoint_dir: Path, resume: bool) -> dict[str, float]:
    """Train (resuming from the last checkpoint when asked and one exists); return train metrics."""
    last = get_last_checkpoint(str(checkpoint_dir)) if resume and checkpoint_dir.is_dir() else None
    output = trainer.train(resume_from_checkpoint=last)
    if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        checkpoint_dir.rmdir()  # save_strategy=no leaves an empty folder behind
    return {key: float(value) for key, value in output.metrics.items()}
