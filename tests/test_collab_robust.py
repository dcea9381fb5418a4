"""Failure handling with a poisoned client among 4, for every strategy: the excluded client keeps its last
good state and trains on; the others' trust and mixtures are those of the 3 healthy clients alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from fairlora.collab import trust as T
from fairlora.collab.client import evaluate_examples, local_step
from fairlora.collab.config import BASE_STRATEGIES, build_collab_config
from fairlora.collab.engine import Session, aggregate, ref_perplexities, trust_weights
from fairlora.collab.plan import Plan, build_session, encode_clients, load_shared_model, make_plan
from fairlora.collab.robust import embed_trust, round_states
from fairlora.errors import ConfigError

HEALTHY = [0, 2, 3]


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    data: dict[str, Any] = {
        "name": "robust",
        "output_dir": str(tmp_path_factory.mktemp("robust")),
        "model": {"name": "tiny-llama", "max_length": 24},
        "lora": {"r": 2, "alpha": 4, "dropout": 0.0},
        "train": {"lr": 0.01, "batch_size": 4, "progress_bar": False},
        "eval": {"batch_size": 8, "n_boot": 0},
        "collab": {
            "clients": 4,
            "corpus": "topics",
            "split": "mixed",
            "examples_per_client": 16,
            "iterations": 6,
            "pretraining_rounds": 2,
            "trust_freq": 2,
            "strategies": list(BASE_STRATEGIES),
        },
    }
    return make_plan(build_collab_config(data))


def _session(plan: Plan, indices: list[int] | None = None) -> Session:
    loaded = load_shared_model(plan)  # one base per session: adapter names may not clash
    session = build_session(plan, loaded, encode_clients(plan, loaded.tokenizer), indices)
    for _ in range(2):  # distinct adapters, so every trust score has something to tell apart
        for client in session.clients:
            local_step(client, plan.cfg.run, session.collate)
    return session


CASES = [(strategy, "nan") for strategy in BASE_STRATEGIES] + [("naive", "scale"), ("dynamic-token", "scale")]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only wait on each other
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("strategy", "poison"), CASES)
def test_poisoned_client_keeps_last_good_state_and_others_are_unaffected(
    plan: Plan, strategy: str, poison: str
) -> None:
    four, three = _session(plan), _session(plan, HEALTHY)
    bad = four.clients[1]
    good = bad.get_state()
    assert not all(torch.equal(good[k], bad.initial[k]) for k in good)  # it trained away from its init
    factor = float("nan") if poison == "nan" else 1e4
    bad.set_state({k: v * factor + (1.0 if poison == "scale" else 0.0) for k, v in good.items()})
    record = aggregate(four, strategy, 0, 1)
    alone = aggregate(three, strategy, 0, 1)
    assert set(record.excluded) == {1}
    trust = np.array(record.trust)
    assert np.allclose(trust[1], [0, 1, 0, 0]) and np.allclose(trust[HEALTHY, 1], 0.0)
    assert np.allclose(trust[np.ix_(HEALTHY, HEALTHY)], alone.trust, atol=1e-9)  # as if client 1 never was
    for mine, theirs in zip([four.clients[i] for i in HEALTHY], three.clients, strict=True):
        ours, others = mine.get_state(), theirs.get_state()
        assert all(torch.allclose(ours[k], others[k], atol=1e-6) for k in ours)
    kept = bad.get_state()  # its last good state: nothing was mixed yet, so its initial adapter
    assert all(torch.equal(kept[k], bad.initial[k]) for k in kept)
    local_step(bad, plan.cfg.run, four.collate)  # and it trains on (A = B = 0 would never move again)
    after = bad.get_state()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not all(torch.equal(after[k], kept[k]) for k in after)
    assert np.isfinite(record.metrics[1]["perplexity"])


def _facts(plan: Plan) -> tuple[list[int], np.ndarray, list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    states = [{"a": torch.randn(3, 5, generator=gen)} for _ in range(4)]
    return [4, 4, 4, 4], plan.allocation.proportion_matrix(), states


@pytest.mark.parametrize("strategy", ["dynamic-ref", "dynamic-token"])
def test_nan_and_minus_inf_scores_get_weight_zero(plan: Plan, strategy: str) -> None:
    sizes, proportions, states = _facts(plan)
    perplexity = np.array(
        [[2.0, 3.0, np.inf, 4.0], [3.0, 2.0, 4.0, np.nan], [3.0, 4.0, 2.0, 3.0], [4.0, 3.0, 3.0, 2.0]]
    )  # P = inf is a score of -inf
    gen = torch.Generator().manual_seed(1)
    logits = [torch.randn(6, 40, generator=gen) for _ in range(4)]
    signatures = [(lg.topk(5).values, lg.topk(5).indices) for lg in logits]
    signatures[3] = None  # client 3 sent no logits: NaN distances to it
    weights, fallback = trust_weights(
        strategy,
        plan.cfg.collab,
        sizes,
        proportions,
        states,
        lambda kept: perplexity[np.ix_(kept, kept)],
        lambda kept: [signatures[i] for i in kept],
    )
    assert np.allclose(weights.sum(axis=1), 1.0) and np.isfinite(weights).all()
    if strategy == "dynamic-ref":
        assert weights[0, 2] == 0.0 and weights[1, 3] == 0.0 and fallback == []
        assert np.allclose(weights[0, [0, 1, 3]], np.exp([-2, -3, -4]) / np.exp([-2, -3, -4]).sum())
    else:
        assert np.allclose(weights[:3, 3], 0.0) and (weights[:3, :3] > 0).all()
        assert fallback == [3] and np.allclose(weights[3], [0, 0, 0, 1])


def test_excluded_columns_are_dropped_before_scoring(plan: Plan) -> None:
    sizes, proportions, states = _facts(plan)
    asked: list[list[int]] = []

    def table(kept: list[int]) -> np.ndarray:
        asked.append(kept)
        return np.full((len(kept), len(kept)), 2.0)

    weights, _ = trust_weights(
        "dynamic-ref", plan.cfg.collab, sizes, proportions, states, table, lambda kept: [], {2: "NaN"}
    )
    assert asked == [[0, 1, 3]]  # client 2's model is never scored
    assert np.allclose(weights, embed_trust(np.full((3, 3), 1 / 3), [0, 1, 3], 4))
    assert np.allclose(weights[2], [0, 0, 1, 0])


def test_round_states_give_excluded_clients_their_last_good_state() -> None:
    states = [{"a": torch.full((2,), float(i))} for i in range(3)]
    states[1] = {"a": torch.full((2,), float("nan"))}
    weights = embed_trust(np.full((2, 2), 0.5), [0, 2], 3)
    last = [{"a": torch.zeros(2)}, {"a": torch.full((2,), 7.0)}, None]
    after = round_states(states, weights, {1: "NaN"}, last)
    assert torch.equal(after[1]["a"], torch.full((2,), 7.0))  # type: ignore[index]
    assert torch.allclose(after[0]["a"], torch.full((2,), 1.0)) and torch.allclose(
        after[2]["a"], after[0]["a"]
    )  # type: ignore[index]
    assert (
        round_states(states, weights, {1: "NaN"}, [None] * 3)[1] is None
    )  # unknown: the client keeps its own


def test_ref_perplexity_orientation_is_client_j_model_on_client_i_data(plan: Plan) -> None:
    sizes, proportions, states = _facts(plan)
    asymmetric = np.array(
        [[2.0, 9.0, 9.0, 9.0], [2.5, 2.0, 9.0, 9.0], [9.0, 9.0, 2.0, 2.5], [9.0, 9.0, 9.0, 2.0]]
    )
    weights, _ = trust_weights(
        "dynamic-ref", plan.cfg.collab, sizes, proportions, states, lambda kept: asymmetric, lambda kept: []
    )
    assert weights[1, 0] > 0.3 and weights[0, 1] < 1e-3  # row i, column j: P_ij = model j on data i
    assert weights[2, 3] > 0.3 and weights[3, 2] < 1e-3
    session = _session(plan)
    broken = session.clients[1]
    broken.set_state(
        {k: torch.full_like(v, 5.0) if "lora_B" in k else v for k, v in broken.get_state().items()}
    )
    table = ref_perplexities(session)
    run = plan.cfg.run
    broken.setup.activate()
    model_1_on_data_0 = evaluate_examples(
        broken.setup.model,
        session.clients[0].data.val_examples,
        session.collate,
        run.task,
        run.eval.batch_size,
    )["perplexity"]
    assert table[0, 1] == pytest.approx(model_1_on_data_0, rel=1e-6)
    assert table[1, 0] != pytest.approx(model_1_on_data_0, rel=1e-3)  # the matrix is not symmetric
    assert (table[[0, 2, 3], 1] > table[[0, 2, 3], 0]).all()  # column 1: the broken model everywhere


@pytest.mark.parametrize(
    ("clients", "tau", "self_weight"), [(4, 1.0, 0.9033), (4, 3.0, 0.5031), (8, 1.0, 0.3735)]
)
def test_token_self_weight_of_equidistant_clients(clients: int, tau: float, self_weight: float) -> None:
    distance = 1.0 - np.eye(clients)  # every other client equally far: the diagonal is set by construction
    weights, _ = T.trust_from_scores(T.token_scores(distance), tau, "", 3, 0.2)
    assert np.allclose(np.diag(weights), self_weight, atol=1e-4)
    assert np.allclose(np.diag(weights), 1 / (1 + (clients - 1) * np.exp(-10 / ((clients - 1) * tau))))


def test_tau_is_validated(plan: Plan) -> None:
    data = plan.cfg.to_dict() | {"collab": plan.cfg.collab.model_dump(mode="json") | {"tau": 0}}
    with pytest.raises(ConfigError, match="collab.tau"):
        build_collab_config(data)
