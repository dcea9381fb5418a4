"""AFLoRA quality: accuracy and worst-group accuracy of lora / vera / aflora / aflora freeze-by-epoch.

Trains every variant on the same data for each seed (seeds outer, variants inner), reads the test
split's accuracy and worst-group accuracy from each run's results.json, and prints a Markdown table:
mean over seeds with a 95% t-interval, and the paired difference to lora (same seed, same split)
with its 95% t-interval. Also lists each variant's trainable parameters (start / end / mean over
steps, without the head). Each method trains at a learning rate that worked for it on seed 13:
LoRA 1e-3; VeRA 5e-2 (head 1e-2; at 1e-2 it stayed at the majority class in 120 steps); AFLoRA the
paper's 1e-2 (head 4e-3; at 5e-2 both AFLoRA variants collapsed to the majority class).

    .venv/bin/python benchmarks/aflora_quality.py [--data hatecheck] [--seeds 13,42,1337]
        [--steps 120] [--batch 16] [--length 48] [--threads 1] [--output-dir runs/aflora-quality]
        [--out benchmarks/results/aflora_quality.json]

Needs HateCheck in ../shared/data for --data hatecheck (the default); --data identity uses the
generated identity set. Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import fairlora

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
VARIANTS: dict[str, dict[str, Any]] = {  # every adapter on the same modules (the paper's setting)
    "lora r=8": {
        "method": "lora",
        "lora": {"r": 8, "alpha": 16, "target_modules": TARGETS},
        "train": {"lr": 1e-3},
    },
    "vera r=256": {
        "method": "vera",
        "vera": {"r": 256, "target_modules": TARGETS},
        "train": {"lr": 5e-2, "head_lr": 1e-2},
    },
    "aflora r=4": {"method": "aflora", "aflora": {"r": 4}, "train": {"lr": 1e-2, "head_lr": 4e-3}},
    "aflora freeze-by-epoch": {  # A/B frozen together after 0.13 epochs (~20% of 120 x 16)
        "method": "aflora",
        "aflora": {"r": 4, "freeze_by_epoch": 0.13},
        "train": {"lr": 1e-2, "head_lr": 4e-3},
    },
}


def run_config(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """The run config of one variant and seed."""
    spec = VARIANTS[variant]
    slug = variant.replace(" ", "-").replace("=", "")
    return {
        "name": f"{slug}-s{seed}",
        "output_dir": args.output_dir,
        "seed": seed,
        "method": spec["method"],
        "model": {"name": args.model, "max_length": args.length},
        "data": {
            "name": args.data,
            **({"identity": {"examples_per_group": 100}} if args.data == "identity" else {}),
        },
        "train": {
            "max_steps": args.steps,
            "epochs": 1,
            "batch_size": args.batch,
            "weight_decay": 0.1,
            "warmup_ratio": 0.06,
            "save_strategy": "no",
            "progress_bar": False,
            "logging_steps": 50,
            **spec["train"],
        },
        "eval": {"splits": ["test"], "n_boot": 200},
        **{key: value for key, value in spec.items() if key not in ("method", "train")},
    }


def t_interval(values: list[float]) -> dict[str, float | None]:
    """Mean with a 95% t-interval over seeds (no interval from one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "low": None, "high": None}
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def measure(args: argparse.Namespace) -> dict[str, dict[int, dict[str, float]]]:
    """variant -> seed -> accuracy, worst-group accuracy and parameter counts."""
    rows: dict[str, dict[int, dict[str, float]]] = {v: {} for v in VARIANTS}
    for seed in args.seeds:
        for variant in VARIANTS:
            result = fairlora.train(run_config(args, variant, seed), resume=True)
            facts = result.train
            rows[variant][seed] = {
                "accuracy": result.test.overall["accuracy"].value,
                "worst_group_accuracy": result.test.summary["worst_group_accuracy"].value,
                "params_start": facts.get("trainable_params_no_head_start"),
                "params_end": facts.get("trainable_params_no_head_end"),
                "params_mean": facts.get("trainable_params_no_head_mean"),
            }
            print(f"{variant:24s} seed {seed}: {rows[variant][seed]}", flush=True)
    return rows


def summarise(rows: dict[str, dict[int, dict[str, float]]]) -> list[dict[str, Any]]:
    """Per variant: metric intervals over seeds and paired differences to lora."""
    reference = rows["lora r=8"]
    summary = []
    for variant, seeds in rows.items():
        entry: dict[str, Any] = {"variant": variant, "seeds": sorted(seeds)}
        for metric in ("accuracy", "worst_group_accuracy"):
            entry[metric] = t_interval([seeds[s][metric] for s in seeds])
            entry[f"{metric}_minus_lora"] = t_interval(
                [seeds[s][metric] - reference[s][metric] for s in seeds]
            )
        for key in ("params_start", "params_end", "params_mean"):
            entry[key] = statistics.fmean(seeds[s][key] for s in seeds)
        summary.append(entry)
    return summary


def _ci(value: dict[str, float | None], scale: float = 100.0) -> str:
    if value["low"] is None:
        return f"{value['mean'] * scale:.1f}"
    return f"{value['mean'] * scale:.1f} [{value['low'] * scale:.1f}, {value['high'] * scale:.1f}]"


def table(summary: list[dict[str, Any]]) -> str:
    """The Markdown table (percentage points)."""
    lines = [
        "| variant | accuracy % | worst-group acc % | acc − lora (pp) | wga − lora (pp) "
        "| params start / end / mean |",
        "|---|---|---|---|---|---|",
    ]
    for e in summary:
        params = f"{e['params_start']:,.0f} / {e['params_end']:,.0f} / {e['params_mean']:,.0f}"
        lines.append(
            f"| {e['variant']} | {_ci(e['accuracy'])} | {_ci(e['worst_group_accuracy'])} | "
            f"{_ci(e['accuracy_minus_lora'])} | {_ci(e['worst_group_accuracy_minus_lora'])} | {params} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, train or reuse the runs, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--data", default="hatecheck", choices=["hatecheck", "identity"])
    parser.add_argument("--seeds", default="13,42,1337", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", default="runs/aflora-quality")
    parser.add_argument("--out", default="benchmarks/results/aflora_quality.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    summary = summarise(measure(args))
    print(
        f"\n{args.model}, {args.data}, {args.steps} steps x batch {args.batch} x {args.length} tokens, "
        f"{args.threads} thread(s), seeds {args.seeds}; 95% t-intervals over seeds\n"
    )
    print(table(summary))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "output_dir")}
    payload = {
        "benchmark": "aflora_quality",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.model,
        "settings": settings,
        "variants": VARIANTS,
        "results": summary,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
