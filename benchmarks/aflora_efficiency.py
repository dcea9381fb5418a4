"""AFLoRA efficiency: trainable parameters and step time before / after freezing vs lora r=8 and vera r=256.

For each model, lora (r 8), vera (r 256) and aflora (r 4) are set up on the same target modules
(AFLoRA's defaults: attention q/k/v (+ output) and FFN projections), on separate copies of the base,
and stepped through `train_step` (AdamW, clipping, linear schedule) on the same fixed batch, one step
of each in turn (interleaved rounds, so drift hits every method alike). AFLoRA's freezer runs with
t_i = `--warm` steps and t_f = steps - `--freeze-by`, so every A/B is frozen by step `--freeze-by`.
Step times: "before" = rounds 2..t_i (nothing has frozen adaptively), "after" = rounds after every
A/B froze. A step-time ratio is the median over rounds of the paired per-round ratio (with the ratio
of medians alongside). Trainable parameters exclude the task head (as the paper counts them).
Each rule of `--freeze-rules` trains its own aflora (the first is `aflora`, the others
`aflora_<rule>`); the JSON's `freeze_rules` gives, per rule, the step at which each matrix froze and
its parameter ratio (`avg_params_ratio` is the first rule's).
`--decoder-batch` / `--decoder-seq` give causal LMs their own (smaller) shape. A progress line is
printed every `--report-every` rounds and the JSON is rewritten after every model.

    .venv/bin/python benchmarks/aflora_efficiency.py [--models minilm-l6,smollm2-135m] [--batch 8]
        [--seq 128] [--decoder-batch B] [--decoder-seq L] [--steps 80] [--warm 8] [--freeze-by 24]
        [--threads N] [--report-every 5] [--freeze-rules reference,ranked]
        [--out benchmarks/results/aflora_efficiency.json]

Goals (from the paper): aflora averaged parameters <= 0.15x lora r=8; aflora step time after
freezing below vera and at most lora's. Timings never fail the run: misses are reported, not raised.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from fairlora.config import build_config
from fairlora.methods import apply_method
from fairlora.methods.aflora import DEFAULT_TARGETS
from fairlora.models import load_model, model_type
from fairlora.training.step import StepState, make_optimizer, train_step

DECODERS = ("smollm2-135m", "tiny-llama")


def variants(targets: list[str], decoder: bool, rules: list[str]) -> dict[str, dict[str, Any]]:
    """Config sections of the compared methods on the same targets (one aflora per freezing rule)."""
    aflora: dict[str, Any] = {"r": 4, "alpha": 8.0} if decoder else {"r": 4}
    return {
        "lora": {"method": "lora", "lora": {"r": 8, "alpha": 16, "target_modules": targets}},
        "vera": {"method": "vera", "vera": {"r": 256, "target_modules": targets}},
        **{
            aflora_name(rule, rules): {"method": "aflora", "aflora": aflora | {"freeze_rule": rule}}
            for rule in rules
        },
    }


def aflora_name(rule: str, rules: list[str]) -> str:
    """`aflora` for the first freezing rule, `aflora_<rule>` for the others."""
    return "aflora" if rule == rules[0] else f"aflora_{rule}"


def build(model: str, spec: dict[str, Any], args: argparse.Namespace) -> StepState:
    """A StepState for one method on a fresh copy of `model`."""
    task = "causal_lm" if model in DECODERS else "classification"
    window = {"t_initial_steps": args.warm, "t_final_steps": args.steps - args.freeze_by}
    sections = {k: v | window if k == "aflora" else v for k, v in spec.items()}
    train = {"max_steps": args.steps, "lr": 1e-3, "weight_decay": 0.1, "progress_bar": False}
    cfg = build_config(
        {
            "task": task,
            "model": {"name": model, "max_length": shape(model, args)[1]},
            "train": train,
            **sections,
        }
    )
    torch.manual_seed(0)
    setup = apply_method(cfg, load_model(cfg.model, task))
    optimizer, scheduler = make_optimizer(setup, cfg.train, args.steps)
    return StepState(setup, optimizer, scheduler, total_steps=args.steps, max_grad_norm=1.0)


def shape(model: str, args: argparse.Namespace) -> tuple[int, int]:
    """(batch, sequence length) for `model`: the decoder overrides apply to causal LMs."""
    if model in DECODERS:
        return args.decoder_batch or args.batch, args.decoder_seq or args.seq
    return args.batch, args.seq


def fixed_batch(state: StepState, model: str, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """One batch of random tokens of the model's shape (labels: the tokens, or a class)."""
    generator = torch.Generator().manual_seed(0)
    vocab = state.setup.model.config.vocab_size
    batch, seq = shape(model, args)
    ids = torch.randint(5, vocab, (batch, seq), generator=generator)
    labels = ids.clone() if model in DECODERS else torch.randint(0, 2, (batch,), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def run_model(model: str, args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved steps of every method on one model; parameters and step times."""
    from fairlora.config import ModelConfig

    decoder = model in DECODERS
    targets = DEFAULT_TARGETS[model_type(ModelConfig(name=model))]
    began = time.perf_counter()
    states = {
        name: build(model, spec, args) for name, spec in variants(targets, decoder, rules(args)).items()
    }
    print(f"[{model}] built {', '.join(states)} in {time.perf_counter() - began:.0f} s", flush=True)
    batch = fixed_batch(next(iter(states.values())), model, args)
    times: dict[str, list[float]] = {name: [] for name in states}
    trainable: list[int] = []  # aflora's trainable parameters after each round
    names = list(states)
    for round_ in range(args.steps):
        shift = round_ % len(names)  # rotated order: no method always runs first (or after another)
        for name in names[shift:] + names[:shift]:
            state = states[name]
            start = time.perf_counter()
            train_step(state, [batch])
            times[name].append(time.perf_counter() - start)
        model_ = states["aflora"].setup.model
        trainable.append(sum(p.numel() for p in model_.parameters() if p.requires_grad))
        if round_ % args.report_every == 0 or round_ == args.steps - 1:
            last = ", ".join(f"{name} {t[-1]:.3f} s" for name, t in times.items())
            elapsed = time.perf_counter() - began
            print(f"[{model}] round {round_ + 1}/{args.steps} ({elapsed:.0f} s): {last}", flush=True)
    result = summarise(model, states, times, args)
    result["freeze_rules"] = freeze_rules(states, result["methods"], args)
    result["aflora_all_frozen_after_round"] = trainable.index(trainable[-1]) + 1
    return result


def rules(args: argparse.Namespace) -> list[str]:
    """The freezing rules to compare, in order."""
    return [rule.strip() for rule in args.freeze_rules.split(",") if rule.strip()]


def freeze_rules(
    states: dict[str, StepState], methods: dict[str, dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """Per freezing rule: averaged parameters vs lora, when the first and last matrix froze, and the
    step (0-based optimizer step) at which each matrix froze."""
    found = {}
    for rule in rules(args):
        name = aflora_name(rule, rules(args))
        steps = states[name].setup.facts()["aflora_freeze_steps"]
        adaptive = [s for s in steps.values() if s is not None and s > 0]  # square ones froze at step 0
        found[rule] = {
            "avg_params_ratio": methods[name]["params_mean"] / methods["lora"]["params_mean"],
            "first_freeze_step": min(adaptive, default=None),
            "last_freeze_step": max(adaptive, default=None),
            "matrices_per_freeze_step": dict(sorted(Counter(adaptive).items())),
            "freeze_steps": steps,
        }
    return found


def _paired(times: dict[str, list[float]], a: str, b: str, rounds: range) -> dict[str, float]:
    ratios = [times[a][i] / times[b][i] for i in rounds]
    medians = statistics.median(times[a][i] for i in rounds) / statistics.median(times[b][i] for i in rounds)
    return {"median_paired_ratio": statistics.median(ratios), "ratio_of_medians": medians}


def summarise(
    model: str, states: dict[str, StepState], times: dict[str, list[float]], args: argparse.Namespace
) -> dict[str, Any]:
    """Per-method facts and the headline ratios of one model."""
    before = range(1, args.warm)
    after = range(args.freeze_by + 1, args.steps)
    methods = {}
    for name, state in states.items():
        facts = state.counter.facts(state.setup.model)
        methods[name] = {
            "params_start": facts["trainable_params_no_head_start"],
            "params_end": facts["trainable_params_no_head_end"],
            "params_mean": facts["trainable_params_no_head_mean"],
            "step_s_before": statistics.median(times[name][i] for i in before),
            "step_s_after": statistics.median(times[name][i] for i in after),
        }
    lora, vera, aflora = methods["lora"], methods["vera"], methods["aflora"]
    vs_lora, vs_vera = _paired(times, "aflora", "lora", after), _paired(times, "aflora", "vera", after)
    vera_vs_lora = _paired(times, "vera", "lora", after)
    batch, seq = shape(model, args)
    return {
        "model": model,
        "batch": batch,
        "seq": seq,
        "threads": torch.get_num_threads(),
        "rounds_before": [before.start + 1, before.stop],  # 1-based rounds, inclusive
        "rounds_after": [after.start + 1, after.stop],
        "order": "rotated each round",
        "methods": methods,
        "avg_params_ratio": aflora["params_mean"] / lora["params_mean"],
        "vera_avg_params_ratio": vera["params_mean"] / lora["params_mean"],
        "step_time_ratio_after_freezing": vs_lora["median_paired_ratio"],
        "step_time_ratio_after_freezing_vs_vera": vs_vera["median_paired_ratio"],
        "vera_step_time_ratio_after_freezing": vera_vs_lora["median_paired_ratio"],
        "step_time_ratio_before_freezing": _paired(times, "aflora", "lora", before)["median_paired_ratio"],
        "ratios_of_medians": {
            "aflora/lora": vs_lora["ratio_of_medians"],
            "aflora/vera": vs_vera["ratio_of_medians"],
            "vera/lora": vera_vs_lora["ratio_of_medians"],
        },
        "goals_met": {
            "avg_params_ratio<=0.15": aflora["params_mean"] / lora["params_mean"] <= 0.15,
            "after_freezing_below_vera": vs_vera["median_paired_ratio"] < 1.0,
            "after_freezing_at_most_lora": vs_lora["median_paired_ratio"] <= 1.0,
        },
    }


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """A Markdown table per model, then the headline ratios."""
    for result in results:
        print(
            f"\n{result['model']}: batch {result['batch']} x {result['seq']} tokens, {args.steps} "
            f"interleaved rounds, {result['threads']} threads, before = rounds {result['rounds_before']}, "
            f"after = rounds {result['rounds_after']} (aflora all frozen after round "
            f"{result['aflora_all_frozen_after_round']})\n"
        )
        print("| method | params start | end | mean | step s before | step s after |")
        print("|---|---|---|---|---|---|")
        for name, m in result["methods"].items():
            print(
                f"| {name} | {m['params_start']:,} | {m['params_end']:,} | {m['params_mean']:,.0f} | "
                f"{m['step_s_before']:.4f} | {m['step_s_after']:.4f} |"
            )
        print(
            f"\navg params aflora/lora = {result['avg_params_ratio']:.3f}; step time after freezing "
            f"aflora/lora = {result['step_time_ratio_after_freezing']:.3f}, aflora/vera = "
            f"{result['step_time_ratio_after_freezing_vs_vera']:.3f} (vera/lora = "
            f"{result['vera_step_time_ratio_after_freezing']:.3f}); goals: {result['goals_met']}"
        )
        for rule, facts in result["freeze_rules"].items():
            print(
                f"freeze rule {rule}: avg params aflora/lora = {facts['avg_params_ratio']:.3f}; matrices "
                f"frozen per step {facts['matrices_per_freeze_step']}"
            )


def main() -> None:
    """Parse arguments, run every model, print and write the results after each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm-l6,smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--warm", type=int, default=8, help="t_i: steps before anything freezes")
    parser.add_argument("--freeze-by", type=int, default=24, help="step by which every A/B is frozen")
    parser.add_argument("--decoder-batch", type=int, default=0, help="batch for causal LMs (0: --batch)")
    parser.add_argument("--decoder-seq", type=int, default=0, help="length for causal LMs (0: --seq)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--report-every", type=int, default=5, help="progress line every N rounds")
    parser.add_argument("--freeze-rules", default="reference,ranked", help="aflora.freeze_rule values")
    parser.add_argument("--out", default="benchmarks/results/aflora_efficiency.json")
    args = parser.parse_args()
    if not 2 < args.warm < args.freeze_by < args.steps - 2:
        parser.error("need 2 < --warm < --freeze-by < --steps - 2")
    torch.set_num_threads(args.threads)
    results: list[dict[str, Any]] = []
    for model in args.models.split(","):
        results.append(run_model(model, args))
        print_table(results[-1:], args)
        write(results, args)  # after every model, so a killed run keeps what it finished


def write(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Write the JSON payload with the results so far."""
    payload = {
        "benchmark": "aflora_efficiency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "settings": vars(args),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {out} ({len(results)} model(s))", flush=True)


if __name__ == "__main__":
    main()
