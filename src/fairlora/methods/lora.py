"""LoRA and PiSSA through PEFT, with fractional rank (LoRA on a share of the target modules)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as LORA_TARGETS
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from fairlora.config import RunConfig
from fairlora.errors import ConfigError
from fairlora.methods.adapters import (
    adapter_setup,
    attach,
    default_targets,
    linear_names,
    load_adapter,
    peft_task_kwargs,
    resolve_targets,
    save_adapter,
    select_fraction,
)
from fairlora.methods.base import HEAD_MODULES, MethodSetup
from fairlora.methods.registry import Method, register_method
from fairlora.models import LoadedModel, module_names
from fairlora.quant import REWRITING_INITS
from fairlora.tasks import get_task

OUTPUT_LAYERS = ("lm_head", "embed_out", "output")


class LoraSection(BaseModel):
    """`lora:` LoRA / PiSSA adapter settings (PEFT underneath)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    r: int = Field(8, ge=1, description="rank; use method=none for the base model")
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None,
        description="module name suffixes, or all-linear (every linear layer but the output and the head); "
        "None = PEFT's default for the model type (attention q/v)",
    )
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of target modules that get LoRA")
    fraction_from: Literal["front", "back", "random"] = "front"
    pissa_niter: int | None = Field(
        None, ge=1, description="pissa: randomized SVD iterations (pissa_niter_K); None = full SVD"
    )
    init: Literal["default", "gaussian", "orthogonal", "olora", "pissa"] = Field(
        "default",
        description="PEFT's init_lora_weights (default = B zero, A Kaiming); olora / pissa start from the "
        "base weights and are saved as plain LoRA on the original base",
    )
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (a trained magnitude vector)")
    use_rslora: bool = Field(
        False, description="rank-stabilized scaling alpha / sqrt(r) instead of alpha / r"
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="which biases train and are saved")
    modules_to_save: list[str] = Field(
        default_factory=list, description="further modules trained in full and saved (beyond the task head)"
    )


def lora_targets(cfg: RunConfig, module_names: list[str], model_type: str) -> list[str]:
    """Full names of the modules that get LoRA: the configured (or PEFT default) targets, fraction applied."""
    targets = cfg.lora.target_modules or default_targets(model_type, LORA_TARGETS, "lora")
    if targets == "all-linear":  # as PEFT: every linear layer but the output layer (and the task head)
        targets = [
            n
            for n in module_names
            if n.split(".")[-1] not in OUTPUT_LAYERS and n.split(".")[0] not in HEAD_MODULES
        ]
    names = resolve_targets(module_names, targets, "lora", cfg.model.name)
    return select_fraction(names, cfg.lora.fraction, cfg.lora.fraction_from, cfg.seed)


def peft_config(cfg: RunConfig, target_names: list[str], init: bool | str = True) -> LoraConfig:
    """The PEFT LoraConfig for this run (lora.use_dora / use_rslora / bias / modules_to_save included)."""
    task_kwargs = peft_task_kwargs(get_task(cfg.task))
    to_save = [*(task_kwargs.pop("modules_to_save", None) or []), *cfg.lora.modules_to_save]
    if init is True and cfg.lora.init in ("gaussian", "orthogonal"):
        init = cfg.lora.init
    return LoraConfig(
        **task_kwargs,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=target_names,
        init_lora_weights=init,
        use_dora=cfg.lora.use_dora or cfg.method == "dora",
        use_rslora=cfg.lora.use_rslora,
        bias=cfg.lora.bias,
        modules_to_save=to_save or None,
    )


def _targets_of(cfg: RunConfig, loaded: LoadedModel) -> list[str]:
    return lora_targets(cfg, linear_names(loaded.model), loaded.model.config.model_type)


def apply_lora(cfg: RunConfig, loaded: LoadedModel, adapter_name: str) -> MethodSetup:
    """Add a LoRA adapter named `adapter_name`; saving writes a standard PEFT adapter folder.

    lora.init olora / pissa start from the base weights: they go the PiSSA way (saved as plain LoRA).
    """
    if cfg.lora.init in REWRITING_INITS:
        return apply_pissa(cfg, loaded, adapter_name)
    model = attach(loaded, peft_config(cfg, _targets_of(cfg, loaded)), adapter_name)
    return adapter_setup(model, adapter_name)


def apply_pissa(cfg: RunConfig, loaded: LoadedModel, adapter_name: str) -> MethodSetup:
    """PiSSA: W = W_res + s*B0*A0 from the principal singular vectors; A, B train, W_res is frozen.

    Disabling the adapter would give W_res, not W. So a frozen copy of the initial adapter (A0, B0,
    and the head as it was at step 0) is kept as `<name>-init`: it is the teacher, and it turns the
    saved adapter into plain LoRA on the ORIGINAL weights: s*(B*A - B0*A0) = s*[B, -B0] @ [A; A0].
    On a base that already holds PiSSA adapters (collaboration), W_res is already there: the new
    adapter starts from the same (A0, B0), which depend on the base weights only.
    """
    niter = cfg.lora.pissa_niter
    targets = _targets_of(cfg, loaded)
    start = "olora" if cfg.lora.init == "olora" else "pissa"
    if isinstance(loaded.model, PeftModel):
        initial = pissa_start(loaded.model, peft_config(cfg, targets))
        model = attach(loaded, peft_config(cfg, targets), adapter_name)
        set_peft_model_state_dict(model, initial, adapter_name=adapter_name)
    else:
        init = f"pissa_niter_{niter}" if niter and start == "pissa" else start
        model = attach(loaded, peft_config(cfg, targets, init), adapter_name)
        initial = get_peft_model_state_dict(model, adapter_name=adapter_name)
    initial_name = f"{adapter_name}-init"
    model.add_adapter(initial_name, peft_config(cfg, targets))
    set_peft_model_state_dict(model, initial, adapter_name=initial_name)
    model.set_adapter(adapter_name)  # only the trained adapter requires grad

    @contextlib.contextmanager
    def teacher() -> Iterator[None]:
        model.set_adapter(initial_name)
        try:
            yield
        finally:
            model.set_adapter(adapter_name)

    def save(path: Path) -> None:
        save_adapter(model, adapter_name, path)
        start = {
            k: v
            for k, v in get_peft_model_state_dict(model, adapter_name=initial_name).items()
            if ".lora_" in k
        }
        pissa_to_lora(path, start)

    return adapter_setup(model, adapter_name, teacher=teacher, save=save)


