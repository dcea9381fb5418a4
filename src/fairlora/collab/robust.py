"""Screening client updates before mixing: NaN/Inf or out-of-scale tensors exclude a client for a round.

An excluded client takes no part in that round: its column is dropped before any trust score is computed
for the others (`kept_clients`, `embed_trust`), and it keeps its own last good state instead of a mixture
(`round_states`). Both engines call these functions.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from fairlora.collab.mixing import State, mix

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


def kept_clients(count: int, excluded: set[int] | dict[int, str]) -> list[int]:
    """The clients taking part in this round, in order (the trust scores are computed among them only)."""
    return [i for i in range(count) if i not in excluded]


def embed_trust(kept_weights: np.ndarray, kept: list[int], count: int) -> np.ndarray:
    """The full W from the kept clients' W: an excluded client's column is 0 and its row the identity."""
    weights = np.eye(count)
    if kept:
        index = np.asarray(kept)
        weights[index] = 0.0
        weights[np.ix_(index, index)] = kept_weights
    return weights


def round_states(
    states: list[State | None], weights: np.ndarray, excluded: set[int] | dict[int, str], last_good: list
) -> list[State | None]:
    """What each client holds after the round: the kept clients' personal mixtures (among kept clients
    only), and for an excluded client its own last good state (`last_good[i]`; None when none is known)."""
    kept = kept_clients(len(states), excluded)
    result: list[State | None] = [last_good[i] for i in range(len(states))]
    if kept:
        mixed = mix([states[i] for i in kept], weights[np.ix_(kept, kept)])  # type: ignore[misc]
        for i, state in zip(kept, mixed, strict=True):
            result[i] = state
    return result
