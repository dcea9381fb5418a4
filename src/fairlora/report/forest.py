"""The findings figure: per-group accuracy, FPR and subgroup AUC with CI whiskers, runs side by side."""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.axes import Axes

from fairlora.auditing.results import AuditResult
from fairlora.metrics.table import MetricTable
from fairlora.report.canvas import Canvases, new_figure, to_png
from fairlora.report.plots import TITLE_Y, Plot, ci_error, colour, finite

PANEL_METRICS = (
    ("utility", "accuracy", "accuracy"),
    ("utility", "fpr", "FPR"),
    ("auc", "auc", "subgroup AUC"),
)
FALLBACK_METRICS = (("utility", "loss", "loss"),)  # causal-LM runs: no accuracy, FPR or AUC
PREFERRED_SET = "test"
MAX_GROUPS = 24
SMALL_MARK = " †"
ROW_HEIGHT, PANEL_WIDTH, LABEL_WIDTH = 0.32, 2.6, 1.9


@dataclass(frozen=True)
class Panel:
    """One panel: a metric of one section in every run that has it."""

    title: str
    metric: str
    tables: dict[str, MetricTable]


def evaluation_set(audit: AuditResult) -> str | None:
    """The evaluation set the figure shows: "test" where audited, else the first utility or auc section's."""
    names = [k.split("/", 1)[1] for k in audit.section_keys() if k.split("/", 1)[0] in ("utility", "auc")]
    names = [n for n in names if n != "train"] or names
    return PREFERRED_SET if PREFERRED_SET in names else next(iter(names), None)


def panels(audit: AuditResult, name: str) -> list[Panel]:
    """The panels of the figure for evaluation set `name`, in PANEL_METRICS order, where any run has them."""

    def build(specs: tuple[tuple[str, str, str], ...]) -> list[Panel]:
        out = []
        for kind, metric, title in specs:
            key = f"{kind}/{name}"
            tables = {r.name: r.sections[key] for r in audit.runs if key in r.sections}
            if any(metric in row for t in tables.values() for row in t.by_group.values()):
                out.append(Panel(title, metric, tables))
        return out

    return build(PANEL_METRICS) or build(FALLBACK_METRICS)


def _groups(chosen: list[Panel]) -> list[str]:
    found = dict.fromkeys(g for p in chosen for t in p.tables.values() for g in t.by_group)
    return list(found)[:MAX_GROUPS]


def _points(panel: Panel, table: MetricTable, rows: list[str]) -> list[tuple[int, float, float, float, bool]]:
    """(row, value, CI low gap, CI high gap, below the minimum) of each finite estimate, overall first."""
    points = []
    for row, group in enumerate(rows):
        estimate = (
            table.overall.get(panel.metric) if row == 0 else table.by_group.get(group, {}).get(panel.metric)
        )
        if estimate is not None and finite(estimate.value):
            points.append((row, estimate.value, *ci_error(estimate), group in table.flagged))
    return points


def _draw(ax: Axes, panel: Panel, rows: list[str], runs: list[str]) -> None:
    """Dots with horizontal CI whiskers per row (overall first); hollow for a group below the minimum.

    One errorbar call per run and dot style (filled, hollow): per-point calls cost most of the figure.
    """
    spread = 0.6 / max(len(runs), 1)
    for index, run in enumerate(runs):
        table = panel.tables.get(run)
        if table is None:
            continue
        offset = (index - (len(runs) - 1) / 2) * spread
        points = _points(panel, table, rows)
        for hollow in (False, True):
            chosen = [p for p in points if p[4] == hollow]
            if not chosen:
                continue
            ax.errorbar(
                [p[1] for p in chosen],
                [p[0] + offset for p in chosen],
                xerr=[[p[2] for p in chosen], [p[3] for p in chosen]],
                fmt="o",
                markersize=4,
                color=colour(index),
                markerfacecolor="white" if hollow else colour(index),
                elinewidth=1,
                capsize=2,
            )
    ax.set_title(panel.title, fontsize=9, y=TITLE_Y)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ax.axhline(0.5, color="#bbbbbb", linewidth=0.6)  # overall above, groups below


def findings_figure(audit: AuditResult, level: str = "95%", canvases: Canvases | None = None) -> Plot | None:
    """The figure of the findings section, or None when no run has per-group utility or AUC figures."""
    name = evaluation_set(audit)
    chosen = panels(audit, name) if name is not None else []
    if not chosen:
        return None
    groups = _groups(chosen)
    small = {g for p in chosen for t in p.tables.values() for g in t.flagged}
    rows = ["overall", *groups]
    labels = [g + (SMALL_MARK if g in small else "") for g in rows]
    runs = [r.name for r in audit.runs if any(r.name in p.tables for p in chosen)]
    height = ROW_HEIGHT * len(rows) + 1.1
    figure = new_figure(LABEL_WIDTH + PANEL_WIDTH * len(chosen), height, canvases)
    axes = figure.subplots(1, len(chosen), sharey=True, squeeze=False)[0]
    for ax, panel in zip(axes, chosen, strict=True):
        _draw(ax, panel, rows, runs)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=7)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)
    handles = [axes[0].plot([], [], "o", color=colour(i), label=run)[0] for i, run in enumerate(runs)]
    figure.legend(handles=handles, loc="upper center", ncol=min(len(runs), 4), fontsize=7, frameon=False)
    width = LABEL_WIDTH + PANEL_WIDTH * len(chosen)
    figure.subplots_adjust(
        left=LABEL_WIDTH / width,
        right=1 - 0.15 / width,
        top=1 - 0.55 / height,
        bottom=0.4 / height,
        wspace=0.12,
    )
    return Plot("findings", _caption(chosen, name, level, bool(small), _omitted(chosen)), to_png(figure))


def _omitted(chosen: list[Panel]) -> int:
    return max(len({g for p in chosen for t in p.tables.values() for g in t.by_group}) - MAX_GROUPS, 0)


def _caption(chosen: list[Panel], name: str, level: str, small: bool, omitted: int) -> str:
    metrics = ", ".join(p.title for p in chosen)
    text = f"Per group on {name}: {metrics}, with {level} CIs; one colour per run"
    text += f" ({SMALL_MARK.strip()} and hollow dots: below min_group_size)" if small else ""
    return text + (f"; {omitted} more groups in the tables below" if omitted else "") + "."
