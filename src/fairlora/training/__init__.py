"""Training: loss composition, one visible train step, and the one HF Trainer subclass."""

from fairlora.training.losses import LossTerm, TermInputs, compose_loss

__all__ = ["LossTerm", "TermInputs", "compose_loss"]
