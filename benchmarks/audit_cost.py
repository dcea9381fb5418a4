"""Audit cost: `fairlora.evaluate()` + `fairlora.audit()` of one run vs a bare evaluation forward pass.

Both sides load the run's trained model from disk and cover its train and test rows. The bare side
then tokenizes, pads and runs the model forward in inference mode (nothing kept). The audit side is
what a user runs to audit a run, the package's own functions timed as they are: `fairlora.evaluate()`
(`fairlora eval`: probabilities + per-example loss over both splits, predictions.parquet) and then
`fairlora.audit(run, out)` with its default sections (utility per split, calibration and subgroup /
BPSN / BNSP AUCs on the test split, the loss membership attack, all with 1000-resample CIs per group),
the run comparison, results.json, report.html (plots) and report.md. LiRA shadow training is excluded
(it is K training runs). The two alternate (ABAB...) and medians are compared: target audit / bare
<= 1.2. "From stored predictions" times `fairlora.audit()` alone, as a repeated `fairlora audit` runs it.

    .venv/bin/python benchmarks/audit_cost.py [--config configs/minilm-identity.yaml] [--repeats 5]
        [--threads 2] [--out benchmarks/results/audit_cost.json] [--set KEY=VALUE ...]

Timings never fail the run: a ratio over the target is reported, not raised.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

import fairlora
from fairlora.pipeline import load_run, load_trained_model, train
from fairlora.tasks import get_task

TARGET_RATIO = 1.2


def bare_forward(
    model: Any, tokenizer: Any, frame: pd.DataFrame, task: str, max_length: int, batch: int
) -> None:
    """Tokenize, pad and run the model forward; keep nothing."""
    examples = get_task(task).encode(frame, tokenizer, max_length)
    collate = get_task(task).collator(tokenizer)
    with torch.inference_mode():
        for start in range(0, len(examples), batch):
            inputs = collate(examples[start : start + batch])
            inputs.pop("labels")
            model(**inputs)


def audit_tables(run_dir: Path, out: Path) -> None:
    """`fairlora.audit()` of the run from its stored predictions: every default section and the report."""
    fairlora.audit(run_dir, out, progress=False)


def full_audit(run_dir: Path, out: Path) -> None:
    """What a user runs to audit a trained run: `fairlora.evaluate()` (the prediction pass over both
    splits, predictions.parquet) then `fairlora.audit()`; the package's own functions, nothing rebuilt."""
    fairlora.evaluate(run_dir)
    audit_tables(run_dir, out)


def loaded_bare_forward(cfg: Any, frame: pd.DataFrame, num_labels: int) -> None:
    """The bare side with the same model load as `fairlora.evaluate()`: load the run, one forward pass."""
    loaded = load_trained_model(cfg, num_labels)
    bare_forward(
        loaded.model.eval(), loaded.tokenizer, frame, cfg.task, cfg.model.max_length, cfg.eval.batch_size
    )


def timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/minilm-identity.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=30, help="training steps of the audited run")
    parser.add_argument("--out", default="benchmarks/results/audit_cost.json")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override (smoke runs)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="audit-cost-"))
    overrides = [
        f"output_dir={work}",
        "name=bench",
        f"train.max_steps={args.max_steps}",
        "train.progress_bar=false",
        *args.set,
    ]
    train(args.config, overrides)
    cfg, data, _ = load_run(work / "bench")
    everything = pd.concat([data.test, data.train], ignore_index=True)
    groups = data.group_columns
    num_labels = max(len(data.label_names), 2)
    bare, audit, cached = [], [], []
    full_audit(cfg.run_dir, work / "audit")  # warm-up
    for _ in range(args.repeats):
        bare.append(timed(loaded_bare_forward, cfg, everything, num_labels))
        audit.append(timed(full_audit, cfg.run_dir, work / "audit"))
        cached.append(timed(audit_tables, cfg.run_dir, work / "audit"))
    report(args, cfg, len(everything), len(groups), bare, audit, cached)


def report(args: Any, cfg: Any, rows: int, groups: int, bare: list, audit: list, cached: list) -> None:
    medians = {
        name: statistics.median(v) for name, v in (("bare", bare), ("audit", audit), ("cached", cached))
    }
    ratio = medians["audit"] / medians["bare"]
    table = Table(
        title=f"audit cost — {cfg.model.name}, {rows} rows, {groups} groups, {args.threads} threads"
    )
    for column in ("path", "median s", "ratio to bare forward"):
        table.add_column(column, justify="right")
    table.add_row("model load + bare forward pass", f"{medians['bare']:.3f}", "1.000")
    table.add_row("fairlora.evaluate() + fairlora.audit()", f"{medians['audit']:.3f}", f"{ratio:.3f}")
    table.add_row(
        "fairlora.audit() from stored predictions",
        f"{medians['cached']:.3f}",
        f"{medians['cached'] / medians['bare']:.3f}",
    )
    Console().print(table)
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    Console().print(f"audit / bare = {ratio:.3f} ({verdict} the {TARGET_RATIO} target)")
    result = {
        "benchmark": "audit_cost",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "model": cfg.model.name,
        "config": args.config,
        "overrides": args.set,
        "rows": rows,
        "groups": groups,
        "max_length": cfg.model.max_length,
        "batch_size": cfg.eval.batch_size,
        "n_boot": cfg.audit.n_boot,
        "repeats": args.repeats,
        "seconds": {"bare": bare, "audit": audit, "audit_from_cache": cached},
        "median_seconds": medians,
        "ratio": ratio,
        "target": TARGET_RATIO,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    Console().print(f"written: {out}")


if __name__ == "__main__":
    main()
