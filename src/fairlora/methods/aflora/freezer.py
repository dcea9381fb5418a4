"""AFLoRA's adaptive freezing of the A/B projections (and the freeze-by-epoch baseline).

Per still-trainable matrix: sensitivity I = |grad| averaged over a window of steps; at each window
boundary Ibar <- b1 Ibar + (1 - b1) I_window, Ubar <- b2 Ubar + (1 - b2) |I_window - Ibar|; the
element scores are Ibar * Ubar and the matrix's score is their mean. Every window, with the threshold
of `cubic_threshold`, the `reference` rule pools the ELEMENT scores of all trainable matrices (M of
them) and freezes each matrix whose mean is below the k-th smallest, k = floor(M (1 - threshold)) >= 1:
nothing freezes early, then matrices freeze in bursts. The `ranked` rule ranks the N matrix means
instead (k = floor(N (1 - threshold))), which freezes k - 1 matrices from the first check. The
gradients are read before clipping. Freezing turns requires_grad off, drops the gradient and removes
the optimizer state, so AdamW (momentum, weight decay) never moves a frozen matrix again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from fairlora.methods.aflora.config import AfloraSection, freezing_window
from fairlora.methods.aflora.layer import AfloraModule
from fairlora.methods.base import StepContext
from fairlora.regularizers.schedules import cubic_threshold

SENSITIVITY_TENSORS = ("window_sum", "ibar", "ubar")  # per trainable matrix, in the saved state


@dataclass
class MatrixSensitivity:
    """The sensitivity statistics of one A or B matrix."""

    name: str
    param: nn.Parameter
    window_sum: torch.Tensor | None = None
    window_count: int = 0
    ibar: torch.Tensor | None = None
    ubar: torch.Tensor | None = None

    def observe(self) -> None:
        """Add this step's |grad| to the window (a NaN/Inf or missing gradient is skipped)."""
        grad = self.param.grad
        if grad is None or not bool(torch.isfinite(grad).all()):
            return
        magnitude = grad.detach().abs().float()
        self.window_sum = magnitude if self.window_sum is None else self.window_sum + magnitude
        self.window_count += 1

    def close_window(self, beta1: float, beta2: float) -> None:
        """Fold the window's mean sensitivity into the EMAs and start a new window."""
        if self.window_sum is None:
            return
        current = self.window_sum / self.window_count
        if self.ibar is None or self.ubar is None:
            self.ibar, self.ubar = torch.zeros_like(current), torch.zeros_like(current)
        self.ibar = beta1 * self.ibar + (1 - beta1) * current
        self.ubar = beta2 * self.ubar + (1 - beta2) * (current - self.ibar).abs()
        self.window_sum, self.window_count = None, 0

    def element_scores(self) -> torch.Tensor:
        """Ibar * Ubar per element; zeros before the first window closes."""
        if self.ibar is None or self.ubar is None:
            return torch.zeros(self.param.shape, device=self.param.device)
        return self.ibar * self.ubar

    def score(self) -> float:
        """mean(Ibar * Ubar); 0 before the first window closes."""
        return float(self.element_scores().mean())


def below_element_quantile(scores: dict[str, torch.Tensor], threshold: float) -> list[str]:
    """The reference rule: names whose MEAN element score is below the k-th smallest of all pooled
    element scores, k = floor(M (1 - threshold)) >= 1 over the M elements; all at threshold 0."""
    if threshold <= 0.0:
        return list(scores)
    if not scores:
        return []
    pooled = torch.cat([values.detach().flatten().float() for values in scores.values()])
    k = max(1, math.floor(pooled.numel() * (1.0 - threshold)))
    cutoff = torch.kthvalue(pooled.cpu(), k).values
    return [name for name, values in scores.items() if values.detach().float().mean().cpu() < cutoff]


def matrices_to_freeze(scores: dict[str, float], threshold: float) -> list[str]:
    """The ranked rule: names whose score is below the k-th smallest of the N scores,
    k = floor(N (1 - threshold)) >= 1; all at threshold 0."""
    if threshold <= 0.0:
        return list(scores)
    if not scores:
        return []
    k = max(1, math.floor(len(scores) * (1.0 - threshold)))
    cutoff = sorted(scores.values())[k - 1]
    return [name for name, score in scores.items() if score < cutoff]


def freeze_parameter(param: nn.Parameter, optimizer: Any) -> None:
    """Stop every update of `param`: no gradient, no optimizer state (AdamW skips tensors without grad)."""
    param.requires_grad_(False)
    param.grad = None
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    if inner is not None:
        inner.state.pop(param, None)


