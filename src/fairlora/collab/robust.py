"""Screening client updates before mixing: NaN/Inf or out-of-scale tensors exclude a client for a round."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from fairlora.collab.mixing import State

logger = logging.getLogger(__name__)


def state_norm(state: State) -> float:
    """Euclidean norm of all tensors of `state` together (NaN when any entry is not finite)."""
    total = 0.0
    for tensor in state.values():
        if not torch.isfinite(tensor).all():
            return math.nan
        total += float(tensor.double().pow(2).sum())
    return math.sqrt(total)


def screen(states: list[State | None], max_norm_ratio: float) -> dict[int, str]:
    """Clients to exclude this round -> why: missing, NaN/Inf, or norm > max_norm_ratio x median norm."""
    reasons: dict[int, str] = {}
    norms = {}
    for i, state in enumerate(states):
        if state is None:
            reasons[i] = "sent nothing (dropped out)"
            continue
        norm = state_norm(state)
        if not math.isfinite(norm):
            reasons[i] = "sent NaN/Inf tensors"
        else:
            norms[i] = norm
    if norms:
        median = float(np.median(list(norms.values())))
        for i, norm in norms.items():
            if median > 0 and norm > max_norm_ratio * median:
                reasons[i] = f"norm {norm:.3g} > {max_norm_ratio:g} x median {median:.3g}"
    for i, why in reasons.items():
        logger.warning("client %d excluded from this round: %s", i, why)
    return reasons


def without(weights: np.ndarray, excluded: set[int]) -> np.ndarray:
    """W with excluded clients' columns zeroed and rows renormalised; an empty row keeps the client itself."""
    kept = weights.copy()
    for j in excluded:
        kept[:, j] = 0.0
    for i in range(kept.shape[0]):
        total = kept[i].sum()
        if total <= 0:
            kept[i] = 0.0
            kept[i, i] = 1.0
        else:
            kept[i] /= total
    return kept
