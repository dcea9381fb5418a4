"""Fine-tuning methods, registered by name: each wraps a model and returns a MethodSetup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn
from transformers.pytorch_utils import Conv1D

from fairlora.config import METHOD_NAMES, RunConfig
from fairlora.methods.base import LossTerm, MethodSetup, count_parameters
from fairlora.methods.full import apply_full, apply_none, load_head
from fairlora.methods.lora import apply_lora, load_adapter, resolve_targets
from fairlora.models import LoadedModel, default_target_modules, linear_module_names, model_type

__all__ = [
    "LossTerm",
    "MethodSetup",
    "apply_method",
    "count_parameters",
    "describe_methods",
    "load_trained",
    "validate_method",
]

METHOD_DESCRIPTIONS = {
    "none": "base model, frozen (classification: only the new head trains)",
    "full": "full fine-tuning: every weight trains",
    "lora": "LoRA (PEFT): r, alpha, dropout, target modules, fractional rank",
    "pissa": "PiSSA-initialised LoRA (PEFT): principal singular vectors, optional randomized SVD",
}
ADAPTER_METHODS = ("lora", "pissa")


def describe_methods() -> dict[str, str]:
    """Method name -> one-line description, for `fairlora list methods`."""
    assert set(METHOD_DESCRIPTIONS) == set(METHOD_NAMES)
    return dict(METHOD_DESCRIPTIONS)


def _targets(cfg: RunConfig, names: list[str], kind: str) -> list[str]:
    defaults = cfg.lora.target_modules or default_target_modules(kind)
    return resolve_targets(cfg, names, defaults)


def validate_method(cfg: RunConfig, num_labels: int = 2) -> None:
    """Check method settings against the model's architecture without loading any weights."""
    if cfg.method in ADAPTER_METHODS:
        _targets(cfg, linear_module_names(cfg.model, cfg.task, num_labels), model_type(cfg.model))


def apply_method(cfg: RunConfig, loaded: LoadedModel) -> MethodSetup:
    """Wrap the loaded model with the configured method."""
    appliers: dict[str, Callable[[], MethodSetup]] = {
        "none": lambda: apply_none(loaded.model, cfg.task),
        "full": lambda: apply_full(loaded.model, loaded.tokenizer),
        "lora": lambda: _apply_adapter(cfg, loaded),
        "pissa": lambda: _apply_adapter(cfg, loaded),
    }
    return appliers[cfg.method]()


def _apply_adapter(cfg: RunConfig, loaded: LoadedModel) -> MethodSetup:
    names = [n for n, m in loaded.model.named_modules() if isinstance(m, (nn.Linear, Conv1D))]
    targets = _targets(cfg, names, loaded.model.config.model_type)
    return apply_lora(cfg, loaded.model, targets)


def load_trained(cfg: RunConfig, loaded: LoadedModel, weights_dir: Path) -> nn.Module:
    """Put the weights a run saved in `weights_dir` onto the freshly loaded base model."""
    if cfg.method in ADAPTER_METHODS:
        return load_adapter(loaded.model, weights_dir)
    if cfg.method == "none":
        return load_head(loaded.model, weights_dir)
    return loaded.model  # full: `loaded` was loaded from weights_dir itself
