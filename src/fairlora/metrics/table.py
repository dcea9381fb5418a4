"""The shape every audit figure comes in: an estimate with its CI and n, overall and per group.

How each CI is made (Wilson for proportions, bias-corrected bootstrap for the rest) is set out in
`fairlora.metrics.bootstrap`; every CI contains its estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


def _num(value: Any) -> float | None:
    """A JSON-safe float: NaN and inf become None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Estimate:
    """A point estimate with its CI (None where undefined or CIs are off) and the n it rests on."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0

    def __post_init__(self) -> None:
        self.value, self.low, self.high = _num(self.value), _num(self.low), _num(self.high)
        self.n = int(self.n)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: {"value", "ci": [low, high] | None, "n"}."""
        ci = None if self.low is None and self.high is None else [self.low, self.high]
        return {"value": self.value, "ci": ci, "n": self.n}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Inverse of `to_dict`."""
        low, high = data.get("ci") or (None, None)
        return cls(data.get("value"), low, high, data.get("n", 0))


@dataclass
class MetricTable:
    """One audit section, read like fairlearn's MetricFrame.

    `overall` and `by_group[group]` map metric -> Estimate; `summary` holds figures over groups
    (worst group, gap, DP/EO differences ...), `labels` names things like the worst group, `curves`
    holds plot data (name -> {"x": [...], "y": [...], ...}: ROC, reliability bins, shares).
    Groups in `flagged` are smaller than min_group_size: reported, but left out of summaries.
    `notes` are plain sentences a reader must see (e.g. a constant predictor).

    Not stored in JSON: `samples` ("overall/<metric>" or "summary/<metric>" -> the figure under each
    bootstrap resample) and `rows` (a fingerprint of the resampled rows, in order). Two tables with the
    same `rows` were resampled with the same draws, so their samples pair up for run comparisons.
    """

    kind: str  # utility | auc | calibration | membership | generation | probe | benchmark
    overall: dict[str, Estimate]
    by_group: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    group_sizes: dict[str, int] = field(default_factory=dict)
    flagged: list[str] = field(default_factory=list)
    summary: dict[str, Estimate] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    rows: str | None = field(default=None, repr=False, compare=False)

    def frame(self) -> pd.DataFrame:
        """Point estimates per group (rows) and metric (columns), plus n and flagged."""
        rows = {g: {m: e.value for m, e in metrics.items()} for g, metrics in self.by_group.items()}
        table = pd.DataFrame.from_dict(rows, orient="index", dtype=float)
        table["n"] = [self.group_sizes.get(g, 0) for g in table.index]
        table["flagged"] = [g in self.flagged for g in table.index]
        return table

    def _adequate(self) -> pd.DataFrame:
        table = self.frame()
        return table[~table["flagged"]].drop(columns=["n", "flagged"])

    def difference(self) -> pd.Series:
        """Max minus min of each metric over the groups not flagged as too small."""
        groups = self._adequate()
        return groups.max() - groups.min()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "overall": {m: e.to_dict() for m, e in self.overall.items()},
            "by_group": {
                g: {m: e.to_dict() for m, e in metrics.items()} for g, metrics in self.by_group.items()
            },
            "group_sizes": dict(self.group_sizes),
            "flagged": list(self.flagged),
            "summary": {m: e.to_dict() for m, e in self.summary.items()},
            "labels": dict(self.labels),
            "curves": {
                name: {k: [_num(v) for v in values] for k, values in curve.items()}
                for name, curve in self.curves.items()
            },
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricTable:
        """Inverse of `to_dict`."""

        def estimates(values: dict[str, Any]) -> dict[str, Estimate]:
            return {m: Estimate.from_dict(e) for m, e in values.items()}

        return cls(
            kind=data["kind"],
            overall=estimates(data["overall"]),
            by_group={g: estimates(ms) for g, ms in data.get("by_group", {}).items()},
            group_sizes={g: int(n) for g, n in data.get("group_sizes", {}).items()},
            flagged=list(data.get("flagged", [])),
            summary=estimates(data.get("summary", {})),
            labels=dict(data.get("labels", {})),
            curves={n: {k: list(v) for k, v in c.items()} for n, c in data.get("curves", {}).items()},
            notes=list(data.get("notes", [])),
        )
