"""BA-LoRA: PiSSA-initialised LoRA with consistency, diversity and SVD regularizers (method `ba-lora`).

The regularizers are loss terms (fairlora.regularizers.balora), so the `balora:` block also works
on other adapter methods (`method: lora | vera | pissa | none`): `balora.enabled: true`. The
teacher is the method's own `teacher_context()` (the original model, no second copy).
"""

from __future__ import annotations

import warnings
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fairlora.config import RunConfig
from fairlora.errors import ConfigError
from fairlora.methods.adapters import load_adapter
from fairlora.methods.base import MethodSetup
from fairlora.methods.lora import LoraSection, apply_pissa, check_lora
from fairlora.methods.registry import Method, get_method, register_method, register_section
from fairlora.models import LoadedModel
from fairlora.regularizers.balora import TermSettings, balora_loss_terms
from fairlora.regularizers.schedules import Schedule, constant, cosine_decay, two_phase
from fairlora.regularizers.terms import LossTerm
from fairlora.tasks import get_task

METHOD = "ba-lora"
NLU_WEIGHTS = (0.15, 0.03, 0.03)  # CR, DR, SVDR for classification (paper)
NLG_WEIGHTS = (0.025, 0.005, 0.005)  # CR, DR, SVDR for causal LM (paper)
NLU_SVD_K, NLG_SVD_K = 5, 10


class BaloraSection(BaseModel):
    """`balora:` BA-LoRA regularizers: weights, schedules and a switch per term."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool | None = Field(
        None, description="None = on for method ba-lora, off otherwise; true adds the terms to any method"
    )
    cr: bool = Field(True, description="consistency with the original model (needs the teacher)")
    dr: bool = Field(True, description="diversity of the logits")
    svdr: bool = Field(True, description="top-k singular-value share of the logits")
    cr_weight: float | None = Field(
        None, ge=0.0, description="None = 0.15 (classification), 0.025 (causal_lm)"
    )
    dr_weight: float | None = Field(
        None, ge=0.0, description="None = 0.03 (classification), 0.005 (causal_lm)"
    )
    svdr_weight: float | None = Field(
        None, ge=0.0, description="None = 0.03 (classification), 0.005 (causal_lm)"
    )
    cr_loss: Literal["kl", "mse"] = Field(
        "kl", description="kl at temperature T (x T^2), or mse of L2-normed logits"
    )
    temperature: float = Field(2.0, gt=0.0, description="CR temperature T")
    top_k: int = Field(20, ge=2, description="causal_lm DR: softmax over each token's top-K logits")
    svd_k: int | None = Field(
        None, ge=1, description="top-k singular values; None = min(5, classes - 1) or 10 (causal_lm)"
    )
    cr_schedule: Literal["constant", "cosine"] | None = Field(
        None, description="None = constant (classification), cosine (causal_lm)"
    )
    dr_schedule: Literal["constant", "two_phase"] | None = Field(
        None, description="None = constant (classification), two_phase (causal_lm)"
    )
    svdr_schedule: Literal["constant", "two_phase"] | None = Field(
        None, description="None = constant (classification), two_phase (causal_lm)"
    )
    cr_floor: float = Field(
        0.1, ge=0.0, le=1.0, description="cosine CR schedule: the weight decays to floor x weight"
    )
    warmup_start: float = Field(
        0.2, ge=0.0, le=1.0, description="two_phase DR/SVDR schedule: weight 0 for this share of steps"
    )
    warmup_ramp: float = Field(0.05, ge=0.0, le=1.0, description="then ramps linearly over this share")
    cache_teacher: bool = Field(
        True, description="classification: compute each example's teacher logits once, reuse them"
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> BaloraSection:
        if self.warmup_start + self.warmup_ramp > 1:
            raise ValueError(
                f"warmup_start + warmup_ramp must be at most 1 (got {self.warmup_start} + {self.warmup_ramp})"
            )
        return self


def balora_enabled(cfg: RunConfig) -> bool:
    """True when the run adds the BA-LoRA terms (method ba-lora, or balora.enabled: true)."""
    section: BaloraSection = cfg.balora  # type: ignore[attr-defined]
    return cfg.method == METHOD if section.enabled is None else section.enabled


def svd_k(cfg: RunConfig, num_classes: int) -> int:
    """SVDR k: balora.svd_k, else 10 (causal_lm) or min(5, classes - 1) (classification, with a warning)."""
    section: BaloraSection = cfg.balora  # type: ignore[attr-defined]
    if not get_task(cfg.task).classifies:
        return section.svd_k or NLG_SVD_K
    if section.svd_k is not None:
        return section.svd_k
    k = max(1, min(NLU_SVD_K, num_classes - 1))
    if k < NLU_SVD_K:
        warnings.warn(
            f"balora.svd_k: {num_classes} classes, so SVDR uses k = min(5, classes - 1) = {k} "
            f"(k must stay below the number of classes); set balora.svd_k to choose another",
            stacklevel=2,
        )
    return k


def teacher_is_cached(cfg: RunConfig) -> bool:
    """True when the teacher's logits are kept per example (classification, balora.cache_teacher)."""
    section: BaloraSection = cfg.balora  # type: ignore[attr-defined]
    return section.cache_teacher and get_task(cfg.task).classifies


