"""fairlora: fair, efficient and collaborative low-rank adaptation of language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fairlora.quant import guard_bitsandbytes_import

guard_bitsandbytes_import()  # bitsandbytes, imported by peft, must not wait on a kernel hub download
__version__ = "0.1.0"
__all__ = ["RunConfig", "RunResult", "audit", "evaluate", "load_config", "sweep", "train"]

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


def __getattr__(name: str) -> Any:
    if name in ("RunConfig", "load_config"):
        from fairlora import config

        return getattr(config, name)
    if name == "RunResult":
        from fairlora.runs import RunResult

        return RunResult
    raise AttributeError(name)
