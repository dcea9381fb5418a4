"""Fine-tuning methods, registered by name: each wraps a model and returns a MethodSetup.

A new method is one module that calls `register_method(Method(...))`; see methods/vera.py.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from fairlora.config import RunConfig
from fairlora.errors import ConfigError
from fairlora.methods.adapters import DEFAULT_ADAPTER
from fairlora.methods.balora import balora_enabled, balora_terms, check_balora, teacher_is_cached
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
from fairlora.quant import check_precision, check_quantization
from fairlora.regularizers.teacher_cache import TeacherCache

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


def validate_method(
    cfg: RunConfig, module_names: list[str], model_type: str, num_labels: int | None = None
) -> None:
    """Check method settings (and the balora: block) against the model, loading nothing.

    `module_names` come from the meta device; `num_labels` (classification) checks balora.svd_k.
    """
    check_lora_options(cfg)
    check_quantization(cfg)
    check_precision(cfg)
    check = get_method(cfg.method).check
    if check is not None:
        check(cfg, module_names, model_type)
    check_balora(cfg, num_labels)


LORA_OPTIONS = ("use_dora", "use_rslora", "bias", "modules_to_save", "init")


def check_lora_options(cfg: RunConfig) -> None:
    """PEFT LoRA options (lora.use_dora, ...) are set only for methods that read the lora: section."""
    section = get_method(cfg.method).section
    lora = getattr(cfg, "lora", None)
    if lora is None or (section is not None and section[0] == "lora"):
        return
    defaults = type(lora)()
    changed = [key for key in LORA_OPTIONS if getattr(lora, key) != getattr(defaults, key)]
    if changed:
        readers = [name for name in method_names() if (get_method(name).section or ("",))[0] == "lora"]
        raise ConfigError(
            f"lora.{changed[0]}: method {cfg.method} does not read the lora: section (PEFT LoRA options "
            f"apply to {', '.join(readers)}); remove lora.{changed[0]} or change the method"
        )


def apply_method(cfg: RunConfig, loaded: LoadedModel, adapter_name: str = DEFAULT_ADAPTER) -> MethodSetup:
    """Wrap the loaded model with the configured method (a further adapter when already wrapped).

    With the balora: block on (method ba-lora, or balora.enabled: true) BA-LoRA's loss terms are added,
    whatever the method: they use the method's teacher (the original model).
    """
    setup = get_method(cfg.method).apply(cfg, loaded, adapter_name)
    if balora_enabled(cfg):
        terms = balora_terms(cfg, int(getattr(loaded.model.config, "num_labels", 0) or 0))
        if any(term.needs_teacher for term in terms) and setup.teacher is None:
            raise ConfigError(
                f"balora.cr: method {cfg.method!r} gives no teacher (the original model); use an adapter "
                f"method or set balora.cr: false"
            )
        setup.loss_terms = [*setup.loss_terms, *terms]
        if teacher_is_cached(cfg) and any(term.needs_teacher for term in terms):
            setup.teacher_cache = TeacherCache()
    return setup


def load_trained(cfg: RunConfig, loaded: LoadedModel, weights_dir: Path) -> nn.Module:
    """Put the weights a run saved in `weights_dir` onto the freshly loaded base model."""
    return get_method(cfg.method).load(cfg, loaded, weights_dir)