@dataclass
class AfloraFreezer:
    """Decides, once per optimizer step, which A/B matrices freeze; records when each one froze."""

    section: AfloraSection
    modules: list[AfloraModule]
    epochs: float | None = None  # train.epochs, for freeze_by_epoch when the loop gives no epoch
    trainable: dict[str, MatrixSensitivity] = field(default_factory=dict)
    freeze_steps: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for module in self.modules:
            for kind, projection in (("A", module.a), ("B", module.b)):
                name = f"{module.name}.{kind}"
                self.freeze_steps[name] = None
                self.trainable[name] = MatrixSensitivity(name, projection.weight)

    def freeze_square(self) -> None:
        """The encoder recipe: A/B of layers with in == out are frozen from step 0."""
        square = [f"{m.name}.{k}" for m in self.modules if m.square for k in ("A", "B")]
        self.freeze(square, step=0, optimizer=None)

    def reapply(self) -> None:
        """Turn requires_grad off again for frozen matrices (PEFT's set_adapter turns it back on)."""
        frozen = {name for name, step in self.freeze_steps.items() if step is not None}
        for module in self.modules:
            for kind, projection in (("A", module.a), ("B", module.b)):
                if f"{module.name}.{kind}" in frozen:
                    projection.weight.requires_grad_(False)

    def __call__(self, context: StepContext) -> None:
        """The step hook: gradients of this step are in place, the optimizer has not stepped yet."""
        if not self.trainable:
            return
        if self.section.freeze_by_epoch is not None:
            if self._epoch(context) >= self.section.freeze_by_epoch:
                self.freeze(list(self.trainable), context.step, context.optimizer)
            return
        number = context.step + 1  # 1-based count of optimizer steps, this one included
        for matrix in self.trainable.values():
            matrix.observe()
        boundary = number % self.section.window == 0
        if boundary:
            for matrix in self.trainable.values():
                matrix.close_window(self.section.beta1, self.section.beta2)
        t_i, t_f = freezing_window(self.section, context.total_steps)
        threshold = cubic_threshold(number, t_i, t_f, context.total_steps)
        if threshold <= 0.0 or (boundary and threshold < 1.0):
            self.freeze(self._decide(threshold), context.step, context.optimizer)

    def _decide(self, threshold: float) -> list[str]:
        """The trainable matrices to freeze at `threshold`, by `aflora.freeze_rule`."""
        if self.section.freeze_rule == "ranked":
            scores = {name: matrix.score() for name, matrix in self.trainable.items()}
            return matrices_to_freeze(scores, threshold)
        elements = {name: matrix.element_scores() for name, matrix in self.trainable.items()}
        return below_element_quantile(elements, threshold)

    def _epoch(self, context: StepContext) -> float:
        if context.epoch is not None:
            return context.epoch
        return context.step / max(context.total_steps, 1) * (self.epochs or 1.0)

    def freeze(self, names: list[str], step: int, optimizer: Any) -> None:
        """Freeze the named trainable matrices now, recording `step` as their freeze step."""
        for name in names:
            matrix = self.trainable.pop(name)
            freeze_parameter(matrix.param, optimizer)
            self.freeze_steps[name] = step

    def facts(self) -> dict[str, Any]:
        """Freeze step (updates received) of every A/B matrix, None if it never froze."""
        return {"aflora_freeze_steps": dict(self.freeze_steps)}

    def get_extra_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Freeze steps, and the EMAs and open window of every trainable matrix (tensors + JSON facts)."""
        tensors, counts = {}, {}
        for name, matrix in self.trainable.items():
            for key in SENSITIVITY_TENSORS:
                value = getattr(matrix, key)
                if value is not None:
                    tensors[f"{name}.{key}"] = value.detach().clone().contiguous()
            counts[name] = matrix.window_count
        return tensors, {"freeze_steps": dict(self.freeze_steps), "window_counts": counts}

    def set_extra_state(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], optimizer: Any = None
    ) -> None:
        """Back to a `get_extra_state` state: matrices frozen there are frozen, the others train again."""
        self.trainable = {}
        for module in self.modules:
            for kind, projection in (("A", module.a), ("B", module.b)):
                name = f"{module.name}.{kind}"
                self.freeze_steps[name] = meta["freeze_steps"].get(name)
                if self.freeze_steps[name] is not None:
                    freeze_parameter(projection.weight, optimizer)
                    continue
                projection.weight.requires_grad_(True)
                matrix = MatrixSensitivity(name, projection.weight)
                matrix.window_count = meta["window_counts"].get(name, 0)
                for key in SENSITIVITY_TENSORS:
                    setattr(matrix, key, tensors.get(f"{name}.{key}"))
                self.trainable[name] = matrix


FREEZER_FILE = "aflora_freezer.safetensors"
FREEZER_META = "aflora_freezer.json"


def save_freezer(freezer: AfloraFreezer, folder: Path) -> None:
    """Write the freezer's state (freeze steps, EMAs, open window) into a checkpoint folder."""
    tensors, meta = freezer.get_extra_state()
    save_file(tensors, str(folder / FREEZER_FILE))
    (folder / FREEZER_META).write_text(json.dumps(meta, indent=1))


def load_freezer(freezer: AfloraFreezer, folder: Path, optimizer: Any) -> bool:
    """Restore a state written by `save_freezer` (False when the folder has none)."""
    if not (folder / FREEZER_META).is_file():
        return False
    meta = json.loads((folder / FREEZER_META).read_text())
    freezer.set_extra_state(load_file(str(folder / FREEZER_FILE)), meta, optimizer)
    return True


class FreezerCheckpoints(TrainerCallback):
    """HF Trainer: the freezer's state goes into every checkpoint and comes back on --resume."""

    def __init__(self, freezer: AfloraFreezer) -> None:
        self.freezer = freezer

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After a checkpoint is written: add the freezer's state to it."""
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir():
            save_freezer(self.freezer, folder)

    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kw: Any) -> None:
        """On a resumed run, restore the state saved with its checkpoint."""
        if state.global_step > 0:
            load_freezer(
                self.freezer,
                Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}",
                optimizer,
            )
