"""The Flower ServerApp: holds the trust matrix, sends each client its OWN mixture, and the in-process
Grid (`flower.mode: simulation`, no Ray) or a real SuperLink (`flower.mode: deployment`) underneath."""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fairlora.collab.config import CollabConfig, load_collab_config
from fairlora.collab.engine import RoundRecord, aggregation_iterations, trust_weights
from fairlora.collab.flower_client import CONFIG_KEY
from fairlora.collab.mixing import State, round_bytes
from fairlora.collab.plan import Plan, make_plan
from fairlora.collab.results import save_summary, strategy_summary
from fairlora.collab.robust import round_states, screen
from fairlora.errors import ConfigError, TrainingError

logger = logging.getLogger(__name__)


class Link:
    """The server's view of the clients: partition -> node, and one request/reply exchange."""

    def __init__(self, grid: Grid, timeout: float, partitions: dict[int, int]) -> None:
        self.grid, self.timeout, self.nodes = grid, timeout, partitions

    def ask(self, kind: str, contents: dict[int, RecordDict], group: str) -> dict[int, Message]:
        """Send `contents[p]` to each partition's node; replies by partition (missing = dropped out)."""
        by_node = {node: p for p, node in self.nodes.items()}
        messages = [Message(content, self.nodes[p], kind, group_id=group) for p, content in contents.items()]
        replies: dict[int, Message] = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.timeout):
            partition = by_node.get(reply.metadata.src_node_id)
            if partition is None or reply.has_error():
                logger.warning("client %s answered %s with an error: %s", partition, kind, reply.error)
                continue
            replies[partition] = reply
        return replies


def _config(**values: Any) -> RecordDict:
    return RecordDict({"cfg": ConfigRecord(values)})


def connect(grid: Grid, clients: int, timeout: float) -> dict[int, int]:
    """Wait (up to `timeout`) for the SuperNodes, then ask each which partition it serves."""
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < clients and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    messages = [Message(_config(kind="hello"), node, "query", group_id="hello") for node in nodes]
    partitions = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if not reply.has_error():
            partitions[int(reply.content["hello"]["partition"])] = reply.metadata.src_node_id
    if len(partitions) < clients:
        raise ConfigError(
            f"flower: {len(partitions)} of collab.clients={clients} clients connected within "
            f"flower.timeout_s={timeout:g}; start one SuperNode per client (node config partition-id=0..)"
        )
    return dict(sorted(partitions.items()))


def _states(replies: dict[int, Message], count: int) -> list[State | None]:
    return [replies[p].content["state"].to_torch_state_dict() if p in replies else None for p in range(count)]


def _mixed_round(
    link: Link, plan: Plan, strategy: str, states: list[State | None], group: str, last_good: list
) -> tuple:
    collab = plan.cfg.collab
    excluded = screen(states, collab.max_norm_ratio)
    if all(s is None for s in states):
        raise TrainingError(
            f"flower: no client answered round {group} within flower.timeout_s; check the SuperNodes"
        )
    started = time.perf_counter()

    def ref_table(kept: list[int]) -> np.ndarray:
        sent = {f"state-{j}": ArrayRecord(torch_state_dict=states[j]) for j in kept}
        replies = link.ask("query", {p: RecordDict(sent | dict(_config(kind="ref"))) for p in kept}, group)
        return np.array(
            [
                [float(replies[i].content["row"][f"state-{j}"]) if i in replies else np.nan for j in kept]
                for i in kept
            ]
        )

    def signatures(kept: list[int]) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        replies = link.ask("query", {p: _config(kind="token") for p in kept}, group)
        tops = [replies[p].content["top"].to_torch_state_dict() if p in replies else None for p in kept]
        return [(t["values"], t["indices"]) if t is not None else None for t in tops]

    sizes = [len(c.rows) for c in plan.allocation.clients]
    weights, fallback = trust_weights(
        strategy, collab, sizes, plan.allocation.proportion_matrix(), states, ref_table, signatures, excluded
    )
    trusted = time.perf_counter()
    mixed = round_states(states, weights, excluded, last_good)  # an excluded client keeps its last good
    last_good[:] = mixed
    return weights, fallback, excluded, mixed, round_bytes(states, weights), {"trust": trusted - started}


def serve_strategy(link: Link, plan: Plan, strategy: str) -> dict[str, Any]:
    """One strategy over Flower: local segments, then at each aggregation trust, mixing, evaluation."""
    collab, count = plan.cfg.collab, len(link.nodes)
    schedule = aggregation_iterations(collab.iterations, collab.pretraining_rounds, collab.trust_freq)
    ends = sorted(set(schedule) | {collab.iterations - 1})
    done, rounds, last_good = -1, [], [None] * count  # the last mixture each client received
    for end in ends:
        group = f"{strategy}-{end}"
        steps, reset = end - done, done == -1
        replies = link.ask("train", {p: _config(steps=steps, reset=reset) for p in link.nodes}, group)
        done = end
        if end not in schedule:
            continue
        states = _states(replies, count)
        weights, fallback, excluded, mixed, sent, seconds = _mixed_round(
            link, plan, strategy, states, group, last_good
        )
        started = time.perf_counter()
        contents = {
            p: RecordDict(
                ({"mixture": ArrayRecord(torch_state_dict=mixed[p])} if mixed[p] is not None else {})
                | dict(_config(final=False, strategy=strategy, final_metrics="{}"))
            )
            for p in link.nodes
        }
        evaluated = link.ask("evaluate", contents, group)
        metrics = [
            dict(evaluated[p].content["metrics"]) if p in evaluated else _missing() for p in range(count)
        ]
        seconds["eval"] = time.perf_counter() - started
        rounds.append(
            RoundRecord(len(rounds), end, weights.tolist(), metrics, sent, excluded, fallback, seconds)
        )
    names = [f"client-{p}" for p in range(count)]
    summary = strategy_summary(strategy, names, rounds, [len(c.rows) for c in plan.allocation.clients])
    finals = {
        p: _config(final=True, strategy=strategy, final_metrics=json.dumps(summary["final"][names[p]]))
        for p in link.nodes
    }
    link.ask("evaluate", finals, f"{strategy}-final")
    save_summary(plan.cfg.run_dir / strategy, summary)
    return summary


def _missing() -> dict[str, float]:
    return {"loss": float("nan"), "perplexity": float("nan"), "accuracy": float("nan")}


def serve(grid: Grid, plan: Plan, finished: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Connect the clients and run every configured strategy not `finished` (summary.json per strategy)."""
    finished = finished or {}
    link = Link(
        grid, plan.cfg.flower.timeout_s, connect(grid, plan.cfg.collab.clients, plan.cfg.flower.timeout_s)
    )
    return [finished.get(s) or serve_strategy(link, plan, s) for s in plan.cfg.collab.strategies]


def make_server_app() -> ServerApp:
    """The ServerApp `flwr run` starts: it reads the collab config named in the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, make_plan(load_collab_config(str(context.run_config[CONFIG_KEY]))))

    return app


server_app = make_server_app()


def check_flower(cfg: CollabConfig) -> None:
    """Deployment: the SuperLink must answer at flower.address within flower.timeout_s (no hang)."""
    if cfg.flower.mode != "deployment":
        return
    host, _, port = cfg.flower.address.rpartition(":")
    try:
        with socket.create_connection(
            (host or "127.0.0.1", int(port)), timeout=min(cfg.flower.timeout_s, 10.0)
        ):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"flower.address: no Flower SuperLink answers at {cfg.flower.address} ({exc}); start "
            f"`flower-superlink` there, or fix flower.address / flower.timeout_s"
        ) from None
