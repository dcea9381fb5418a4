"""Report figures as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no global state)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from fairlora.metrics.table import Estimate, MetricTable
from fairlora.report.canvas import DPI, Canvases, new_figure, to_png

__all__ = ["DPI", "Canvases", "to_png"]  # to_png and DPI are imported from here by other figures

WIDTH, HEIGHT = 6.0, 3.5
PANEL_WIDTH, PANEL_HEIGHT = 2.6, 2.4
MAX_COLUMNS = 3
MIN_LOG_FPR = 1e-4
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
RATIO_LABELS = ("pro", "anti", "neutral", "unknown")
TITLE_Y = 1.0  # a fixed title height skips matplotlib's title placement search (a tight bbox per draw)

Curve = Mapping[str, Sequence[float | None]]


def colour(index: int) -> str:
    """The colour of the run at `index` (cycling)."""
    return COLOURS[index % len(COLOURS)]


def _layout(figure: Figure, bottom: float = 0.75) -> None:
    """Fixed margins in inches (matplotlib's tight_layout costs about half of a figure's render time)."""
    width, height = figure.get_size_inches()
    rows = len({ax.get_subplotspec().rowspan.start for ax in figure.axes if ax.get_subplotspec()}) or 1
    gap = 1.0 / (height / rows)  # ~1 inch between panel rows, for the x label and slanted ticks
    figure.subplots_adjust(
        left=0.55 / width,
        right=1 - 0.15 / width,
        bottom=bottom / height,
        top=1 - 0.3 / height,
        wspace=0.4,
        hspace=gap,
    )


def finite(value: float | None) -> bool:
    """Whether `value` is a number other than NaN or infinity."""
    return value is not None and math.isfinite(value)


def _value(estimate: Estimate | None) -> float:
    return estimate.value if estimate is not None and finite(estimate.value) else math.nan


def ci_error(estimate: Estimate | None) -> tuple[float, float]:
    """Distances from the value down to the CI low and up to the CI high (0 where unknown)."""
    if estimate is None or not finite(estimate.value):
        return 0.0, 0.0
    low = estimate.value - estimate.low if finite(estimate.low) else 0.0
    high = estimate.high - estimate.value if finite(estimate.high) else 0.0
    return max(low, 0.0), max(high, 0.0)


def _legend(axes: Axes, count: int) -> None:
    if count:
        axes.legend(fontsize=7, frameon=False, loc="best")


def group_bars(tables: Mapping[str, MetricTable], metric: str, canvases: Canvases | None = None) -> bytes:
    """Grouped bars of `metric` per group (overall first), one colour per run, CI error bars.

    Groups flagged as smaller than min_group_size in a run are hatched in that run's bars.
    """
    groups = ["overall"] + list(dict.fromkeys(g for t in tables.values() for g in t.by_group))
    figure = new_figure(WIDTH, HEIGHT, canvases)
    axes = figure.add_subplot()
    width = 0.8 / max(len(tables), 1)
    for index, (run, table) in enumerate(tables.items()):
        rows = [table.overall] + [table.by_group.get(g, {}) for g in groups[1:]]
        estimates = [row.get(metric) for row in rows]
        errors = [ci_error(e) for e in estimates]
        positions = [i + (index - (len(tables) - 1) / 2) * width for i in range(len(groups))]
        bars = axes.bar(
            positions,
            [_value(e) for e in estimates],
            width,
            yerr=[[e[0] for e in errors], [e[1] for e in errors]],
            color=colour(index),
            label=run,
            capsize=2,
            error_kw={"elinewidth": 0.8},
        )
        for bar, group in zip(bars, groups, strict=True):
            if group in table.flagged:
                bar.set_hatch("///")
                bar.set_edgecolor("black")
    _ticks(axes, groups)
    axes.set_ylabel(metric, fontsize=8)
    hatched = " (hatched: below min_group_size)" if any(t.flagged for t in tables.values()) else ""
    axes.set_title(f"{metric} per group{hatched}", fontsize=9, y=TITLE_Y)
    axes.tick_params(axis="y", labelsize=7)
    _legend(axes, len(tables))
    _layout(figure, bottom=1.1)
    return to_png(figure)


def _panels(count: int, canvases: Canvases | None = None) -> tuple[Figure, list[Axes]]:
    """A figure with `count` small panels in rows of at most MAX_COLUMNS."""
    columns = max(1, min(count, MAX_COLUMNS))
    rows = max(1, math.ceil(count / columns))
    figure = new_figure(PANEL_WIDTH * columns, PANEL_HEIGHT * rows, canvases)
    grid = figure.subplots(rows, columns, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[count:]:
        ax.set_visible(False)
    return figure, axes[:count]


def _points(curve: Curve) -> tuple[list[float], list[float]]:
    """The (x, y) pairs of a curve where both are finite."""
    pairs = [
        (float(x), float(y))
        for x, y in zip(curve.get("x", []), curve.get("y", []), strict=False)
        if finite(x) and finite(y)
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def reliability_diagram(panels: Mapping[str, Mapping[str, Curve]], canvases: Canvases | None = None) -> bytes:
    """Reliability diagrams: one panel per title (overall, groups), one line per run, and the diagonal."""
    figure, axes = _panels(len(panels), canvases)
    for ax, (title, runs) in zip(axes, panels.items(), strict=True):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        for index, (run, curve) in enumerate(runs.items()):
            x, y = _points(curve)
            ax.plot(x, y, marker="o", markersize=3, linewidth=1, color=colour(index), label=run)
        ax.set(xlim=(0, 1), ylim=(0, 1))
        _style(ax, title, "confidence", "accuracy")
    _legend(axes[0], len(next(iter(panels.values()), {})))
    _layout(figure)
    return to_png(figure)


def roc_curves(
    panels: Mapping[str, Mapping[str, Curve]], log_fpr: bool = True, canvases: Canvases | None = None
) -> bytes:
    """ROC curves: one panel per title, one line per run, the chance diagonal; FPR log-scaled if asked."""
    figure, axes = _panels(len(panels), canvases)
    floor = MIN_LOG_FPR if log_fpr else 0.0
    for ax, (title, runs) in zip(axes, panels.items(), strict=True):
        ax.plot([floor, 1], [floor, 1], linestyle="--", color="grey", linewidth=0.8)
        for index, (run, curve) in enumerate(runs.items()):
            x, y = _points(curve)
            x = [max(v, floor) for v in x] if log_fpr else x
            ax.plot(x, y, linewidth=1, color=colour(index), label=run)
        if log_fpr:  # fixed decade ticks: matplotlib's automatic log ticks cost seconds per figure
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator([10.0**k for k in range(round(math.log10(floor)), 1)]))
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set(xlim=(floor, 1), ylim=(0, 1))
        _style(ax, title, "FPR", "TPR")
    _legend(axes[0], len(next(iter(panels.values()), {})))
    _layout(figure)
    return to_png(figure)


def _bar_errors(curve: Curve, heights: list[float]) -> list[list[float]] | None:
    """Error-bar lengths from a curve's "low"/"high" bounds (0 where unknown), or None without bounds."""
    if "low" not in curve or "high" not in curve:
        return None
    lows, highs = list(curve["low"]), list(curve["high"])

    def gap(index: int, bounds: list[float | None], sign: float) -> float:
        bound = bounds[index] if index < len(bounds) else None
        if not finite(bound) or not math.isfinite(heights[index]):
            return 0.0
        return max(sign * (float(bound) - heights[index]), 0.0)

    indices = range(len(heights))
    return [[gap(i, lows, -1.0) for i in indices], [gap(i, highs, 1.0) for i in indices]]


