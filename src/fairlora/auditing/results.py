"""The audit of several runs and its versioned JSON form (`<out>/results.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairlora.auditing.compare import (
    NO_CI,
    Comparison,
    Difference,
    compare_sections,
    comparison_from_dict,
    comparison_to_dict,
)
from fairlora.errors import AuditError
from fairlora.metrics.table import Estimate, MetricTable
from fairlora.storage import write_text_atomic

AUDIT_SCHEMA_VERSION = 2  # 2: "comparison" holds differences with CIs (1: point differences only)
AUDIT_KIND = "fairlora-audit"
AUDIT_FILE = "results.json"


@dataclass
class RunAudit:
    """Every audit section of one run.

    Section keys: "utility/<split>", "auc/<split>", "calibration/<split>", "membership/loss",
    "membership/lira", "generation/<prompt set>", "probe/answer_order", "benchmark/<name>".
    """

    name: str
    method: str
    model: str
    dataset: str
    task: str
    run_dir: str
    sections: dict[str, MetricTable] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        info = {k: getattr(self, k) for k in ("name", "method", "model", "dataset", "task", "run_dir")}
        sections = {key: table.to_dict() for key, table in self.sections.items()}
        return info | {"sections": sections, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunAudit:
        """Inverse of `to_dict`."""
        sections = {key: MetricTable.from_dict(t) for key, t in data.get("sections", {}).items()}
        info = [data[k] for k in ("name", "method", "model", "dataset", "task", "run_dir")]
        return cls(*info, sections=sections, notes=list(data.get("notes", [])))


@dataclass
class AuditResult:
    """The audits of one or more runs; the first run is the reference of the comparison.

    `options` records the settings every run was audited with; `comparison` holds each other run's
    overall and summary figures minus the reference's, with paired bootstrap CIs where the runs'
    rows align (see `fairlora.auditing.compare`).
    """

    runs: list[RunAudit]
    options: dict[str, Any] = field(default_factory=dict)
    comparison: Comparison = field(default_factory=dict)

    def section_keys(self) -> list[str]:
        """Every section key present in any run, in first-seen order."""
        keys: dict[str, None] = {}
        for run in self.runs:
            keys.update(dict.fromkeys(run.sections))
        return list(keys)

    def compare(self, level: float) -> None:
        """Fill `comparison` from the runs' resampled figures; note sections whose rows do not align."""
        sections = {run.name: run.sections for run in self.runs}
        self.comparison, notes = compare_sections(sections, level)
        for run in self.runs:
            run.notes += notes.get(run.name, [])

    def difference(self, key: str, metric: str, run: str, summary: bool = False) -> Difference | None:
        """A run's figure minus the reference's: the stored one with its CI, else the point difference."""
        part = "summary" if summary else "overall"
        stored = self.comparison.get(key, {}).get(part, {}).get(metric, {}).get(run)
        if stored is not None or not self.runs:
            return stored
        reference = self.runs[0].sections.get(key)
        other = next((r.sections.get(key) for r in self.runs if r.name == run), None)
        if reference is None or other is None:
            return None
        return _point_difference(getattr(reference, part).get(metric), getattr(other, part).get(metric))

    def differences(self) -> Comparison:
        """Every other run's overall and summary figures minus the reference's (stored, else points)."""
        out: Comparison = {}
        for key in self.section_keys():
            reference = self.runs[0].sections.get(key)
            for part in ("overall", "summary"):
                for metric in getattr(reference, part) if reference else {}:
                    for run in self.runs[1:]:
                        found = self.difference(key, metric, run.name, part == "summary")
                        if found is not None:
                            out.setdefault(key, {}).setdefault(part, {}).setdefault(metric, {})[run.name] = (
                                found
                            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the schema version and the run comparison."""
        return {
            "schema_version": AUDIT_SCHEMA_VERSION,
            "kind": AUDIT_KIND,
            "options": self.options,
            "reference": self.runs[0].name if self.runs else None,
            "runs": [run.to_dict() for run in self.runs],
            "comparison": comparison_to_dict(self.differences()),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        """Inverse of `to_dict`."""
        runs = [RunAudit.from_dict(r) for r in data["runs"]]
        return cls(runs, dict(data.get("options", {})), comparison_from_dict(data.get("comparison", {})))

    def save(self, out_dir: Path) -> Path:
        """Write `results.json` atomically into `out_dir`."""
        path = Path(out_dir) / AUDIT_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _point_difference(base: Estimate | None, other: Estimate | None) -> Difference | None:
    if base is None or other is None:
        return None
    if base.value is None or other.value is None:
        return Difference(Estimate(None, n=other.n), NO_CI)
    return Difference(Estimate(other.value - base.value, n=other.n), NO_CI)


def load_audit(out_dir: Path) -> AuditResult:
    """Read an audit's results.json with a clear error when absent, corrupt or of another schema."""
    path = Path(out_dir) / AUDIT_FILE
    if not path.is_file():
        raise AuditError(f"{path} not found: run `fairlora audit RUN_DIR ... -o {out_dir}` first")
    try:
        data = json.loads(path.read_text())
        if data.get("kind") != AUDIT_KIND or data.get("schema_version") != AUDIT_SCHEMA_VERSION:
            raise AuditError(
                f"{path}: not a fairlora audit of schema {AUDIT_SCHEMA_VERSION} "
                f"(kind {data.get('kind')!r}, schema_version {data.get('schema_version')!r}); "
                f"re-create it with `fairlora audit`"
            )
        return AuditResult.from_dict(data)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise AuditError(f"{path} is corrupt ({exc}); re-create it with `fairlora audit`") from None
