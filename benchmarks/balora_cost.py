"""BA-LoRA cost: a ba-lora training step vs a plain PiSSA step, same batches, interleaved in one run.

Per model (minilm-l6 classification, smollm2-135m causal LM by default) two copies of the base are
loaded: one with PiSSA, one with BA-LoRA (the same PiSSA adapter plus CR, DR and SVDR, all active
from step 0). Both train on the same pre-tokenized batches (every example exactly `--seq` tokens;
causal LM: the first half is a masked prompt) with AdamW through fairlora's `train_step`, the loop
the HF Trainer path shares (`compose_loss`). The two alternate in ABBA blocks.

Classification: a block is a whole `--epochs`-epoch run over `--epoch-batches` distinct batches,
started with an empty teacher cache (the teacher runs in the first epoch only, as in training); the
block's time is the sum of its step times. Causal LM (the teacher runs on every batch): a block is
`--block` steps after a dropped first step, its time the median step time. The time ratio is the
median over blocks of the paired per-block ratio, with a bootstrap 95% CI. The teacher's forward
alone is timed in every block too: its share of the block's pissa time, times the share of steps that
ran it (`teacher_share_in_run`), is the teacher's part of the ratio; `terms_share` = ratio - 1 - that
part, per block (so a drift of the machine between blocks cancels) and then the median with its CI,
is what the terms themselves cost. Bars: classification ratio <= 1.15, causal-LM terms_share <= 0.10.

Memory comes from one subprocess per method and repeat: the increment of the training peak above the
loaded model (CPU: VmHWM - VmRSS after loading, /proc/self/clear_refs; CUDA: max allocated - allocated
after loading) and the whole-process peak. The resident set also holds what the allocator kept of
freed memory, which varies by +-100 MiB from run to run here, so the methods' subprocesses alternate
`--memory-repeats` times and the median counts. Bar: whole-process ratio <= 1.10.

    .venv/bin/python benchmarks/balora_cost.py [--models minilm-l6,smollm2-135m] [--batch 8] [--seq 128]
        [--blocks 8] [--block 4] [--epochs 3] [--epoch-batches 4] [--memory-repeats 3] [--threads N]
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
from fairlora.regularizers.teacher_cache import TeacherCache
from fairlora.training.losses import teacher_inputs
from fairlora.training.step import StepState, make_optimizer, train_step

METHODS = ("pissa", "ba-lora")
CLASSIFICATION_TIME_BAR, TERMS_SHARE_BAR, MEMORY_BAR = 1.15, 0.10, 1.10
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
    count = opts.epoch_batches if cfg.task == "classification" else 4
    batches = [{k: v.to(device()) for k, v in b.items()} for b in make_batches(cfg, vocab, count)]
    return StepState(setup, optimizer, scheduler, total), batches


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_times(state: StepState, batches: list[dict], steps: int) -> list[float]:
    """The time of each of `steps` steps, cycling through `batches`."""
    times = []
    for i in range(steps):
        _sync()
        start = time.perf_counter()
        train_step(state, [batches[i % len(batches)]])
        _sync()
        times.append(time.perf_counter() - start)
    return times


def run_block(state: StepState, batches: list[dict], steps: int) -> list[float]:
    """Step times of one block (the first, warm-up step dropped)."""
    return step_times(state, batches, steps + 1)[1:]


def block_time(state: StepState, batches: list[dict], opts: argparse.Namespace, task: str) -> float:
    """Classification: the summed time of an `--epochs` run from an empty teacher cache; causal LM:
    the median step time of a `--block` block."""
    if task != "classification":
        return statistics.median(run_block(state, batches, opts.block))
    if state.setup.teacher_cache is not None:
        state.setup.teacher_cache = TeacherCache()  # a new run: the first epoch fills it again
    return sum(step_times(state, batches, opts.epochs * len(batches)))


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
    """Bootstrap 95% CI of the median of paired per-block figures (ratios, terms shares)."""
    rng = random.Random(SEED)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(n_boot))
    return medians[int(0.025 * n_boot)], medians[int(0.975 * n_boot) - 1]


def time_model(model: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Interleaved ABBA blocks of pissa and ba-lora on the same batches."""
    task = TASKS.get(model, "classification")
    states = {m: build_state(model, m, opts) for m in METHODS}
    for state, batches in states.values():
        run_block(state, batches, 1)  # warm up both paths before timing
    per_block: dict[str, list[float]] = {m: [] for m in (*METHODS, "teacher")}
    for block in range(opts.blocks):
        order = METHODS if block % 2 == 0 else METHODS[::-1]
        for method in order:
            per_block[method].append(block_time(*states[method], opts, task))
        per_block["teacher"].append(teacher_forward_s(*states["ba-lora"]))  # in the block: same drift
    pissa, balora, teacher = per_block["pissa"], per_block["ba-lora"], per_block["teacher"]
    ratios = [b / p for p, b in zip(pissa, balora, strict=True)]
    steps = opts.epochs * opts.epoch_batches if task == "classification" else None
    cache = states["ba-lora"][0].setup.teacher_cache
    forwards = cache.forwards if cache is not None else 1  # per block: a cached run's epoch 1, else per step
    shares = [t * forwards / p for t, p in zip(teacher, pissa, strict=True)]  # the teacher's part of a ratio
    terms = [r - 1 - s for r, s in zip(ratios, shares, strict=True)]
    ratio = statistics.median(ratios)
    return {
        "median_step_s": {m: statistics.median(per_block[m]) / (steps or 1) for m in METHODS},
        "steps_per_block": steps or opts.block,
        "teacher_cached": cache is not None,
        "teacher_forwards_per_run": cache.forwards if cache is not None else None,
        "teacher_forward_s": statistics.median(teacher),
        "teacher_share_of_pissa_step": statistics.median(shares) * (steps or 1) / forwards,
        "teacher_share_in_run": statistics.median(shares),
        "terms_share": statistics.median(terms),
        "terms_share_ci": list(ratio_ci(terms)),
        "time_ratio": ratio,
        "time_ratio_ci": list(ratio_ci(ratios)),
        "block_ratios": ratios,
        "block_terms_shares": terms,
        "block_s": per_block,
    }


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_main(opts: argparse.Namespace) -> None:
    """Subprocess: load one method, note the loaded size, train a few steps, print peak and increment."""
    state, batches = build_state(opts.child_model, opts.child_method, opts)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        loaded_cuda = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on: training only
    loaded_rss = _vm_rss_mib()
    run_block(state, batches, 3)
    peak = _vm_hwm_mib()
    report: dict[str, Any] = {
        "peak_rss_mib": round(peak, 1),
        "loaded_rss_mib": round(loaded_rss, 1),
        "increment_rss_mib": round(peak - loaded_rss, 1),
    }
    if torch.cuda.is_available():
        cuda_peak = torch.cuda.max_memory_allocated() / 2**20
        report["cuda_max_allocated_mib"] = round(cuda_peak, 1)
        report["cuda_increment_mib"] = round(cuda_peak - loaded_cuda, 1)
    print(CHILD_MARK + json.dumps(report), flush=True)


