"""The Flower ServerApp: holds the trust matrix, sends each client its OWN mixture and writes the run
folder from what the clients send back; under it Flower's simulation engine or a real SuperLink."""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fairlora.collab.config import CollabConfig
from fairlora.collab.engine import RoundRecord, aggregation_iterations, trust_weights
from fairlora.collab.flower_appdir import check_versions, from_run_config, versions
from fairlora.collab.flower_client import state_from, state_records
from fairlora.collab.mixing import State, round_bytes
from fairlora.collab.plan import Plan, collab_file, make_plan
from fairlora.collab.results import load_summary, save_summary, strategy_summary
from fairlora.collab.robust import round_states, screen
from fairlora.collab.runfolders import write_client_files
from fairlora.collab.state import ClientState, read_states, save_states
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


def connect(grid: Grid, cfg: CollabConfig) -> dict[int, int]:
    """Wait (up to flower.timeout_s) for the SuperNodes, send each the resolved config, check its fairlora
    and flwr versions against this ServerApp's, and learn which partition it serves."""
    clients, timeout = cfg.collab.clients, cfg.flower.timeout_s
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < clients and time.monotonic() < deadline:
        time.sleep(0.5)
        nodes = list(grid.get_node_ids())
    hello = _config(kind="hello", config=cfg.to_yaml())
    messages = [Message(hello, node, "query", group_id="hello") for node in nodes]
    partitions = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            logger.warning(
                "node %s answered hello with an error: %s", reply.metadata.src_node_id, reply.error
            )
            continue
        answer = reply.content["hello"]
        partition = int(answer["partition"])
        node_versions = {k: str(answer[k]) for k in ("fairlora", "flwr") if k in answer}
        check_versions(f"the SuperNode of partition-id={partition}", node_versions, versions())
        partitions[partition] = reply.metadata.src_node_id
    if len(partitions) < clients:
        raise ConfigError(
            f"flower: {len(partitions)} of collab.clients={clients} clients connected within "
            f"flower.timeout_s={timeout:g}; start one SuperNode per client (node config partition-id=0..)"
        )
    return dict(sorted(partitions.items()))


def _states(replies: dict[int, Message], count: int) -> list[State | None]:
    return [replies[p].content["state"].to_torch_state_dict() if p in replies else None for p in range(count)]


def _mixed_round(link: Link, plan: Plan, strategy: str, states: list[State | None], group: str) -> tuple:
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
    mixed = round_states(states, weights, excluded, [None] * len(states))  # None: excluded, see below
    return weights, fallback, excluded, mixed, round_bytes(states, weights), {"trust": trusted - started}


def _evaluate_round(
    link: Link, plan: Plan, strategy: str, replies: dict[int, Message], end: int, index: int
) -> tuple[RoundRecord, dict[int, ClientState]]:
    """Trust, mixing and evaluation at aggregation iteration `end`: the round and each client's state."""
    group, count = f"{strategy}-{end}", len(link.nodes)
    weights, fallback, excluded, mixed, sent, seconds = _mixed_round(
        link, plan, strategy, _states(replies, count), group
    )
    started = time.perf_counter()
    contents = {  # an excluded client gets no mixture: it goes back to its own last good state
        p: RecordDict(
            ({"mixture": ArrayRecord(torch_state_dict=mixed[p])} if mixed[p] is not None else {})
            | dict(_config(final=False, checkpoint=True, strategy=strategy, final_metrics="{}"))
        )
        for p in link.nodes
    }
    evaluated = link.ask("evaluate", contents, group)
    metrics = [dict(evaluated[p].content["metrics"]) if p in evaluated else _missing() for p in range(count)]
    seconds["eval"] = time.perf_counter() - started
    record = RoundRecord(index, end, weights.tolist(), metrics, sent, excluded, fallback, seconds)
    return record, {p: state_from(reply.content) for p, reply in evaluated.items()}


def save_checkpoint(
    folder: Path, states: dict[int, ClientState], count: int, end: int, rounds: list[RoundRecord]
) -> None:
    """Every client's state after aggregation iteration `end` and the rounds so far, in the layout of the
    in-process engine (`<strategy>/state/`); a round some client did not answer keeps the previous one."""
    if len(states) < count:
        missing = sorted(set(range(count)) - set(states))
        logger.warning(
            "round at iteration %d: no state from clients %s; resume keeps an earlier one", end, missing
        )
        return
    save_states(folder, {f"client-{p}": states[p] for p in range(count)}, end, rounds)


