"""The run folder: its file names, its weights folder, and reading its config, predictions and results.

Every stage that reads a run (pipeline, audit, LiRA shadows, sweeps) goes through this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fairlora.config import RunConfig, build_config
from fairlora.errors import RunDirError
from fairlora.metrics.table import MetricTable
from fairlora.storage import write_text_atomic

SCHEMA_VERSION = 2  # 2: each split is a MetricTable (estimates with CIs); 1 held point values only
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"  # the resolved config of a run
PREDICTIONS_FILE = "predictions.parquet"  # its one stored prediction pass
TRAIN_LOG_FILE = "train_log.json"
CHECKPOINTS_DIR = "checkpoints"
EVALS_DIR = "evals"  # evals/<as>/: the run evaluated on another dataset (`fairlora eval RUN --data ...`)
EVAL_SET_FILE = "eval.yaml"  # an evaluation set's resolved data config and label mapping


@dataclass
class RunResult:
    """What a run produced: per-split utility tables (see `fairlora.metrics.utility`) plus training facts."""

    name: str
    method: str
    model: str
    dataset: str
    task: str
    splits: dict[str, MetricTable]
    train: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    label_names: list[str] = field(default_factory=list)  # the model's classes, index = class id

    @property
    def test(self) -> MetricTable:
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
                "label_names": self.label_names,
            },
            "train": self.train,
            "splits": {split: metrics.to_dict() for split, metrics in self.splits.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], run_dir: Path | None = None) -> RunResult:
        """Inverse of `to_dict`."""
        run = data["run"]
        splits = {split: MetricTable.from_dict(m) for split, m in data["splits"].items()}
        return cls(
            run["name"],
            run["method"],
            run["model"],
            run["dataset"],
            run["task"],
            splits,
            data.get("train", {}),
            run_dir,
            list(run.get("label_names", [])),
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


def weights_dir(run_dir: Path, method: str) -> Path:
    """The folder a run of `method` saves its trained weights in (adapter/, model/, head/ ...)."""
    from fairlora.methods import get_method

    return Path(run_dir) / get_method(method).weights_dir


def read_config(
    run_dir: str | Path, overrides: list[str] | None = None, without: tuple[str, ...] = ()
) -> RunConfig:
    """A run's resolved config (its folder is where it lies now), plus `overrides`.

    Top-level sections named in `without` are not read: they take their defaults (an audit passes
    ("audit",), as its settings apply equally to every run it compares).
    """
    run_dir = Path(run_dir)
    file = run_dir / CONFIG_FILE
    if not file.is_file():
        raise RunDirError(
            f"{file} not found: {run_dir} is not a fairlora run folder (written by `fairlora train`)"
        )
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RunDirError(f"{file}: not valid YAML ({exc}); the run folder is damaged") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{file}: not a mapping of config keys; the run folder is damaged")
    data = {key: value for key, value in data.items() if key not in without}
    return build_config(data, [*(overrides or []), f"output_dir={run_dir.parent}", f"name={run_dir.name}"])


def read_predictions(run_dir: str | Path) -> pd.DataFrame:
    """The run's stored prediction table, with a clear error when absent or unreadable."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise RunDirError(
            f"{path} not found: the run has no stored predictions (it did not finish); "
            f"create them with `fairlora eval {run_dir}`"
        )
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        raise RunDirError(
            f"{path} is unreadable ({exc}); re-create it with `fairlora eval {run_dir}`"
        ) from None
    missing = {"id", "split", "loss"} - set(table.columns)
    if missing:
        raise RunDirError(
            f"{path} lacks columns {sorted(missing)}; re-create it with `fairlora eval {run_dir}`"
        )
    return table


def eval_set_dirs(run_dir: str | Path) -> dict[str, Path]:
    """The run's evaluation sets on other data (name -> folder), in name order."""
    root = Path(run_dir) / EVALS_DIR
    if not root.is_dir():
        return {}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {folder.name: folder for folder in folders if (folder / PREDICTIONS_FILE).is_file()}


def group_columns(predictions: pd.DataFrame) -> list[str]:
    """The boolean group columns of a prediction table."""
    return [c for c in predictions.columns if pd.api.types.is_bool_dtype(predictions[c])]
