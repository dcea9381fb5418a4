"""BA-LoRA cost: a ba-lora training step vs a plain PiSSA step, same batches, interleaved in one run.

Per model (minilm-l6 classification, smollm2-135m causal LM by default) two copies of the base are
loaded: one with PiSSA, one with BA-LoRA (the same PiSSA adapter plus CR, DR and SVDR, all active
from step 0). Both train on the same pre-tokenized batches (every example exactly `--seq` tokens;
causal LM: the first half is a masked prompt) with AdamW through fairlora's `train_step`, the loop
the HF Trainer path shares (`compose_loss`). The two alternate in ABBA blocks of `--block` steps;
the first step of every block is dropped; the time ratio is the median over blocks of the paired
per-block ratio of median step times, with a bootstrap 95% CI. Goal <= 1.25 (the teacher forward is
~1/3 of a step), bar <= 1.4. The teacher's forward alone is timed too: 1 + its share of a pissa step
is the floor of the ratio (the terms add the rest).
Peak memory comes from one subprocess per method and repeat: the peak resident set while training
(CPU: VmHWM, reset after loading with /proc/self/clear_refs; CUDA: max allocated). The resident set
also holds what the allocator kept of freed memory, which varies by +-100 MiB from run to run here,
so the methods' subprocesses alternate `--memory-repeats` times and the median peak counts. Bar:
ratio <= 1.10.

    .venv/bin/python benchmarks/balora_cost.py [--models minilm-l6,smollm2-135m] [--batch 8] [--seq 128]
        [--blocks 8] [--block 4] [--memory-repeats 3] [--threads N]
        [--out benchmarks/results/balora_cost.json]

Timings never fail the run: a ratio over the bar is reported, not raised.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
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

from fairlora.config import RunConfig, build_config
from fairlora.methods import apply_method
from fairlora.models import load_model
from fairlora.training.losses import teacher_inputs
from fairlora.training.step import StepState, make_optimizer, train_step

METHODS = ("pissa", "ba-lora")
TIME_BAR, TIME_GOAL, MEMORY_BAR = 1.4, 1.25, 1.10
SEED = 1234
CHILD_MARK = "BALORA_COST_CHILD "
TASKS = {"minilm-l6": "classification", "smollm2-135m": "causal_lm", "tiny-bert": "classification"}
TASKS |= {"tiny-llama": "causal_lm"}
console = Console(width=None if sys.stdout.isatty() else 160)


def device() -> torch.device:
    """The accelerator when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_config(model: str, method: str, opts: argparse.Namespace) -> RunConfig:
    """The run config of one path: LoRA r 8 / alpha 16 on attention q and v, PiSSA init."""
    task = TASKS.get(model, "classification")
    targets = ["q_proj", "v_proj"] if task == "causal_lm" else ["query", "value"]
    return build_config(
        {
            "seed": SEED,
            "task": task,
            "method": method,
            "model": {"name": model, "max_length": opts.seq},
            "lora": {"r": 8, "alpha": 16, "target_modules": targets},
            "balora": {"warmup_start": 0.0, "warmup_ramp": 0.0},  # every term active (and timed) at once
            "train": {"lr": 1e-4, "batch_size": opts.batch},
        }
    )


def make_batches(cfg: RunConfig, vocab: int, count: int) -> list[dict[str, torch.Tensor]]:
    """`count` fixed batches of random tokens, `--seq` long; causal LM labels mask the first half."""
    gen = torch.Generator().manual_seed(SEED)
    batches = []
    for _ in range(count):
        ids = torch.randint(100, vocab, (cfg.train.batch_size, cfg.model.max_length), generator=gen)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if cfg.task == "causal_lm":
            labels = ids.clone()
            labels[:, : ids.shape[1] // 2] = -100
        else:
            labels = torch.randint(0, 2, (ids.shape[0],), generator=gen)
        batches.append(batch | {"labels": labels})
    return batches


def build_state(model: str, method: str, opts: argparse.Namespace) -> tuple[StepState, list[dict]]:
    """A training state of `method` on a fresh copy of `model`, and its batches (on the device)."""
    cfg = make_config(model, method, opts)
    torch.manual_seed(SEED)
    loaded = load_model(cfg.model, cfg.task, 2)
    loaded.model.to(device())
    setup = apply_method(cfg, loaded)
    total = 10_000  # the schedules never reach their ends here
    optimizer, scheduler = make_optimizer(setup, cfg.train, total)
    vocab = min(len(loaded.tokenizer), loaded.model.config.vocab_size)
    batches = [{k: v.to(device()) for k, v in b.items()} for b in make_batches(cfg, vocab, 4)]
    return StepState(setup, optimizer, scheduler, total), batches


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_block(state: StepState, batches: list[dict], steps: int) -> list[float]:
    """Step times of one block (the first, warm-up step dropped)."""
    times = []
    for i in range(steps + 1):
        _sync()
        start = time.perf_counter()
        train_step(state, [batches[i % len(batches)]])
        _sync()
        times.append(time.perf_counter() - start)
    return times[1:]


def teacher_forward_s(state: StepState, batches: list[dict], repeats: int = 3) -> float:
    """Median time of the teacher's forward alone (the floor of the time ratio is 1 + it / a pissa step)."""
    setup, times = state.setup, []
    for i in range(repeats):
        _sync()
        start = time.perf_counter()
        with setup.teacher_context():
            setup.model(**teacher_inputs(setup.model, batches[i % len(batches)]))
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ratio_ci(ratios: list[float], n_boot: int = 2000) -> tuple[float, float]:
    """Bootstrap 95% CI of the median of paired per-block ratios."""
    rng = random.Random(SEED)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(n_boot))
    return medians[int(0.025 * n_boot)], medians[int(0.975 * n_boot) - 1]


