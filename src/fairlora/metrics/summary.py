"""What every per-group table builder shares: group masks, resampled sums, estimates, worst group, gap.

Column 0 of every (example x column) mask matrix is "overall", then one column per (overlapping)
group. A `keep` vector marks the group columns that enter summaries (column 0 never does): groups
of at least min_group_size members. Worst-group and gap figures are taken per resample over the kept
columns, from the same draws as the group figures.

Intervals (see `fairlora.metrics.bootstrap`): the metrics a builder names as proportions get the
Wilson score interval on their Estimate's n; every other metric, and every figure over groups, gets
the bias-corrected percentile interval of its resamples. A worst-group figure's interval also spans
the worst group's own interval (the union of the two), so a worst group at 0 or 1 keeps a real one.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import bc_interval, resampled_sums, wilson_interval
from fairlora.metrics.table import Estimate, MetricTable


def group_matrix(frame: pd.DataFrame, group_columns: list[str], what: str = "the audit") -> np.ndarray:
    """(n, 1 + G) bool matrix: column 0 is every row, then one column per (overlapping) group."""
    missing = [c for c in group_columns if c not in frame.columns]
    if missing:
        raise AuditError(
            f"{what} needs the group columns {missing}, but the predictions hold no such columns; "
            "predict again on data that defines these groups, or drop them from the audit"
        )
    if not len(frame):
        raise AuditError(f"{what} got no predictions; evaluate on a split that holds examples")
    groups = frame[group_columns].to_numpy(dtype=bool).reshape(len(frame), len(group_columns))
    return np.concatenate([np.ones((len(frame), 1), dtype=bool), groups], axis=1)


def stacked_sums(
    values: list[np.ndarray], masks: np.ndarray, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Point and resampled sums of each per-example value within each mask column.

    Returns (point (V, C) float64, boot (n_boot, V, C) float64) for V values and C mask columns.
    """
    stacked = np.stack([np.asarray(v, np.float64) for v in values])  # (V, n)
    point = stacked @ masks.astype(np.float64)
    table = (stacked.T.astype(np.float32)[:, :, None] * masks[:, None, :]).reshape(len(masks), -1)
    boot = resampled_sums(table, n_boot, seed).reshape((-1, *point.shape))
    return point, boot


def nan_extremes(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max over the kept columns of the last axis, ignoring NaN (all NaN -> NaN)."""
    chosen = np.asarray(values, np.float64)[..., np.asarray(keep, bool)]
    if chosen.shape[-1] == 0:
        nan = np.full(chosen.shape[:-1], np.nan)
        return nan, nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(chosen, axis=-1), np.nanmax(chosen, axis=-1)


def spread(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Max minus min over the kept columns of the last axis (NaN where none is defined)."""
    low, high = nan_extremes(values, keep)
    return high - low


def kept_columns(sizes: np.ndarray, min_group_size: int) -> np.ndarray:
    """The group columns that enter summaries: at least min_group_size members (never column 0)."""
    keep = np.asarray(sizes) >= min_group_size
    keep[0] = False
    return keep


def used_rows(masks: np.ndarray, keep: np.ndarray) -> int:
    """Number of distinct examples in the kept group columns (column 0, overall, excluded)."""
    keep = np.asarray(keep, bool).copy()
    keep[0] = False
    return int(masks[:, keep].any(axis=1).sum()) if keep.any() else 0


def column_estimates(
    point: dict[str, np.ndarray],
    boot: dict[str, np.ndarray],
    support: dict[str, np.ndarray],
    level: float,
    proportions: frozenset[str] | set[str] = frozenset(),
) -> list[dict[str, Estimate]]:
    """One {metric: Estimate} per column from point (C,), resampled (B, C) values and n (C,).

    Metrics in `proportions` get the Wilson interval on their n, the others the BC interval; without
    resamples (n_boot = 0: CIs off) none gets an interval.
    """
    bounds = {
        m: wilson_interval(point[m], support[m], level)
        if m in proportions and len(boot[m])
        else bc_interval(point[m], boot[m], level)
        for m in point
    }
    columns = len(next(iter(point.values()))) if point else 0
    return [
        {m: Estimate(point[m][c], bounds[m][0][c], bounds[m][1][c], support[m][c]) for m in point}
        for c in range(columns)
    ]


def summary_estimate(point: float, boot: np.ndarray, n: int, level: float) -> Estimate:
    """A figure over groups (worst group, gap) with its bias-corrected percentile CI over the resamples."""
    low, high = bc_interval(np.array([point], np.float64), np.asarray(boot, np.float64).reshape(-1, 1), level)
    return Estimate(point, low[0], high[0], n)


def assemble(
    kind: str,
    estimates: list[dict[str, Estimate]],
    group_columns: list[str],
    sizes: np.ndarray,
    min_group_size: int,
    boot: dict[str, np.ndarray] | None = None,
) -> MetricTable:
    """A MetricTable from per-column estimates (column 0 overall), sizes and the size flag.

    `boot` ({metric: (B, C)}) keeps the overall column's resampled values for run comparisons.
    """
    group_sizes = {g: int(s) for g, s in zip(group_columns, sizes[1:], strict=True)}
    table = MetricTable(
        kind=kind,
        overall=estimates[0],
        by_group=dict(zip(group_columns, estimates[1:], strict=True)),
        group_sizes=group_sizes,
        flagged=[g for g in group_columns if group_sizes[g] < min_group_size],
    )
    for metric, values in (boot or {}).items():
        table.samples[f"overall/{metric}"] = np.asarray(values, np.float64)[:, 0]
    return table


def set_summary(table: MetricTable, name: str, point: float, boot: np.ndarray, n: int, level: float) -> None:
    """Put a figure over groups into `table.summary`, keeping its resampled values."""
    table.summary[name] = summary_estimate(point, boot, n, level)
    table.samples[f"summary/{name}"] = np.asarray(boot, np.float64).reshape(-1)


def add_worst_and_gap(
    table: MetricTable,
    names: tuple[str, str | None],
    point: np.ndarray,
    boot: np.ndarray,
    keep: np.ndarray,
    n: int,
    level: float,
    highest: bool,
    label: str = "worst_group",
    metric: str | None = None,
) -> None:
    """The worst kept group's value and the max-min gap (names[1], if given), with CIs; labels the group.

    point (C,) and boot (B, C) hold one metric per mask column (column 0 overall); the worst group
    has the highest value when `highest` (ECE, loss, attack AUC), else the lowest (accuracy).
    With `metric`, the worst figure's interval is widened to span the worst group's own
    `by_group[group][metric]` interval.
    """
    low, high = nan_extremes(point, keep)
    boot_low, boot_high = nan_extremes(boot, keep)
    worst, boot_worst = (high, boot_high) if highest else (low, boot_low)
    set_summary(table, names[0], worst, boot_worst, n, level)
    if names[1] is not None:
        set_summary(table, names[1], high - low, boot_high - boot_low, n, level)
    values = np.where(np.asarray(keep, bool), np.asarray(point, np.float64), np.nan)
    if not np.isnan(values).all():
        index = int(np.nanargmax(values) if highest else np.nanargmin(values))
        table.labels[label] = list(table.by_group)[index - 1]
        if metric is not None:
            widen(table.summary[names[0]], table.by_group[table.labels[label]].get(metric))


def widen(estimate: Estimate, other: Estimate | None) -> None:
    """Stretch `estimate`'s interval to span `other`'s too (where both are defined)."""
    if other is None or None in (estimate.low, estimate.high, other.low, other.high):
        return
    estimate.low, estimate.high = min(estimate.low, other.low), max(estimate.high, other.high)
