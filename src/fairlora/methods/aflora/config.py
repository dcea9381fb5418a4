"""The `aflora:` config section and the freezing window it resolves to."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fairlora.errors import ConfigError


class AfloraSection(BaseModel):
    """`aflora:` AFLoRA adapter and adaptive-freezing settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    r: int = Field(4, ge=1, description="rank of the per-module projections A (r x in) and B (out x r)")
    alpha: float | None = Field(
        None, gt=0.0, description="None = no scaling (encoder recipe); set to scale the path by alpha/r"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    d_initial: float = Field(0.1, description="initial value of the trainable vector d (length r)")
    b_initial: float = Field(
        0.0, description="initial value of the trainable vector b (0: the path starts at 0)"
    )
    target_modules: list[str] | None = Field(
        None, description="module name suffixes; None = attention q/k/v (+ output) and FFN projections"
    )
    freeze_square_from_start: bool | None = Field(
        None, description="freeze A/B of layers with in == out at step 0; None = true for encoders"
    )
    t_initial: float = Field(0.1, ge=0.0, lt=1.0, description="share of training before anything freezes")
    t_final: float = Field(
        0.7, ge=0.0, lt=1.0, description="share of training at the end with all A/B frozen"
    )
    t_initial_steps: int | None = Field(None, ge=0, description="t_initial in steps (replaces the share)")
    t_final_steps: int | None = Field(None, ge=0, description="t_final in steps (replaces the share)")
    window: int = Field(10, ge=1, description="steps per sensitivity window and between freezing checks")
    beta1: float = Field(0.85, ge=0.0, lt=1.0, description="EMA factor of the sensitivity")
    beta2: float = Field(0.95, ge=0.0, lt=1.0, description="EMA factor of the uncertainty")
    freeze_rule: Literal["reference", "ranked"] = Field(
        "reference",
        description="reference: freeze a matrix when its mean score is below the k-th smallest ELEMENT score "
        "of all candidates, k = floor(M (1 - threshold)) (the reference code); ranked: freeze the matrices "
        "whose mean score is below the k-th smallest of the N matrix means, k = floor(N (1 - threshold))",
    )
    freeze_by_epoch: float | None = Field(
        None, gt=0.0, description="non-adaptive baseline: freeze every A/B at once after this many epochs"
    )

    @model_validator(mode="after")
    def _window_fits(self) -> AfloraSection:
        if self.t_initial_steps is None and self.t_final_steps is None and self.t_initial + self.t_final >= 1:
            raise ValueError(
                f"aflora.t_initial + aflora.t_final must be below 1 (the share of training in which A/B "
                f"freeze adaptively), got {self.t_initial} + {self.t_final}"
            )
        return self


def freezing_window(section: AfloraSection, total_steps: int) -> tuple[int, int]:
    """(t_i, t_f) in steps for a run of `total_steps`; ConfigError when nothing is left to freeze in."""
    t_i = (
        section.t_initial_steps
        if section.t_initial_steps is not None
        else round(section.t_initial * total_steps)
    )
    t_f = section.t_final_steps if section.t_final_steps is not None else round(section.t_final * total_steps)
    if t_i + t_f >= total_steps:
        raise ConfigError(
            f"aflora: t_initial ({t_i} steps) + t_final ({t_f} steps) must be below the total steps "
            f"({total_steps}); lower aflora.t_initial_steps / aflora.t_final_steps or train longer"
        )
    return t_i, t_f
