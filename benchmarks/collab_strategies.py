"""Collab quality: mean and worst per-client validation perplexity of every trust strategy.

One collab run per (split, seed) on AG News topics (../shared/data/ag_news), every strategy in it
(they share the local warm-up). Reports, per split, the mean over seeds of each strategy's mean and
worst per-client perplexity, and whether the paper's ordering holds: dynamic-token and dynamic-ref
beat naive (FedAvg) and none (local training), with a larger gain when clients differ more
(specific > mixed).

    .venv/bin/python benchmarks/collab_strategies.py [--model smollm2-135m] [--clients 4]
        [--splits specific,mixed] [--seeds 0,1,2] [--iterations 6] [--shared-init] [--max-minutes 60]
        [--threads N] [--runs-dir DIR] [--resume] [--summarize]
        [--out benchmarks/results/collab_strategies.json]

`--resume` keeps the (split, seed) runs already in --out (same settings) and runs only the missing ones,
so a killed benchmark continues; with a kept `--runs-dir`, a half-finished (split, seed) run also
continues from its last saved round. `--summarize` runs nothing and rewrites the table and verdicts
from the runs in --out.
Quality, not time: the numbers do not depend on the machine's load (CPU, fp32, seeded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import t as scipy_t

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
    parser.add_argument("--shared-init", action="store_true", help="every client starts from one adapter")
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument(
        "--categories", default="World,Sports", help="specific split: topics used (2 clients per topic)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=60.0, help="start no new run after this")
    parser.add_argument("--runs-dir", default=None, help="where the collab runs go (default: a temp folder)")
    parser.add_argument("--resume", action="store_true", help="keep the other (split, seed) runs of --out")
    parser.add_argument("--summarize", action="store_true", help="run nothing; re-aggregate --out")
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
            "shared_init": args.shared_init,
        },
    }


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample std and the half-width of a two-sided 95% t interval over seeds."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "std": 0.0, "ci95": float("nan")}
    std = statistics.stdev(values)
    half = float(scipy_t.ppf(0.975, len(values) - 1)) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "ci95": half}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """split -> strategy -> mean, sample std and 95% CI over seeds of mean and worst per-client perplexity."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for split in dict.fromkeys(r["split"] for r in rows):
        table[split] = {}
        for strategy in dict.fromkeys(r["strategy"] for r in rows):
            picked = [r for r in rows if r["split"] == split and r["strategy"] == strategy]
            picked.sort(key=lambda r: r["seed"])
            mean = spread([r["mean_perplexity"] for r in picked])
            worst = spread([r["worst_perplexity"] for r in picked])
            table[split][strategy] = {
                "mean_ppl": mean["mean"],
                "mean_ppl_std": mean["std"],
                "mean_ppl_ci95": mean["ci95"],
                "worst_ppl": worst["mean"],
                "worst_ppl_std": worst["std"],
                "worst_ppl_ci95": worst["ci95"],
                "per_seed_mean_ppl": {r["seed"]: r["mean_perplexity"] for r in picked},
                "per_seed_worst_ppl": {r["seed"]: r["worst_perplexity"] for r in picked},
                "seeds": len(picked),
            }
    return table


def seed_wins(row: dict[str, dict[str, Any]], strategy: str, baseline: str) -> str:
    """In how many seeds `strategy` has a lower mean per-client perplexity than `baseline`."""
    ours, theirs = row[strategy]["per_seed_mean_ppl"], row[baseline]["per_seed_mean_ppl"]
    common = sorted(set(ours) & set(theirs))
    return f"{sum(ours[s] < theirs[s] for s in common)}/{len(common)}"


def paired(row: dict[str, dict[str, Any]], strategy: str, baseline: str) -> list[float]:
    """Mean over seeds of (strategy - baseline) mean per-client perplexity, and its 95% CI half-width."""
    ours, theirs = row[strategy]["per_seed_mean_ppl"], row[baseline]["per_seed_mean_ppl"]
    diff = spread([ours[s] - theirs[s] for s in sorted(set(ours) & set(theirs))])
    return [diff["mean"], diff["ci95"]]