def category_bars(
    panels: Mapping[str, Mapping[str, Curve]],
    categories: Mapping[str, Sequence[str]],
    canvases: Canvases | None = None,
) -> bytes:
    """Grouped bars of each curve's y per category (CI bars from "low"/"high" where given).

    One panel per title, named x entries from `categories[title]`, one colour per run.
    """
    figure, axes = _panels(len(panels), canvases)
    for ax, (title, runs) in zip(axes, panels.items(), strict=True):
        names = list(categories.get(title, ()))
        width = 0.8 / max(len(runs), 1)
        for index, (run, curve) in enumerate(runs.items()):
            heights = [float(v) if finite(v) else math.nan for v in curve.get("y", [])][: len(names)]
            positions = [i + (index - (len(runs) - 1) / 2) * width for i in range(len(heights))]
            errors = _bar_errors(curve, heights)
            ax.bar(positions, heights, width, yerr=errors, color=colour(index), label=run, capsize=1.5)
        _ticks(ax, names)
        _style(ax, title, "", "share")
    _legend(axes[0], len(next(iter(panels.values()), {})))
    _layout(figure)
    return to_png(figure)


def ratio_bars(panels: Mapping[str, Mapping[str, Curve]], canvases: Canvases | None = None) -> bytes:
    """Pronoun outcome shares (pro, anti, neutral, unknown) per run, one panel per title."""
    return category_bars(panels, dict.fromkeys(panels, RATIO_LABELS), canvases)


def share_bars(
    panels: Mapping[str, Mapping[str, Curve]],
    categories: Mapping[str, Sequence[str]],
    canvases: Canvases | None = None,
) -> bytes:
    """Answer shares, one panel per template, one colour per run, x entries named by `categories`."""
    return category_bars(panels, categories, canvases)


def line_curves(panels: Mapping[str, Mapping[str, Curve]], canvases: Canvases | None = None) -> bytes:
    """Any other x/y curve: one panel per title, one line per run."""
    figure, axes = _panels(len(panels), canvases)
    for ax, (title, runs) in zip(axes, panels.items(), strict=True):
        for index, (run, curve) in enumerate(runs.items()):
            x, y = _points(curve)
            ax.plot(x, y, marker=".", linewidth=1, color=colour(index), label=run)
        _style(ax, title, "x", "y")
    _legend(axes[0], len(next(iter(panels.values()), {})))
    _layout(figure)
    return to_png(figure)


