"""Step-aware loss terms: weight schedules (pure functions of the step) and, later, BA-LoRA's terms."""

from fairlora.regularizers.schedules import constant, cosine_decay, two_phase

__all__ = ["constant", "cosine_decay", "two_phase"]
