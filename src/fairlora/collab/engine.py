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
from fairlora.collab.mixing import State, mix, round_bytes
from fairlora.collab.robust import screen, without
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


def ref_perplexities(session: Session) -> np.ndarray:
    """P_ij: perplexity of client j's model on client i's validation data (each model loaded once)."""
    clients, run = session.clients, session.cfg.run
    limit = session.cfg.collab.eval_batches
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
    states: list[State],
    ref_table: Callable[[], np.ndarray],
    signatures: Callable[[], list[tuple[torch.Tensor, torch.Tensor]]],
) -> tuple[np.ndarray, list[int]]:
    """W for `strategy` (and the rows that fell back to local training); model queries run lazily."""
    base, variant = T.split_strategy(strategy)
    if base == "none":
        return np.eye(len(states)), []
    if base in ("naive", "static"):
        weights = T.naive_trust(sizes) if base == "naive" else T.static_trust(proportions)
        return T.finite_rows(T.restrict(weights, variant, collab.topk, collab.threshold))
    if base == "dynamic":
        scores = T.dynamic_scores(T.weight_similarity(states))
    elif base == "dynamic-ref":
        scores = T.ref_scores(ref_table())
    else:
        scores = T.token_scores(T.token_distances(signatures()))
    return T.trust_from_scores(scores, collab.tau, variant, collab.topk, collab.threshold)


def trust_matrix(strategy: str, session: Session, states: list[State]) -> tuple[np.ndarray, list[int]]:
    """W for `strategy` at this round, from the in-process clients."""
    collab = session.cfg.collab
    return trust_weights(
        strategy,
        collab,
        [c.size for c in session.clients],
        session.allocation.proportion_matrix(),
        states,
        lambda: ref_perplexities(session),
        lambda: token_signatures(session),
    )


def token_signatures(session: Session) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every client's top-k logits on the shared reference rows (the models put in eval mode once)."""
    with models_in_eval(session.clients):
        k = session.cfg.collab.token_topk
        return [reference_logits(c, session.reference_batches, k) for c in session.clients]


def aggregate(session: Session, strategy: str, round_index: int, iteration: int) -> RoundRecord:
    """Screen, compute W, mix every client's personal mixture in, then evaluate each client."""
    clients = session.clients
    started = time.perf_counter()
    states = [c.get_state() for c in clients]
    excluded = screen(states, session.cfg.collab.max_norm_ratio)
    clean = [
        {k: torch.zeros_like(v) for k, v in s.items()} if i in excluded else s for i, s in enumerate(states)
    ]
    collected = time.perf_counter()
    weights, fallback = trust_matrix(strategy, session, clean)
    weights = without(weights, set(excluded))
    trusted = time.perf_counter()
    mixed = mix(clean, weights)
    for client, state in zip(clients, mixed, strict=True):
        client.receive(state)
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
        round_bytes(clean, weights),
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
