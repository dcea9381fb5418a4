"""Collab quality: mean and worst per-client validation perplexity of every trust strategy.

One collab run per (split, seed) on AG News topics (../shared/data/ag_news), every strategy in it
(they share the local warm-up). Reports, per split, the mean over seeds of each strategy's mean and
worst per-client perplexity, and whether the paper's ordering holds: dynamic-token and dynamic-ref
beat naive (FedAvg) and none (local training), with a larger gain when clients differ more
(specific > mixed).

    .venv/bin/python benchmarks/collab_strategies.py [--model smollm2-135m] [--clients 4]
        [--splits specific,mixed] [--seeds 0,1,2] [--iterations 6] [--max-minutes 60]
        [--out benchmarks/results/collab_strategies.json]

Quality, not time: the numbers do not depend on the machine's load (CPU, fp32, seeded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from fairlora.collab.command import run_collab
from fairlora.collab.config import build_collab_config

STRATEGIES = "none,naive,dynamic,dynamic-ref,dynamic-token"
SMOLLM2_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--method", default="lora")
    parser.add_argument("--corpus", default="ag_news", help="ag_news, topics or prose_code")
    parser.add_argument(
        "--clients",
        default="4",
        help="clients, or per split: specific=8,mixed=4",
    )
    parser.add_argument("--splits", default="specific,mixed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--examples", type=int, default=32, help="rows per client (train + validation)")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3, help="local iterations before the first mixing")
    parser.add_argument("--trust-freq", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=32, help="model.max_length (tokens per row)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument(
        "--categories", default="World,Sports", help="specific split: topics used (2 clients per topic)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=60.0, help="start no new run after this")
    parser.add_argument("--runs-dir", default=None, help="where the collab runs go (default: a temp folder)")
    parser.add_argument("--out", default="benchmarks/results/collab_strategies.json")
    return parser.parse_args()


def clients_for(spec: str, split: str) -> int:
    """Clients of `split` from "specific=8,mixed=4" (or one number for every split)."""
    if "=" not in spec:
        return int(spec)
    table = dict(item.split("=") for item in spec.split(","))
    return int(table.get(split, 4))


def collab_overrides(args: argparse.Namespace, split: str, seed: int, runs_dir: str) -> dict[str, Any]:
    """The collab config of one (split, seed) run."""
    targets = SMOLLM2_TARGETS if args.model == "smollm2-135m" else None
    return {
        "name": f"{split}-seed{seed}",
        "output_dir": runs_dir,
        "seed": seed,
        "task": "causal_lm",
        "method": args.method,
        "model": {"name": args.model, "max_length": args.seq},
        "lora": {"r": 4, "alpha": 32, "dropout": 0.1, "target_modules": targets},
        "train": {
            "lr": args.lr,
            "batch_size": args.batch,
            "weight_decay": 1e-3,
            "scheduler": "cosine",
            "warmup_ratio": 0.02,
            "progress_bar": False,
        },
        "eval": {"batch_size": args.eval_batch, "n_boot": 0, "splits": ["test"]},
        "collab": {
            "clients": clients_for(args.clients, split),
            "corpus": args.corpus,
            "split": split,
            "examples_per_client": args.examples,
            "val_share": 0.25,
            "iterations": args.iterations,
            "pretraining_rounds": args.warmup,
            "trust_freq": args.trust_freq,
            "strategies": args.strategies.split(","),
            "categories": args.categories.split(",") if args.categories and split == "specific" else None,
            "client_runs": False,
        },
    }


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """split -> strategy -> mean/std over seeds of mean and worst per-client perplexity."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        table[split] = {}
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            picked = [r for r in rows if r["split"] == split and r["strategy"] == strategy]
            mean = [r["mean_perplexity"] for r in picked]
            worst = [r["worst_perplexity"] for r in picked]
            table[split][strategy] = {
                "mean_ppl": statistics.fmean(mean),
                "mean_ppl_std": statistics.pstdev(mean),
                "worst_ppl": statistics.fmean(worst),
                "worst_ppl_std": statistics.pstdev(worst),
                "seeds": len(picked),
            }
    return table


def ordering(table: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Does token/ref trust beat naive and none per split, and is the gain larger for specific splits?"""
    verdict: dict[str, Any] = {}
    gains = {}
    for split, row in table.items():
        baseline = min(row[s]["mean_ppl"] for s in ("naive", "none") if s in row)
        for strategy in ("dynamic-token", "dynamic-ref"):
            if strategy in row:
                verdict[f"{split}: {strategy} beats naive and none"] = row[strategy]["mean_ppl"] < baseline
                gains[(split, strategy)] = baseline - row[strategy]["mean_ppl"]
    for strategy in ("dynamic-token", "dynamic-ref"):
        if ("specific", strategy) in gains and ("mixed", strategy) in gains:
            verdict[f"{strategy}: larger gain on specific than mixed"] = (
                gains[("specific", strategy)] > gains[("mixed", strategy)]
            )
    return verdict


def print_table(
    console: Console, table: dict[str, dict[str, dict[str, float]]], verdict: dict[str, Any]
) -> None:
    """The measured table and the ordering verdicts."""
    out = Table(title="collab strategies: per-client validation perplexity (mean over seeds, +- std)")
    for column in ("split", "strategy", "mean ppl", "worst ppl"):
        out.add_column(column)
    for split, row in table.items():
        for strategy, v in row.items():
            out.add_row(
                split,
                strategy,
                f"{v['mean_ppl']:.2f} +- {v['mean_ppl_std']:.2f}",
                f"{v['worst_ppl']:.2f} +- {v['worst_ppl_std']:.2f}",
            )
    console.print(out)
    for claim, holds in verdict.items():
        console.print(f"{claim}: {'holds' if holds else 'does NOT hold'}")


def write_result(
    args: argparse.Namespace, rows: list[dict[str, Any]], seconds: float, console: Console
) -> None:
    """Aggregate what has run so far, print it and write the JSON (after every run: a kill keeps results)."""
    table = aggregate(rows)
    verdict = ordering(table)
    result = {
        "benchmark": "collab_strategies",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": vars(args) | {"threads_used": torch.get_num_threads(), "machine": platform.machine()},
        "seconds": seconds,
        "completed": sorted({(r["split"], r["seed"]) for r in rows}),
        "runs": rows,
        "table": table,
        "ordering": verdict,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(console, table, verdict)
    console.print(f"wrote {out} ({os.path.getsize(out)} bytes)")


def main() -> None:
    """Run every (seed, split) within --max-minutes, print the table, write the JSON."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=140)
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="collab-strategies-")
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        for split in args.splits.split(","):
            if (time.perf_counter() - started) / 60 > args.max_minutes:
                console.print(f"--max-minutes {args.max_minutes} reached: seed {seed} {split} not run")
                continue
            cfg = build_collab_config(collab_overrides(args, split, seed, runs_dir))
            for summary in run_collab(cfg, overwrite=True, resume=False, console=console):
                keep = ("strategy", "mean_perplexity", "worst_perplexity", "mean_accuracy", "bytes_total")
                rows.append({"split": split, "seed": seed} | {k: summary[k] for k in keep})
            write_result(args, rows, time.perf_counter() - started, console)


if __name__ == "__main__":
    main()
