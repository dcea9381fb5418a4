"""Rich tables for the terminal: one run per group, or several runs side by side."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from fairlora.metrics.table import Estimate, MetricTable
from fairlora.report.formatting import fmt_estimate
from fairlora.report.markdown import DISPARITY_ROWS, KEY_METRICS, ci_percent, fmt_difference
from fairlora.runs import RunResult

CLASSIFICATION_COLUMNS = ("accuracy", "f1", "tpr", "fpr", "positive_rate")
LM_COLUMNS = ("loss", "perplexity")


def _fmt(estimate: Estimate | None) -> str:
    if estimate is None or estimate.value is None:
        return "-"
    return f"{estimate.value:.3f}"


def _columns(table: MetricTable) -> tuple[str, ...]:
    """Classification figures; or the LM's loss and perplexity, then exact match and pass@k where scored."""
    if "accuracy" in table.overall:
        return CLASSIFICATION_COLUMNS
    scored = tuple(m for m in table.overall if m == "exact_match" or m.startswith("pass_at_"))
    return LM_COLUMNS + scored


def _size(table: MetricTable) -> int:
    """The number of examples of the whole table (the largest n of its overall figures)."""
    return max((e.n for e in table.overall.values()), default=0)


def _caption(table: MetricTable) -> str:
    """Summary figures with CIs, the small-group mark and the table's notes."""
    figures = [f"{k}={fmt_estimate(e)}" for k, e in table.summary.items() if k in DISPARITY_ROWS]
    lines = ["  ".join(figures) + ("  (* fewer than min_group_size members)" if table.flagged else "")]
    return "\n".join([line for line in lines if line.strip()] + table.notes)


def run_table(result: RunResult, split: str = "test") -> Table:
    """Per-group metrics of one run on one split; small groups are marked with '*'."""
    metrics = result.splits[split]
    columns = _columns(metrics)
    table = Table(title=f"{result.name} ({result.method}, {result.model}) — {split}", title_justify="left")
    table.add_column("group")
    table.add_column("n", justify="right")
    for column in columns:
        table.add_column(column, justify="right")
    overall = [_fmt(metrics.overall.get(c)) for c in columns]
    table.add_row("overall", str(_size(metrics)), *overall, style="bold")
    for group, values in metrics.by_group.items():
        label = f"{group} *" if group in metrics.flagged else group
        size = str(metrics.group_sizes.get(group, 0))
        table.add_row(label, size, *(_fmt(values.get(c)) for c in columns))
    table.caption, table.caption_justify = _caption(metrics), "left"
    return table


def comparison_table(results: list[RunResult], split: str = "test", metric: str | None = None) -> Table:
    """Several runs side by side: one metric per group, then the disparity figures and notes."""
    first = results[0].splits[split]
    metric = metric or ("accuracy" if "accuracy" in first.overall else "loss")
    table = Table(title=f"{metric} per group — {split}", title_justify="left")
    table.add_column("group")
    for result in results:
        table.add_column(f"{result.name}\n({result.method})", justify="right")
    table.add_row("overall", *(_fmt(r.splits[split].overall.get(metric)) for r in results), style="bold")
    for group in first.by_group:
        cells = [_fmt(r.splits[split].by_group.get(group, {}).get(metric)) for r in results]
        table.add_row(group, *cells)
    for key in DISPARITY_ROWS:
        values = [r.splits[split].summary.get(key) for r in results]
        if any(v is not None and v.value is not None for v in values):
            table.add_row(key, *(_fmt(v) for v in values), style="italic")
    notes = [f"{r.name}: {note}" for r in results for note in r.splits[split].notes]
    table.caption, table.caption_justify = "\n".join(notes) or None, "left"
    return table


def audit_tables(result: Any) -> list[Table]:
    """One terminal table per audit section: headline metrics with CIs per run, and differences."""
    tables = []
    level = ci_percent(result.options)
    reference = result.runs[0].name if result.runs else ""
    for key in result.section_keys():
        present = [run.sections[key] for run in result.runs if key in run.sections]
        metrics = [m for m in KEY_METRICS.get(present[0].kind, ()) if any(m in t.overall for t in present)]
        metrics = metrics or list(present[0].overall)[:3]
        table = Table("run", *metrics, title=f"{key} (overall, {level} CI)", title_justify="left")
        for run in result.runs:
            section = run.sections.get(key)
            table.add_row(
                run.name, *(fmt_estimate(section.overall.get(m)) if section else "-" for m in metrics)
            )
        for run in result.runs[1:]:
            cells = [fmt_difference(result.difference(key, m, run.name)) for m in metrics]
            table.add_row(f"Δ {run.name} − {reference}", *cells, style="italic")
        notes = [
            f"{run.name}: {n}" for run in result.runs for n in getattr(run.sections.get(key), "notes", [])
        ]
        table.caption, table.caption_justify = "\n".join(notes) or None, "left"
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
