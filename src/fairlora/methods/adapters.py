"""What every PEFT-based method shares: target modules, named adapters on one base, save and load."""

from __future__ import annotations

import contextlib
import random
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from peft import PeftConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from torch import nn
from transformers.pytorch_utils import Conv1D

from fairlora.errors import ConfigError, ModelError
from fairlora.methods.base import HEAD_MODULES, MethodSetup
from fairlora.models import LoadedModel
from fairlora.tasks import Task

DEFAULT_ADAPTER = "default"
# transformers 5 names the ViT / Swin attention projections q_proj / k_proj / v_proj; PEFT's default
# mappings know these models by their older names (query / value) or not at all.
VISION_TARGETS = {"vit": ["q_proj", "v_proj"], "swin": ["q_proj", "v_proj"]}


def peft_task_kwargs(task: Task) -> dict[str, Any]:
    """task_type / modules_to_save of a PEFT config for `task`.

    A task that names its head (`peft_modules_to_save`, image classification) gets PEFT's generic
    wrapper, which hands the batch to the model untouched, with that head trained and saved; the
    others get their PEFT task type (sequence classification keeps its classifier / score head).
    """
    head = getattr(task, "peft_modules_to_save", None)
    if head:
        return {"task_type": None, "modules_to_save": list(head)}
    return {"task_type": task.peft_task_type}


def linear_names(model: nn.Module) -> list[str]:
    """Dotted names of the base model's nn.Linear (and GPT-2 Conv1D) modules, with or without adapters."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    names, wrapped = [], ()
    for name, module in base.named_modules():
        if wrapped and name.startswith(wrapped):
            continue  # the parts PEFT put inside a wrapped layer
        if isinstance(module, (BaseTunerLayer, ModulesToSaveWrapper)):
            names.append(name)
            wrapped = (*wrapped, name + ".")
        elif isinstance(module, (nn.Linear, Conv1D)):
            names.append(name)
    return names


def default_targets(model_type: str, mapping: dict[str, list[str]], section: str) -> list[str]:
    """PEFT's default target modules of a method for a config.model_type (ViT / Swin: q_proj, v_proj)."""
    if model_type in VISION_TARGETS:
        return list(VISION_TARGETS[model_type])
    if model_type not in mapping:
        raise ModelError(
            f"no default target modules for model type {model_type!r}: set {section}.target_modules "
            f"to the names of its attention projections, e.g. {section}.target_modules=[q_proj,v_proj]"
        )
    return list(mapping[model_type])


def matching_modules(module_names: list[str], targets: list[str]) -> list[str]:
    """Full names of the modules whose name is, or ends with, one of `targets` (PEFT's rule), in order."""
    return [n for n in module_names if any(n == t or n.endswith("." + t) for t in targets)]


def select_fraction(names: list[str], fraction: float, start: str, seed: int) -> list[str]:
    """The share `fraction` of `names`, from the front, the back, or at random (seeded)."""
    count = max(1, round(fraction * len(names)))
    if start == "front":
        return names[:count]
    if start == "back":
        return names[-count:]
    chosen = set(random.Random(seed).sample(names, count))
    return [n for n in names if n in chosen]


def resolve_targets(module_names: list[str], targets: list[str], section: str, model_name: str) -> list[str]:
    """Full names of the target modules outside the task head; a clear error for unknown targets."""
    candidates = [n for n in module_names if n.split(".")[0] not in HEAD_MODULES]
    missing = [t for t in targets if not matching_modules(candidates, [t])]
    if missing:
        suffixes = sorted({n.split(".")[-1] for n in candidates})
        raise ConfigError(
            f"{section}.target_modules: {missing} not found in model {model_name!r}; "
            f"its linear layers are named: {', '.join(suffixes)}"
        )
    return matching_modules(candidates, targets)


def attach(loaded: LoadedModel, config: PeftConfig, adapter_name: str) -> PeftModel:
    """Wrap the base in PEFT, or add `adapter_name` to an already wrapped base (no copy of the base)."""
    if isinstance(loaded.model, PeftModel):
        if adapter_name in loaded.model.peft_config:
            raise ConfigError(
                f"adapter {adapter_name!r} already exists on this base model; choose another name"
            )
        loaded.model.add_adapter(adapter_name, config)
        loaded.model.set_adapter(adapter_name)
        return loaded.model
    loaded.model = get_peft_model(loaded.model, config, adapter_name=adapter_name)
    return loaded.model


def adapter_setup(model: PeftModel, adapter_name: str, **kwargs: Any) -> MethodSetup:
    """The MethodSetup of one named adapter: save writes only it; the teacher disables adapters.

    `activate` switches to it and then runs `restore_trainable` (PEFT's set_adapter turns every tensor
    of the adapter trainable); `MethodSetup.teacher_context` runs it on leaving the teacher.
    """
    restore = kwargs.get("restore_trainable", lambda: None)

    def activate() -> None:
        if model.active_adapter != adapter_name:
            model.set_adapter(adapter_name)
            restore()

    def save(path: Path) -> None:
        save_adapter(model, adapter_name, path)

    kwargs.setdefault("activate", activate)
    kwargs.setdefault("teacher", lambda: _disabled(model, kwargs["activate"]))
    kwargs.setdefault("save", save)
    return MethodSetup(model=model, adapter_name=adapter_name, **kwargs)


@contextlib.contextmanager
def _disabled(model: PeftModel, activate: Any) -> Iterator[None]:
    """Adapters off; PEFT's modules_to_save fall back to the head as it was at wrap time (step 0)."""
    activate()
    with model.disable_adapter():
        yield


def save_adapter(model: PeftModel, adapter_name: str, path: Path) -> None:
    """Save one adapter as a standard PEFT folder (adapter_config.json + safetensors) at `path`."""
    model.save_pretrained(str(path), selected_adapters=[adapter_name])
    if adapter_name != DEFAULT_ADAPTER:  # PEFT puts named adapters in a subfolder: lift it up
        nested = Path(path) / adapter_name
        for item in nested.iterdir():
            shutil.move(str(item), Path(path) / item.name)
        nested.rmdir()


def load_adapter(cfg: Any, loaded: LoadedModel, weights_dir: Path) -> nn.Module:
    """Attach a saved PEFT adapter to a freshly loaded base model (inference mode)."""
    return PeftModel.from_pretrained(loaded.model, str(weights_dir), is_trainable=False)


@contextlib.contextmanager
def vectors_in_lora_modules() -> Iterator[None]:
    """Silence PEFT's 'invalid shape' save warning for 1-D tensors under lora_A / lora_B (AFLoRA's d, b)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LoRA tensor\(s\) have invalid shape")
        yield
