"""AFLoRA quality: accuracy and worst-group accuracy of lora / vera / aflora / aflora freeze-by-epoch.

Trains every variant on the same data for each seed (seeds outer, variants inner), reads the test
split's accuracy and worst-group accuracy from each run's results.json, and prints a Markdown table:
mean over seeds with a 95% t-interval, and the paired difference to lora (same seed, same split)
with its 95% t-interval. Also lists each variant's trainable parameters (start / end / mean over
steps, without the head). Each method trains at a learning rate that worked for it on seed 13:
LoRA 1e-3; VeRA 5e-2 (head 1e-2; at 1e-2 it stayed at the majority class in 120 steps); AFLoRA the
paper's 1e-2 (head 4e-3; at 5e-2 both AFLoRA variants collapsed to the majority class).

    .venv/bin/python benchmarks/aflora_quality.py [--claim within-1-point] [--data hatecheck]
        [--variants "lora r=8,aflora r=4"] [--seeds 13,42,1337] [--steps 120] [--batch 16] [--length 48]
        [--threads 1] [--resume] [--max-minutes M] [--output-dir runs/aflora-quality] [--out JSON]

The claim "AFLoRA within about 1 point of LoRA" is the paired difference AFLoRA r=4 - LoRA r=8 in
accuracy points with its 95% t-interval over seeds: confirmed when the interval lies in [-1, +1],
contradicted when it lies wholly outside, undecided otherwise, and undecided whenever a run's training
loss did not flatten (its mean over the last 20% of steps fell by more than --plateau-tol nats from
the 20% before); every run's loss curve is in the JSON. `--claim within-1-point` is the deciding
budget: lora r=8, vera r=256 and aflora r=4, 1,200 steps (6.4 epochs of HateCheck's train split).

Each (variant, seed) is persisted to <out>.units.jsonl when it finishes; --resume skips the finished
ones, --max-minutes stops before a unit that would not fit and writes a JSON marked partial. Finished
run folders (named by variant, steps and seed) are reused either way.
Needs HateCheck in ../shared/data for --data hatecheck (the default); --data identity uses the
generated identity set.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import fairlora
from fairlora.runs import TRAIN_LOG_FILE
from resumable import (
    Budget,
    UnitStore,
    claims_markdown,
    estimate,
    paired,
    units_file,
    within_verdict,
    write_json_atomic,
)

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

REFERENCE, AFLORA = "lora r=8", "aflora r=4"
PRESETS: dict[str, dict[str, Any]] = {
    "within-1-point": {
        "steps": 1200,
        "variants": [REFERENCE, "vera r=256", AFLORA],
        "output_dir": "runs/claim-aflora",  # never the default run's folders
        "out": "benchmarks/results/claim_aflora.json",
    },
}
RULE = (
    "confirmed: the paired 95% t-interval of AFLoRA - LoRA (accuracy points) lies in [-{margin:g}, "
    "{margin:g}]; false: wholly outside it; null: otherwise, or when a run's training loss fell by "
    "more than {tol:g} nats over its last 20% of steps (not converged)"
)


def run_config(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """The run config of one variant and seed."""
    spec = VARIANTS[variant]
    slug = variant.replace(" ", "-").replace("=", "")
    return {
        "name": f"{slug}-{args.steps}steps-s{seed}",
        "output_dir": args.output_dir,
        "seed": seed,
        "method": spec["method"],
        "model": {"name": args.model, "max_length": args.length},
        "data": {
            "name": args.data,
            **(
                {"identity": {"examples_per_group": args.identity_examples}}
                if args.data == "identity"
                else {}
            ),
        },
        "train": {
            "max_steps": args.steps,
            "epochs": 1,
            "batch_size": args.batch,
            "weight_decay": 0.1,
            "warmup_ratio": 0.06,
            "save_strategy": "no",
            "progress_bar": False,
            "logging_steps": max(1, args.steps // 60),
            **spec["train"],
        },
        "eval": {"splits": ["test"], "n_boot": 200},
        **{key: value for key, value in spec.items() if key not in ("method", "train")},
    }


def t_interval(values: list[float | None]) -> dict[str, float | None]:
    """Mean with a 95% t-interval over seeds (no interval from one value; None values left out)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "low": None, "high": None}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "low": None, "high": None}
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def loss_curve(run_dir: Path | None) -> list[list[float]]:
    """[step, training loss] pairs from a run's train_log.json ([] when absent)."""
    log = None if run_dir is None else run_dir / TRAIN_LOG_FILE
    if log is None or not log.is_file():
        return []
    return [[entry["step"], entry["loss"]] for entry in json.loads(log.read_text()) if "loss" in entry]


