"""The audit as one self-contained HTML file: inline CSS, figures as base64 PNG data URIs, no scripts."""

from __future__ import annotations

import base64
import math
import re
from html import escape
from pathlib import Path
from typing import Any

from fairlora.auditing.compare import UNPAIRED, Difference
from fairlora.auditing.results import AuditResult, RunAudit
from fairlora.metrics.table import Estimate, MetricTable
from fairlora.report.canvas import Canvases
from fairlora.report.findings import Markup, RunFindings, audit_findings, min_group_size
from fairlora.report.forest import findings_figure
from fairlora.report.formatting import MISSING, fmt_ci, fmt_value
from fairlora.report.markdown import (
    UNPAIRED_MARK,
    ci_percent,
    difference_note,
    fmt_delta,
    main_rows,
    render_markdown,
    run_notes,
)
from fairlora.report.plots import Plot, section_plots
from fairlora.report.training import training_html
from fairlora.storage import write_text_atomic

FLAG = "†"
HTML_FILE = "report.html"
MARKDOWN_FILE = "report.md"
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1400px;
 padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
h3{font-size:1em;margin:.6em 0 .3em}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td.label,th.label{text-align:left}
.ci{color:#666;font-size:.9em}.n{color:#999;font-size:.8em;margin-left:.3em}
tr.summary td,tr.summary th{background:#fafaf0}tr.overall{font-weight:600}
tr.flagged{color:#a05a00;background:#fff6e8}tr.gap{font-style:italic}
td.delta.pos{color:#1a7f37}td.delta.neg{color:#c62828}
.kind{font-size:.7em;color:#fff;background:#557;border-radius:3px;padding:.1em .4em;vertical-align:middle}
.scroll{overflow-x:auto}.group-tables{display:flex;flex-wrap:wrap;gap:1.2em}
.plots{display:flex;flex-wrap:wrap;gap:1em;margin-top:.6em}
figure.plot{margin:0;border:1px solid #eee;padding:.3em;background:#fff}
figure.plot img{max-width:100%;height:auto;display:block}
figcaption{font-size:.8em;color:#555;text-align:center}
p.note{font-size:.85em;color:#555}.missing{color:#999}
.findings-runs{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:1em}
article.run-findings{border:1px solid #ddd;border-radius:4px;padding:.2em .9em .6em;background:#fcfcfc}
article.run-findings h3{font-size:1.05em}
article.run-findings h4{font-size:.85em;margin:.6em 0 .1em;color:#446}
ul.findings-list,ul.flags,ul.notes{margin:.1em 0;padding-left:1.1em;font-size:.88em}
ul.findings-list li{margin:.15em 0}
ul.flags{background:#fff6e8;border-left:3px solid #d08a00;padding:.3em .4em .3em 1.4em}
ul.flags li{margin:.15em 0;color:#7a4300}.name{font-family:ui-monospace,monospace;font-size:.95em}
p.no-flags{font-size:.85em;color:#1a7f37;margin:.3em 0}
figure.findings-figure{margin-top:1em}
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "section"


def _estimate_html(estimate: Estimate | None) -> str:
    """'value [low, high]' and n as HTML, or '–'."""
    if estimate is None:
        return f'<span class="missing">{MISSING}</span>'
    ci = fmt_ci(estimate)
    ci_html = f' <span class="ci">{_e(ci)}</span>' if ci else ""
    n_html = f'<span class="n">n={estimate.n}</span>' if estimate.n else ""
    return f"{_e(fmt_value(estimate.value))}{ci_html}{n_html}"


def _estimate_cell(estimate: Estimate | None) -> str:
    """A table cell holding `_estimate_html`."""
    return f'<td class="est">{_estimate_html(estimate)}</td>'


def _delta_cell(difference: Difference | None) -> str:
    """A difference between runs with its CI ('‡' marks an unpaired CI), or '–'."""
    estimate = difference.estimate if difference is not None else None
    delta = estimate.value if estimate is not None else None
    sign = "" if delta is None or delta == 0 else (" pos" if delta > 0 else " neg")
    ci = ""
    if estimate is not None and estimate.low is not None and estimate.high is not None:
        ci = f' <span class="ci">[{_e(fmt_delta(estimate.low))}, {_e(fmt_delta(estimate.high))}]</span>'
    mark = f' <span class="n">{UNPAIRED_MARK}</span>' if difference and difference.pairing == UNPAIRED else ""
    return f'<td class="delta{sign}">{_e(fmt_delta(delta))}{ci}{mark}</td>'


def _run_table(audit: AuditResult) -> str:
    head = "".join(f'<th class="label">{h}</th>' for h in ("run", "method", "model", "dataset", "task"))
    rows = []
    for index, run in enumerate(audit.runs):
        role = " <em>(reference)</em>" if index == 0 else ""
        cells = "".join(
            f'<td class="label">{_e(v)}</td>' for v in (run.method, run.model, run.dataset, run.task)
        )
        rows.append(f'<tr data-run="{_e(run.name)}"><th class="label">{_e(run.name)}{role}</th>{cells}</tr>')
    return f'<table id="run-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _main_table(audit: AuditResult) -> str:
    names = [run.name for run in audit.runs]
    head = '<th class="label">section</th><th class="label">metric</th>'
    head += "".join(f'<th class="run" data-run="{_e(n)}">{_e(n)}</th>' for n in names)
    head += "".join(f'<th class="delta">Δ vs {_e(names[0])}<br>({_e(n)})</th>' for n in names[1:])
    rows = []
    for row in main_rows(audit):
        cls = ' class="summary"' if row.summary else ""
        label = _e(row.metric) + (' <span class="n">summary</span>' if row.summary else "")
        cells = "".join(_estimate_cell(e) for e in row.estimates.values())
        cells += "".join(_delta_cell(d) for d in row.deltas.values())
        rows.append(
            f'<tr{cls} data-section="{_e(row.section)}" data-metric="{_e(row.metric)}">'
            f'<td class="label">{_e(row.section)}</td><td class="label">{label}</td>{cells}</tr>'
        )
    body = "".join(rows) or f'<tr><td colspan="{len(names) * 2 + 1}">no metrics</td></tr>'
    table = f'<table id="main-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _gaps(table: MetricTable) -> dict[str, float | None]:
    """Max minus min over the groups not flagged, per metric (None where undefined)."""
    if not table.by_group:
        return {}
    try:
        gaps = table.difference()
    except (KeyError, ValueError, TypeError):
        return {}
    return {m: (float(v) if v is not None and math.isfinite(v) else None) for m, v in gaps.items()}


def _group_rows(table: MetricTable, metrics: list[str]) -> list[str]:
    rows = [
        '<tr class="overall"><th class="label">overall</th>'
        f"<td>{_e(max((e.n for e in table.overall.values()), default=0) or MISSING)}</td>"
        + "".join(_estimate_cell(table.overall.get(m)) for m in metrics)
        + "</tr>"
    ]
    for group, values in table.by_group.items():
        flagged = group in table.flagged
        mark = f" {FLAG}" if flagged else ""
        size = table.group_sizes.get(group)
        rows.append(
            f'<tr class="group{" flagged" if flagged else ""}" data-group="{_e(group)}">'
            f'<th class="label">{_e(group)}{mark}</th><td>{_e(MISSING if size is None else size)}</td>'
            + "".join(_estimate_cell(values.get(m)) for m in metrics)
            + "</tr>"
        )
    gaps = _gaps(table)
    if gaps:
        cells = "".join(f"<td>{_e(fmt_value(gaps.get(m)))}</td>" for m in metrics)
        rows.append(f'<tr class="gap"><th class="label">gap (max − min)</th><td></td>{cells}</tr>')
    return rows


def _summary_rows(table: MetricTable, width: int) -> list[str]:
    rows = []
    for name, estimate in table.summary.items():
        rows.append(
            f'<tr class="summary" data-metric="{_e(name)}"><th class="label">{_e(name)}</th><td></td>'
            f'<td colspan="{width}" class="est label">{_estimate_html(estimate)}</td></tr>'
        )
    for name, value in table.labels.items():
        rows.append(
            f'<tr class="summary label-row"><th class="label">{_e(name)}</th><td></td>'
            f'<td colspan="{width}" class="label">{_e(value)}</td></tr>'
        )
    return rows


def _group_table(run: RunAudit, table: MetricTable) -> str:
    metrics = list(dict.fromkeys([*table.overall, *(m for v in table.by_group.values() for m in v)]))
    head = '<th class="label">group</th><th>n</th>' + "".join(f"<th>{_e(m)}</th>" for m in metrics)
    rows = _group_rows(table, metrics) + _summary_rows(table, max(len(metrics), 1))
    notes = "".join(f'<p class="note table-note">{_e(note)}</p>' for note in table.notes)
    return (
        f'<div class="group-table-wrap"><h3>{_e(run.name)}</h3><div class="scroll">'
        f'<table class="group-table" data-run="{_e(run.name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{notes}</div>"
    )


def _flag_note(audit: AuditResult, tables: dict[str, MetricTable]) -> str:
    if not any(t.flagged for t in tables.values()):
        return ""
    size = min_group_size(audit.options)
    threshold = f"min_group_size = {_e(size)}" if size is not None else "min_group_size"
    return (
        f'<p class="note flag-note">{FLAG} Group smaller than {threshold}: its figures are shown but '
        "rest on few examples, so it is left out of the worst-group, gap and difference figures.</p>"
    )


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure class="plot" data-plot="{_e(plot.kind)}">'
        f'<img src="data:image/png;base64,{data}" alt="{_e(plot.caption)}">'
        f"<figcaption>{_e(plot.caption)}</figcaption></figure>"
    )


def _plots(tables: dict[str, MetricTable], log_fpr: bool, level: str, canvases: Canvases) -> str:
    try:
        plots = section_plots(tables, log_fpr=log_fpr, level=level, canvases=canvases)
    except (ValueError, TypeError) as exc:
        return f'<p class="note plot-error">Figures could not be drawn: {_e(exc)}</p>'
    return f'<div class="plots">{"".join(_figure(p) for p in plots)}</div>' if plots else ""


def _name_html(text: str) -> str:
    return f'<span class="name">{_e(text)}</span>'


FINDINGS_MARKUP = Markup(name=_name_html, free=_e)


def _flags_html(found: RunFindings) -> str:
    """The run's problems under Flagged; what was audited or skipped under Notes."""

    def items(kinds: list) -> str:
        return "".join(
            f'<li class="flag" data-kind="{_e(f.kind)}" data-section="{_e(f.section)}">{f.text}</li>'
            for f in kinds
        )

    problems = [f for f in found.flags if f.kind != "info"]
    infos = [f for f in found.flags if f.kind == "info"]
    flagged = (
        f'<h4>Flagged</h4><ul class="flags">{items(problems)}</ul>'
        if problems
        else '<p class="no-flags">No problems flagged.</p>'
    )
    return flagged + (f'<h4>Notes</h4><ul class="notes">{items(infos)}</ul>' if infos else "")


def _sentences_html(found: RunFindings) -> str:
    by_section: dict[str, list[str]] = {}
    for f in found.sentences:
        item = f'<li class="finding" data-kind="{_e(f.kind)}" data-section="{_e(f.section)}">{f.text}</li>'
        by_section.setdefault(f.section, []).append(item)
    parts = [
        f'<h4>{_e(key)}</h4><ul class="findings-list">{"".join(items)}</ul>'
        for key, items in by_section.items()
    ]
    return "".join(parts) or '<p class="note">No per-group figures to summarise.</p>'


def _findings(audit: AuditResult, canvases: Canvases) -> str:
    """The opening section: per run its flagged problems, worst groups and largest gaps; then one figure."""
    level = ci_percent(audit.options)
    cards = "".join(
        f'<article class="run-findings" data-run="{_e(found.run)}"><h3>{_e(found.run)}</h3>'
        f"{_flags_html(found)}{_sentences_html(found)}</article>"
        for found in audit_findings(audit, FINDINGS_MARKUP)
    )
    try:
        plot = findings_figure(audit, level, canvases)
    except (ValueError, TypeError) as exc:
        plot, figure = (
            None,
            f'<p class="note plot-error">The findings figure could not be drawn: {_e(exc)}</p>',
        )
    else:
        figure = ""
    if plot is not None:
        figure = _figure(plot).replace('class="plot"', 'class="plot findings-figure"', 1)
    return (
        f'<section id="findings"><h2>Findings</h2><p class="note">Per run: problems flagged, then for each '
        f"evaluation set the worst group and the largest gaps between groups (groups below min_group_size "
        f"left out), with {level} CIs and the n each figure rests on. The full tables follow.</p>"
        f'<div class="findings-runs">{cards}</div>{figure}</section>'
    )


def _section(audit: AuditResult, key: str, canvases: Canvases) -> str:
    tables = {run.name: run.sections[key] for run in audit.runs if key in run.sections}
    kind = next(iter(tables.values())).kind
    absent = [run.name for run in audit.runs if key not in run.sections]
    missing = f'<p class="note">Not audited for: {_e(", ".join(absent))}.</p>' if absent else ""
    group_tables = "".join(_group_table(run, run.sections[key]) for run in audit.runs if key in run.sections)
    log_fpr = bool(audit.options.get("log_fpr", True))
    return (
        f'<section class="audit-section" id="section-{_slug(key)}" data-section="{_e(key)}" '
        f'data-kind="{_e(kind)}"><h2>{_e(key)} <span class="kind">{_e(kind)}</span></h2>{missing}'
        f'<div class="group-tables">{group_tables}</div>{_flag_note(audit, tables)}'
        f"{_plots(tables, log_fpr, ci_percent(audit.options), canvases)}</section>"
    )


def _notes(audit: AuditResult) -> str:
    items = []
    for run in audit.runs:
        notes = run_notes(run)
        notes += [f"no section {key}" for key in audit.section_keys() if key not in run.sections]
        items += [
            f'<li data-run="{_e(run.name)}"><strong>{_e(run.name)}</strong>: {_e(n)}</li>' for n in notes
        ]
    body = f"<ul>{''.join(items)}</ul>" if items else '<p class="note">No sections were skipped.</p>'
    return f'<section id="notes"><h2>Notes</h2>{body}</section>'


def _delta_note(audit: AuditResult) -> str:
    return f". {_e(difference_note(audit))}" if len(audit.runs) > 1 else ""


def render_html(audit: AuditResult) -> str:
    """The whole audit as one self-contained HTML page (inline CSS, PNG data URIs, no external resources)."""
    names = [run.name for run in audit.runs]
    title = "fairlora audit" + (f": {', '.join(names)}" if names else "")
    level = ci_percent(audit.options)
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{_e(title)}</h1><p class="note">Point estimates with bootstrap {level} CIs '
        f"[low, high] and the n they rest on; {MISSING} marks a figure undefined or absent.</p></header>",
    ]
    if not audit.runs:
        return "".join(parts + ['<p id="empty">No runs were audited.</p></body></html>\n'])
    canvases = Canvases()  # the figures of one size share a canvas: text extents are measured once
    parts += [
        _findings(audit, canvases),
        f'<section id="runs"><h2>Runs</h2>{_run_table(audit)}</section>',
        f'<section id="comparison"><h2>Comparison</h2><p class="note">Key overall and summary metrics'
        f"{_delta_note(audit)}</p>{_main_table(audit)}</section>",
        training_html(audit),
        *(_section(audit, key, canvases) for key in audit.section_keys()),
        _notes(audit),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def write_report(audit: AuditResult, out_dir: Path) -> dict[str, Path]:
    """Write results.json, report.html and report.md atomically into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    paths = {"results": audit.save(out_dir), "html": out_dir / HTML_FILE, "markdown": out_dir / MARKDOWN_FILE}
    write_text_atomic(paths["html"], render_html(audit))
    write_text_atomic(paths["markdown"], render_markdown(audit))
    return paths
