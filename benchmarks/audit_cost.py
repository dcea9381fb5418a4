"""Audit cost: the full audit of one run vs one bare evaluation forward pass over the same examples.

Both sides cover the run's train and test rows. The bare pass tokenizes, pads and runs the model
forward in inference mode (nothing kept). The audit does what `fairlora audit` does for that run:
the prediction pass (probabilities + per-example loss, stored), utility per split, calibration and
the loss membership attack with 1000-resample bootstrap CIs per group, then results.json,
report.html (plots) and report.md. LiRA shadow training is excluded (it is K training runs). The two
alternate (ABAB...) and medians are compared: target audit / bare <= 1.2. "From cache" repeats the
audit with the stored predictions, as a repeated `fairlora audit` does.

    .venv/bin/python benchmarks/audit_cost.py [--config configs/minilm-identity.yaml] [--repeats 5]
        [--threads 2] [--out benchmarks/results/audit_cost.json]

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

from fairlora.auditing.results import AuditResult, RunAudit
from fairlora.metrics.calibration import calibration_table
from fairlora.metrics.membership import loss_attack_table
from fairlora.metrics.utility import utility_table
from fairlora.pipeline import load_run, train
from fairlora.report.html import write_report
from fairlora.tasks import get_task
from fairlora.tasks.predict import predict_frame

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


def audit_tables(cfg: Any, predictions: pd.DataFrame, groups: list[str], out: Path) -> None:
    """Every prediction-based section plus the report, as `fairlora audit` computes them."""
    options = {"min_group_size": cfg.eval.min_group_size, "n_boot": cfg.audit.n_boot, "seed": 0}
    run = RunAudit(cfg.name, cfg.method, cfg.model.name, cfg.data.name, cfg.task, str(cfg.run_dir))
    for split, rows in predictions.groupby("split", sort=False):
        run.sections[f"utility/{split}"] = utility_table(rows, groups, **options)
    test = predictions[predictions["split"] == "test"]
    run.sections["calibration/test"] = calibration_table(test, groups, **options)
    run.sections["membership/loss"] = loss_attack_table(predictions, groups, **options)
    write_report(AuditResult([run], cfg.audit.model_dump(mode="json")), out)


def full_audit(
    cfg: Any, model: Any, tokenizer: Any, frames: dict[str, pd.DataFrame], groups: list[str], out: Path
):
    """Prediction pass over both splits, then every section and the report."""
    tables = [
        predict_frame(
            model, tokenizer, frame, cfg.task, cfg.model.max_length, cfg.eval.batch_size, split, groups, False
        )
        for split, frame in frames.items()
    ]
    predictions = pd.concat(tables, ignore_index=True)
    audit_tables(cfg, predictions, groups, out)
    return predictions


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="audit-cost-"))
    overrides = [
        f"output_dir={work}",
        "name=bench",
        f"train.max_steps={args.max_steps}",
        "train.progress_bar=false",
    ]
    train(args.config, overrides)
    cfg, data, loaded = load_run(work / "bench")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    frames = {"test": data.test, "train": data.train}
    everything = pd.concat(frames.values(), ignore_index=True)
    groups = data.group_columns
    bare, audit, cached = [], [], []
    predictions = full_audit(cfg, model, tokenizer, frames, groups, work / "audit")  # warm-up
    for _ in range(args.repeats):
        bare.append(
            timed(
                bare_forward,
                model,
                tokenizer,
                everything,
                cfg.task,
                cfg.model.max_length,
                cfg.eval.batch_size,
            )
        )
        audit.append(timed(full_audit, cfg, model, tokenizer, frames, groups, work / "audit"))
        cached.append(timed(audit_tables, cfg, predictions, groups, work / "audit"))
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
    table.add_row("bare forward pass", f"{medians['bare']:.3f}", "1.000")
    table.add_row(
        "full audit (prediction pass + metrics + report)", f"{medians['audit']:.3f}", f"{ratio:.3f}"
    )
    table.add_row(
        "audit from stored predictions",
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
