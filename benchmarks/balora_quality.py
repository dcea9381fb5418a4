"""BA-LoRA quality: what the regularizers do to accuracy, minority-class recall and group gaps.

Three settings, each variant trained and evaluated with fairlora's pipeline over several seeds
(mean and a t-based 95% CI over seeds):
  (a) agnews:   AG News on minilm-l6 with World down-sampled to 10% of train (data.class_ratio);
                variants lora, lora + class-weighted loss (the practitioner's first fix), pissa,
                ba-lora, and each regularizer alone on PiSSA (cr / dr / svdr);
  (b) identity: the generated identity set with label bias injected into two groups, on minilm-l6;
                the same variants;
  (c) asdiv:    smollm2-135m instruction-tuned on ASDiv (Alpaca prompts): base vs lora vs pissa vs
                ba-lora, exact match of the generated answers (small numbers expected at this scale).
Figures: test accuracy, the minority class's recall (agnews: World; identity: the worse class),
worst-group accuracy and the best-worst gap; asdiv: exact match and test loss.

    .venv/bin/python benchmarks/balora_quality.py [--parts agnews,identity,asdiv] [--seeds 3]
        [--steps 80] [--asdiv-steps 40] [--out benchmarks/results/balora_quality.json]

Needs ../shared/data/ag_news (or $FAIRLORA_DATA_DIR) for (a); a part whose data is absent is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from scipy import stats

from fairlora.errors import DataError
from fairlora.pipeline import train

console = Console(width=None if sys.stdout.isatty() else 170)
ONLY = {"cr": {"dr": False, "svdr": False}, "dr": {"cr": False, "svdr": False}}
ONLY |= {"svdr": {"cr": False, "dr": False}}
NLU_VARIANTS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora"},
    "lora+balanced": {"method": "lora", "train": {"class_weight": "balanced"}},
    "pissa": {"method": "pissa"},
    "ba-lora": {"method": "ba-lora"},
    **{f"pissa+{term}": {"method": "ba-lora", "balora": off} for term, off in ONLY.items()},
}
ASDIV_VARIANTS: dict[str, dict[str, Any]] = {
    "base": {"method": "none"},
    "lora": {"method": "lora"},
    "pissa": {"method": "pissa"},
    "ba-lora": {"method": "ba-lora"},
}


def nlu_config(part: str, opts: argparse.Namespace) -> dict[str, Any]:
    """The shared config of a classification part (minilm-l6, LoRA r 8 on query/value)."""
    data: dict[str, Any]
    if part == "agnews":
        data = {"name": "ag_news", "class_ratio": {"World": 0.1}, "max_examples": opts.agnews_examples}
    else:
        bias = {"bias_groups": ["religion_muslim", "race_black"], "bias_rate": 0.4}
        identity = {"examples_per_group": opts.identity_examples, **bias}
        data = {"name": "identity", "identity": identity}
    return {
        "model": {"name": opts.nlu_model, "max_length": opts.max_length},
        "data": data,
        "lora": {"r": 8, "alpha": 16},
        "train": {"max_steps": opts.steps, "batch_size": 16, "lr": 2e-3, "warmup_ratio": 0.05},
    }


def asdiv_config(opts: argparse.Namespace) -> dict[str, Any]:
    """smollm2-135m on ASDiv with Alpaca prompts, exact match on the test split."""
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return {
        "task": "causal_lm",
        "model": {"name": opts.lm_model, "max_length": 256},
        "data": {"name": "asdiv", "prompt_template": "alpaca", "max_examples": opts.asdiv_examples},
        "lora": {"r": 8, "alpha": 8, "target_modules": targets, "pissa_niter": 4},
        "train": {"max_steps": opts.asdiv_steps, "batch_size": 4, "lr": 3e-4, "warmup_ratio": 0.05},
        "eval": {"exact_match": True, "max_new_tokens": opts.max_new_tokens, "batch_size": 16},
    }


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s sections merged in (one level deep)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def run_figures(config: dict[str, Any], part: str) -> dict[str, float | None]:
    """Train + evaluate one run; return its test figures."""
    result = train(config)
    table = result.splits["test"]

    def value(where: dict, key: str) -> float | None:
        estimate = where.get(key)
        return None if estimate is None else estimate.value

    if part == "asdiv":
        return {"exact_match": value(table.overall, "exact_match"), "loss": value(table.overall, "loss")}
    return {
        "accuracy": value(table.overall, "accuracy"),
        "minority_recall": value(table.overall, "recall_class_0")
        if part == "agnews"
        else value(table.summary, "worst_class_recall"),
        "worst_group_accuracy": value(table.summary, "worst_group_accuracy"),
        "gap": value(table.summary, "best_worst_gap"),
    }


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean with a t-based 95% CI over seeds."""
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return {"mean": None, "ci": None, "values": values}
    mean = statistics.fmean(clean)
    if len(clean) < 2:
        return {"mean": mean, "ci": None, "values": values}
    half = stats.t.ppf(0.975, len(clean) - 1) * statistics.stdev(clean) / math.sqrt(len(clean))
    return {"mean": mean, "ci": [mean - half, mean + half], "values": values}


