"""Training facts in the report: trainable-parameter accounting and AFLoRA's freeze-step heat map."""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from fairlora.auditing.results import AuditResult
from fairlora.errors import RunDirError
from fairlora.report.plots import to_png
from fairlora.runs import load_results

FREEZE_STEPS = "aflora_freeze_steps"
PARAM_KEYS = (
    ("with head", "trainable_params"),
    ("without head", "trainable_params_no_head"),
)
DROPPED_PARTS = {"self", "dense", "self_attn", "mlp", "attn"}


def train_facts(run_dir: str | Path) -> dict[str, Any]:
    """The `train` facts of a run's results.json ({} when the run folder has none)."""
    try:
        return load_results(Path(run_dir)).train
    except RunDirError:
        return {}


def parameter_rows(facts: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
    """(label, start, end, mean over steps) for the counts with and without the head that a run recorded."""
    rows = []
    for label, key in PARAM_KEYS:
        values = [facts.get(f"{key}_{part}") for part in ("start", "end", "mean")]
        if any(v is not None for v in values):
            rows.append((label, *values))
    return rows


def freeze_grid(freeze_steps: dict[str, int | None]) -> tuple[list[str], list[str], list[list[float]]]:
    """(layer labels, matrix labels, grid of freeze steps; NaN = never froze) from `<module>.<A|B>` names."""
    cells: dict[tuple[str, str], float] = {}
    layers: dict[str, None] = {}
    columns: dict[str, None] = {}
    for name, step in freeze_steps.items():
        parts = name.split(".")
        index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        layer = f"layer {parts[index]}" if index is not None else "-"
        rest = parts[index + 1 :] if index is not None else parts
        column = ".".join(p for p in rest if p not in DROPPED_PARTS) or name
        layers.setdefault(layer)
        columns.setdefault(column)
        cells[layer, column] = math.nan if step is None else float(step)
    grid = [[cells.get((layer, column), math.nan) for column in columns] for layer in layers]
    return list(layers), list(columns), grid


def freeze_heatmap(freeze_steps: dict[str, int | None], title: str = "") -> bytes:
    """PNG heat map: layers (rows) x A/B matrices (columns), colour = the step each matrix froze at."""
    layers, columns, grid = freeze_grid(freeze_steps)
    figure = Figure(figsize=(1.2 + 0.55 * len(columns), 1.4 + 0.32 * len(layers)), dpi=100)
    axes = figure.add_subplot()
    image = axes.imshow(grid, aspect="auto", cmap="viridis")
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(len(layers)), layers, fontsize=7)
    if len(layers) * len(columns) <= 120:
        for row, values in enumerate(grid):
            for col, value in enumerate(values):
                text = "-" if math.isnan(value) else f"{value:.0f}"
                axes.text(col, row, text, ha="center", va="center", fontsize=6, color="white")
    figure.colorbar(image, ax=axes, label="freeze step (updates received)")
    axes.set_title(title or "AFLoRA freeze steps", fontsize=9)
    figure.tight_layout()
    return to_png(figure)


def selection_sentence(facts: dict[str, Any]) -> str:
    """Which checkpoint a run kept and why, with the trajectory of its validation evaluations ("" if none)."""
    validation = facts.get("validation")
    if not validation:
        return ""
    figure = validation.get("figure")
    shown = figure or "val_loss"
    trajectory = ", ".join(f"{e['step']}: {_figure(e.get(shown))}" for e in validation.get("evaluations", []))
    stopped = f"; stopped early at step {validation['last_step']}" if validation.get("stopped_early") else ""
    if figure and validation.get("reason", "").startswith("best"):
        why = f"best {figure} ({_figure(validation.get('kept_value'))}, {validation['direction']} is better)"
    else:
        why = "the last step (train.select_best not set)"
    kept = validation["kept_step"]
    return f"kept the checkpoint of step {kept}: {why}; {shown} by step: {trajectory}{stopped}"


def training_html(audit: AuditResult) -> str:
    """A 'Training' section: parameter accounting per run and each AFLoRA run's freeze-step heat map."""
    rows, figures, kept = [], [], []
    for run in audit.runs:
        facts = train_facts(run.run_dir)
        if sentence := selection_sentence(facts):
            name = escape(run.name)
            kept.append(f'<p class="selection" data-run="{name}">{name}: {escape(sentence)}</p>')
        for label, start, end, mean in parameter_rows(facts):
            cells = "".join(f"<td>{_count(v)}</td>" for v in (start, end, mean))
            rows.append(
                f'<tr data-run="{escape(run.name)}"><th class="label">{escape(run.name)}</th>'
                f'<td class="label">{label}</td>{cells}</tr>'
            )
        if facts.get(FREEZE_STEPS):
            png = base64.b64encode(freeze_heatmap(facts[FREEZE_STEPS], f"{run.name}: freeze steps")).decode()
            figures.append(
                f'<figure class="plot" data-plot="freeze-heatmap"><img src="data:image/png;base64,{png}" '
                f'alt="freeze steps of {escape(run.name)}"><figcaption>{escape(run.name)}: step at which '
                f"each A/B matrix froze (layers x matrices)</figcaption></figure>"
            )
    if not rows and not figures and not kept:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("start", "end", "mean over steps"))
    table = (
        f'<table id="params-table"><thead><tr><th class="label">run</th><th class="label">trainable '
        f"parameters</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    plots = f'<div class="plots">{"".join(figures)}</div>' if figures else ""
    return f'<section id="training"><h2>Training</h2>{table}{"".join(kept)}{plots}</section>'


def training_markdown(audit: AuditResult) -> list[str]:
    """Markdown lines of the parameter accounting (empty when no run recorded it)."""
    lines, kept = [], []
    for run in audit.runs:
        facts = train_facts(run.run_dir)
        if sentence := selection_sentence(facts):
            kept.append(f"- {run.name}: {sentence}")
        for label, start, end, mean in parameter_rows(facts):
            lines.append(f"| {run.name} | {label} | {_count(start)} | {_count(end)} | {_count(mean)} |")
        steps = facts.get(FREEZE_STEPS) or {}
        if steps:
            frozen = [s for s in steps.values() if s is not None]
            last = max(frozen) if frozen else None
            lines.append(
                f"| {run.name} | A/B frozen | {len(frozen)} of {len(steps)} | last at step {last} | |"
            )
    if not lines:
        return ["## Training", "", *kept, ""] if kept else []
    header = [
        "## Training",
        "",
        "| run | trainable parameters | start | end | mean over steps |",
        "|---|---|---|---|---|",
    ]
    return [*header, *lines, "", *kept, *([""] if kept else [])]


def _figure(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"


def _count(value: Any) -> str:
    return "—" if value is None else f"{value:,.0f}"
