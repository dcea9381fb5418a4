"""Small-scale reproduction of the LoRA-fairness study: base vs LoRA vs full fine-tuning per group.

Trains (or reuses) three methods x seeds with `fairlora sweep`, audits each seed's three runs with
`fairlora audit` (bootstrap 95% CIs), and prints Markdown tables: per method (mean ± std over seeds)
accuracy, worst-group accuracy, ECE and loss-attack AUC; per group for one seed, each with its CI;
and the per-group accuracy difference LoRA − full for every seed (the study's main comparison).

    .venv/bin/python benchmarks/reproduce_study.py [--config configs/study-hate.yaml] [--seeds 13,42,1337]
        [--lr none=1e-2,full=5e-5] [--output-dir runs] [--out benchmarks/results/reproduce_study.json]
        [KEY=VALUE ...]

Finished runs are reused (a killed reproduction continues). Needs HateCheck in ../shared/data for the
default config; add data.name=identity to run it on the generated set.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import fairlora
from fairlora.config import load_config
from fairlora.sweeps import cell_name

METHODS = ("none", "lora", "full")
HEADLINE = (
    ("utility/test", "accuracy"),
    ("utility/test", "worst_group_accuracy"),
    ("calibration/test", "ece"),
    ("membership/loss", "auc"),
)


def run_sweeps(args: argparse.Namespace, overrides: list[str]) -> dict[tuple[str, str], Path]:
    """(method, seed) -> run folder, training what is missing: one sweep over seeds per method and lr."""
    base = load_config(args.config, overrides)
    learning_rates = dict(item.split("=") for item in args.lr.split(","))
    runs = {}
    for method in METHODS:
        name = base.name if method == "lora" else f"{base.name}-{method}"
        cell_overrides = [
            *overrides,
            f"name={name}",
            f"output_dir={args.output_dir}",
            "train.progress_bar=false",
        ]
        cell_overrides += [f"train.lr={learning_rates[method]}"] if method in learning_rates else []
        fairlora.sweep(
            args.config, [f"method={method}", f"seed={args.seeds}"], cell_overrides, progress=False
        )
        for seed in args.seeds.split(","):
            runs[method, seed] = (
                Path(args.output_dir) / f"{name}-sweep" / cell_name(name, {"method": method, "seed": seed})
            )
    return runs


def estimate(audit: Any, method_index: int, key: str, metric: str, group: str | None = None) -> dict | None:
    table = audit.runs[method_index].sections.get(key)
    if table is None:
        return None
    source = table.overall if group is None else table.by_group.get(group, {})
    found = source.get(metric) or table.summary.get(metric)
    return None if found is None else found.to_dict()


def cell(e: dict | None) -> str:
    if e is None or e["value"] is None:
        return "–"
    ci = e.get("ci")
    return f"{e['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{e['value']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/study-hate.yaml")
    parser.add_argument("--seeds", default="13,42,1337")
    parser.add_argument(
        "--lr", default="none=1e-2,full=5e-5", help="per-method learning rates (else the config's)"
    )
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--detail-seed", default="42")
    parser.add_argument("--out", default="benchmarks/results/reproduce_study.json")
    args, overrides = parser.parse_known_args()
    if args.detail_seed not in args.seeds.split(","):
        parser.error(f"--detail-seed {args.detail_seed} must be one of --seeds {args.seeds}")
    runs = run_sweeps(args, overrides)
    seeds = args.seeds.split(",")
    audits = {
        seed: fairlora.audit(
            [runs[m, seed] for m in METHODS], Path(args.output_dir) / f"study-audit-seed-{seed}", []
        )
        for seed in seeds
    }
    result = {
        "config": args.config,
        "overrides": overrides,
        "seeds": seeds,
        "headline": {},
        "groups": {},
        "lora_minus_full": {},
    }
    print("\n| method | " + " | ".join(f"{k.split('/')[0]} {m}" for k, m in HEADLINE) + " |")
    print("|---|" + "---|" * len(HEADLINE))
    for index, method in enumerate(METHODS):
        row = []
        for key, metric in HEADLINE:
            values = [estimate(audits[s], index, key, metric)["value"] for s in seeds]
            mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
            result["headline"][f"{method}/{key}/{metric}"] = {"values": values, "mean": mean, "std": std}
            row.append(f"{mean:.3f} ± {std:.3f}")
        print(f"| {method} | " + " | ".join(row) + " |")
    detail = audits[args.detail_seed]
    groups = list(detail.runs[0].sections["utility/test"].by_group)
    sizes = detail.runs[0].sections["utility/test"].group_sizes
    print(f"\nseed {args.detail_seed}, per group (95% bootstrap CI):\n")
    print(
        "| group | n test | "
        + " | ".join(f"{m} {name}" for name in ("acc", "ECE", "MIA AUC") for m in METHODS)
        + " |"
    )
    print("|---|---|" + "---|" * 9)
    for group in [None, *groups]:
        cells = []
        for key, metric in (
            ("utility/test", "accuracy"),
            ("calibration/test", "ece"),
            ("membership/loss", "auc"),
        ):
            for index, method in enumerate(METHODS):
                found = estimate(detail, index, key, metric, group)
                result["groups"][f"{group or 'overall'}/{method}/{metric}"] = found
                cells.append(cell(found))
        n = (
            detail.runs[0].sections["utility/test"].overall["accuracy"].n
            if group is None
            else sizes.get(group)
        )
        print(f"| {group or 'overall'} | {n} | " + " | ".join(cells) + " |")
    print("\naccuracy LoRA − full per group and seed:\n")
    print("| group | " + " | ".join(f"seed {s}" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    for group in [None, *groups]:
        diffs = []
        for seed in seeds:
            lora = estimate(audits[seed], 1, "utility/test", "accuracy", group)["value"]
            full = estimate(audits[seed], 2, "utility/test", "accuracy", group)["value"]
            diffs.append(None if lora is None or full is None else lora - full)
        result["lora_minus_full"][group or "overall"] = diffs
        print(
            f"| {group or 'overall'} | " + " | ".join("–" if d is None else f"{d:+.3f}" for d in diffs) + " |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
