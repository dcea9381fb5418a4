"""The in-process engine: N clients on one base, local steps, trust-weighted mixing, evaluation."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fairlora.collab import trust as T
from fairlora.collab.client import (
    Client,
    eval_mode,
    evaluate_client,
    evaluate_examples,
    local_step,
    reference_logits,
)
from fairlora.collab.config import CollabConfig, CollabSection
from fairlora.collab.mixing import State, round_bytes
from fairlora.collab.robust import embed_trust, kept_clients, round_states, screen
from fairlora.collab.splits import Allocation

logger = logging.getLogger(__name__)


@dataclass
class Session:
    """Everything a strategy run needs: config, clients on the shared base, data facts, batches."""

    cfg: CollabConfig
    clients: list[Client]
    allocation: Allocation
    collate: Any
    reference_batches: list[dict[str, torch.Tensor]]


@dataclass
class RoundRecord:
    """One aggregation: when, the trust matrix, who was excluded, per-client metrics, bytes, timings."""

    round: int
    iteration: int
    trust: list[list[float]]
    metrics: list[dict[str, float]]
    bytes: dict[str, int]
    excluded: dict[int, str] = field(default_factory=dict)
    fallback_rows: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (client indices as strings)."""
        data = asdict(self)
        data["excluded"] = {str(k): v for k, v in self.excluded.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundRecord:
        """Inverse of `to_dict`."""
        return cls(**(data | {"excluded": {int(k): v for k, v in data.get("excluded", {}).items()}}))


def aggregation_iterations(iterations: int, warmup: int, every: int) -> list[int]:
    """Iterations after which clients mix: warmup-1, then every `every`, up to the last iteration."""
    return list(range(max(warmup - 1, 0), iterations, every))


def ref_perplexities(session: Session, kept: list[int] | None = None) -> np.ndarray:
    """P_ij: perplexity of client j's model on client i's validation data, over the `kept` clients (all by
    default; each model loaded once)."""
    run, limit = session.cfg.run, session.cfg.collab.eval_batches
    clients = session.clients if kept is None else [session.clients[i] for i in kept]
    table = np.zeros((len(clients), len(clients)))
    with models_in_eval(clients):
        for j, owner in enumerate(clients):
            owner.setup.activate()
            for i, data_client in enumerate(clients):
                examples = data_client.data.val_examples
                if limit is not None:
                    examples = examples[: limit * run.eval.batch_size]
                metrics = evaluate_examples(
                    owner.setup.model, examples, session.collate, run.task, run.eval.batch_size
                )
                table[i, j] = metrics["perplexity"]
    return table


@contextlib.contextmanager
def models_in_eval(clients: list[Client]) -> Iterator[None]:
    """Every distinct model of `clients` (one shared base in-process) in eval mode once, not per pass."""
    with contextlib.ExitStack() as stack:
        for model in {id(c.setup.model): c.setup.model for c in clients}.values():
            stack.enter_context(eval_mode(model))
        yield


def trust_weights(
    strategy: str,
    collab: CollabSection,
    sizes: list[int],
    proportions: np.ndarray,
    states: list[State | None],
    ref_table: Callable[[list[int]], np.ndarray],
    signatures: Callable[[list[int]], list[tuple[torch.Tensor, torch.Tensor] | None]],
    excluded: set[int] | dict[int, str] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """W for `strategy` (and the rows that fell back to local training), computed among the clients not
    `excluded` only: an excluded client's column is 0 and its row the identity. `ref_table(kept)` and
    `signatures(kept)` query the kept clients' models, lazily."""
    kept = kept_clients(len(states), excluded or set())
    base, variant = T.split_strategy(strategy)
    if base == "none" or not kept:
        return np.eye(len(states)), []
    if base in ("naive", "static"):
        chosen = (
            T.naive_trust([sizes[i] for i in kept]) if base == "naive" else T.static_trust(proportions[kept])
        )
        weights, fallback = T.finite_rows(T.restrict(chosen, variant, collab.topk, collab.threshold))
    else:
        if base == "dynamic":
            scores = T.dynamic_scores(T.weight_similarity([states[i] for i in kept]))  # type: ignore[misc]
        elif base == "dynamic-ref":
            scores = T.ref_scores(ref_table(kept))
        else:
            scores = T.token_scores(T.token_distances(signatures(kept)))
        weights, fallback = T.trust_from_scores(scores, collab.tau, variant, collab.topk, collab.threshold)
    return embed_trust(weights, kept, len(states)), [kept[row] for row in fallback]


def trust_matrix(
    strategy: str, session: Session, states: list[State | None], excluded: dict[int, str]
) -> tuple[np.ndarray, list[int]]:
    """W for `strategy` at this round, from the in-process clients not `excluded`."""
    collab = session.cfg.collab
    return trust_weights(
        strategy,
        collab,
        [c.size for c in session.clients],
        session.allocation.proportion_matrix()[[c.index for c in session.clients]],
        states,
        lambda kept: ref_perplexities(session, kept),
        lambda kept: token_signatures(session, kept),
        excluded,
    )


def token_signatures(
    session: Session, kept: list[int] | None = None
) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """The `kept` clients' (default: every client's) top-k logits on the shared reference rows."""
    clients = session.clients if kept is None else [session.clients[i] for i in kept]
    with models_in_eval(clients):
        k = session.cfg.collab.token_topk
        return [reference_logits(c, session.reference_batches, k) for c in clients]


def aggregate(session: Session, strategy: str, round_index: int, iteration: int) -> RoundRecord:
    """Screen, compute W among the clients kept, give each kept client its personal mixture and each
    excluded one its last good state, then evaluate each client."""
    clients = session.clients
    started = time.perf_counter()
    states: list[State | None] = [c.get_state() for c in clients]
    excluded = screen(states, session.cfg.collab.max_norm_ratio)
    collected = time.perf_counter()
    weights, fallback = trust_matrix(strategy, session, states, excluded)
    trusted = time.perf_counter()
    after = round_states(states, weights, excluded, [c.last_good for c in clients])
    for i, (client, state) in enumerate(zip(clients, after, strict=True)):
        if i in excluded:
            client.set_state(state)  # type: ignore[arg-type]
            logger.warning("client %d keeps its last good state this round", i)
        else:
            client.receive(state)  # type: ignore[arg-type]
        client.last_good = client.get_state()
    mixed_at = time.perf_counter()
    limit = session.cfg.collab.eval_batches
    with models_in_eval(clients):
        metrics = [evaluate_client(c, session.cfg.run, session.collate, limit) for c in clients]
    seconds = {
        "collect": collected - started,
        "trust": trusted - collected,
        "mix": mixed_at - trusted,
        "eval": time.perf_counter() - mixed_at,
    }
    return RoundRecord(
        round_index,
        iteration,
        weights.tolist(),
        metrics,
        round_bytes(states, weights),  # type: ignore[arg-type]
        excluded,
        fallback,
        seconds,
    )


def run_iterations(
    session: Session,
    strategy: str,
    start: int,
    rounds: list[RoundRecord],
    on_round: Callable[[int, list[RoundRecord]], None],
    progress: bool = True,
    stop: int | None = None,
) -> list[RoundRecord]:
    """Iterations `start`..`stop` (default: the end) of one strategy: every client steps, mixing at the
    aggregation iterations."""
    collab, run = session.cfg.collab, session.cfg.run
    schedule = set(aggregation_iterations(collab.iterations, collab.pretraining_rounds, collab.trust_freq))
    bar = tqdm(
        range(start, collab.iterations if stop is None else stop),
        desc=f"collab {strategy}",
        disable=not progress,
        leave=False,
    )
    for iteration in bar:
        losses = [local_step(c, run, session.collate)["task_loss"] for c in session.clients]
        bar.set_postfix(loss=f"{float(np.mean(losses)):.3f}")
        if iteration in schedule:
            record = aggregate(session, strategy, len(rounds), iteration)
            rounds.append(record)
            mean_ppl = np.mean([m["perplexity"] for m in record.metrics])
            logger.info(
                "%s round %d (iteration %d): mean perplexity %.3f",
                strategy,
                record.round,
                iteration,
                mean_ppl,
            )
            on_round(iteration, rounds)
    return rounds
