"""Collab scaling: peak memory of N clients on one shared base, and aggregation time vs clients.

- memory: one subprocess per N (default 1, 4, 8 clients of --memory-model) builds the clients on ONE
  base model, takes one local step each and one aggregation; peak RSS (VmHWM) on CPU, max allocated
  on CUDA. Goal: 8 clients <= 1.3 x one client (`memory_ratio_8_vs_1`).
- time: per strategy and N (default 2, 4, 8, 16 clients of --time-model), the median over --rounds
  aggregation rounds of collect / trust / mix / eval seconds (local training excluded), and the
  trust + mixing share of a whole round (aggregation plus --trust-freq local iterations of every
  client): goal <= 5% for naive and dynamic at N = 8 (`trust_share_of_round`). dynamic-ref is
  compared with N^2 evaluation forward passes of one validation batch (`ref_vs_n2_forwards`).
- flower: --flower-clients (8) --time-model clients, one strategy, a run of 1 + --flower-rounds rounds
  on Flower's simulation engine (Ray actors of --flower-cpus / --flower-gpus each) and on the
  in-process engine; time per round = median time from one round's trust computation to the next
  (every client's --trust-freq local iterations, trust, mixing, evaluation; Ray's start and the
  actors' model loading are outside). Goal: `flower_sim_round_ratio` (Flower / in process) <= 1.5.

    .venv/bin/python benchmarks/collab_scaling.py [--memory-model smollm2-135m] [--memory-clients 1,4,8]
        [--time-model tiny-llama] [--time-clients 2,4,8,16]
        [--strategies naive,dynamic,dynamic-ref,dynamic-token]
        [--rounds 3] [--threads N] [--out benchmarks/results/collab_scaling.json]
        [--flower-clients 8] [--flower-rounds 3] [--flower-cpus 1] [--flower-gpus 0] [--skip-flower]
        [--only-flower]

Timings never fail the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from fairlora.collab import engine, flower_app
from fairlora.collab.client import evaluate_examples, local_step
from fairlora.collab.command import run_collab
from fairlora.collab.config import build_collab_config
from fairlora.collab.engine import aggregate
from fairlora.collab.plan import build_session, encode_clients, load_shared_model, make_plan


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memory-model", default="smollm2-135m")
    parser.add_argument("--memory-clients", default="1,4,8")
    parser.add_argument("--time-model", default="tiny-llama")
    parser.add_argument("--time-clients", default="2,4,8,16")
    parser.add_argument("--strategies", default="naive,dynamic,dynamic-ref,dynamic-token")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trust-freq", type=int, default=25, help="local iterations per round (paper: 25)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--flower-clients", type=int, default=8)
    parser.add_argument("--flower-rounds", type=int, default=3, help="extra rounds timed (>= 1)")
    parser.add_argument("--flower-strategy", default="naive")
    parser.add_argument("--flower-cpus", type=float, default=1.0, help="flower.client_cpus per actor")
    parser.add_argument("--flower-gpus", type=float, default=0.0, help="flower.client_gpus per actor")
    parser.add_argument("--skip-flower", action="store_true")
    parser.add_argument("--only-flower", action="store_true", help="only the Flower measurement")
    parser.add_argument("--out", default="benchmarks/results/collab_scaling.json")
    return parser.parse_args()


def collab_config(model: str, clients: int, args: argparse.Namespace, strategy: str = "naive") -> Any:
    """A collab config of `clients` clients on generated topics (the data does not change the costs)."""
    return build_collab_config(
        {
            "name": "scaling",
            "output_dir": "/nonexistent-not-written",
            "model": {"name": model, "max_length": args.seq},
            "lora": {"r": 4, "alpha": 32},
            "train": {"batch_size": args.batch, "progress_bar": False},
            "eval": {"batch_size": args.batch},
            "collab": {
                "clients": clients,
                "corpus": "topics",
                "split": "mixed",
                "examples_per_client": 4 * args.batch,
                "val_share": 0.25,
                "reference_examples": args.batch,
                "strategies": [strategy],
                "eval_batches": 1,
            },
        }
    )


def session_for(model: str, clients: int, args: argparse.Namespace, strategy: str) -> Any:
    """Clients on one shared base (nothing is written)."""
    plan = make_plan(collab_config(model, clients, args, strategy))
    loaded = load_shared_model(plan)
    return build_session(plan, loaded, encode_clients(plan, loaded.tokenizer))


def peak_memory_mb() -> float:
    """Peak RSS of this process (CPU) or max allocated (CUDA), in MiB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(args: argparse.Namespace) -> None:
    """In a subprocess: N clients, one step each, one aggregation; print the peak memory as JSON."""
    plan = make_plan(collab_config(args.memory_model, args.memory_child, args, "naive"))
    loaded = load_shared_model(plan)
    model_mb = peak_memory_mb()  # the process with the base model loaded: what every N shares
    session = build_session(plan, loaded, encode_clients(plan, loaded.tokenizer))
    for client in session.clients:
        local_step(client, session.cfg.run, session.collate)
    aggregate(session, "naive", 0, 0)
    peak = peak_memory_mb()
    print(json.dumps({"clients": args.memory_child, "peak_mb": peak, "model_mb": model_mb}))