def ordering(table: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Does token/ref trust beat naive and none per split (mean over seeds; wins per seed), and is the gain
    over the better baseline larger for specific splits than for mixed ones?"""
    verdict: dict[str, Any] = {}
    gains = {}
    for split, row in table.items():
        baselines = [s for s in ("naive", "none") if s in row]
        if not baselines:
            continue
        best = min(row[s]["mean_ppl"] for s in baselines)
        for strategy in ("dynamic-token", "dynamic-ref"):
            if strategy in row:
                verdict[f"{split}: {strategy} beats naive and none"] = row[strategy]["mean_ppl"] < best
                for baseline in baselines:
                    verdict[f"{split}: {strategy} < {baseline} in seeds"] = seed_wins(row, strategy, baseline)
                    verdict[f"{split}: {strategy} - {baseline}, paired mean ppl +- 95% CI"] = paired(
                        row, strategy, baseline
                    )
                gains[(split, strategy)] = best - row[strategy]["mean_ppl"]
    for strategy in ("dynamic-token", "dynamic-ref"):
        if ("specific", strategy) in gains and ("mixed", strategy) in gains:
            verdict[f"{strategy}: gain over the better baseline, specific"] = gains[("specific", strategy)]
            verdict[f"{strategy}: gain over the better baseline, mixed"] = gains[("mixed", strategy)]
            verdict[f"{strategy}: larger gain on specific than mixed"] = (
                gains[("specific", strategy)] > gains[("mixed", strategy)]
            )
    return verdict


def print_table(
    console: Console, table: dict[str, dict[str, dict[str, float]]], verdict: dict[str, Any]
) -> None:
    """The measured table and the ordering verdicts."""
    out = Table(title="collab strategies: per-client validation perplexity (mean over seeds +- 95% CI)")
    for column in ("split", "strategy", "mean ppl", "worst ppl"):
        out.add_column(column)
    for split, row in table.items():
        for strategy, v in row.items():
            out.add_row(
                split,
                strategy,
                f"{v['mean_ppl']:.2f} +- {v['mean_ppl_ci95']:.2f}",
                f"{v['worst_ppl']:.2f} +- {v['worst_ppl_ci95']:.2f}",
            )
    console.print(out)
    for claim, holds in verdict.items():
        if isinstance(holds, bool):
            shown = "holds" if holds else "does NOT hold"
        elif isinstance(holds, float):
            shown = f"{holds:.2f}"
        elif isinstance(holds, list):
            shown = f"{holds[0]:+.2f} +- {holds[1]:.2f}"
        else:
            shown = str(holds)
        console.print(f"{claim}: {shown}")


QUALITY_SETTINGS = (
    "model", "method", "corpus", "clients", "strategies", "examples", "iterations", "warmup",
    "trust_freq", "batch", "seq", "lr", "eval_batch", "categories", "shared_init",
)  # fmt: skip


def previous_runs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict]:
    """--resume: the rows and per-run seconds of the (split, seed) runs --out already holds."""
    out = Path(args.out)
    if not args.resume or not out.is_file():
        return [], {}
    saved = json.loads(out.read_text())
    differs = [k for k in QUALITY_SETTINGS if saved["settings"].get(k) != getattr(args, k, None)]
    if differs:
        raise SystemExit(f"--resume: {out} was run with other settings ({', '.join(differs)}); drop --resume")
    return saved["runs"], saved.get("run_seconds", {})


def write_result(
    args: argparse.Namespace, rows: list[dict[str, Any]], run_seconds: dict[str, float], console: Console
) -> None:
    """Aggregate what has run so far, print it and write the JSON (after every run: a kill keeps results)."""
    table = aggregate(rows)
    verdict = ordering(table)
    settings = vars(args) | {"threads_used": torch.get_num_threads(), "machine": platform.machine()}
    result = {
        "benchmark": "collab_strategies",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in settings.items() if k not in ("splits", "seeds", "resume", "runs_dir")},
        "run_seconds": run_seconds,
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


def summarize(out: Path, console: Console) -> None:
    """Recompute the table and verdicts of the runs already in `out` (its settings kept), print them."""
    result = json.loads(out.read_text())
    result["table"] = aggregate(result["runs"])
    result["ordering"] = ordering(result["table"])
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(console, result["table"], result["ordering"])


def main() -> None:
    """Run every (seed, split) within --max-minutes, print the table, write the JSON."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=140)
    runs_dir = args.runs_dir or tempfile.mkdtemp(prefix="collab-strategies-")
    if args.summarize:
        summarize(Path(args.out), console)
        return
    seeds, splits = [int(s) for s in args.seeds.split(",")], args.splits.split(",")
    rows, run_seconds = previous_runs(args)
    done = {(r["split"], r["seed"]) for r in rows}
    started = time.perf_counter()
    for seed in seeds:
        for split in splits:
            if (split, seed) in done:
                console.print(f"--resume: seed {seed} {split} already in {args.out}")
                continue
            if (time.perf_counter() - started) / 60 > args.max_minutes:
                console.print(f"--max-minutes {args.max_minutes} reached: seed {seed} {split} not run")
                continue
            begun = time.perf_counter()
            cfg = build_collab_config(collab_overrides(args, split, seed, runs_dir))
            again = args.resume and args.runs_dir is not None and cfg.run_dir.is_dir()
            for summary in run_collab(cfg, overwrite=not again, resume=again, console=console):
                keep = ("strategy", "mean_perplexity", "worst_perplexity", "mean_accuracy", "bytes_total")
                rows.append({"split": split, "seed": seed} | {k: summary[k] for k in keep})
            run_seconds[f"{split}-{seed}"] = time.perf_counter() - begun
            write_result(args, rows, run_seconds, console)


if __name__ == "__main__":
    main()
