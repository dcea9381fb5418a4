"""Trust, mixing and screening: pure functions over state dicts, on clients with a known structure."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from fairlora.collab import trust as T
from fairlora.collab.mixing import check_row_stochastic, mix, round_bytes, state_bytes
from fairlora.collab.robust import screen, without


def _rows_sum_to_one(weights: np.ndarray) -> None:
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert (weights >= 0).all()


def _grouped_states(groups: list[int], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Clients of the same group share a direction (plus small noise); groups are far apart."""
    gen = torch.Generator().manual_seed(seed)
    centres = {
        g: {"a": torch.randn(4, 16, generator=gen), "b": torch.randn(16, 4, generator=gen)}
        for g in set(groups)
    }
    return [
        {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in centres[g].items()} for g in groups
    ]


def _same_group_mass(weights: np.ndarray, groups: list[int]) -> np.ndarray:
    same = np.array([[gi == gj for gj in groups] for gi in groups])
    return (weights * same).sum(axis=1)


def test_naive_weights_by_size() -> None:
    weights = T.naive_trust([10, 30, 60])
    _rows_sum_to_one(weights)
    assert np.allclose(weights[0], [0.1, 0.3, 0.6]) and np.allclose(weights[2], weights[0])


def test_static_from_proportions_recovers_groups() -> None:
    specific = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    weights = T.static_trust(specific)
    assert np.allclose(weights, [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]])
    mixed = np.array([[0.75, 0.25], [0.25, 0.75]])
    weights = T.static_trust(mixed)
    _rows_sum_to_one(weights)
    overlap = 0.75 * 0.25 * 2
    assert np.allclose(weights[0], np.array([0.625, overlap]) / (0.625 + overlap))


def test_weight_similarity_recovers_groups() -> None:
    groups = [0, 0, 1, 1, 2, 2]
    similarity = T.weight_similarity(_grouped_states(groups))
    assert np.allclose(np.diag(similarity), 1.0)
    weights, fallback = T.trust_from_scores(T.dynamic_scores(similarity), 0.1, "", 3, 0.2)
    assert fallback == []
    _rows_sum_to_one(weights)
    assert (_same_group_mass(weights, groups) > 0.95).all()


def test_token_distances_recover_groups() -> None:
    gen = torch.Generator().manual_seed(1)
    groups = [0, 0, 1, 1]
    base = {g: torch.randn(30, 50, generator=gen) * 3 for g in (0, 1)}
    signatures = [
        T.top_logits(base[g] + 0.01 * torch.randn(30, 50, generator=gen), torch.ones(30), 10) for g in groups
    ]
    distance = T.token_distances(signatures, chunk=7)
    assert np.allclose(np.diag(distance), 0.0)
    assert distance[0, 1] < 0.1 * distance[0, 2]
    weights, _ = T.trust_from_scores(T.token_scores(distance), 1.0, "", 3, 0.2)
    assert (_same_group_mass(weights, groups) > 0.9).all()


def test_top_logits_keeps_only_real_positions() -> None:
    logits = torch.randn(2, 5, 40)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    values, indices = T.top_logits(logits, mask, 100)
    assert values.shape == (8, 40) and indices.shape == (8, 40)
    values, indices = T.top_logits(logits, mask, 3)
    assert torch.equal(values[0], logits[0, 0].topk(3).values)


def test_ref_perplexity_recovers_groups() -> None:
    groups = [0, 0, 1, 1]
    perplexity = np.array([[5.0 if gi == gj else 50.0 for gj in groups] for gi in groups])
    weights, _ = T.trust_from_scores(T.ref_scores(perplexity), 1.0, "", 3, 0.2)
    assert (_same_group_mass(weights, groups) > 0.999).all()


def test_topk_and_threshold_variants() -> None:
    weights = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.25] * 4, [0.7, 0.1, 0.1, 0.1]])
    top2 = T.restrict(weights, "-topk", topk=2)
    _rows_sum_to_one(top2)
    assert ((top2 > 0).sum(axis=1) <= 3).all() and (np.diag(top2) > 0).all()
    assert np.allclose(top2[0], [0.4 / 0.7, 0.3 / 0.7, 0, 0])
    assert np.allclose(top2[1], [0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9])  # top 2 plus the client itself
    thresh = T.restrict(weights, "-thresh", threshold=0.25)
    assert np.count_nonzero(thresh[2]) == 4  # every weight reaches the threshold
    assert np.count_nonzero(thresh[3]) == 3  # top 2 plus the client itself
    assert T.split_strategy("dynamic-token-topk") == ("dynamic-token", "-topk")
    assert T.split_strategy("naive") == ("naive", "")


