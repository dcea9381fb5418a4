"""BA-LoRA quality: what the regularizers do to accuracy, minority-class recall, group gaps and generation.

Four parts, each variant trained and evaluated with fairlora's pipeline over several seeds (mean and
a t-based 95% CI over seeds; claims as paired differences over seeds):
  (a) agnews:    AG News on minilm-l6 with World down-sampled to 10% of train (data.class_ratio);
                 variants lora, lora + class-weighted loss, pissa, ba-lora, each regularizer alone on
                 PiSSA (pissa+cr / dr / svdr) and BA-LoRA without each term (ba-lora-no-cr / dr / svdr);
  (b) identity:  the generated identity set with label bias injected into two groups; the same variants;
  (c) asdiv:     smollm2-135m instruction-tuned on ASDiv (Alpaca prompts): base / lora / pissa / ba-lora,
                 exact match of the generated answers (small numbers expected at this scale);
  (d) humaneval: the same instruction-tuned runs (and the base) evaluated on HumanEval with code
                 execution, pass@1; skipped with a message where the installed fairlora has no
                 `humaneval` dataset or no `eval.code_execution`.
Every (part, variant, seed) is persisted to <out>.units.jsonl when it finishes; --resume skips the
finished ones, --max-minutes stops before a unit that would not fit and writes a partial JSON.

    .venv/bin/python benchmarks/balora_quality.py [--claim minority-recall|generation]
        [--parts agnews,identity,asdiv,humaneval] [--variants lora,ba-lora,...] [--seeds 3] [--steps 80]
        [--resume] [--max-minutes M] [--output-dir runs/balora-quality] [--out JSON]

Needs ../shared/data/ag_news (or $FAIRLORA_DATA_DIR) for (a); a part whose data is absent is skipped.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from datetime import UTC, datetime
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import fairlora
from fairlora.config import EvalConfig, build_config
from fairlora.data.registry import list_datasets, load_task_data
from fairlora.errors import ConfigError, DataError
from fairlora.pipeline import train
from resumable import (
    Budget,
    UnitStore,
    claims_markdown,
    estimate,
    fmt_ci,
    greater_verdict,
    paired,
    parse_shard,
    t_interval,
    units_file,
    write_json_atomic,
)

console = Console(width=None if sys.stdout.isatty() else 170)
TERMS = ("cr", "dr", "svdr")
NLU_VARIANTS: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora"},
    "lora+balanced": {"method": "lora", "train": {"class_weight": "balanced"}},
    "pissa": {"method": "pissa"},
    "ba-lora": {"method": "ba-lora"},
    **{
        f"pissa+{term}": {"method": "ba-lora", "balora": {t: False for t in TERMS if t != term}}
        for term in TERMS
    },
    **{f"ba-lora-no-{term}": {"method": "ba-lora", "balora": {term: False}} for term in TERMS},
}
LM_VARIANTS: dict[str, dict[str, Any]] = {
    "base": {"method": "none"},
    "lora": {"method": "lora"},
    "pissa": {"method": "pissa"},
    "ba-lora": {"method": "ba-lora"},
}
CLAIM_VARIANTS = ["lora", "lora+balanced", "pissa", "ba-lora", *(f"ba-lora-no-{t}" for t in TERMS)]
PRESETS: dict[str, dict[str, Any]] = {  # --claim NAME: these defaults (explicit flags still win)
    "minority-recall": {"parts": "agnews", "seeds": 3, "steps": 1000, "agnews_examples": 0},
    "generation": {"parts": "asdiv,humaneval", "asdiv_seeds": 3, "asdiv_steps": 300, "asdiv_examples": 0},
}
for claim_name, preset in PRESETS.items():  # a claim's runs and JSON never meet the default run's
    preset["output_dir"] = f"runs/claim-{claim_name}"
    preset["out"] = f"benchmarks/results/claim_{claim_name.replace('-', '_')}.json"
PRESETS["minority-recall"]["variants"] = ",".join(CLAIM_VARIANTS)
RECALL = "minority_recall"
# (claim, variant a, variant b, metric): "a > b" on the paired difference a - b over seeds
CLAIMS = [
    ("BA-LoRA improves minority-class recall over LoRA", "ba-lora", "lora", RECALL),
    ("BA-LoRA improves minority-class recall over class-weighted LoRA", "ba-lora", "lora+balanced", RECALL),
    ("PiSSA improves minority-class recall over LoRA", "pissa", "lora", RECALL),
    ("BA-LoRA improves minority-class recall over PiSSA", "ba-lora", "pissa", RECALL),
    *(
        (f"{t.upper()} adds minority-class recall to BA-LoRA", "ba-lora", f"ba-lora-no-{t}", RECALL)
        for t in TERMS
    ),
]
# the BA-LoRA paper's generation ordering (GSM8K, HumanEval): LoRA < PiSSA < BA-LoRA; "a > b" as above
GENERATION_CLAIMS = [("pissa", "lora"), ("ba-lora", "pissa"), ("ba-lora", "lora")]
GENERATION_METRICS = {
    "asdiv": ("exact_match", "ASDiv exact match"),
    "humaneval": ("pass_at_1", "HumanEval pass@1"),
}
NAMES = {"lora": "LoRA", "pissa": "PiSSA", "ba-lora": "BA-LoRA"}
# HumanEval's longest prompt + canonical solution is 581 smollm2 tokens (the runs train at 256)
HUMANEVAL_MAX_LENGTH = 1024
RULE = "confirmed: the paired 95% t-interval of a - b over seeds lies above 0; false: below 0; null: spans 0"


def nlu_config(part: str, opts: argparse.Namespace) -> dict[str, Any]:
    """The shared config of a classification part (LoRA r 8 on query/value)."""
    data: dict[str, Any]
    if part == "agnews":
        data = {
            "name": "ag_news",
            "class_ratio": {"World": 0.1},
            "max_examples": opts.agnews_examples or None,
        }
    else:
        bias = {"bias_groups": ["religion_muslim", "race_black"], "bias_rate": 0.4}
        data = {"name": "identity", "identity": {"examples_per_group": opts.identity_examples, **bias}}
    return {
        "model": {"name": opts.nlu_model, "max_length": opts.max_length},
        "data": data,
        "lora": {"r": 8, "alpha": 16},
        "train": {"max_steps": opts.steps, "batch_size": opts.batch, "lr": 2e-3, "warmup_ratio": 0.05},
    }


def asdiv_config(opts: argparse.Namespace) -> dict[str, Any]:
    """smollm2-135m on ASDiv with Alpaca prompts, exact match on the test split."""
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return {
        "task": "causal_lm",
        "model": {"name": opts.lm_model, "max_length": opts.lm_max_length},
        "data": {"name": "asdiv", "prompt_template": "alpaca", "max_examples": opts.asdiv_examples or None},
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


def run_name(part: str, variant: str, seed: int) -> str:
    """The run folder a unit trains (a humaneval unit evaluates its asdiv run)."""
    source = "asdiv" if part in ("asdiv", "humaneval") else part
    return f"{source}-{variant.replace('+', '_')}-s{seed}"


def unit_config(part: str, variant: str, seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    """The run config of one unit (humaneval: the instruction-tuned asdiv run it evaluates)."""
    lm = part in ("asdiv", "humaneval")
    base = asdiv_config(opts) if lm else nlu_config(part, opts)
    extra = (LM_VARIANTS if lm else NLU_VARIANTS)[variant]
    common = {
        "name": run_name(part, variant, seed),
        "seed": seed,
        "output_dir": opts.output_dir,
    }
    config = merged(merged(base, extra), common)
    checkpoints = {"save_strategy": "steps", "save_steps": opts.save_steps, "save_total_limit": 1}
    config["train"] = {**config["train"], **checkpoints, "progress_bar": False}
    config["eval"] = {**config.get("eval", {}), "splits": ["test"], "n_boot": 0, "min_group_size": 10}
    return config


def value(where: dict, key: str) -> float | None:
    """A metric's point estimate, or None when the table lacks it."""
    estimate_ = where.get(key)
    return None if estimate_ is None else estimate_.value


