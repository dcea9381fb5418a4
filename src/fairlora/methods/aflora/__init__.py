"""AFLoRA: adaptive freezing of low-rank adapters (registers method `aflora`).

Per target Linear: y = W0 x + s * b * B(d * A(dropout(x))), A (r x in) and B (out x r) per module,
Kaiming-uniform; d (init 0.1) and b (init 0) train throughout; A and B freeze adaptively (see
`freezer`). The adapter folder is a plain PEFT LoRA adapter (vectors folded in) plus the raw AFLoRA
tensors, from which fairlora reloads identical outputs.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from fairlora.config import RunConfig
from fairlora.errors import ConfigError, RunDirError
from fairlora.methods.adapters import (
    adapter_setup,
    attach,
    linear_names,
    peft_task_kwargs,
    resolve_targets,
    save_adapter,
    vectors_in_lora_modules,
)
from fairlora.methods.aflora.config import AfloraSection, freezing_window
from fairlora.methods.aflora.freezer import AfloraFreezer, FreezerCheckpoints
from fairlora.methods.aflora.layer import VECTOR, fold_state, inject
from fairlora.methods.base import HEAD_MODULES, MethodSetup
from fairlora.methods.registry import Method, register_method
from fairlora.models import LoadedModel, linear_module_shapes
from fairlora.tasks import get_task

__all__ = ["AfloraFreezer", "AfloraSection", "apply_aflora", "load_aflora"]

RAW_FILE = "aflora_model.safetensors"  # A, B, d, b as trained (adapter_model.safetensors is folded)
ENCODER_TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
DEFAULT_TARGETS = {
    "bert": ENCODER_TARGETS,
    "roberta": ENCODER_TARGETS,
    "xlm-roberta": ENCODER_TARGETS,
    "deberta-v2": [
        "query_proj",
        "key_proj",
        "value_proj",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ],
    "llama": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
}


def aflora_targets(cfg: RunConfig, module_names: list[str], model_type: str) -> list[str]:
    """Full names of the Linear layers that get AFLoRA; a clear error when the model has none."""
    body = [n for n in module_names if n.split(".")[0] not in HEAD_MODULES and n != "lm_head"]
    if not body:
        raise ConfigError(
            f"aflora: model {cfg.model.name!r} has no nn.Linear layers outside its head, and AFLoRA adapts "
            f"Linear layers; use method=full or a transformer model"
        )
    targets = cfg.aflora.target_modules or DEFAULT_TARGETS.get(model_type)
    if targets is None:
        raise ConfigError(
            f"aflora: no default target modules for model type {model_type!r}; set aflora.target_modules "
            f"to its attention and FFN projections, e.g. aflora.target_modules=[q_proj,v_proj,up_proj]"
        )
    return resolve_targets(body, targets, "aflora", cfg.model.name)


def check_ranks(shapes: dict[str, tuple[int, int]], r: int) -> None:
    """ConfigError when the rank exceeds a target layer's input or output size ((in, out) by name)."""
    for name, (features_in, features_out) in shapes.items():
        if r > min(features_in, features_out):
            raise ConfigError(
                f"aflora.r={r} is larger than layer {name!r} ({features_in} in, {features_out} out); "
                f"use aflora.r <= {min(features_in, features_out)}"
            )


