"""LoRA and PiSSA through PEFT, with fractional rank (LoRA on a share of the target modules)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
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
    # PiSSA moves the principal part of W into the adapter (W_res = W - s*B0*A0). Keep A0, B0 so the
    # saved adapter is plain LoRA on the ORIGINAL weights: s*(B*A - B0*A0) = s*[B, -B0] @ [A; A0].
    initial = {
        k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items() if ".lora_" in k
    }

    def save(path: Path) -> None:
        peft_model.save_pretrained(path)
        pissa_to_lora(path, initial)

    return MethodSetup(model=peft_model, save=save)


def pissa_to_lora(adapter_dir: Path, initial: dict[str, torch.Tensor]) -> None:
    """Rewrite a saved PiSSA adapter as a rank-2r LoRA adapter that applies to the original base model."""
    weights_file = adapter_dir / "adapter_model.safetensors"
    state = load_file(str(weights_file))
    for key in [k for k in state if ".lora_A." in k]:
        b_key = key.replace(".lora_A.", ".lora_B.")
        state[key] = torch.cat([state[key], initial[key]], dim=0).contiguous()
        state[b_key] = torch.cat([state[b_key], -initial[b_key]], dim=1).contiguous()
    save_file(state, str(weights_file), metadata={"format": "pt"})
    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config |= {"r": 2 * config["r"], "lora_alpha": 2 * config["lora_alpha"], "init_lora_weights": True}
    config_file.write_text(json.dumps(config, indent=2))


def load_adapter(model: nn.Module, adapter_dir: Path) -> nn.Module:
    """Attach a saved PEFT adapter to a freshly loaded base model (inference mode)."""
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
