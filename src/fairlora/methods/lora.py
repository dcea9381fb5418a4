"""LoRA and PiSSA through PEFT, with fractional rank (LoRA on a share of the target modules)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from fairlora.config import LoraConfig as LoraSection
from fairlora.config import RunConfig
from fairlora.errors import ConfigError
from fairlora.methods.base import MethodSetup

TASK_TYPES = {"classification": TaskType.SEQ_CLS, "causal_lm": TaskType.CAUSAL_LM}


def matching_modules(module_names: list[str], targets: list[str]) -> list[str]:
    """Full names of the modules whose name is, or ends with, one of `targets` (PEFT's rule), in order."""
    return [n for n in module_names if any(n == t or n.endswith("." + t) for t in targets)]


def select_fraction(names: list[str], section: LoraSection, seed: int) -> list[str]:
    """The share `section.fraction` of `names`, from the front, the back, or at random (seeded)."""
    count = max(1, round(section.fraction * len(names)))
    if section.fraction_from == "front":
        return names[:count]
    if section.fraction_from == "back":
        return names[-count:]
    chosen = set(random.Random(seed).sample(names, count))
    return [n for n in names if n in chosen]


def resolve_targets(cfg: RunConfig, linear_names: list[str], defaults: list[str]) -> list[str]:
    """Validate lora.target_modules against the model's linear layers and apply the fraction."""
    targets = cfg.lora.target_modules or defaults
    head = ("classifier", "score")
    candidates = [n for n in linear_names if n.split(".")[0] not in head]
    missing = [t for t in targets if not matching_modules(candidates, [t])]
    if missing:
        suffixes = sorted({n.split(".")[-1] for n in candidates})
        raise ConfigError(
            f"lora.target_modules: {missing} not found in model {cfg.model.name!r}; "
            f"its linear layers are named: {', '.join(suffixes)}"
        )
    return select_fraction(matching_modules(candidates, targets), cfg.lora, cfg.seed)


def peft_config(cfg: RunConfig, target_names: list[str]) -> LoraConfig:
    """The PEFT LoraConfig for this run (PiSSA init for method=pissa)."""
    init: bool | str = True
    if cfg.method == "pissa":
        init = f"pissa_niter_{cfg.lora.pissa_niter}" if cfg.lora.pissa_niter else "pissa"
    return LoraConfig(
        task_type=TASK_TYPES[cfg.task],
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=target_names,
        init_lora_weights=init,
    )


def apply_lora(cfg: RunConfig, model: nn.Module, target_names: list[str]) -> MethodSetup:
    """Wrap `model` with a LoRA (or PiSSA) adapter; saving writes a standard PEFT adapter folder."""
    peft_model = get_peft_model(model, peft_config(cfg, target_names))
    if cfg.method != "pissa":
        return MethodSetup(model=peft_model, save=lambda path: peft_model.save_pretrained(path))
    # PiSSA changes the base weights (W_res); keep the initial adapter so the saved adapter is
    # converted to plain LoRA that applies to the ORIGINAL base model (loadable anywhere).
    holder = tempfile.TemporaryDirectory(prefix="fairlora-pissa-")
    init_dir = Path(holder.name) / "pissa_init"
    peft_model.peft_config["default"].init_lora_weights = True
    peft_model.save_pretrained(init_dir)
    peft_model.peft_config["default"].init_lora_weights = peft_config(cfg, target_names).init_lora_weights

    def save(path: Path) -> None:
        assert holder.name  # keeps the initial adapter alive as long as the saver
        peft_model.save_pretrained(path, path_initial_model_for_weight_conversion=str(init_dir))

    return MethodSetup(model=peft_model, save=save)


def load_adapter(model: nn.Module, adapter_dir: Path) -> nn.Module:
    """Attach a saved PEFT adapter to a freshly loaded base model (inference mode)."""
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