def plateau(curve: list[list[float]], steps: int, tolerance: float) -> dict[str, Any]:
    """Mean training loss of the last 20% of steps vs the 20% before: flat when it fell by <= tolerance."""
    window = steps * 0.2
    before = [loss for step, loss in curve if steps - 2 * window < step <= steps - window]
    last = [loss for step, loss in curve if step > steps - window]
    if not before or not last:
        return {"loss_before": None, "loss_last": None, "drop": None, "flat": None}
    drop = statistics.fmean(before) - statistics.fmean(last)
    return {"loss_before": statistics.fmean(before), "loss_last": statistics.fmean(last), "drop": drop,
            "flat": drop <= tolerance}  # fmt: skip


def run_unit(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """Train (or reuse) one run; its test figures, parameter counts and loss curve."""
    result = fairlora.train(run_config(args, variant, seed), resume=True)
    facts = result.train
    curve = loss_curve(result.run_dir)
    return {
        "accuracy": result.test.overall["accuracy"].value,
        "worst_group_accuracy": result.test.summary["worst_group_accuracy"].value,
        "params_start": facts.get("trainable_params_no_head_start"),
        "params_end": facts.get("trainable_params_no_head_end"),
        "params_mean": facts.get("trainable_params_no_head_mean"),
        "loss_curve": curve,
        "plateau": plateau(curve, args.steps, args.plateau_tol),
    }


def measure(
    args: argparse.Namespace, store: UnitStore, budget: Budget
) -> dict[str, dict[int, dict[str, Any]]]:
    """variant -> seed -> figures, each unit persisted when it finishes (finished ones skipped)."""
    for seed in args.seeds:
        for variant in args.variants:
            key = f"{variant}/s{seed}"
            if key in store.done:
                continue
            if not budget.allows(estimate(list(store.done.values()))):
                print(budget.stopped, flush=True)
                return collect(args, store)
            started = time.perf_counter()
            figures = run_unit(args, variant, seed)
            store.add(key, {"variant": variant, "seed": seed, "figures": figures,
                            "seconds": time.perf_counter() - started})  # fmt: skip
            shown = {k: v for k, v in figures.items() if k != "loss_curve"}
            print(f"{variant:24s} seed {seed}: {shown}", flush=True)
    return collect(args, store)


def collect(args: argparse.Namespace, store: UnitStore) -> dict[str, dict[int, dict[str, Any]]]:
    """variant -> seed -> figures of the finished units."""
    rows: dict[str, dict[int, dict[str, Any]]] = {v: {} for v in args.variants}
    for record in store.done.values():
        if record["variant"] in rows:
            rows[record["variant"]][record["seed"]] = record["figures"]
    return {variant: seeds for variant, seeds in rows.items() if seeds}


def summarise(rows: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per variant: metric intervals over seeds, paired differences to lora, convergence."""
    reference = rows.get(REFERENCE, {})
    summary = []
    for variant, seeds in rows.items():
        entry: dict[str, Any] = {"variant": variant, "seeds": sorted(seeds)}
        shared = [s for s in seeds if s in reference]
        for metric in ("accuracy", "worst_group_accuracy"):
            entry[metric] = t_interval([seeds[s][metric] for s in seeds])
            pairs = [(seeds[s][metric], reference[s][metric]) for s in shared]
            differences = [a - b for a, b in pairs if a is not None and b is not None]
            entry[f"{metric}_minus_lora"] = t_interval(differences) if differences else None
        for key in ("params_start", "params_end", "params_mean"):
            counts = [seeds[s][key] for s in seeds if seeds[s][key] is not None]
            entry[key] = statistics.fmean(counts) if counts else None
        flat = [seeds[s]["plateau"]["flat"] for s in seeds]
        entry["loss_flat"] = None if None in flat else all(flat)
        entry["loss_drop_last_20pct"] = [seeds[s]["plateau"]["drop"] for s in seeds]
        summary.append(entry)
    return summary


def claims(args: argparse.Namespace, rows: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """ "AFLoRA within about 1 point of LoRA": accuracy difference (pp) paired by seed, and its verdict."""
    if AFLORA not in rows or REFERENCE not in rows:
        return []
    accuracy = {v: {s: f["accuracy"] for s, f in rows[v].items()} for v in (AFLORA, REFERENCE)}
    diff = paired(accuracy[AFLORA], accuracy[REFERENCE], scale=100.0)
    flats = [rows[v][s]["plateau"]["flat"] for v in (AFLORA, REFERENCE) for s in diff["seeds"]]
    converged = None if None in flats else all(flats)
    setting = (
        f"{args.data}, {args.model}, {args.steps} steps x batch {args.batch}, {len(diff['seeds'])} seeds, "
        f"training loss {'flat' if converged else 'not flat'} over the last 20%"
    )
    verdict = within_verdict(diff, args.margin) if converged else None
    return [
        {"claim": f"AFLoRA r=4 within {args.margin:g} point of LoRA r=8 (accuracy)", "setting": setting}
        | {"difference": diff, "scale": 1.0, "unit": "pp", "converged": converged, "confirmed": verdict}
        | {"rule": RULE.format(margin=args.margin, tol=args.plateau_tol)}
    ]


def _ci(value: dict[str, float | None] | None, scale: float = 100.0) -> str:
    if value is None or value["mean"] is None:
        return "n/a"
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
        counts = (e["params_start"], e["params_end"], e["params_mean"])
        params = " / ".join("n/a" if c is None else f"{c:,.0f}" for c in counts)
        lines.append(
            f"| {e['variant']} | {_ci(e['accuracy'])} | {_ci(e['worst_group_accuracy'])} | "
            f"{_ci(e['accuracy_minus_lora'])} | {_ci(e['worst_group_accuracy_minus_lora'])} | {params} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (--claim sets the deciding-budget defaults; explicit flags still win)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claim", choices=sorted(PRESETS), help="the deciding-budget preset of the claim")
    parser.add_argument("--data", default="hatecheck", choices=["hatecheck", "identity"])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--variants", default=",".join(VARIANTS), type=variant_list)
    parser.add_argument("--seeds", default="13,42,1337", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=48)
    parser.add_argument("--identity-examples", type=int, default=100, help="--data identity: rows per group")
    parser.add_argument("--margin", type=float, default=1.0, help="the claim's margin in accuracy points")
    parser.add_argument("--plateau-tol", type=float, default=0.02, help="loss drop (nats) still called flat")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--resume", action="store_true", help="skip the units finished by an earlier invocation"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop before a unit that would not fit"
    )
    parser.add_argument("--output-dir", default="runs/aflora-quality")
    parser.add_argument("--out", default="benchmarks/results/aflora_quality.json")
    preset = parser.parse_known_args(argv)[0].claim
    if preset:
        parser.set_defaults(**PRESETS[preset])
    return parser.parse_args(argv)


def variant_list(text: str) -> list[str]:
    """--variants: comma-separated names of VARIANTS."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return names


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, train or reuse the runs, print the tables and write the JSON; return it."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    store = UnitStore(units_file(args.out), vars(args), args.resume)
    budget = Budget(args.max_minutes)
    rows = measure(args, store, budget)
    summary = summarise(rows)
    found = claims(args, rows)
    print(
        f"\n{args.model}, {args.data}, {args.steps} steps x batch {args.batch} x {args.length} tokens, "
        f"{args.threads} thread(s), seeds {args.seeds}; 95% t-intervals over seeds\n"
    )
    print(table(summary))
    if found:
        print("\n" + claims_markdown(found))
    total = len(args.seeds) * len(args.variants)
    done = sum(len(seeds) for seeds in rows.values())
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "output_dir")}
    payload = {
        "benchmark": "aflora_quality",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": args.model,
        "settings": settings,
        "variants": {name: VARIANTS[name] for name in args.variants},
        "partial": budget.stopped is not None or done < total,
        "stopped": budget.stopped,
        "units_done": done,
        "units_total": total,
        "results": summary,
        "claims": found,
        "runs": {v: {str(s): f for s, f in seeds.items()} for v, seeds in rows.items()},
    }
    print(f"\nwrote {write_json_atomic(args.out, payload)} ({done}/{total} units)")
    return payload


if __name__ == "__main__":
    main()