def check_balora(cfg: RunConfig, num_classes: int | None) -> None:
    """Refuse settings that cannot work, before anything is written: k >= classes, CR without a teacher."""
    if not balora_enabled(cfg):
        return
    section: BaloraSection = cfg.balora  # type: ignore[attr-defined]
    classifies = get_task(cfg.task).classifies
    if classifies and num_classes is not None and section.svd_k is not None and section.svd_k >= num_classes:
        raise ConfigError(
            f"balora.svd_k={section.svd_k}: with {num_classes} classes the logits have at most "
            f"{num_classes} singular values, so the top-{section.svd_k} share is always 1 and SVDR does "
            f"nothing; set balora.svd_k below {num_classes} (or leave it unset for min(5, classes - 1))"
        )
    if section.cr and section.cr_loss != "kl" and not classifies:
        raise ConfigError(
            f"balora.cr_loss: {section.cr_loss} is defined for classification logits; causal_lm "
            f"consistency is a per-token KL: set balora.cr_loss: kl"
        )
    if section.cr and get_method(cfg.method).loads_from_weights:
        raise ConfigError(
            f"balora.cr: method {cfg.method!r} changes every weight and keeps no adapter to disable, so "
            f"there is no original model to be consistent with (a second model copy is not made). "
            f"Fix: use an adapter method (method: ba-lora, pissa, lora, vera), or choose no teacher "
            f"explicitly with balora.cr: false (DR and SVDR need none)"
        )


def balora_schedules(cfg: RunConfig) -> tuple[Schedule, Schedule, Schedule]:
    """The CR, DR and SVDR weight schedules; unset fields take the task's defaults (the paper's):
    classification 0.15 / 0.03 / 0.03 constant, causal LM 0.025 cosine / 0.005 / 0.005 two-phase."""
    section: BaloraSection = cfg.balora  # type: ignore[attr-defined]
    nlg = not get_task(cfg.task).classifies
    cr_w, dr_w, svdr_w = NLG_WEIGHTS if nlg else NLU_WEIGHTS
    cr_kind = section.cr_schedule or ("cosine" if nlg else "constant")
    ramp_kind = "two_phase" if nlg else "constant"
    cr_value = _pick(section.cr_weight, cr_w)
    return (
        cosine_decay(cr_value, section.cr_floor) if cr_kind == "cosine" else constant(cr_value),
        _scheduled(section, section.dr_schedule or ramp_kind, _pick(section.dr_weight, dr_w)),
        _scheduled(section, section.svdr_schedule or ramp_kind, _pick(section.svdr_weight, svdr_w)),
    )


def balora_terms(cfg: RunConfig, num_classes: int) -> list[LossTerm]:
    """The switched-on BA-LoRA terms with their schedules (`balora_schedules`)."""
    section: BaloraSection = cfg.balora  # type: ignore[attr-defined]
    nlg = not get_task(cfg.task).classifies
    weights = balora_schedules(cfg)
    settings = TermSettings(
        cr=section.cr,
        dr=section.dr,
        svdr=section.svdr,
        temperature=section.temperature,
        top_k=section.top_k,
        svd_k=svd_k(cfg, num_classes) if section.svdr else NLG_SVD_K,
        cr_mode=section.cr_loss,
    )
    return balora_loss_terms(settings, weights, nlg)


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


def _scheduled(section: BaloraSection, kind: str, value: float) -> Schedule:
    return (
        two_phase(value, section.warmup_start, section.warmup_ramp)
        if kind == "two_phase"
        else constant(value)
    )


def apply_balora(cfg: RunConfig, loaded: LoadedModel, adapter_name: str) -> MethodSetup:
    """PiSSA (lora.r, lora.alpha, lora.pissa_niter); `apply_method` adds the terms, as for every method."""
    return apply_pissa(cfg, loaded, adapter_name)


register_section("balora", BaloraSection)
register_method(
    Method(
        name=METHOD,
        description="BA-LoRA: PiSSA-initialised LoRA + consistency, diversity and SVD regularizers (balora:)",
        apply=apply_balora,
        load=load_adapter,
        weights_dir="adapter",
        section=("lora", LoraSection),
        check=check_lora,
    )
)