def minority_facts(config: dict[str, Any], steps: int, batch: int) -> dict[str, float]:
    """World's share of the train split and how many World examples training sees (steps x batch x share)."""
    data = load_task_data(build_config(config).data, "classification", config["seed"])
    share = float((data.train["label"] == data.label_names.index("World")).mean())
    return {"minority_share": share, "minority_seen": steps * batch * share}


def run_unit(part: str, variant: str, seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) and evaluate one unit; return its test figures."""
    config = unit_config(part, variant, seed, opts)
    if part == "humaneval":
        return humaneval_figures(train(config, resume=True), opts)
    table = train(config, overwrite=not opts.resume, resume=opts.resume).splits["test"]
    if part == "asdiv":
        return {"exact_match": value(table.overall, "exact_match"), "loss": value(table.overall, "loss")}
    figures = {
        "accuracy": value(table.overall, "accuracy"),
        "minority_recall": value(table.overall, "recall_class_0")
        if part == "agnews"
        else value(table.summary, "worst_class_recall"),
        "worst_group_accuracy": value(table.summary, "worst_group_accuracy"),
        "gap": value(table.summary, "best_worst_gap"),
    }
    return figures | (minority_facts(config, opts.steps, opts.batch) if part == "agnews" else {})


def humaneval_support() -> str | None:
    """Why the installed fairlora cannot run the humaneval part (None when it can)."""
    if "code_execution" not in EvalConfig.model_fields:
        return "the installed fairlora has no eval.code_execution (HumanEval needs sandboxed code execution)"
    if "humaneval" not in {info.name for info in list_datasets()}:
        return "the installed fairlora has no registered `humaneval` dataset"
    return None


def humaneval_figures(run: Any, opts: argparse.Namespace) -> dict[str, Any]:
    """pass@1 of a finished instruction-tuned run on HumanEval (an evaluation set of the run)."""
    data = {"name": "humaneval", "max_examples": opts.humaneval_problems or None}
    overrides = ["eval.code_execution=true", f"eval.max_new_tokens={opts.humaneval_tokens}", "eval.n_boot=0"]
    overrides += ["eval.exact_match=false", f"model.max_length={HUMANEVAL_MAX_LENGTH}"]
    result = fairlora.evaluate(run.run_dir, data, overrides, name="humaneval", overwrite=True)
    table = next(iter(result.splits.values()))
    figures: dict[str, Any] = {"pass_at_1": value(table.overall, "pass_at_1")}
    if figures["pass_at_1"] is None:
        figures["note"] = (
            "the evaluation set carries no pass_at_1 (the installed fairlora did not score code)"
        )
    return figures


def part_variants(part: str, opts: argparse.Namespace) -> list[str]:
    """The variants of a part, in the order they run (--variants filters them)."""
    names = list(LM_VARIANTS if part in ("asdiv", "humaneval") else NLU_VARIANTS)
    if part == "identity":
        names.remove("lora+balanced")  # its classes are balanced
    wanted = [v.strip() for v in opts.variants.split(",") if v.strip()] if opts.variants else names
    return [name for name in names if name in wanted]


def part_seeds(part: str, variant: str, opts: argparse.Namespace) -> range:
    """The seeds of a unit (the base model does not depend on the seed: one run)."""
    if variant == "base":
        return range(1)
    return range(opts.asdiv_seeds if part in ("asdiv", "humaneval") else opts.seeds)


def planned_units(parts: list[str], opts: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Every (part, variant, seed), seeds outer and variants inner within a part; the units of one
    run folder next to each other (asdiv, then humaneval), so a resume in a fresh checkout retrains less."""
    units = []
    for part in parts:
        seeds = opts.asdiv_seeds if part in ("asdiv", "humaneval") else opts.seeds
        for seed in range(seeds):
            units += [(part, v, seed) for v in part_variants(part, opts) if seed in part_seeds(part, v, opts)]
    runs = run_folders(units)
    return sorted(units, key=lambda unit: runs.index(run_name(*unit)))


