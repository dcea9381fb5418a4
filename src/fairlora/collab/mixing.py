"""Personalised mixing of trainable tensors: theta_i <- sum_j W_ij theta_j, tensor by tensor.

Each LoRA matrix (A and B separately, never their product) is averaged with client i's own row of W.
"""

from __future__ import annotations

import numpy as np
import torch

State = dict[str, torch.Tensor]


def check_row_stochastic(weights: np.ndarray, clients: int) -> None:
    """Raise ValueError unless W is (clients x clients), non-negative, with rows summing to 1."""
    if weights.shape != (clients, clients):
        raise ValueError(f"trust matrix has shape {weights.shape}, expected ({clients}, {clients})")
    if (weights < 0).any() or not np.allclose(weights.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("trust matrix rows must be non-negative and sum to 1")


def mix(states: list[State], weights: np.ndarray) -> list[State]:
    """Every client's personal mixture: out[i][k] = sum_j W[i, j] * states[j][k]."""
    check_row_stochastic(weights, len(states))
    w = torch.as_tensor(weights, dtype=torch.float64)
    mixed: list[State] = [{} for _ in states]
    for key in states[0]:
        stacked = torch.stack([s[key].double() for s in states])
        combined = torch.tensordot(w, stacked, dims=1)
        for i, state in enumerate(states):
            mixed[i][key] = combined[i].to(state[key].dtype)
    return mixed


def state_bytes(state: State) -> int:
    """Bytes of the tensors in `state` (what one client sends or receives once)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def round_bytes(states: list[State], weights: np.ndarray) -> dict[str, int]:
    """Bytes exchanged in a round: uplink (every client that mixes sends its tensors) and downlink."""
    mixing = [i for i in range(len(states)) if not np.isclose(weights[i, i], 1.0)]
    senders = {j for i in mixing for j in np.flatnonzero(weights[i] > 0)}
    up = sum(state_bytes(states[j]) for j in senders)
    down = sum(state_bytes(states[i]) for i in mixing)
    return {"bytes_up": int(up), "bytes_down": int(down), "bytes_total": int(up + down)}
