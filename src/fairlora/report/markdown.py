"""The audit as Markdown: the main comparison as a pipe table, then one line per run and section.

Also holds the number formatting and the choice of key metrics that the HTML report shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairlora.auditing.compare import UNPAIRED, Difference
from fairlora.auditing.results import AuditResult, RunAudit
from fairlora.metrics.table import Estimate, MetricTable
from fairlora.report.findings import findings_markdown
from fairlora.report.formatting import MISSING, fmt_estimate, md_escape
from fairlora.report.training import training_markdown

UNPAIRED_MARK = "‡"
KEY_METRICS = {
    "utility": ("accuracy", "f1", "loss", "perplexity"),
    "auc": ("auc",),
    "calibration": ("ece", "brier"),
    "membership": ("auc", "tpr_at_1pct_fpr"),
    "generation": ("pro", "anti", "pro_minus_anti"),
    "probe": ("flip_rate", "share_unknown"),
}
DISPARITY_ROWS = (  # figures over groups of a run's evaluation (results.json)
    "worst_group_accuracy",
    "best_worst_gap",
    "dp_difference",
    "eo_difference",
    "worst_group_loss",
    "loss_gap",
)
KEY_SUMMARY = (
    *DISPARITY_ROWS,
    "final_auc_score",
    "gmean_subgroup_auc",
    "gmean_bpsn_auc",
    "gmean_bnsp_auc",
    "worst_group_ece",
    "ece_gap",
    "worst_group_auc",
    "auc_gap",
)
MAX_GENERIC = 6


@dataclass
class MainRow:
    """One row of the main comparison: a section's metric in every run, with differences to the first."""

    section: str
    metric: str
    summary: bool
    estimates: dict[str, Estimate | None]
    deltas: dict[str, Difference | None]


def fmt_delta(value: float | None) -> str:
    """A signed difference to 3 decimals; None as '–'."""
    return MISSING if value is None else f"{value:+.3f}"


def fmt_difference(difference: Difference | None) -> str:
    """'+value [low, high]' of a difference between runs, '‡' marking an unpaired CI; None as '–'."""
    if difference is None or difference.estimate.value is None:
        return MISSING
    estimate = difference.estimate
    text = fmt_delta(estimate.value)
    if estimate.low is not None and estimate.high is not None:
        text += f" [{fmt_delta(estimate.low)}, {fmt_delta(estimate.high)}]"
    return text + (f" {UNPAIRED_MARK}" if difference.pairing == UNPAIRED else "")


def ci_percent(options: dict[str, Any]) -> str:
    """The audit's CI level as a percentage, e.g. '95%' (the default when not recorded)."""
    level = options.get("ci_level", 0.95)
    return f"{float(level) * 100:g}%" if isinstance(level, (int, float)) else "95%"


def difference_note(audit: AuditResult) -> str:
    """How the differences between runs and their CIs are computed (plain text)."""
    reference = audit.runs[0].name if audit.runs else "the first run"
    return (
        f"Δ is each run's value minus the reference run's ({reference}), with a {ci_percent(audit.options)} "
        "bootstrap CI from paired resamples (the same examples drawn for both runs) where both runs were "
        f"audited on the same rows; {UNPAIRED_MARK} marks an unpaired CI (the runs' rows differ)."
    )


def _tables(audit: AuditResult, key: str) -> list[MetricTable]:
    return [run.sections[key] for run in audit.runs if key in run.sections]


def key_metrics(audit: AuditResult, key: str) -> list[tuple[str, bool]]:
    """The (metric, is_summary) pairs a section contributes to the main comparison."""
    tables = _tables(audit, key)
    kind = tables[0].kind if tables else ""
    overall = list(dict.fromkeys(m for t in tables for m in t.overall))
    summary = list(dict.fromkeys(m for t in tables for m in t.summary))
    wanted = [m for m in KEY_METRICS.get(kind, ()) if m in overall] or overall[:MAX_GENERIC]
    known = [m for m in KEY_SUMMARY if m in summary]
    extra = known if kind in KEY_METRICS else (known or summary[:MAX_GENERIC])
    return [(m, False) for m in wanted] + [(m, True) for m in extra]