def run_folders(units: list[tuple[str, str, int]]) -> list[str]:
    """The run folders of the units, in first-use order."""
    return list(dict.fromkeys(run_name(*unit) for unit in units))


def shard_of(unit: tuple[str, str, int], runs: list[str], shards: int) -> int:
    """The shard that runs a unit: by its run folder, so no two shards ever train one run."""
    return runs.index(run_name(*unit)) % shards


def run_units(opts: argparse.Namespace, store: UnitStore, budget: Budget) -> dict[str, str]:
    """Run every planned unit not yet in the store; return the skipped parts -> why."""
    parts = [p.strip() for p in opts.parts.split(",") if p.strip()]
    skipped: dict[str, str] = {}
    if "humaneval" in parts and (why := humaneval_support()) is not None:
        skipped["humaneval"] = why
        console.print(f"[yellow]humaneval skipped: {why}[/yellow]")
    shard, shards = opts.shard
    units = planned_units(parts, opts)
    runs = run_folders(units)
    for part, variant, seed in units:
        key = f"{part}/{variant}/s{seed}"
        if part in skipped or key in store.done or shard_of((part, variant, seed), runs, shards) != shard:
            continue
        if not budget.allows(estimate([r for r in store.done.values() if r["part"] == part])):
            console.print(f"[yellow]{budget.stopped}[/yellow]")
            break
        started = time.perf_counter()
        try:
            figures = run_unit(part, variant, seed, opts)
        except (DataError, ConfigError) as exc:
            skipped[part] = str(exc)
            console.print(f"[yellow]{part} skipped: {exc}[/yellow]")
            continue
        record = {"part": part, "variant": variant, "seed": seed, "figures": figures}
        store.add(key, record | {"seconds": time.perf_counter() - started})
        console.print(f"{key}: {figures}")
    return skipped


