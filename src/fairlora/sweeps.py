"""`fairlora sweep`: a grid of runs (resumable), summarised as mean +- std over seeds per metric."""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from fairlora.config import load_config
from fairlora.errors import ConfigError
from fairlora.ray_engine import RayOptions
from fairlora.runs import RESULTS_FILE
from fairlora.storage import write_text_atomic

SWEEP_FILE = "sweep.json"
SEED_KEY = "seed"
ENGINES = ("sequential", "ray")


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """["method=lora,full", "seed=13,42"] -> {"method": ["lora", "full"], "seed": ["13", "42"]}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise ConfigError(f"--grid {item!r}: expected key=v1,v2,..., e.g. --grid lora.r=1,8,64")
        if key.strip() in grid:
            raise ConfigError(f"--grid: {key.strip()!r} is given twice; list all its values in one --grid")
        grid[key.strip()] = values
    return grid


def grid_cells(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, in order."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def cell_name(base: str, cell: dict[str, str]) -> str:
    """A folder-safe run name for one cell, e.g. run_method-lora_seed-13_lora.r-8."""
    parts = [f"{key}-{value}" for key, value in cell.items()]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join([base, *parts]))


@dataclass
class SweepResult:
    """Per-cell metrics and their mean/std over seeds."""

    cells: pd.DataFrame  # one row per run: grid keys + metrics
    summary: pd.DataFrame  # one row per setting (grid keys but seed): metric_mean, metric_std, n_seeds
    out_dir: Path
    wall_s: dict[str, float] = field(default_factory=dict)  # seconds of each cell trained by this call


def cell_metrics(run_dir: Path) -> dict[str, float]:
    """Headline test figures of a finished run: utility and disparity (results.json), ECE, attack AUC."""
    from fairlora.metrics.calibration import calibration_table
    from fairlora.metrics.membership import loss_attack_table
    from fairlora.runs import group_columns, load_results, read_config, read_predictions

    splits = load_results(run_dir).splits  # computed once, by the run's evaluation
    utility = splits["test"]
    metrics = {k: e.value for k, e in (utility.overall | utility.summary).items()}
    if "val" in splits:  # select settings on these (data.val_size > 0), never on the test figures
        metrics |= {f"val_{k}": e.value for k, e in splits["val"].overall.items()}
    predictions = read_predictions(run_dir)
    groups = group_columns(predictions)
    options = {"min_group_size": read_config(run_dir).eval.min_group_size, "n_boot": 0, "seed": 0}
    test = predictions[predictions["split"] == "test"]
    if "pred" in predictions:
        metrics["ece"] = calibration_table(test, groups, **options).overall["ece"].value
    if {"train", "test"} <= set(predictions["split"]):
        metrics["mia_auc"] = loss_attack_table(predictions, groups, **options).overall["auc"].value
    return {k: (math.nan if v is None else float(v)) for k, v in metrics.items()}


def sweep(
    config: str | Path,
    grid_items: list[str],
    overrides: list[str] | None = None,
    progress: bool = True,
    engine: str = "sequential",
    ray_options: RayOptions | None = None,
) -> SweepResult:
    """Train every grid cell (finished cells are reused, unfinished ones resume), then summarise.

    engine="ray": the cells run as Ray tasks (`ray_options`: address, cpus/gpus per run), see
    `fairlora.ray_engine`; the run folders and the summary are the same as the sequential engine's.
    """
    from fairlora.pipeline import train

    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    base = load_config(config, overrides)
    grid = parse_grid(grid_items)
    out_dir = Path(base.output_dir) / f"{base.name}-sweep"
    runs = {}
    for cell in grid_cells(grid):
        name = cell_name(base.name, cell)
        cell_overrides = [*(overrides or []), *(f"{k}={v}" for k, v in cell.items())]
        runs[name] = [*cell_overrides, f"name={name}", f"output_dir={out_dir}"]
    if engine == "ray":
        wall_s = train_on_ray(config, runs, out_dir, progress, ray_options or RayOptions())
    else:
        wall_s = {}
        for name, cell_overrides in runs.items():
            finished, start = (out_dir / name / RESULTS_FILE).is_file(), time.perf_counter()
            train(config, [*cell_overrides, *([] if progress else ["train.progress_bar=false"])], resume=True)
            wall_s |= {} if finished else {name: time.perf_counter() - start}
    rows = [
        {**cell, "run": name, **cell_metrics(out_dir / name)}
        for cell, name in zip(grid_cells(grid), runs, strict=True)
    ]
    cells = pd.DataFrame(rows)
    summary = summarise(cells, [k for k in grid if k != SEED_KEY])
    write_text_atomic(out_dir / SWEEP_FILE, json.dumps(_to_json(grid, cells, summary), indent=1) + "\n")
    write_text_atomic(out_dir / "sweep.md", summary_markdown(summary))
    return SweepResult(cells, summary, out_dir, wall_s)


def train_on_ray(
    config: str | Path, runs: dict[str, list[str]], out_dir: Path, progress: bool, options: RayOptions
) -> dict[str, float]:
    """Every unfinished cell as a Ray task (every cell's config is validated first); their wall seconds."""
    from fairlora.pipeline import finished_results
    from fairlora.ray_engine import Job, run_jobs

    console = Console(stderr=True)
    jobs = []
    for name, cell_overrides in runs.items():
        cfg = load_config(config, [*cell_overrides, "train.progress_bar=false"])
        if finished_results(cfg) is None:
            jobs.append(Job(name, train_cell, {"config": cfg.model_dump(mode="json")}))
        else:
            console.print(f"skip   {name} (finished)", highlight=False)
    outputs = run_jobs(jobs, options, out_dir, console, progress, what="cell") if jobs else []
    return {job.name: output.wall_s for job, output in zip(jobs, outputs, strict=True)}


def train_cell(config: dict[str, Any]) -> None:
    """One cell on a worker: the public pipeline, resuming from the run's last checkpoint."""
    from fairlora import train

    train(config, resume=True)


def summarise(cells: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and sample std of every metric over the runs that share the non-seed grid values."""
    metrics = [c for c in cells.columns if c not in {*keys, SEED_KEY, "run"}]
    grouped = cells.groupby(keys, sort=False) if keys else cells.assign(all="all").groupby("all")
    stats = grouped[metrics].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats["n_runs"] = grouped.size()
    return stats.reset_index()


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table of `mean ± std` cells."""
    keys = [c for c in summary.columns if not c.endswith(("_mean", "_std")) and c != "n_runs"]
    metrics = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    lines = [
        "| " + " | ".join([*keys, *metrics, "runs"]) + " |",
        "|" + "---|" * (len(keys) + len(metrics) + 1),
    ]
    for _, row in summary.iterrows():
        cells = [str(row[k]) for k in keys]
        cells += [_mean_std(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics]
        lines.append("| " + " | ".join([*cells, str(int(row["n_runs"]))]) + " |")
    return "\n".join(lines) + "\n"


def _mean_std(mean: float, std: float) -> str:
    if mean != mean:
        return "–"
    return f"{mean:.3f}" if std != std else f"{mean:.3f} ± {std:.3f}"


def _to_json(grid: dict[str, list[str]], cells: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Any]:
    def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
        clean = frame.astype(object).where(frame.notna(), None)
        return [
            {k: (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
            for r in clean.to_dict("records")
        ]

    return {"schema_version": 1, "grid": grid, "cells": records(cells), "summary": records(summary)}