def measure_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Peak memory per client count, each in a fresh subprocess."""
    rows, increments = {}, {}
    for clients in (int(c) for c in args.memory_clients.split(",")):
        command = [
            sys.executable,
            __file__,
            "--memory-child",
            str(clients),
            "--memory-model",
            args.memory_model,
        ]
        command += ["--batch", str(args.batch), "--seq", str(args.seq)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
        child = json.loads(lines[-1]) if lines else None
        rows[clients] = child["peak_mb"] if child else None
        increments[clients] = child["peak_mb"] - child["model_mb"] if child else None
        if not lines:
            print(output.stderr[-2000:], file=sys.stderr)
    ratio = rows[8] / rows[1] if rows.get(8) and rows.get(1) else None
    added = increments[8] / increments[1] if increments.get(8) and increments.get(1) else None
    return {
        "model": args.memory_model,
        "peak_mb": rows,
        "memory_ratio_8_vs_1": ratio,  # whole process (the base model included)
        "increment_mb": increments,  # above the process with the base model loaded
        "increment_ratio_8_vs_1": added,
    }


def forward_seconds(session: Any) -> float:
    """Median time of one evaluation forward pass (one validation batch of one client)."""
    client, run = session.clients[0], session.cfg.run
    client.setup.activate()
    examples = client.data.val_examples[: run.eval.batch_size]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        evaluate_examples(client.setup.model, examples, session.collate, run.task, run.eval.batch_size)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_strategy(args: argparse.Namespace, strategy: str, clients: int) -> dict[str, float]:
    """Median aggregation timings over --rounds rounds and the trust share of a whole round."""
    session = session_for(args.time_model, clients, args, strategy)
    start = time.perf_counter()
    for client in session.clients:
        local_step(client, session.cfg.run, session.collate)
    step_seconds = (time.perf_counter() - start) / clients
    parts: dict[str, list[float]] = {}
    for index in range(args.rounds):
        for key, value in aggregate(session, strategy, index, index).seconds.items():
            parts.setdefault(key, []).append(value)
    row = {key: statistics.median(values) for key, values in parts.items()}
    aggregation = sum(row.values())
    local = args.trust_freq * clients * step_seconds
    row |= {
        "aggregation_s": aggregation,
        "local_training_s": local,
        "trust_share_of_round": (row["trust"] + row["mix"]) / (aggregation + local),
        "trust_share_of_aggregation": (row["trust"] + row["mix"]) / aggregation,
    }
    if strategy.startswith("dynamic-ref"):
        row["ref_vs_n2_forwards"] = row["trust"] / (clients**2 * forward_seconds(session))
    return row


@contextlib.contextmanager
def round_clock() -> Iterator[list[float]]:
    """Times at which a round's trust computation starts (after its local iterations), in either engine."""
    stamps: list[float] = []
    originals = {module: module.trust_weights for module in (engine, flower_app)}

    def stamped(original: Any) -> Any:
        def trust_weights(*args: Any, **kwargs: Any) -> Any:
            stamps.append(time.perf_counter())
            return original(*args, **kwargs)

        return trust_weights

    for module, original in originals.items():
        module.trust_weights = stamped(original)
    try:
        yield stamps
    finally:
        for module, original in originals.items():
            module.trust_weights = original