def bounds(metric: str) -> tuple[float, float]:
    """Where a figure can lie: rates and shares in [0, 1] (their intervals are clipped there)."""
    unbounded = metric in ("loss", "minority_seen")
    return (-math.inf, math.inf) if unbounded else (0.0, 1.0)


def summarise(opts: argparse.Namespace, store: UnitStore) -> list[dict[str, Any]]:
    """Per part: mean [95% CI] over seeds of each figure per variant."""
    results = []
    for part in dict.fromkeys(r["part"] for r in store.done.values()):
        records = [r for r in store.done.values() if r["part"] == part]
        variants: dict[str, Any] = {}
        for variant in part_variants(part, opts):
            runs = [r["figures"] for r in records if r["variant"] == variant]
            if runs:
                metrics = [m for m, v in runs[0].items() if not isinstance(v, str)]
                variants[variant] = {
                    m: {**t_interval([r[m] for r in runs], bounds(m)), "values": [r[m] for r in runs]}
                    for m in metrics
                }
                variants[variant]["seeds"] = len(runs)
        minutes = sum(r["seconds"] for r in records) / 60
        config = unit_config(part, "lora", 0, opts)
        results.append({"part": part, "config": config, "minutes": minutes, "variants": variants})
    return results


def part_claims(part: str) -> list[tuple[str, str, str, str]]:
    """The (claim, a, b, metric) rows a part can decide."""
    if part in GENERATION_METRICS:
        metric, what = GENERATION_METRICS[part]
        return [(f"{NAMES[a]} improves {what} over {NAMES[b]}", a, b, metric) for a, b in GENERATION_CLAIMS]
    return CLAIMS


def claim_setting(part: str, seeds: int, opts: argparse.Namespace) -> str:
    """The claims table's setting of a part."""
    if part in GENERATION_METRICS:
        batch = asdiv_config(opts)["train"]["batch_size"]
        tuning = f"instruction-tuned on ASDiv, {opts.asdiv_steps} steps x batch {batch}"
        return f"{part}, {opts.lm_model} {tuning}, {seeds} seeds"
    return f"{part}, {opts.nlu_model}, {opts.steps} steps x batch {opts.batch}, {seeds} seeds"


def per_seed(store: UnitStore, part: str, variant: str, metric: str) -> dict[int, float | None]:
    """A variant's figure per seed in a part."""
    records = store.done.values()
    return {
        r["seed"]: r["figures"].get(metric) for r in records if r["part"] == part and r["variant"] == variant
    }


def claims(opts: argparse.Namespace, store: UnitStore) -> list[dict[str, Any]]:
    """Each claim a finished part can decide: paired difference over seeds and verdict."""
    found = []
    for part in dict.fromkeys(r["part"] for r in store.done.values()):
        for claim, a, b, metric in part_claims(part):
            diff = paired(per_seed(store, part, a, metric), per_seed(store, part, b, metric))
            if diff["seeds"]:
                found.append(
                    {"claim": claim, "part": part, "a": a, "b": b, "metric": metric}
                    | {"setting": claim_setting(part, len(diff["seeds"]), opts), "difference": diff}
                    | {"confirmed": greater_verdict(diff), "rule": RULE}
                )
    return found