def restore(link: Link, folder: Path, strategy: str) -> tuple[int, list[RoundRecord]]:
    """--resume: send each client the state saved after the last completed round; (iteration, rounds)
    of that round, or (-1, []) when nothing was saved."""
    saved = read_states(folder, [f"client-{p}" for p in sorted(link.nodes)])
    if saved is None:
        return -1, []
    iteration, rounds, states = saved
    contents = {
        p: RecordDict(state_records(states[f"client-{p}"]) | dict(_config(kind="restore")))
        for p in link.nodes
    }
    replies = link.ask("query", contents, f"{strategy}-restore")
    if missing := sorted(set(link.nodes) - set(replies)):
        raise TrainingError(
            f"flower: clients {missing} did not take their saved state of {strategy} (iteration "
            f"{iteration}); check their SuperNodes and rerun with --resume"
        )
    logger.info("%s: resumed after iteration %d (%d rounds kept)", strategy, iteration, len(rounds))
    return iteration, rounds


def serve_strategy(link: Link, plan: Plan, strategy: str, resume: bool = False) -> dict[str, Any]:
    """One strategy over Flower: local segments, then at each aggregation trust, mixing, evaluation and a
    saved state; with `resume`, it continues after the last saved round."""
    collab, count = plan.cfg.collab, len(link.nodes)
    folder = plan.cfg.run_dir / strategy
    schedule = aggregation_iterations(collab.iterations, collab.pretraining_rounds, collab.trust_freq)
    ends = sorted(set(schedule) | {collab.iterations - 1})
    done, rounds = restore(link, folder, strategy) if resume else (-1, [])
    for end in [e for e in ends if e > done]:
        steps, reset = end - done, done == -1
        replies = link.ask(
            "train", {p: _config(steps=steps, reset=reset) for p in link.nodes}, f"{strategy}-{end}"
        )
        done = end
        if end not in schedule:
            continue
        record, states = _evaluate_round(link, plan, strategy, replies, end, len(rounds))
        rounds.append(record)
        save_checkpoint(folder, states, count, end, rounds)
    names = [f"client-{p}" for p in range(count)]
    summary = strategy_summary(strategy, names, rounds, [len(c.rows) for c in plan.allocation.clients])
    finals = {
        p: _config(
            final=True,
            checkpoint=False,
            strategy=strategy,
            final_metrics=json.dumps(summary["final"][names[p]]),
        )
        for p in link.nodes
    }
    replies = link.ask("evaluate", finals, f"{strategy}-final")
    if collab.client_runs:
        for p, run in enumerate(plan.client_runs[strategy]):
            if p in replies and "files" in replies[p].content:
                write_client_files(run, dict(replies[p].content["files"]))  # type: ignore[arg-type]
            else:
                logger.warning("%s: client %d sent no run folder; %s stays empty", strategy, p, run.run_dir)
    save_summary(folder, summary)
    return summary


def _missing() -> dict[str, float]:
    return {"loss": float("nan"), "perplexity": float("nan"), "accuracy": float("nan")}


def serve(
    grid: Grid, plan: Plan, finished: dict[str, dict[str, Any]] | None = None, resume: bool = False
) -> list[dict[str, Any]]:
    """Connect the clients and run every configured strategy not `finished` (summary.json per strategy);
    with `resume`, an unfinished strategy continues after its last saved round."""
    finished = finished or {}
    link = Link(grid, plan.cfg.flower.timeout_s, connect(grid, plan.cfg))
    return [finished.get(s) or serve_strategy(link, plan, s, resume) for s in plan.cfg.collab.strategies]


def serve_run(grid: Grid, cfg: CollabConfig, resume: bool) -> list[dict[str, Any]]:
    """The whole run behind a ServerApp: the run folder (made here when nobody prepared it), every
    strategy (with `resume`, finished ones are kept and unfinished ones continue after their last saved
    round), collab.json and the report."""
    from fairlora.collab.command import check_same_config, prepare_folder, run_facts
    from fairlora.collab.report import write_collab_report
    from fairlora.collab.results import save_collab_results

    if resume:
        check_same_config(cfg)  # `flwr run ... resume=true` with other settings would mix two runs' states
    plan = make_plan(cfg)
    if not collab_file(cfg).is_file():
        prepare_folder(plan, overwrite=False)
    finished = {s: done for s in cfg.collab.strategies if resume and (done := load_summary(cfg.run_dir / s))}
    summaries = serve(grid, plan, finished, resume)
    save_collab_results(cfg.run_dir, summaries, run_facts(plan))
    write_collab_report(cfg.run_dir)
    return summaries


def make_server_app(cfg: CollabConfig | None = None, resume: bool = False) -> ServerApp:
    """The ServerApp: runs `cfg` when given (simulation in this process), else the collab config that
    `flwr run` put in the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if cfg is None:
            serve_run(grid, *from_run_config(dict(context.run_config)))
        else:
            serve_run(grid, cfg, resume)

    return app


server_app = make_server_app()


def check_flower(cfg: CollabConfig) -> None:
    """Simulation: Ray must import; deployment: the SuperLink must answer at flower.address within
    flower.timeout_s (no hang)."""
    if cfg.flower.mode == "simulation":
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "flower.mode=simulation runs on Flower's simulation engine, which needs Ray: pip install "
                '"fairlora[simulation]" (or set flower.mode=deployment, or engine=simulation)'
            )
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