def layer_shapes(model: nn.Module, targets: list[str]) -> dict[str, tuple[int, int]]:
    """(in, out) features of the named Linear layers of a loaded model (inside PEFT wrappers too)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a shared, wrapped base
    modules = dict(base.named_modules())
    layers = {name: getattr(modules[name], "base_layer", modules[name]) for name in targets}
    return {name: (layer.weight.shape[1], layer.weight.shape[0]) for name, layer in layers.items()}


def lora_config(cfg: RunConfig, targets: list[str]) -> LoraConfig:
    """The PEFT LoraConfig the AFLoRA path lives in (scaling 1 unless aflora.alpha is set)."""
    section: AfloraSection = cfg.aflora
    return LoraConfig(
        **peft_task_kwargs(get_task(cfg.task)),
        r=section.r,
        lora_alpha=section.alpha if section.alpha is not None else section.r,
        lora_dropout=section.dropout,
        target_modules=targets,
    )


def apply_aflora(cfg: RunConfig, loaded: LoadedModel, adapter_name: str) -> MethodSetup:
    """Add an AFLoRA adapter named `adapter_name`, with its freezer as a step hook."""
    section: AfloraSection = cfg.aflora
    targets = aflora_targets(cfg, linear_names(loaded.model), loaded.model.config.model_type)
    check_ranks(layer_shapes(loaded.model, targets), section.r)
    model = attach(loaded, lora_config(cfg, targets), adapter_name)
    freezer = AfloraFreezer(
        section,
        inject(model, adapter_name, section.d_initial, section.b_initial),
        epochs=cfg.train.epochs if cfg.train.max_steps is None else None,
    )
    square = section.freeze_square_from_start
    if square is None:
        square = not loaded.is_decoder  # the encoder (GLUE) recipe freezes square layers' A/B at step 0
    if square:
        freezer.freeze_square()

    return adapter_setup(
        model,
        adapter_name,
        restore_trainable=freezer.reapply,  # after set_adapter and after the teacher (disable_adapter)
        save=lambda path: save_aflora(model, adapter_name, path),
        step_hooks=[freezer],
        callbacks=[FreezerCheckpoints(freezer)],
        facts=freezer.facts,
        extra_state=freezer,
    )


def save_aflora(model: nn.Module, adapter_name: str, path: Path) -> None:
    """A plain PEFT LoRA folder (vectors folded into A and B) plus the raw AFLoRA tensors."""
    with vectors_in_lora_modules():
        save_adapter(model, adapter_name, path)
    weights = Path(path) / "adapter_model.safetensors"
    raw = load_file(str(weights))
    save_file(raw, str(Path(path) / RAW_FILE), metadata={"format": "pt"})
    save_file(fold_state(raw), str(weights), metadata={"format": "pt"})


def load_aflora(cfg: RunConfig, loaded: LoadedModel, weights_dir: Path) -> nn.Module:
    """Rebuild the AFLoRA layers on a fresh base and load the raw tensors (outputs identical to training)."""
    file = Path(weights_dir) / RAW_FILE
    if not file.is_file():
        raise RunDirError(
            f"{file} not found: the AFLoRA adapter is incomplete; train the run again "
            f"(`fairlora train {Path(weights_dir).parent / 'config.yaml'} --overwrite`)"
        )
    targets = aflora_targets(cfg, linear_names(loaded.model), loaded.model.config.model_type)
    model = get_peft_model(loaded.model, lora_config(cfg, targets))
    inject(model, "default", cfg.aflora.d_initial, cfg.aflora.b_initial)
    result = set_peft_model_state_dict(model, load_file(str(file)))
    missing = [k for k in result.missing_keys if "lora_" in k or k.endswith(f".{VECTOR}")]
    if missing:
        raise RunDirError(f"{file}: tensors missing for {missing[:3]}; the adapter is damaged, train again")
    model.requires_grad_(False)
    return model.eval()


def check_aflora(cfg: RunConfig, module_names: list[str], model_type: str) -> None:
    """Targets exist; with train.max_steps set, t_initial + t_final fit (before anything is written)."""
    targets = aflora_targets(cfg, module_names, model_type)
    shapes = linear_module_shapes(cfg.model, cfg.task)
    check_ranks({name: shapes[name] for name in targets}, cfg.aflora.r)
    if cfg.train.max_steps is not None and cfg.aflora.freeze_by_epoch is None:
        freezing_window(cfg.aflora, cfg.train.max_steps)


register_method(
    Method(
        name="aflora",
        description="AFLoRA: per-layer A/B that freeze adaptively, trainable vectors d and b (ELoRA path)",
        apply=apply_aflora,
        load=load_aflora,
        weights_dir="adapter",
        section=("aflora", AfloraSection),
        check=check_aflora,
    )
)
