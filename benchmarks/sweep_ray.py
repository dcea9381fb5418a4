"""Sweep on Ray: the same grid of tiny cells trained one after another and as Ray tasks on a local cluster.

The grid is --cells seeds (seed=1..N) of a tiny-bert LoRA run (--steps optimisation steps each) on the
generated identity set. The sequential engine trains them in this process (all its threads); the Ray
engine (`fairlora sweep --engine ray`) runs them as tasks of --cpus-per-run CPUs each on a local Ray
cluster of --num-cpus CPUs, started before the timing (its start is reported apart as `ray_start_s`:
a user's cluster is already running).

Figures (JSON --out, and a printed table):
- `sequential_s`, `ray_s`: wall seconds of each sweep call (cells trained, tables written).
- `speedup` = sequential_s / ray_s. At most `parallelism` = min(cells, num_cpus // cpus_per_run),
  and less on a machine whose cores other work shares.
- `cell_s_sequential`, `cell_s_ray`: mean seconds of one cell's `fairlora.train` (on Ray: measured in
  the worker around the task's function, so a worker's first import of fairlora and torch counts).
- `summary_max_abs_diff`: the largest difference between the two summaries (the sequential cells use
  all threads, the Ray cells --cpus-per-run: bootstrap bounds may move in the 8th digit).
- `overhead_per_cell_s` = (ray_s - sum of the Ray cells' own seconds / parallelism) / cells: what the
  engine adds per cell on top of the cells' own work at full parallelism (task submission, the
  storage probe, scheduling, result polling, the summary). Goal: under 3 s.

    .venv/bin/python benchmarks/sweep_ray.py [--cells 4] [--steps 30] [--num-cpus 2] [--cpus-per-run 1]
        [--out benchmarks/results/sweep_ray.json]

Timings never fail the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table

from fairlora.ray_engine import RayOptions
from fairlora.sweeps import sweep


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--cpus-per-run", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def base_config(folder: Path, steps: int) -> Path:
    """A tiny-bert LoRA run on the identity set writing under folder."""
    config = {
        "name": "bench",
        "output_dir": str(folder / "runs"),
        "model": {"name": "tiny-bert", "max_length": 48},
        "data": {"name": "identity", "identity": {"examples_per_group": 12}},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]},
        "train": {"max_steps": steps, "batch_size": 8, "logging_steps": steps, "save_strategy": "no"},
        "eval": {"splits": ["test", "train"], "batch_size": 64, "min_group_size": 2, "n_boot": 100},
    }
    path = folder / "bench.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Time the sequential sweep, then the Ray sweep of the same cells in another folder."""
    import ray

    grid = ["seed=" + ",".join(str(seed) for seed in range(1, args.cells + 1))]
    start = time.perf_counter()
    sequential = sweep(base_config(root / "sequential", args.steps), grid, progress=False)
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        options = RayOptions(cpus_per_run=args.cpus_per_run)
        config = base_config(root / "ray", args.steps)
        on_ray = sweep(config, grid, progress=False, engine="ray", ray_options=options)
        ray_s = time.perf_counter() - start
    finally:
        ray.shutdown()
    parallelism = max(1, min(args.cells, int(args.num_cpus // args.cpus_per_run)))
    ray_cells = list(on_ray.wall_s.values())
    return {
        "cells": args.cells,
        "steps": args.steps,
        "num_cpus": args.num_cpus,
        "cpus_per_run": args.cpus_per_run,
        "parallelism": parallelism,
        "sequential_s": sequential_s,
        "ray_s": ray_s,
        "ray_start_s": ray_start_s,
        "speedup": sequential_s / ray_s,
        "cell_s_sequential": sum(sequential.wall_s.values()) / len(sequential.wall_s),
        "cell_s_ray": sum(ray_cells) / len(ray_cells),
        "overhead_per_cell_s": (ray_s - sum(ray_cells) / parallelism) / args.cells,
        "summary_max_abs_diff": summary_diff(sequential.summary, on_ray.summary),
    }


def summary_diff(first: pd.DataFrame, second: pd.DataFrame) -> float:
    """The largest absolute difference between two summaries' number columns."""
    return float((first.select_dtypes("number") - second.select_dtypes("number")).abs().max().max())


def print_table(figures: dict[str, Any], console: Console) -> None:
    """The figures as a table."""
    title = f"sweep of {figures['cells']} tiny cells: sequential vs Ray ({figures['num_cpus']} CPUs)"
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    keys = ["sequential_s", "ray_s", "ray_start_s", "speedup", "parallelism"]
    for key in [*keys, "cell_s_sequential", "cell_s_ray", "overhead_per_cell_s"]:
        table.add_row(key, f"{figures[key]:.2f}")
    table.add_row("summary_max_abs_diff", f"{figures['summary_max_abs_diff']:.1e}")
    console.print(table)
    goal = "met" if figures["overhead_per_cell_s"] < 3.0 else "NOT met"
    console.print(f"overhead per cell {figures['overhead_per_cell_s']:.2f} s: goal < 3 s {goal}")


def main() -> None:
    """Run the benchmark, print the table, write the JSON."""
    args = parse_args()
    with tempfile.TemporaryDirectory() as folder:
        figures = measure(args, Path(folder))
    figures |= {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_1min": os.getloadavg()[0]},
    }
    print_table(figures, Console())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
