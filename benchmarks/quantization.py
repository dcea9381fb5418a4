"""QLoRA and mixed precision cost: LoRA training steps of two variants of one model, side by side.

Two comparisons, each in one run through fairlora's `train_step`, same batches (every example
`--seq` random tokens), steps alternating A, B, A, B, ... (the first `--warmup` of each dropped):
  quant:      --model (smollm2-135m, causal LM) with model.quantization none vs 4bit
  precision:  --precision-model (minilm-l6, classification) with train.precision fp32 vs bf16
Reported per variant: median step seconds and peak memory (peak resident set, VmHWM, of a separate process
that loads the variant and trains `--memory-steps` steps; CUDA: max allocated), and the B / A ratios.

    .venv/bin/python benchmarks/quantization.py [--compare quant,precision] [--model smollm2-135m]
        [--precision-model minilm-l6] [--batch 4] [--seq 128] [--steps 12] [--warmup 2]
        [--out benchmarks/results/quantization.json]

Smoke run: --model tiny-llama --precision-model tiny-bert --seq 16 --steps 4.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from fairlora.config import build_config
from fairlora.methods import apply_method
from fairlora.models import load_model
from fairlora.training.step import StepState, make_optimizer, train_step

COMPARISONS = {
    "quant": ("causal_lm", {"model.quantization": "none"}, {"model.quantization": "4bit"}),
    "precision": ("classification", {"train.precision": "fp32"}, {"train.precision": "bf16"}),
}


def learner(model: str, task: str, setting: dict[str, str], steps: int) -> StepState:
    """A LoRA setup of `model` with `setting` applied, and its optimizer."""
    cfg = build_config({"model": {"name": model}, "task": task}, [f"{k}={v}" for k, v in setting.items()])
    setup = apply_method(cfg, load_model(cfg.model, cfg.task, 2))
    optimizer, scheduler = make_optimizer(setup, cfg.train, steps)
    return StepState(setup, optimizer, scheduler, steps, precision=cfg.train.precision)


def batch(task: str, vocab: int, size: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    """Random token ids (labels: the ids for a causal LM, a class per row otherwise)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (size, seq), generator=generator)
    labels = ids.clone() if task == "causal_lm" else torch.randint(0, 2, (size,), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def side_by_side(args: argparse.Namespace, model: str, comparison: str) -> dict[str, Any]:
    """Median step seconds of both variants, steps alternating."""
    task, first, second = COMPARISONS[comparison]
    states = [learner(model, task, setting, args.steps) for setting in (first, second)]
    vocab = states[0].setup.model.config.vocab_size
    times: list[list[float]] = [[], []]
    for step in range(args.steps + args.warmup):
        micro = [batch(task, vocab, args.batch, args.seq, step)]
        for index, state in enumerate(states):
            start = time.perf_counter()
            train_step(state, micro)
            if step >= args.warmup:
                times[index].append(time.perf_counter() - start)
    medians = [statistics.median(t) for t in times]
    return {
        "model": model,
        "variants": [first, second],
        "step_seconds": medians,
        "time_ratio": medians[1] / medians[0],
    }


def peak_memory(model: str, comparison: str, index: int, args: argparse.Namespace) -> float:
    """MiB: peak of a fresh process that loads variant `index` and trains --memory-steps steps."""
    command = [sys.executable, __file__, "--memory-of", f"{comparison}:{index}:{model}"]
    command += ["--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.memory_steps)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def peak_rss_mib() -> float:
    """This process's own peak resident set (VmHWM; ru_maxrss would carry the parent's over fork/exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: an upper bound


def memory_child(spec: str, args: argparse.Namespace) -> None:
    """Run in the subprocess: train a few steps, print the peak memory in MiB."""
    comparison, index, model = spec.split(":", 2)
    task, *settings = COMPARISONS[comparison]
    state = learner(model, task, settings[int(index)], args.steps)
    vocab = state.setup.model.config.vocab_size
    for step in range(args.steps):
        train_step(state, [batch(task, vocab, args.batch, args.seq, step)])
    if torch.cuda.is_available():
        print(torch.cuda.max_memory_allocated() / 2**20)
    else:
        print(peak_rss_mib())


def main() -> None:
    """Parse arguments, run the comparisons, print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", default="quant,precision")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision-model", default="minilm-l6")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.memory_of:
        memory_child(args.memory_of, args)
        return
    results = {}
    table = Table(title="LoRA step: side by side")
    for column in ("comparison", "model", "variant", "step s", "peak MiB"):
        table.add_column(column)
    for comparison in args.compare.split(","):
        model = args.model if comparison == "quant" else args.precision_model
        measured = side_by_side(args, model, comparison)
        measured["peak_mib"] = [peak_memory(model, comparison, i, args) for i in (0, 1)]
        measured["memory_ratio"] = measured["peak_mib"][1] / measured["peak_mib"][0]
        results[comparison] = measured
        for variant, seconds, mib in zip(
            measured["variants"], measured["step_seconds"], measured["peak_mib"], strict=True
        ):
            table.add_row(comparison, model, str(variant), f"{seconds:.4f}", f"{mib:.0f}")
    Console().print(table)
    for name, measured in results.items():
        print(f"{name}: time ratio {measured['time_ratio']:.3f}, memory ratio {measured['memory_ratio']:.3f}")
    if args.out:
        report = {
            "benchmark": "quantization",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "memory_of")},
            **results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