def _ticks(ax: Axes, names: list[str]) -> None:
    """Category ticks, slanted when there are many or long names."""
    slant = len(names) > 4 or max(map(len, names), default=0) > 8
    ax.set_xticks(
        range(len(names)), names, fontsize=7, rotation=30 if slant else 0, ha="right" if slant else "center"
    )


def _style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=8, y=TITLE_Y)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=6)


PRIMARY_METRICS = {
    "utility": ("accuracy", "loss"),
    "auc": ("auc",),
    "calibration": ("ece",),
    "membership": ("auc",),
    "generation": ("pro_minus_anti",),
    "probe": ("flip_rate",),
}
MAX_PANELS = 6


@dataclass(frozen=True)
class Plot:
    """One rendered figure of a report section."""

    kind: str  # group-bars | reliability | roc | ratios | shares | curves
    caption: str
    png: bytes


def primary_metric(tables: Mapping[str, MetricTable]) -> str | None:
    """The per-group metric a section's bar chart shows: the key one of its kind, else the first one."""
    metrics = list(dict.fromkeys(m for t in tables.values() for row in t.by_group.values() for m in row))
    kind = next(iter(tables.values())).kind if tables else ""
    preferred = [m for m in PRIMARY_METRICS.get(kind, ()) if m in metrics]
    return (preferred or metrics or [None])[0]


def curve_panels(tables: Mapping[str, MetricTable], prefix: str) -> dict[str, dict[str, Curve]]:
    """Curves named `<prefix>/<panel>`: panel -> run -> curve, overall first, at most MAX_PANELS."""
    names = list(dict.fromkeys(n for t in tables.values() for n in t.curves if n.startswith(f"{prefix}/")))
    names.sort(key=lambda n: n != f"{prefix}/overall")
    panels = {
        name.split("/", 1)[1]: {run: t.curves[name] for run, t in tables.items() if name in t.curves}
        for name in names[:MAX_PANELS]
    }
    return panels


def share_categories(tables: Mapping[str, MetricTable], name: str, count: int) -> list[str]:
    """Names of the x entries of a shares curve, from the section labels where they match the count."""
    panel = name.split("/", 1)[-1]
    for table in tables.values():
        for key in (name, panel, name.split("/", 1)[0]):
            text = table.labels.get(key, "")
            parts = [p.strip() for p in text.replace("|", ",").split(",") if p.strip()]
            if len(parts) == count:
                return parts
    first = next((t.curves[name] for t in tables.values() if name in t.curves), {})
    return [_tick(x) for x in list(first.get("x", []))[:count]] or [str(i) for i in range(count)]


def _tick(value: float | None) -> str:
    if not finite(value):
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _omitted(tables: Mapping[str, MetricTable], prefix: str) -> str:
    total = len({n for t in tables.values() for n in t.curves if n.startswith(f"{prefix}/")})
    return f" ({total - MAX_PANELS} more panels omitted)" if total > MAX_PANELS else ""


def _share_plot(tables: Mapping[str, MetricTable], note: str, canvases: Canvases | None) -> Plot:
    panels = curve_panels(tables, "shares")
    categories = {
        panel: share_categories(tables, f"shares/{panel}", max(len(c.get("y", [])) for c in runs.values()))
        for panel, runs in panels.items()
    }
    return Plot("shares", f"Answer shares per template{note}", share_bars(panels, categories, canvases))


def section_plots(
    tables: Mapping[str, MetricTable],
    log_fpr: bool = True,
    level: str = "95%",
    canvases: Canvases | None = None,
) -> list[Plot]:
    """Every figure of one section across runs: per-group bars (CIs at `level`), then one per curve family.

    `canvases`: reuse the figures of a report's earlier plots of the same size (faster, same pixels).
    """
    plots = []
    metric = primary_metric(tables)
    if metric is not None:
        bars = group_bars(tables, metric, canvases)
        plots.append(Plot("group-bars", f"{metric} per group with {level} CI", bars))
    prefixes = list(dict.fromkeys(n.split("/", 1)[0] for t in tables.values() for n in t.curves if "/" in n))
    for prefix in prefixes:
        panels = curve_panels(tables, prefix)
        note = _omitted(tables, prefix)
        if prefix == "shares":
            plots.append(_share_plot(tables, note, canvases))
        elif prefix == "reliability":
            diagram = reliability_diagram(panels, canvases)
            plots.append(Plot("reliability", f"Reliability diagram{note}", diagram))
        elif prefix == "roc":
            scale = " (log FPR)" if log_fpr else ""
            plots.append(Plot("roc", f"ROC curves{scale}{note}", roc_curves(panels, log_fpr, canvases)))
        elif prefix == "ratios":
            plots.append(Plot("ratios", f"Pronoun outcome shares{note}", ratio_bars(panels, canvases)))
        else:
            plots.append(Plot("curves", f"{prefix} curves{note}", line_curves(panels, canvases)))
    return plots
