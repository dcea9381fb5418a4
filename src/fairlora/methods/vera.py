"""VeRA through PEFT: one pair of frozen random projections shared by all layers, trainable scaling vectors.

y = W0 x + Lambda_b B Lambda_d A x, with A (r x in) and B (out x r) random, frozen and shared (seeded
by `projection_prng_key`), and only the vectors d (r) and b (out) trained per layer.
"""

from __future__ import annotations

from peft import VeraConfig
from peft.utils.constants import TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING as VERA_TARGETS
from pydantic import BaseModel, ConfigDict, Field

from fairlora.config import RunConfig
from fairlora.methods.adapters import (
    adapter_setup,
    attach,
    default_targets,
    linear_names,
    load_adapter,
    peft_task_kwargs,
    resolve_targets,
)
from fairlora.methods.base import MethodSetup
from fairlora.methods.registry import Method, register_method
from fairlora.models import LoadedModel
from fairlora.tasks import get_task


class VeraSection(BaseModel):
    """`vera:` VeRA adapter settings (PEFT VeraConfig)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    r: int = Field(256, ge=1, description="rank of the shared random projections")
    d_initial: float = Field(0.1, description="initial value of the trainable vector d")
    projection_prng_key: int = Field(0, description="seed of the shared random projections A and B")
    save_projection: bool = Field(
        True, description="store A and B in the adapter (false: regenerated from the key on load)"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(
        None, description="module name suffixes; None = PEFT's default for the model type (attention q/v)"
    )


def vera_targets(cfg: RunConfig, module_names: list[str], model_type: str) -> list[str]:
    """Full names of the modules that get VeRA."""
    targets = cfg.vera.target_modules or default_targets(model_type, VERA_TARGETS, "vera")
    return resolve_targets(module_names, targets, "vera", cfg.model.name)


def apply_vera(cfg: RunConfig, loaded: LoadedModel, adapter_name: str) -> MethodSetup:
    """Add a VeRA adapter named `adapter_name`; saving writes a standard PEFT adapter folder."""
    section = cfg.vera
    config = VeraConfig(
        **peft_task_kwargs(get_task(cfg.task)),
        r=section.r,
        target_modules=vera_targets(cfg, linear_names(loaded.model), loaded.model.config.model_type),
        projection_prng_key=section.projection_prng_key,
        save_projection=section.save_projection,
        vera_dropout=section.dropout,
        d_initial=section.d_initial,
    )
    return adapter_setup(attach(loaded, config, adapter_name), adapter_name)


def check_vera(cfg: RunConfig, module_names: list[str], model_type: str) -> None:
    """The targets exist in the model (checked on the meta device, before anything is written)."""
    vera_targets(cfg, module_names, model_type)


register_method(
    Method(
        name="vera",
        description="VeRA (PEFT): shared frozen random projections, trainable scaling vectors d and b",
        apply=apply_vera,
        load=load_adapter,
        weights_dir="adapter",
        section=("vera", VeraSection),
        check=check_vera,
    )
)
