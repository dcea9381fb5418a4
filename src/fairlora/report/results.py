"""The results of one run and their versioned JSON form (`results.json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairlora.audit.groups import GroupMetrics
from fairlora.errors import RunDirError
from fairlora.storage import write_text_atomic

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"  # the resolved config of a run
PREDICTIONS_FILE = "predictions.parquet"  # its one stored prediction pass


@dataclass
class RunResult:
    """What a run produced: per-split group metrics plus training facts."""

    name: str
    method: str
    model: str
    dataset: str
    task: str
    splits: dict[str, GroupMetrics]
    train: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None

    @property
    def test(self) -> GroupMetrics:
        """Metrics on the held-out split."""
        return self.splits["test"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with the schema version."""
        return {
            "schema_version": SCHEMA_VERSION,
            "run": {
                "name": self.name,
                "method": self.method,
                "model": self.model,
                "dataset": self.dataset,
                "task": self.task,
            },
            "train": self.train,
            "splits": {split: metrics.to_dict() for split, metrics in self.splits.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: Path | None = None) -> RunResult:
        """Inverse of `to_dict`."""
        run = data["run"]
        splits = {split: GroupMetrics.from_dict(m) for split, m in data["splits"].items()}
        return cls(
            run["name"],
            run["method"],
            run["model"],
            run["dataset"],
            run["task"],
            splits,
            data.get("train", {}),
            run_dir,
        )

    def save(self, run_dir: Path) -> Path:
        """Write `results.json` into `run_dir` atomically."""
        path = run_dir / RESULTS_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def load_results(run_dir: Path) -> RunResult:
    """Read a run's results.json, with a clear error when absent, corrupt or of another schema."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise RunDirError(f"{path} not found: the run has not finished; run `fairlora eval {run_dir}`")
    try:
        data = json.loads(path.read_text())
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RunDirError(
                f"{path}: schema_version {version!r}, this fairlora reads {SCHEMA_VERSION}; "
                f"re-create it with `fairlora eval {run_dir}`"
            )
        return RunResult.from_dict(data, Path(run_dir))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise RunDirError(f"{path} is corrupt ({exc}); re-create it with `fairlora eval {run_dir}`") from None
