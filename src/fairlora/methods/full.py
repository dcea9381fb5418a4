"""Full fine-tuning and the base model (`none`: frozen; a classification head, if any, is trained)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fairlora.methods.base import MethodSetup

HEAD_MODULES = ("classifier", "score", "pre_classifier")
HEAD_FILE = "head.safetensors"


def is_head_parameter(name: str) -> bool:
    """True for parameters of a task head the base model does not have (classifier / score)."""
    return name.split(".")[0] in HEAD_MODULES


def apply_full(model: nn.Module, tokenizer) -> MethodSetup:
    """Every parameter trains; saving writes a complete HF model folder with its tokenizer."""
    model.requires_grad_(True)

    def save(path: Path) -> None:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return MethodSetup(model=model, save=save)


def apply_none(model: nn.Module, task: str) -> MethodSetup:
    """The base model, frozen. Classification trains only the new head (a random head is noise)."""
    for name, param in model.named_parameters():
        param.requires_grad_(task == "classification" and is_head_parameter(name))

    def save(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        head = {n: p.detach().contiguous() for n, p in model.named_parameters() if is_head_parameter(n)}
        if head:
            save_file(head, str(path / HEAD_FILE))

    return MethodSetup(model=model, save=save, trains=task == "classification")


def load_head(model: nn.Module, directory: Path) -> nn.Module:
    """Load a head saved by `apply_none` into a freshly loaded base model."""
    file = directory / HEAD_FILE
    if file.exists():
        state = load_file(str(file))
        with torch.no_grad():
            missing = set(state) - {n for n, _ in model.named_parameters()}
            if missing:
                raise ValueError(f"{file}: parameters {sorted(missing)} are not in the model")
            model.load_state_dict(state, strict=False)
    return model