def measure_memory(model: str, method: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Training peak of `method` on `model`, from its own subprocess."""
    argv = [sys.executable, __file__, "--child-model", model, "--child-method", method]
    argv += ["--batch", str(opts.batch), "--seq", str(opts.seq), "--threads", str(opts.threads)]
    argv += ["--epoch-batches", str(opts.epoch_batches)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(CHILD_MARK):
            return json.loads(line.removeprefix(CHILD_MARK))
    return {"error": (done.stderr or done.stdout)[-600:]}


def bench_model(model: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Time and memory of pissa vs ba-lora on one model."""
    task = TASKS.get(model, "classification")
    result: dict[str, Any] = {"model": model, "task": task}
    result |= time_model(model, opts)
    cuda = torch.cuda.is_available()
    keys = {
        "peak": "cuda_max_allocated_mib" if cuda else "peak_rss_mib",
        "increment": "cuda_increment_mib" if cuda else "increment_rss_mib",
    }
    repeats: dict[str, dict[str, list[float]]] = {kind: {m: [] for m in METHODS} for kind in keys}
    errors = {}
    for _ in range(opts.memory_repeats):  # alternating: slow drifts of the machine hit both alike
        for method in METHODS:
            report = measure_memory(model, method, opts)
            if keys["peak"] not in report:
                errors[method] = report.get("error", "no peak reported")
                continue
            for kind, key in keys.items():
                repeats[kind][method].append(report[key])
    for kind in keys:
        medians = {m: statistics.median(v) if v else None for m, v in repeats[kind].items()}
        ratio = medians["ba-lora"] / medians["pissa"] if all(medians.values()) else None
        name = "peak_memory" if kind == "peak" else "memory_increment"
        result[f"{name}_mib"], result[f"{name}_repeats_mib"] = medians, repeats[kind]
        result["memory_ratio" if kind == "peak" else "memory_increment_ratio"] = ratio
    result["memory_errors"] = errors
    result["bars"] = (
        {"time_ratio": CLASSIFICATION_TIME_BAR}
        if task == "classification"
        else {"terms_share": TERMS_SHARE_BAR}
    ) | {"memory_ratio": MEMORY_BAR}
    return result


def print_table(results: list[dict[str, Any]], opts: argparse.Namespace) -> None:
    """The ratios per model, against the bars."""
    table = Table(title=f"ba-lora vs pissa: batch {opts.batch} x {opts.seq} tokens, {opts.threads} threads")
    for column in (
        "model",
        "pissa s/step",
        "ba-lora s/step",
        "time ratio [95% CI]",
        "teacher fwd / pissa step (in run)",
        "terms share",
        "peak MiB (+ above loaded)",
        "memory ratio (increment ratio)",
    ):
        table.add_column(column)
    for r in results:
        steps, peaks, (low, high) = r["median_step_s"], r["peak_memory_mib"], r["time_ratio_ci"]
        increments = r["memory_increment_mib"]
        memory = f"{r['memory_ratio']:.3f}" if r["memory_ratio"] else "n/a"
        increment = f"{r['memory_increment_ratio']:.3f}" if r["memory_increment_ratio"] else "n/a"
        bar = r["bars"].get("time_ratio")
        terms_bar = r["bars"].get("terms_share")
        table.add_row(
            r["model"],
            f"{steps['pissa']:.3f}",
            f"{steps['ba-lora']:.3f}",
            f"{r['time_ratio']:.3f} [{low:.3f}, {high:.3f}]" + (f" (bar {bar})" if bar else ""),
            f"{r['teacher_share_of_pissa_step']:.3f} ({r['teacher_share_in_run']:.3f})",
            f"{r['terms_share']:.3f}" + (f" (bar {terms_bar})" if terms_bar else ""),
            " / ".join(f"{peaks[m]} (+{increments[m]})" for m in METHODS),
            f"{memory} ({increment}) (bar {MEMORY_BAR})",
        )
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm-l6,smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=8, help="ABBA blocks per method (paired)")
    parser.add_argument("--block", type=int, default=4, help="causal LM: timed steps per block (+1 dropped)")
    parser.add_argument("--epochs", type=int, default=3, help="classification: epochs of one block's run")
    parser.add_argument("--epoch-batches", type=int, default=4, help="classification: batches per epoch")
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
        "bars": {
            "classification_time_ratio": CLASSIFICATION_TIME_BAR,
            "causal_lm_terms_share": TERMS_SHARE_BAR,
            "memory_ratio": MEMORY_BAR,
        },
        "results": results,
    }
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
