"""fairlora: fair, efficient and collaborative low-rank adaptation of language models."""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from fairlora.quant import guard_bitsandbytes_import

guard_bitsandbytes_import()  # bitsandbytes, imported by peft, must not wait on a kernel hub download
__version__ = "0.1.0"
__all__ = [
    "RunConfig",
    "RunResult",
    "audit",
    "collab",
    "evaluate",
    "export",
    "load_config",
    "sweep",
    "train",
]

if TYPE_CHECKING:
    from fairlora.config import RunConfig, load_config
    from fairlora.runs import RunResult


def train(config: Any, overrides: list[str] | None = None, **kwargs: Any) -> RunResult:
    """Fine-tune and evaluate one run (config: RunConfig, dict or YAML path); returns its results."""
    from fairlora.pipeline import train as run

    return run(config, overrides, **kwargs)


def evaluate(run_dir: Any, data: Any = None, overrides: list[str] | None = None, **kwargs: Any) -> RunResult:
    """Evaluate a finished run again from its saved weights; with `data`, on another dataset.

    With `data` (a dataset name, table file, YAML file with a data: section, or mapping of data keys)
    the results are stored as the evaluation set RUN/evals/<name>/; keyword arguments `name`,
    `label_map` (e.g. "hateful=1,non-hateful=0") and `overwrite` as for `fairlora eval --data`.
    """
    if data is None and not overrides and not kwargs:
        from fairlora.pipeline import evaluate_run

        return evaluate_run(run_dir)
    from fairlora.evalsets import evaluate_on

    return evaluate_on(run_dir, data, overrides, **kwargs)


def sweep(config: Any, grid: list[str], overrides: list[str] | None = None, **kwargs: Any) -> Any:
    """Train a grid of runs (resumable) and summarise mean +- std over seeds."""
    from fairlora.sweeps import sweep as run

    return run(config, grid, overrides, **kwargs)


def audit(targets: Any, out_dir: Any, overrides: list[str] | None = None, **kwargs: Any) -> Any:
    """Audit run folders or predictions tables per group; writes results.json and report.html to out_dir.

    `targets`: a run folder, a DataFrame of predictions, {name: DataFrame}, or a list of these.
    Predictions take the column keywords of the CLI: label=, prob= (or prob_prefix=), groups=[...],
    intersections=[[...]], pred=, id=, member=, loss=, positive=, threshold=; predictions=[files] adds
    tables from files ("[name=]path").
    """
    from fairlora.auditing import audit as run
    from fairlora.auditing.predictions import PredictionColumns, split_targets

    keys = {*PredictionColumns.__dataclass_fields__, "predictions"}
    columns = {k: kwargs.pop(k) for k in list(kwargs) if k in keys}
    run_dirs, tables = split_targets(targets, columns)
    return run(run_dirs, out_dir, overrides, predictions=tables, **kwargs)


def collab(
    config: Any, overrides: list[str] | None = None, *, overwrite: bool = False, resume: bool = False
) -> list[dict[str, Any]]:
    """Collaborative fine-tuning (config: CollabConfig, dict or YAML path); returns strategy summaries."""
    from rich.console import Console

    from fairlora.collab.command import run_collab
    from fairlora.collab.config import CollabConfig, build_collab_config, load_collab_config

    if isinstance(config, CollabConfig):
        cfg = build_collab_config(config.to_dict(), overrides) if overrides else config
    elif isinstance(config, dict):
        cfg = build_collab_config(config, overrides)
    else:
        cfg = load_collab_config(config, overrides)
    return run_collab(cfg, overwrite=overwrite, resume=resume, console=Console(quiet=True))


def export(run_dir: Any, output: Any, *, merge: bool = False, overwrite: bool = False) -> Any:
    """Export a run's adapter in PEFT format, or merged into its base (merge=True); returns the folder."""
    from pathlib import Path

    from fairlora.export import export_run

    return export_run(Path(run_dir), Path(output), merge=merge, overwrite=overwrite)


class _Package(types.ModuleType):
    """The package keeps its functions `collab` and `export` when the same-named submodules are imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("collab", "export") and isinstance(value, types.ModuleType):
            return  # the submodule stays reachable as sys.modules["fairlora.<name>"] and by import
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in ("RunConfig", "load_config"):
        from fairlora import config

        return getattr(config, name)
    if name == "RunResult":
        from fairlora.runs import RunResult

        return RunResult
    raise AttributeError(name)
