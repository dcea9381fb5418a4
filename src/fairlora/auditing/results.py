"""The audit of several runs and its versioned JSON form (`<out>/results.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairlora.errors import AuditError
from fairlora.metrics.table import MetricTable
from fairlora.storage import write_text_atomic

AUDIT_SCHEMA_VERSION = 1
AUDIT_KIND = "fairlora-audit"
AUDIT_FILE = "results.json"


@dataclass
class RunAudit:
    """Every audit section of one run.

    Section keys: "utility/<split>", "calibration/<split>", "membership/loss", "membership/lira",
    "generation/<prompt set>", "probe/answer_order", "benchmark/<name>".
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
    """The audits of one or more runs; the first run is the reference of the comparison."""

    runs: list[RunAudit]
    options: dict[str, Any] = field(default_factory=dict)

    def section_keys(self) -> list[str]:
        """Every section key present in any run, in first-seen order."""
        keys: dict[str, None] = {}
        for run in self.runs:
            keys.update(dict.fromkeys(run.sections))
        return list(keys)

    def comparison(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """section -> metric -> run name -> overall value minus the reference run's (None if absent)."""
        if not self.runs:
            return {}
        reference = self.runs[0]
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        for key in self.section_keys():
            base = reference.sections.get(key)
            metrics = list(base.overall) if base else []
            out[key] = {
                m: {run.name: _delta(run.sections.get(key), base, m) for run in self.runs} for m in metrics
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the schema version and the run comparison."""
        return {
            "schema_version": AUDIT_SCHEMA_VERSION,
            "kind": AUDIT_KIND,
            "options": self.options,
            "reference": self.runs[0].name if self.runs else None,
            "runs": [run.to_dict() for run in self.runs],
            "comparison": self.comparison(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditResult:
        """Inverse of `to_dict`."""
        return cls([RunAudit.from_dict(r) for r in data["runs"]], dict(data.get("options", {})))

    def save(self, out_dir: Path) -> Path:
        """Write `results.json` atomically into `out_dir`."""
        path = Path(out_dir) / AUDIT_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def _delta(table: MetricTable | None, base: MetricTable | None, metric: str) -> float | None:
    if table is None or base is None or metric not in table.overall or metric not in base.overall:
        return None
    value, reference = table.overall[metric].value, base.overall[metric].value
    return None if value is None or reference is None else value - reference


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