def round_seconds(args: argparse.Namespace, engine_name: str, folder: Path) -> dict[str, float]:
    """One collab run of 1 + --flower-rounds rounds on `engine_name`: the median time from one round's
    trust computation to the next (local iterations, trust, mixing, evaluation) and the whole run."""
    cfg = collab_config(args.time_model, args.flower_clients, args, args.flower_strategy)
    data = cfg.to_dict() | {"name": engine_name, "output_dir": str(folder), "engine": engine_name}
    data["collab"] |= {
        "pretraining_rounds": args.trust_freq,
        "trust_freq": args.trust_freq,
        "iterations": args.trust_freq * (1 + args.flower_rounds),
        "client_runs": False,
    }
    data["flower"] |= {"mode": "simulation", "client_cpus": args.flower_cpus, "client_gpus": args.flower_gpus}
    start = time.perf_counter()
    with round_clock() as stamps:
        run_collab(build_collab_config(data), overwrite=True, resume=False, console=Console(quiet=True))
    periods = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "round_s": statistics.median(periods),
        "rounds_timed": len(periods),
        "run_s": time.perf_counter() - start,
    }


def measure_flower(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per round (its --trust-freq local iterations of every client, trust, mixing, evaluation)
    on Flower's simulation engine and in process; Ray's start and model loading are not in a round."""
    with tempfile.TemporaryDirectory(prefix="collab-scaling-") as tmp:
        rows = {name: round_seconds(args, name, Path(tmp)) for name in ("simulation", "flower")}
    return {
        "clients": args.flower_clients,
        "strategy": args.flower_strategy,
        "local_iterations_per_round": args.trust_freq,
        "in_process": rows["simulation"],
        "flower_simulation": rows["flower"],
        "flower_sim_round_ratio": rows["flower"]["round_s"] / rows["simulation"]["round_s"],
    }


def print_tables(console: Console, result: dict[str, Any]) -> None:
    """Memory and timing tables."""
    memory = result.get("memory")
    if memory:
        ratio = memory["memory_ratio_8_vs_1"]
        console.print(f"peak memory ({memory['model']}): {memory['peak_mb']} MiB; 8 vs 1: {ratio}")
        added = memory["increment_ratio_8_vs_1"]
        console.print(f"above the loaded model: {memory['increment_mb']} MiB; 8 vs 1: {added}")
    flower = result.get("flower_sim")
    if flower:
        ours, theirs = flower["in_process"]["round_s"], flower["flower_simulation"]["round_s"]
        console.print(
            f"round of {flower['clients']} clients ({flower['strategy']}, "
            f"{flower['local_iterations_per_round']} local iterations): in process {ours:.3f} s, "
            f"Flower simulation engine {theirs:.3f} s; "
            f"flower_sim_round_ratio {flower['flower_sim_round_ratio']:.3f}"
        )
    if not result["time"]:
        return
    table = Table(
        title=f"aggregation round vs clients ({result['settings']['time_model']}), medians in seconds"
    )
    for column in (
        "strategy",
        "N",
        "collect",
        "trust",
        "mix",
        "eval",
        "trust share of round",
        "ref / N^2 fwd",
    ):
        table.add_column(column)
    for strategy, rows in result["time"].items():
        for clients, row in rows.items():
            ref = row.get("ref_vs_n2_forwards")
            table.add_row(
                strategy,
                str(clients),
                *(f"{row[k]:.4f}" for k in ("collect", "trust", "mix", "eval")),
                f"{row['trust_share_of_round']:.2%}",
                "" if ref is None else f"{ref:.2f}",
            )
    console.print(table)


def main() -> None:
    """Measure, print, write the JSON."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args)
        return
    strategies = [] if args.only_flower else args.strategies.split(",")
    timing = {
        s: {int(n): time_strategy(args, s, int(n)) for n in args.time_clients.split(",")} for s in strategies
    }
    result: dict[str, Any] = {
        "benchmark": "collab_scaling",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": vars(args) | {"threads_used": torch.get_num_threads(), "machine": platform.machine()},
        "time": timing,
        "trust_share_of_round": {
            s: rows[8]["trust_share_of_round"] for s, rows in timing.items() if 8 in rows
        },
    }
    if not args.skip_flower:
        result["flower_sim"] = measure_flower(args)
        result["flower_sim_round_ratio"] = result["flower_sim"]["flower_sim_round_ratio"]
    if not args.skip_memory and not args.only_flower:
        result["memory"] = measure_memory(args)
        result["memory_ratio_8_vs_1"] = result["memory"]["memory_ratio_8_vs_1"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_tables(Console(width=140), result)


if __name__ == "__main__":
    main()
