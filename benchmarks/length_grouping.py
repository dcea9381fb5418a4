"""Length-grouped batches: the same LoRA run with train.group_by_length off and on, on real text.

MiniLM (minilm-l6) LoRA classification on AG News (or HateCheck) with their natural lengths: the
same rows, seed, epochs and batch size; the only change is HF's LengthGroupedSampler. Reported:
each run's training time (the Trainer's train_runtime), `time_ratio` = on / off (goal <= 0.8), and
the test accuracy of both (it should stay within noise). The runs alternate off, on, off, on, ...
(`--repeats` pairs); the ratio is the median of the paired ratios.
The data come from $FAIRLORA_DATA_DIR (or ../shared/data); without them the benchmark says so and
exits 0.

    .venv/bin/python benchmarks/length_grouping.py [--data ag_news|hatecheck] [--rows 4000] [--epochs 1]
        [--batch 16] [--repeats 1] [--model minilm-l6] [--out benchmarks/results/length_grouping.json]

Smoke run: --model tiny-bert --rows 64 --epochs 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import fairlora
from fairlora.errors import DataError
from fairlora.metrics.bootstrap import wilson_interval


def run_config(args: argparse.Namespace, out_dir: str, grouped: bool, repeat: int) -> dict[str, Any]:
    """The run: LoRA on `args.model`, the dataset's first `args.rows` rows, group_by_length on or off."""
    return {
        "name": f"{'grouped' if grouped else 'random'}-{repeat}",
        "output_dir": out_dir,
        "seed": 0,
        "model": {"name": args.model, "max_length": args.max_length},
        "data": {"name": args.data, "max_examples": args.rows},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch,
            "lr": 5e-4,
            "save_strategy": "no",
            "progress_bar": False,
            "logging_steps": 50,
            "group_by_length": grouped,
        },
        "eval": {"splits": ["test"], "n_boot": 0},
    }


def wilson(accuracy: float, n: int) -> list[float]:
    """The 95% Wilson interval of an accuracy over n test examples."""
    low, high = wilson_interval(np.array([accuracy]), np.array([n]), 0.95)
    return [float(low[0]), float(high[0])]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate off / on runs; per-run time and accuracy, and the median on/off time ratio."""
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="fairlora-lengths-") as out_dir:
        for repeat in range(args.repeats):
            for key, grouped in (("off", False), ("on", True)):
                result = fairlora.train(run_config(args, out_dir, grouped, repeat))
                accuracy = result.splits["test"].overall["accuracy"]
                runs[key].append(
                    {
                        "train_seconds": result.train["train_runtime"],
                        "test_accuracy": accuracy.value,
                        "test_accuracy_ci95": wilson(accuracy.value, accuracy.n),
                        "test_examples": accuracy.n,
                    }
                )
    ratios = [
        on["train_seconds"] / off["train_seconds"] for off, on in zip(runs["off"], runs["on"], strict=True)
    ]
    return {"runs": runs, "time_ratios": ratios, "time_ratio": statistics.median(ratios)}


def main() -> None:
    """Parse arguments, run both settings, print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ag_news", choices=["ag_news", "hatecheck"])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    try:
        measured = measure(args)
    except DataError as exc:
        print(f"skipped: {args.data} is not available here ({exc})")
        sys.exit(0)
    report = {
        "benchmark": "length_grouping",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "goal": "time_ratio <= 0.8, test accuracies within noise",
        **measured,
    }
    table = Table(title=f"group_by_length on {args.data}, {args.model}, {args.rows} rows")
    for column in ("run", "train s", "test accuracy [95% CI]", "test n"):
        table.add_column(column)
    for key, runs in measured["runs"].items():
        for index, run in enumerate(runs):
            low, high = (f"{x:.4f}" for x in run["test_accuracy_ci95"])
            accuracy = f"{run['test_accuracy']:.4f} [{low}, {high}]"
            table.add_row(
                f"{key} #{index}", f"{run['train_seconds']:.2f}", accuracy, str(run["test_examples"])
            )
    Console().print(table)
    print(f"time_ratio (on / off, median of pairs): {measured['time_ratio']:.3f}  (goal <= 0.8)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
