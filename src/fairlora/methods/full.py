"""Full fine-tuning and the base model (`none`: frozen; a classification head, if any, is trained)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fairlora.config import RunConfig
from fairlora.errors import RunDirError
from fairlora.methods.base import HEAD_MODULES, MethodSetup, is_head_parameter
from fairlora.methods.registry import Method, register_method
from fairlora.models import LoadedModel
from fairlora.tasks import get_task

HEAD_FILE = "head.safetensors"


def apply_full(cfg: RunConfig, loaded: LoadedModel, adapter_name: str) -> MethodSetup:
    """Every parameter trains; saving writes a complete HF model folder with its tokenizer."""
    model, tokenizer = loaded.model, loaded.tokenizer
    model.requires_grad_(True)

    def save(path: Path) -> None:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)

    return MethodSetup(model=model, save=save, teacher=None)


def apply_none(cfg: RunConfig, loaded: LoadedModel, adapter_name: str) -> MethodSetup:
    """The base model, frozen. A classification task trains only the new head (a random head is noise)."""
    model = loaded.model
    trains = get_task(cfg.task).classifies
    for name, param in model.named_parameters():
        param.requires_grad_(trains and is_head_parameter(name))
    heads = {
        n: copy.deepcopy(getattr(model, n))
        for n in HEAD_MODULES
        if isinstance(getattr(model, n, None), nn.Module)
    }

    @contextlib.contextmanager
    def teacher() -> Iterator[None]:  # the base with its heads as they were at step 0
        trained = {n: getattr(model, n) for n in heads}
        for name, head in heads.items():
            setattr(model, name, head)
        try:
            yield
        finally:
            for name, head in trained.items():
                setattr(model, name, head)

    def save(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        head = {n: p.detach().contiguous() for n, p in model.named_parameters() if is_head_parameter(n)}
        if head:
            save_file(head, str(path / HEAD_FILE))

    return MethodSetup(model=model, save=save, trains=trains, teacher=teacher)


def load_head(cfg: RunConfig, loaded: LoadedModel, directory: Path) -> nn.Module:
    """Load a head saved by `apply_none` into a freshly loaded base model; fails when it is missing."""
    model = loaded.model
    expected = [n for n, _ in model.named_parameters() if is_head_parameter(n)]
    file = directory / HEAD_FILE
    if not expected:
        return model
    if not file.is_file():
        raise RunDirError(
            f"{file} not found: the run's trained head is missing, and a random head would be evaluated; "
            f"train the run again (`fairlora train {directory.parent / 'config.yaml'} --overwrite`)"
        )
    state = load_file(str(file))
    missing, unknown = set(expected) - set(state), set(state) - set(expected)
    if missing or unknown:
        raise RunDirError(
            f"{file}: head parameters do not match the model (missing {sorted(missing)}, "
            f"unknown {sorted(unknown)}); train the run again"
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    return model


register_method(
    Method(
        name="none",
        description="base model, frozen (classification: only the new head trains)",
        apply=apply_none,
        load=load_head,
        weights_dir="head",
    )
)
register_method(
    Method(
        name="full",
        description="full fine-tuning: every weight trains",
        apply=apply_full,
        load=lambda cfg, loaded, weights_dir: loaded.model,
        weights_dir="model",
        loads_from_weights=True,
    )
)