def _estimate(run: RunAudit, key: str, metric: str, summary: bool) -> Estimate | None:
    table = run.sections.get(key)
    if table is None:
        return None
    return (table.summary if summary else table.overall).get(metric)


def main_rows(audit: AuditResult) -> list[MainRow]:
    """Rows of the main comparison: key overall and summary metrics of each section, over all runs."""
    rows = []
    for key in audit.section_keys():
        for metric, summary in key_metrics(audit, key):
            estimates = {run.name: _estimate(run, key, metric, summary) for run in audit.runs}
            deltas = {run.name: audit.difference(key, metric, run.name, summary) for run in audit.runs[1:]}
            rows.append(MainRow(key, metric, summary, estimates, deltas))
    return rows


def _estimate_md(estimate: Estimate | None) -> str:
    if estimate is None:
        return MISSING
    return f"{fmt_estimate(estimate)} (n={estimate.n})" if estimate.n else fmt_estimate(estimate)


def _main_table(audit: AuditResult) -> list[str]:
    names = [run.name for run in audit.runs]
    reference = md_escape(names[0])
    header = ["Section", "Metric"] + [md_escape(n) for n in names]
    header += [f"Δ {md_escape(n)} vs {reference}" for n in names[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for row in main_rows(audit):
        metric = f"`{row.metric}`" + (" (summary)" if row.summary else "")
        cells = [f"`{row.section}`", metric] + [_estimate_md(e) for e in row.estimates.values()]
        cells += [fmt_difference(d) for d in row.deltas.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _section_lines(audit: AuditResult, key: str) -> list[str]:
    lines = [f"### `{key}`", ""]
    for run in audit.runs:
        table = run.sections.get(key)
        if table is None:
            lines.append(f"- **{md_escape(run.name)}**: not audited")
            continue
        parts = [f"{m} {fmt_estimate(e)}" for m, e in table.overall.items()]
        parts += [f"{m} {fmt_estimate(e)}" for m, e in table.summary.items()]
        parts += [f"{k}: {md_escape(v)}" for k, v in table.labels.items()]
        flagged = (
            f"; below min_group_size: {', '.join(map(md_escape, table.flagged))}" if table.flagged else ""
        )
        lines.append(f"- **{md_escape(run.name)}**: " + "; ".join(parts) + flagged)
        lines += [f"  - note: {md_escape(note)}" for note in table.notes]
    return lines + [""]


def run_notes(run: RunAudit) -> list[str]:
    """The run's notes, then its sections' notes (e.g. a constant predictor) prefixed by the section."""
    return list(run.notes) + [f"{key}: {note}" for key, table in run.sections.items() for note in table.notes]


def _run_lines(audit: AuditResult) -> list[str]:
    lines = []
    for index, run in enumerate(audit.runs):
        role = " (reference)" if index == 0 else ""
        info = ", ".join(md_escape(v) for v in (run.method, run.model, run.dataset) if v)
        lines.append(f"- **{md_escape(run.name)}**{role}: {info}")
        lines += [f"  - note: {md_escape(note)}" for note in run_notes(run)]
    return lines


def render_markdown(audit: AuditResult) -> str:
    """A Markdown summary of the audit: runs, the main comparison table and per-section overall lines."""
    lines = ["# fairlora audit", ""]
    if not audit.runs:
        return "\n".join(lines + ["No runs were audited.", ""])
    lines += findings_markdown(audit, ci_percent(audit.options))
    lines += ["## Runs", "", *_run_lines(audit), "", "## Comparison", "", *_main_table(audit), ""]
    level = ci_percent(audit.options)
    lines += [
        f"Values are point estimates with bootstrap {level} CIs. {md_escape(difference_note(audit))}",
        "",
    ]
    lines += training_markdown(audit)
    lines += ["## Sections", ""]
    for key in audit.section_keys():
        lines += _section_lines(audit, key)
    return "\n".join(lines)