def test_nan_and_minus_inf_scores_get_weight_zero(caplog: pytest.LogCaptureFixture) -> None:
    scores = np.array([[0.0, 1.0, 2.0], [np.nan, 0.0, 1.0], [1.0, np.inf, 0.0]])
    with caplog.at_level(logging.WARNING, logger="fairlora.collab.trust"):
        weights, fallback = T.trust_from_scores(scores, 1.0, "", 3, 0.2)
    assert fallback == [2]  # +inf: no softmax to take; the row falls back to local training
    assert np.allclose(weights[1], [0.0, 1 / (1 + np.e), np.e / (1 + np.e)])  # NaN -> weight 0, not 1/3
    assert np.allclose(weights[2], [0, 0, 1])
    assert np.isfinite(weights).all() and np.allclose(weights[0].sum(), 1.0)
    assert "client 2 keeps its own weights" in caplog.text
    minus_inf = np.array([[0.0, -np.inf], [-np.inf, -np.inf]])
    weights, fallback = T.trust_from_scores(minus_inf, 1.0, "", 3, 0.2)
    assert np.allclose(weights, np.eye(2)) and fallback == [1]  # no finite score left in row 1


def test_mix_is_personal_and_per_tensor() -> None:
    states = [{"A": torch.full((2, 3), float(i)), "B": torch.full((3, 2), 10.0 * i)} for i in range(3)]
    weights = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    mixed = mix(states, weights)
    assert torch.allclose(mixed[0]["A"], states[0]["A"])
    assert torch.allclose(mixed[1]["A"], torch.full((2, 3), 0.5))
    assert torch.allclose(mixed[2]["B"], torch.full((3, 2), 10 * (0.3 + 1.0)))
    product = sum(w * (s["B"] @ s["A"]) for w, s in zip(weights[1], states, strict=True))
    assert not torch.allclose(mixed[1]["B"] @ mixed[1]["A"], product)  # A and B mixed separately
    assert mixed[2]["A"].dtype == torch.float32
    with pytest.raises(ValueError, match="sum to 1"):
        mix(states, np.full((3, 3), 0.5))
    with pytest.raises(ValueError, match="shape"):
        check_row_stochastic(np.eye(2), 3)


def test_bytes_count_lora_tensors_only() -> None:
    states = [{"A": torch.zeros(4, 8), "B": torch.zeros(8, 4)} for _ in range(3)]
    assert state_bytes(states[0]) == 64 * 4
    assert round_bytes(states, np.eye(3))["bytes_total"] == 0
    full = round_bytes(states, T.naive_trust([1, 1, 1]))
    assert full == {"bytes_up": 3 * 256, "bytes_down": 3 * 256, "bytes_total": 6 * 256}


def test_screen_excludes_nan_and_out_of_scale(caplog: pytest.LogCaptureFixture) -> None:
    states: list = [{"A": torch.ones(3, 3)} for _ in range(5)]
    states[1] = {"A": torch.tensor([[float("nan")] * 3] * 3)}
    states[2] = {"A": torch.ones(3, 3) * 100}
    states[4] = None
    with caplog.at_level(logging.WARNING, logger="fairlora.collab.robust"):
        excluded = screen(states, max_norm_ratio=10.0)
    assert set(excluded) == {1, 2, 4}
    assert "NaN" in excluded[1] and "median" in excluded[2] and "dropped" in excluded[4]
    assert "client 2 excluded" in caplog.text
    weights = without(T.naive_trust([1] * 5), set(excluded))
    _rows_sum_to_one(weights)
    assert np.allclose(weights[:, [1, 2, 4]], 0.0) and np.allclose(weights[0], [0.5, 0, 0, 0.5, 0])
    alone = without(np.eye(3), {0})
    assert np.allclose(alone, np.eye(3))  # nobody else to receive from: the client keeps its own
