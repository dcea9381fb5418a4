"""Fine-tuning methods, registered by name: each wraps a model and returns a MethodSetup.

A new method is one module that calls `register_method(Method(...))`; see methods/vera.py.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fairlora.config import RunConfig
from fairlora.methods.adapters import DEFAULT_ADAPTER
from fairlora.methods.base import MethodSetup, count_parameters
from fairlora.methods.registry import (
    Method,
    describe_methods,
    get_method,
    method_names,
    register_method,
    register_section,
)
from fairlora.models import LoadedModel

__all__ = [
    "Method",
    "MethodSetup",
    "apply_method",
    "count_parameters",
    "describe_methods",
    "get_method",
    "load_trained",
    "method_names",
    "register_method",
    "register_section",
    "validate_method",
]


def validate_method(cfg: RunConfig, module_names: list[str], model_type: str) -> None:
    """Check method settings against the model's modules (names from the meta device), loading nothing."""
    check = get_method(cfg.method).check
    if check is not None:
        check(cfg, module_names, model_type)


def apply_method(cfg: RunConfig, loaded: LoadedModel, adapter_name: str = DEFAULT_ADAPTER) -> MethodSetup:
    """Wrap the loaded model with the configured method (a further adapter when already wrapped)."""
    return get_method(cfg.method).apply(cfg, loaded, adapter_name)


def load_trained(cfg: RunConfig, loaded: LoadedModel, weights_dir: Path) -> nn.Module:
    """Put the weights a run saved in `weights_dir` onto the freshly loaded base model."""
    return get_method(cfg.method).load(cfg, loaded, weights_dir)