def pissa_start(model: PeftModel, config: LoraConfig) -> dict[str, torch.Tensor]:
    """The initial state (A0, B0, head) of the PiSSA adapters already on `model`, whose base is W_res.

    ValueError unless every adapter there is PiSSA (or its `-init` copy) with `config`'s rank, alpha
    and targets: any other adapter would see its base weights change.
    """
    names = [name for name in model.peft_config if not name.endswith("-init")]
    pissa = [name for name in names if str(model.peft_config[name].init_lora_weights).startswith("pissa")]
    first = model.peft_config[pissa[0]] if pissa else None
    if first is None or any(f"{name}-init" not in model.peft_config for name in names):
        raise ValueError(
            "pissa rewrites the base weights: a shared base holds PiSSA adapters only, not "
            f"{sorted(set(names) - set(pissa))}"
        )
    same = (first.r, first.lora_alpha, set(first.target_modules))
    if same != (config.r, config.lora_alpha, set(config.target_modules)):
        raise ValueError("pissa adapters on one shared base need the same lora.r, lora.alpha and targets")
    return get_peft_model_state_dict(model, adapter_name=f"{pissa[0]}-init")


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
    # r doubles: alpha / r keeps its value with alpha doubled, alpha / sqrt(r) (rsLoRA) with alpha * sqrt(2)
    alpha = config["lora_alpha"] * (math.sqrt(2) if config.get("use_rslora") else 2)
    config |= {"r": 2 * config["r"], "lora_alpha": alpha, "init_lora_weights": True}
    config_file.write_text(json.dumps(config, indent=2))


def check_lora(cfg: RunConfig, linear: list[str], model_type: str) -> None:
    """The targets exist in the model and the options fit together (meta device, nothing written)."""
    lora_targets(cfg, linear, model_type)
    _check_modules_to_save(cfg)
    pissa = cfg.method in ("pissa", "ba-lora")
    if pissa and cfg.lora.init not in ("default", "pissa"):
        raise ConfigError(f"lora.init: {cfg.lora.init} conflicts with method: {cfg.method}; remove lora.init")
    rewrites = pissa or cfg.lora.init in REWRITING_INITS
    if rewrites and (cfg.lora.use_dora or cfg.method == "dora"):
        raise ConfigError(
            "lora.use_dora: a DoRA magnitude cannot be carried over to the original base when the "
            "init rewrites it (pissa / olora); use lora.init: default or use_dora: false"
        )
    if rewrites and (cfg.lora.bias != "none" or cfg.lora.modules_to_save):
        raise ConfigError(
            "lora.bias / lora.modules_to_save: pissa / olora adapters are saved as plain LoRA on the "
            "original base, which keeps only the LoRA matrices; leave them at their defaults"
        )


def _check_modules_to_save(cfg: RunConfig) -> None:
    """Each lora.modules_to_save entry names a module of the model (PEFT matches the end of the name)."""
    if not cfg.lora.modules_to_save:
        return
    names = module_names(cfg.model, cfg.task)
    for wanted in cfg.lora.modules_to_save:
        if not any(name.endswith(wanted) for name in names):
            shown = ", ".join(n for n in names if n.count(".") <= 1)
            raise ConfigError(
                f"lora.modules_to_save: no module of {cfg.model.name} is named {wanted!r} (or ends with "
                f"it); modules near the top: {shown}"
            )


def apply_dora(cfg: RunConfig, loaded: LoadedModel, adapter_name: str) -> MethodSetup:
    """DoRA: LoRA with lora.use_dora on."""
    return apply_lora(cfg, loaded, adapter_name)


SECTION = ("lora", LoraSection)
register_method(
    Method(
        name="lora",
        description="LoRA (PEFT): r, alpha, dropout, target modules, fractional rank",
        apply=apply_lora,
        load=load_adapter,
        weights_dir="adapter",
        section=SECTION,
        check=check_lora,
    )
)
register_method(
    Method(
        name="dora",
        description="DoRA (PEFT): LoRA with a trained weight magnitude (lora.use_dora: true)",
        apply=apply_dora,
        load=load_adapter,
        weights_dir="adapter",
        section=SECTION,
        check=check_lora,
    )
)
register_method(
    Method(
        name="pissa",
        description="PiSSA-initialised LoRA (PEFT): principal singular vectors, optional randomized SVD",
        apply=apply_pissa,
        load=load_adapter,
        weights_dir="adapter",
        section=SECTION,
        check=check_lora,
    )
)
