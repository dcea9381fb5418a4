"""The one HF Trainer for every method and task: the loss is `compose_loss`, each part is logged."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from fairlora.config import RunConfig, TrainConfig
from fairlora.methods.adapters import vectors_in_lora_modules
from fairlora.methods.base import MethodSetup
from fairlora.storage import write_text_atomic
from fairlora.tasks import get_task
from fairlora.training.losses import compose_loss
from fairlora.training.step import TrainableCounter, make_optimizer, run_step_hooks, stop_if_not_finite
from fairlora.training.validation import ValidationPlan, selection_facts, with_validation


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
            model,
            inputs,
            terms,
            step,
            total,
            self.setup.teacher_context,
            self.setup.task_loss,
            self.setup.teacher_cache,
        )
        if model.training:
            hint = (
                f"Lower train.lr (now {self.args.learning_rate:g}) or check the data; checkpoints written "
                f"so far are kept in {self.args.output_dir}"
            )
            stop_if_not_finite(loss, parts, step, hint)
            self._record(parts)
        return (loss, outputs) if return_outputs else loss

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """HF's forward + backward; after the last micro-batch of a step, the method's step hooks run on
        the complete gradients BEFORE HF clips them (AFLoRA scores the unclipped gradients)."""
        loss = super().training_step(model, inputs, *args, **kwargs)
        if self.accelerator.sync_gradients:
            step, total = self.state.global_step, max(self.state.max_steps, 1)
            run_step_hooks(self.setup, self.optimizer, step, total, self.state.epoch)
        return loss

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


COMPLETE_MARKER = "fairlora_complete"  # written last into a checkpoint folder: everything else is there


class MarkComplete(TrainerCallback):
    """Added after every other callback: marks a checkpoint complete once all its files are written.

    HF writes a checkpoint file by file and a method adds its own state in `on_save` (AFLoRA's freezer),
    so a process killed while saving leaves a folder that looks like the newest checkpoint.
    """

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        """After the checkpoint and every method's state are on disk."""
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_text_atomic(folder / COMPLETE_MARKER, str(state.global_step))


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest checkpoint whose saving finished (a folder a kill interrupted is passed over; with none,
    training starts again from step 0)."""
    if not checkpoint_dir.is_dir():
        return None
    folders = checkpoint_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
    complete = [p for p in folders if p.name.split("-")[-1].isdigit() and (p / COMPLETE_MARKER).is_file()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


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


FREED_MEMORY_ENV = "MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824"


def warn_keep_freed_memory(enabled: bool) -> None:
    """train.keep_freed_memory is deprecated: glibc's thresholds are the process's, set before it starts.

    Setting them with mallopt() turns glibc's dynamic mmap threshold off for good (no call turns it back
    on), so a library cannot scope the change to training; the environment variables do the same for
    the whole process, visibly.
    """
    if enabled:
        warnings.warn(
            f"train.keep_freed_memory is deprecated and does nothing; to keep freed memory in the heap "
            f"(CPU, glibc) start the process with {FREED_MEMORY_ENV} (e.g. `{FREED_MEMORY_ENV} fairlora "
            f"train ...`) and remove the key",
            FutureWarning,
            stacklevel=2,
        )


def build_trainer(
    cfg: RunConfig,
    setup: MethodSetup,
    tokenizer: PreTrainedTokenizerBase,
    train_frame: pd.DataFrame,
    output_dir: Path,
    validation: ValidationPlan | None = None,
) -> FairloraTrainer:
    """The Trainer for this run, with the method's loss terms and callbacks (and `validation`'s eval)."""
    task = get_task(cfg.task)
    evaluation = validation.trainer_kwargs(tokenizer, cfg.model.max_length) if validation else {}
    trainer = FairloraTrainer(
        model=setup.model,
        args=with_validation(training_arguments(cfg, output_dir), cfg),
        train_dataset=task.encode(train_frame, tokenizer, cfg.model.max_length),
        data_collator=task.collator(tokenizer),
        processing_class=tokenizer,
        callbacks=setup.callbacks,
        setup=setup,
        train_config=cfg.train,
        **evaluation,
    )
    trainer.validation = validation
    for callback in validation.callbacks() if validation else []:
        trainer.add_callback(callback)
    trainer.add_callback(CountTrainable(trainer.counter))
    trainer.add_callback(MarkComplete())  # last: runs after the methods' own on_save
    return trainer


def run_training(trainer: FairloraTrainer, checkpoint_dir: Path, resume: bool) -> dict[str, float]:
    """Train (resuming from the last complete checkpoint when asked and one exists); return metrics, facts."""
    last = last_complete_checkpoint(checkpoint_dir) if resume else None
    warn_keep_freed_memory(trainer.train_config.keep_freed_memory)
    output = trainer.train(resume_from_checkpoint=last)
    if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        checkpoint_dir.rmdir()  # save_strategy=no leaves an empty folder behind
    metrics = {key: float(value) for key, value in output.metrics.items()}
    facts = trainer.setup.facts() if trainer.setup.facts is not None else {}
    if getattr(trainer, "validation", None) is not None:
        state, figure = trainer.state, trainer.validation.figure
        facts["validation"] = selection_facts(
            state.log_history, state.best_model_checkpoint, figure, state.global_step, state.max_steps
        )
    return metrics | trainer.counter.facts(trainer.setup.model) | facts