def print_part(result: dict[str, Any]) -> None:
    """One table per part: mean [95% CI] of each figure per variant."""
    variants = result["variants"]
    metrics = [m for m in next(iter(variants.values())) if m != "seeds"]
    table = Table(title=f"{result['part']}: mean [95% CI] over seeds")
    for column in ("variant", "seeds", *metrics):
        table.add_column(column)
    for name, figures in variants.items():
        table.add_row(name, str(figures["seeds"]), *(fmt_ci(figures[m]) for m in metrics))
    console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (--claim NAME sets a preset's defaults; explicit flags still win)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claim", choices=sorted(PRESETS), help="the deciding-budget preset of a claim")
    parser.add_argument("--parts", default="agnews,identity,asdiv")
    parser.add_argument("--variants", default="", help="comma-separated variants to run (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--asdiv-seeds", type=int, default=3, help="seeds of the asdiv and humaneval parts")
    parser.add_argument("--max-length", type=int, default=64, help="classification tokens per example")
    parser.add_argument("--steps", type=int, default=80, help="classification training steps")
    parser.add_argument("--batch", type=int, default=16, help="classification batch size")
    parser.add_argument(
        "--agnews-examples", type=int, default=3000, help="AG News rows before the split (0 = all)"
    )
    parser.add_argument("--identity-examples", type=int, default=60, help="generated rows per identity group")
    parser.add_argument("--asdiv-steps", type=int, default=40, help="ASDiv training steps (batch 4)")
    parser.add_argument(
        "--asdiv-examples", type=int, default=400, help="ASDiv rows before the split (0 = all)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--humaneval-problems", type=int, default=0, help="HumanEval problems (0 = all 164)")
    parser.add_argument("--humaneval-tokens", type=int, default=256, help="tokens generated per completion")
    parser.add_argument("--nlu-model", default="minilm-l6")
    parser.add_argument("--lm-model", default="smollm2-135m")
    parser.add_argument("--lm-max-length", type=int, default=256, help="asdiv tokens per example")
    parser.add_argument("--save-steps", type=int, default=200, help="checkpoint interval of each run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--resume", action="store_true", help="skip the units finished by an earlier invocation"
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop before a unit that would not fit"
    )
    parser.add_argument(
        "--shard",
        type=parse_shard,
        default=(0, 1),
        help="K/N: run every N-th run folder's units from the K-th",
    )
    parser.add_argument("--output-dir", default="runs/balora-quality", help="the run folders")
    parser.add_argument("--out", default="benchmarks/results/balora_quality.json")
    preset = parser.parse_known_args(argv)[0].claim
    if preset:
        parser.set_defaults(**PRESETS[preset])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the units, print the tables and the claims, write the JSON; return it."""
    opts = parse_args(argv)
    torch.set_num_threads(opts.threads)
    warnings.filterwarnings("ignore")
    store = UnitStore(units_file(opts.out), vars(opts), opts.resume)
    budget = Budget(opts.max_minutes)
    skipped = run_units(opts, store, budget)
    store.refresh()  # units other shards finished meanwhile
    results = summarise(opts, store)
    for result in results:
        print_part(result)
    found = claims(opts, store)
    if found:
        console.print(claims_markdown(found), highlight=False)
    parts = [p.strip() for p in opts.parts.split(",") if p.strip() and p.strip() not in skipped]
    planned = {f"{p}/{v}/s{s}" for p, v, s in planned_units(parts, opts)}
    done, total = len(planned & set(store.done)), len(planned)
    report = {
        "benchmark": "balora_quality",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": vars(opts),
        "torch": torch.__version__,
        "partial": budget.stopped is not None or done < total,
        "stopped": budget.stopped,
        "units_done": done,
        "units_total": total,
        "results": results,
        "claims": found,
        "skipped": skipped,
    }
    console.print(f"wrote {write_json_atomic(opts.out, report)} ({done}/{total} units)")
    return report


if __name__ == "__main__":
    main()
