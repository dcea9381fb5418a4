"""Differences between runs with bootstrap CIs: each run's figures minus the reference run's.

The bootstrap draws depend only on (rows, n_boot, seed), and an audit applies one seed and n_boot to
every run, so two runs audited on the same rows (same ids in the same order: `MetricTable.rows`)
were resampled with the same draws. Their resampled figures pair up: the difference under each
resample gives a paired CI, far narrower than the two runs' own CIs when the runs agree on most
examples. Where the rows differ (other data, another split), resample b of a run is set against
resample b - 1 of the reference, independent draws, which gives an unpaired CI; where either run
kept no resamples (n_boot = 0) the difference has no CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fairlora.metrics.bootstrap import percentile_ci
from fairlora.metrics.table import Estimate, MetricTable

PAIRED, UNPAIRED, NO_CI = "paired", "unpaired", "none"
PARTS = ("overall", "summary")

# section -> part ("overall" | "summary") -> metric -> run name -> difference to the reference
Comparison = dict[str, dict[str, dict[str, dict[str, "Difference"]]]]


@dataclass
class Difference:
    """A run's figure minus the reference run's, with its bootstrap CI and how it was resampled."""

    estimate: Estimate
    pairing: str = NO_CI  # paired | unpaired | none

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the estimate's {"value", "ci", "n"} plus "pairing"."""
        return self.estimate.to_dict() | {"pairing": self.pairing}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Difference:
        """Inverse of `to_dict`."""
        return cls(Estimate.from_dict(data), data.get("pairing", NO_CI))


def pairing(reference: MetricTable, table: MetricTable) -> str:
    """How two tables' resamples pair up: same rows -> paired, other rows -> unpaired, none kept -> none."""
    if not _has_samples(reference) or not _has_samples(table):
        return NO_CI
    same_rows = reference.rows is not None and reference.rows == table.rows
    return PAIRED if same_rows else UNPAIRED


def _has_samples(table: MetricTable) -> bool:
    return any(len(values) for values in table.samples.values())


def difference(
    reference: MetricTable, table: MetricTable, part: str, metric: str, how: str, level: float
) -> Difference | None:
    """`table`'s figure minus `reference`'s (part "overall" or "summary"), None where either lacks it."""
    base, other = getattr(reference, part).get(metric), getattr(table, part).get(metric)
    if base is None or other is None:
        return None
    if base.value is None or other.value is None:
        return Difference(Estimate(None, n=other.n), how)
    value = other.value - base.value
    key = f"{part}/{metric}"
    ours, theirs = table.samples.get(key), reference.samples.get(key)
    if how == NO_CI or ours is None or theirs is None or len(ours) != len(theirs) or not len(ours):
        return Difference(Estimate(value, n=other.n), NO_CI)
    aligned = theirs if how == PAIRED else np.roll(theirs, 1)  # independent draws when unpaired
    low, high = percentile_ci((np.asarray(ours) - aligned)[:, None], level)
    return Difference(Estimate(value, low[0], high[0], other.n), how)


def compare_sections(
    runs: dict[str, dict[str, MetricTable]], level: float
) -> tuple[Comparison, dict[str, list[str]]]:
    """Every run's overall and summary figures minus the first run's, and notes on unpaired sections.

    `runs` maps run name -> section key -> table, the reference first.
    """
    names = list(runs)
    comparison: Comparison = {}
    notes: dict[str, list[str]] = {name: [] for name in names}
    if not names:
        return comparison, notes
    reference = runs[names[0]]
    for key, base in reference.items():
        for name in names[1:]:
            table = runs[name].get(key)
            if table is None:
                continue
            how = pairing(base, table)
            if how == UNPAIRED:
                notes[name].append(
                    f"{key}: its rows (ids / split) differ from {names[0]}'s, so its differences to "
                    f"{names[0]} have unpaired bootstrap CIs"
                )
            for part in PARTS:
                for metric in getattr(base, part):
                    found = difference(base, table, part, metric, how, level)
                    if found is not None:
                        comparison.setdefault(key, {}).setdefault(part, {}).setdefault(metric, {})[name] = (
                            found
                        )
    return comparison, notes


def comparison_to_dict(comparison: Comparison) -> dict[str, Any]:
    """JSON form of a comparison."""
    return {
        key: {
            part: {metric: {run: d.to_dict() for run, d in runs.items()} for metric, runs in metrics.items()}
            for part, metrics in parts.items()
        }
        for key, parts in comparison.items()
    }


def comparison_from_dict(data: dict[str, Any]) -> Comparison:
    """Inverse of `comparison_to_dict`."""
    return {
        key: {
            part: {
                metric: {run: Difference.from_dict(d) for run, d in runs.items()}
                for metric, runs in metrics.items()
            }
            for part, metrics in parts.items()
        }
        for key, parts in data.items()
    }
