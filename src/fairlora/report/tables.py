"""Rich tables for the terminal: one run per group, or several runs side by side."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from fairlora.metrics.groups import GroupMetrics
from fairlora.report.markdown import DISPARITY_ROWS, KEY_METRICS
from fairlora.runs import RunResult

CLASSIFICATION_COLUMNS = ("accuracy", "f1", "tpr", "fpr", "positive_rate")
LM_COLUMNS = ("loss", "perplexity")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3f}"
    return str(value)


def _columns(metrics: GroupMetrics) -> tuple[str, ...]:
    return CLASSIFICATION_COLUMNS if "accuracy" in metrics.overall else LM_COLUMNS


def run_table(result: RunResult, split: str = "test") -> Table:
    """Per-group metrics of one run on one split; small groups are marked with '*'."""
    metrics = result.splits[split]
    columns = _columns(metrics)
    table = Table(title=f"{result.name} ({result.method}, {result.model}) — {split}", title_justify="left")
    table.add_column("group")
    table.add_column("n", justify="right")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(
        "overall",
        str(metrics.overall.get("n")),
        *(_fmt(metrics.overall.get(c)) for c in columns),
        style="bold",
    )
    for group, row in metrics.by_group.iterrows():
        label = f"{group} *" if row["flagged"] else str(group)
        table.add_row(label, str(int(row["n"])), *(_fmt(row.get(c)) for c in columns))
    notes = [f"{k}={_fmt(v)}" for k, v in metrics.disparity.items() if k in DISPARITY_ROWS]
    table.caption = "  ".join(notes) + ("  (* fewer than min_group_size members)" if notes else "")
    return table


def comparison_table(results: list[RunResult], split: str = "test", metric: str | None = None) -> Table:
    """Several runs side by side: one metric per group, then the disparity figures."""
    first = results[0].splits[split]
    metric = metric or ("accuracy" if "accuracy" in first.overall else "loss")
    table = Table(title=f"{metric} per group — {split}", title_justify="left")
    table.add_column("group")
    for result in results:
        table.add_column(f"{result.name}\n({result.method})", justify="right")
    table.add_row("overall", *(_fmt(r.splits[split].overall.get(metric)) for r in results), style="bold")
    groups = list(first.by_group.index)
    for group in groups:
        cells = []
        for result in results:
            by_group = result.splits[split].by_group
            cells.append(_fmt(by_group.loc[group, metric]) if group in by_group.index else "-")
        table.add_row(str(group), *cells)
    for key in DISPARITY_ROWS:
        values = [r.splits[split].disparity.get(key) for r in results]
        if any(v is not None for v in values):
            table.add_row(key, *(_fmt(v) for v in values), style="italic")
    return table


def _estimate(table: Any, metric: str) -> str:
    estimate = table.overall.get(metric) if table is not None else None
    if estimate is None or estimate.value is None:
        return "-"
    ci = (
        f" [{estimate.low:.3f}, {estimate.high:.3f}]"
        if estimate.low is not None and estimate.high is not None
        else ""
    )
    return f"{estimate.value:.3f}{ci}"


def audit_tables(result: Any) -> list[Table]:
    """One terminal table per audit section: headline metrics (with 95% CIs) per run."""
    tables = []
    for key in result.section_keys():
        present = [run.sections[key] for run in result.runs if key in run.sections]
        metrics = [m for m in KEY_METRICS.get(present[0].kind, ()) if any(m in t.overall for t in present)]
        metrics = metrics or list(present[0].overall)[:3]
        table = Table("run", *metrics, title=f"{key} (overall, 95% CI)", title_justify="left")
        for run in result.runs:
            section = run.sections.get(key)
            table.add_row(run.name, *(_estimate(section, m) for m in metrics))
        tables.append(table)
    return tables


def sweep_table(summary: Any) -> Table:
    """A sweep summary: one row per setting, mean ± std over seeds."""
    keys = [c for c in summary.columns if not c.endswith(("_mean", "_std")) and c != "n_runs"]
    metrics = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    shown = [m for m in metrics if m in SWEEP_COLUMNS] or metrics
    table = Table(*keys, *shown, "runs", title="sweep (mean ± std over seeds)", title_justify="left")
    for _, row in summary.iterrows():
        cells = [f"{row[f'{m}_mean']:.3f} ± {row[f'{m}_std']:.3f}" for m in shown]
        table.add_row(*(str(row[k]) for k in keys), *cells, str(int(row["n_runs"])))
    return table


SWEEP_COLUMNS = (
    "accuracy",
    "f1",
    "worst_group_accuracy",
    "best_worst_gap",
    "eo_difference",
    "ece",
    "mia_auc",
)