def time_model(model: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Interleaved ABBA blocks of pissa and ba-lora steps on the same batches."""
    states = {m: build_state(model, m, opts) for m in METHODS}
    for state, batches in states.values():
        run_block(state, batches, 1)  # warm up both paths before timing
    per_block: dict[str, list[float]] = {m: [] for m in METHODS}
    for block in range(opts.blocks):
        order = METHODS if block % 2 == 0 else METHODS[::-1]
        for method in order:
            per_block[method].append(statistics.median(run_block(*states[method], opts.block)))
    ratios = [b / p for p, b in zip(per_block["pissa"], per_block["ba-lora"], strict=True)]
    low, high = ratio_ci(ratios)
    teacher = teacher_forward_s(*states["ba-lora"])
    pissa_step = statistics.median(per_block["pissa"])
    return {
        "median_step_s": {m: statistics.median(v) for m, v in per_block.items()},
        "teacher_forward_s": teacher,
        "teacher_share_of_pissa_step": teacher / pissa_step,
        "time_ratio": statistics.median(ratios),
        "time_ratio_ci": [low, high],
        "block_ratios": ratios,
    }


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_main(opts: argparse.Namespace) -> None:
    """Subprocess: load one method, reset the peak, train a few steps, print the training peak."""
    state, batches = build_state(opts.child_model, opts.child_method, opts)
    run_block(state, batches, 1)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on: training only
    run_block(state, batches, 3)
    report: dict[str, Any] = {"peak_rss_mib": round(_vm_hwm_mib(), 1)}
    if torch.cuda.is_available():
        report["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(CHILD_MARK + json.dumps(report), flush=True)


def measure_memory(model: str, method: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Training peak of `method` on `model`, from its own subprocess."""
    argv = [sys.executable, __file__, "--child-model", model, "--child-method", method]
    argv += ["--batch", str(opts.batch), "--seq", str(opts.seq), "--threads", str(opts.threads)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(CHILD_MARK):
            return json.loads(line.removeprefix(CHILD_MARK))
    return {"error": (done.stderr or done.stdout)[-600:]}


def bench_model(model: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Time and memory of pissa vs ba-lora on one model."""
    result: dict[str, Any] = {"model": model, "task": TASKS.get(model, "classification")}
    result |= time_model(model, opts)
    key = "cuda_max_allocated_mib" if torch.cuda.is_available() else "peak_rss_mib"
    repeats: dict[str, list[float]] = {m: [] for m in METHODS}
    errors = {}
    for _ in range(opts.memory_repeats):  # alternating: slow drifts of the machine hit both alike
        for method in METHODS:
            report = measure_memory(model, method, opts)
            if key in report:
                repeats[method].append(report[key])
            else:
                errors[method] = report.get("error", "no peak reported")
    peaks = {m: statistics.median(v) if v else None for m, v in repeats.items()}
    result["peak_memory_mib"] = peaks
    result["peak_memory_repeats_mib"] = repeats
    result["memory_ratio"] = peaks["ba-lora"] / peaks["pissa"] if all(peaks.values()) else None
    result["memory_errors"] = errors
    return result


def print_table(results: list[dict[str, Any]], opts: argparse.Namespace) -> None:
    """The ratios per model, against the bars."""
    table = Table(title=f"ba-lora vs pissa: batch {opts.batch} x {opts.seq} tokens, {opts.threads} threads")
    for column in (
        "model",
        "pissa s/step",
        "ba-lora s/step",
        "time ratio [95% CI]",
        "teacher fwd / pissa step",
        "peak MiB",
        "memory ratio",
    ):
        table.add_column(column)
    for r in results:
        steps, peaks, (low, high) = r["median_step_s"], r["peak_memory_mib"], r["time_ratio_ci"]
        memory = f"{r['memory_ratio']:.3f}" if r["memory_ratio"] else "n/a"
        table.add_row(
            r["model"],
            f"{steps['pissa']:.3f}",
            f"{steps['ba-lora']:.3f}",
            f"{r['time_ratio']:.3f} [{low:.3f}, {high:.3f}] (bar {TIME_BAR}, goal {TIME_GOAL})",
            f"{r['teacher_share_of_pissa_step']:.3f}",
            f"{peaks['pissa']} / {peaks['ba-lora']}",
            f"{memory} (bar {MEMORY_BAR})",
        )
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm-l6,smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=8, help="ABBA blocks per method (paired)")
    parser.add_argument("--block", type=int, default=4, help="timed steps per block (+1 dropped)")
    parser.add_argument("--memory-repeats", type=int, default=3, help="subprocesses per method (median)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmarks/results/balora_cost.json")
    parser.add_argument("--child-model", help=argparse.SUPPRESS)
    parser.add_argument("--child-method", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the JSON."""
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    if opts.child_model:
        child_main(opts)
        return
    results = [bench_model(m.strip(), opts) for m in opts.models.split(",") if m.strip()]
    print_table(results, opts)
    report = {
        "benchmark": "balora_cost",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(opts).items() if not k.startswith("child")},
        "device": str(device()),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "bars": {"time_ratio": TIME_BAR, "time_goal": TIME_GOAL, "memory_ratio": MEMORY_BAR},
        "results": results,
    }
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