def run_part(part: str, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every variant of one part over the seeds (variants interleaved within a seed)."""
    base = asdiv_config(opts) if part == "asdiv" else nlu_config(part, opts)
    variants = ASDIV_VARIANTS if part == "asdiv" else NLU_VARIANTS
    if part == "identity":
        variants = {k: v for k, v in variants.items() if k != "lora+balanced"}  # classes are balanced
    runs: dict[str, list[dict[str, float | None]]] = {name: [] for name in variants}
    started = time.perf_counter()
    seeds = opts.asdiv_seeds if part == "asdiv" else opts.seeds
    for seed in range(seeds):
        for name, extra in variants.items():
            if name == "base" and seed > 0:
                runs[name].append(runs[name][0])  # the base model does not depend on the seed
                continue
            common = {
                "name": f"{part}-{name.replace('+', '_')}-s{seed}",
                "seed": seed,
                "output_dir": str(workdir),
            }
            config = merged(merged(base, extra), common)
            config["train"] = {**config.get("train", {}), "progress_bar": False}
            config["eval"] = {**config.get("eval", {}), "splits": ["test"], "n_boot": 0, "min_group_size": 10}
            runs[name].append(run_figures(config, part))
            console.print(f"{part} {name} seed {seed}: {runs[name][-1]}")
    figures = {
        name: {metric: mean_ci([r[metric] for r in results]) for metric in results[0]}
        for name, results in runs.items()
    }
    minutes = (time.perf_counter() - started) / 60
    return {"part": part, "config": base, "seeds": seeds, "minutes": minutes, "variants": figures}


def print_part(result: dict[str, Any]) -> None:
    """One table per part: mean [95% CI] of each figure per variant."""
    variants = result["variants"]
    metrics = list(next(iter(variants.values())))
    table = Table(title=f"{result['part']}: mean [95% CI] over {result['seeds']} seeds")
    table.add_column("variant")
    for metric in metrics:
        table.add_column(metric)
    for name, figures in variants.items():
        cells = []
        for metric in metrics:
            fig = figures[metric]
            if fig["mean"] is None:
                cells.append("n/a")
            elif fig["ci"] is None:
                cells.append(f"{fig['mean']:.3f}")
            else:
                cells.append(f"{fig['mean']:.3f} [{fig['ci'][0]:.3f}, {fig['ci'][1]:.3f}]")
        table.add_row(name, *cells)
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="agnews,identity,asdiv")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--asdiv-seeds", type=int, default=3, help="seeds of the asdiv part")
    parser.add_argument("--max-length", type=int, default=64, help="classification tokens per example")
    parser.add_argument("--steps", type=int, default=80, help="classification training steps (batch 16)")
    parser.add_argument("--agnews-examples", type=int, default=3000, help="AG News rows before the split")
    parser.add_argument("--identity-examples", type=int, default=60, help="generated rows per identity group")
    parser.add_argument("--asdiv-steps", type=int, default=40, help="ASDiv training steps (batch 4)")
    parser.add_argument("--asdiv-examples", type=int, default=400, help="ASDiv rows before the split")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--nlu-model", default="minilm-l6")
    parser.add_argument("--lm-model", default="smollm2-135m")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="benchmarks/results/balora_quality.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the parts, print their tables, write the JSON."""
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="balora_quality_") as tmp:
        for part in [p.strip() for p in opts.parts.split(",") if p.strip()]:
            try:
                results.append(run_part(part, opts, Path(tmp)))
            except DataError as exc:
                skipped[part] = str(exc)
                console.print(f"[yellow]{part} skipped: {exc}[/yellow]")
                continue
            print_part(results[-1])
            write_report(opts, results, skipped)  # after every part: a long run keeps what it finished
    write_report(opts, results, skipped)


def write_report(opts: argparse.Namespace, results: list[dict[str, Any]], skipped: dict[str, str]) -> None:
    """The JSON report of the parts finished so far."""
    report = {
        "benchmark": "balora_quality",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": vars(opts),
        "torch": torch.__version__,
        "results": results,
        "skipped": skipped,
    }
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
