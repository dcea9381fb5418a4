"""Shares and scores with bootstrap CIs from per-row columns: the building block of benchmark tables.

Every figure gets the bias-corrected percentile interval of its resamples (see
`fairlora.metrics.bootstrap`), which contains the estimate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from fairlora.metrics.bootstrap import bc_interval, resampled_sums, safe_ratio
from fairlora.metrics.table import Estimate, MetricTable

Scorer = Callable[[list[str], list[str] | None], tuple[np.ndarray, np.ndarray]]
Columns = dict[str, np.ndarray]
Formulas = Callable[[Columns], Columns]


def scope_estimates(
    columns: Columns,
    formulas: Formulas,
    mask: np.ndarray,
    n_boot: int,
    seed: int,
    n_from: dict[str, str] | None = None,
    level: float = 0.95,
) -> tuple[dict[str, Estimate], dict[str, np.ndarray]]:
    """Each metric of `formulas` (column sums -> values) on the rows in `mask`, with a bootstrap CI.

    Columns are per-row values, (n,) or (n, m); `formulas` gets their sums over the rows in scope,
    (R,) or (R, m) for R resamples, and returns (R,) arrays. Every scope resamples all n rows with the
    same seed, so the CIs of all groups and metrics rest on the same (paired) resamples. A metric's
    n is the in-scope sum of its column in `n_from` (its denominator), else the rows in scope.
    Returns the estimates (bias-corrected percentile CIs at `level`) and each metric's resampled values.
    """
    mask = np.asarray(mask, dtype=bool)
    names = list(columns)
    blocks = [np.asarray(columns[c], dtype=np.float64).reshape(len(mask), -1) * mask[:, None] for c in names]
    stacked = np.concatenate(blocks, axis=1)
    sums = _split(stacked.sum(0, keepdims=True), names, columns)
    point, boots = formulas(sums), formulas(_split(resampled_sums(stacked, n_boot, seed), names, columns))
    estimates, n_from = {}, n_from or {}
    samples = {metric: np.asarray(values, dtype=np.float64).reshape(-1) for metric, values in boots.items()}
    for metric, value in point.items():
        estimate = float(np.asarray(value).reshape(-1)[0])
        low, high = bc_interval(np.array([estimate]), samples[metric][:, None], level)
        n = sums[n_from[metric]].sum() if metric in n_from else mask.sum()
        estimates[metric] = Estimate(estimate, low[0], high[0], int(round(n)))
    return estimates, samples


def _split(sums: np.ndarray, names: list[str], columns: Columns) -> Columns:
    """The (R, K) sums cut back into one entry per column, (R,) for 1-D columns."""
    out, start = {}, 0
    for name in names:
        width = int(np.prod(np.shape(columns[name])[1:], dtype=int))
        part = sums[:, start : start + width]
        out[name] = part[:, 0] if np.ndim(columns[name]) == 1 else part
        start += width
    return out


def group_masks(frame: pd.DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """One boolean row mask per distinct (non-missing) value of each column, named by the value."""
    masks = {}
    for column in columns:
        values = frame[column]
        for value in sorted(values.dropna().astype(str).unique()):
            masks[value] = (values.astype(str) == value).to_numpy() & values.notna().to_numpy()
    return masks


def section_table(
    kind: str,
    columns: Columns,
    formulas: Formulas,
    groups: dict[str, np.ndarray],
    n_boot: int,
    seed: int,
    n_from: dict[str, str] | None = None,
    level: float = 0.95,
) -> MetricTable:
    """A MetricTable of `formulas` over all rows and over each group's rows (see `scope_estimates`)."""
    n = len(next(iter(columns.values())))
    overall, samples = scope_estimates(columns, formulas, np.ones(n, dtype=bool), n_boot, seed, n_from, level)
    by_group = {
        g: scope_estimates(columns, formulas, m, n_boot, seed, n_from, level)[0] for g, m in groups.items()
    }
    table = MetricTable(kind, overall, by_group, group_sizes={g: int(m.sum()) for g, m in groups.items()})
    table.samples = {f"overall/{metric}": values for metric, values in samples.items()}
    return table


def nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN (all-NaN -> NaN, without a warning)."""
    present = ~np.isnan(values)
    total = np.where(present, values, 0.0).sum(-1)
    return safe_ratio(total, present.sum(-1))
