"""fairlora: fair, efficient and collaborative low-rank adaptation of language models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RunConfig", "RunResult", "audit", "evaluate", "load_config", "sweep", "train"]

if TYPE_CHECKING:
    from fairlora.config import RunConfig, load_config
    from fairlora.report.results import RunResult


def train(config: Any, overrides: list[str] | None = None, **kwargs: Any) -> RunResult:
    """Fine-tune and evaluate one run (config: RunConfig, dict or YAML path); returns its results."""
    from fairlora.pipeline import train as run

    return run(config, overrides, **kwargs)


def evaluate(run_dir: Any) -> RunResult:
    """Evaluate a finished run again from its saved weights; returns its results."""
    from fairlora.pipeline import evaluate_run

    return evaluate_run(run_dir)


def audit(run_dirs: Any, out_dir: Any, overrides: list[str] | None = None, **kwargs: Any) -> Any:
    """Audit one or more run folders per group and write results.json + report.html to out_dir."""
    from fairlora.auditor import audit as run

    return run([run_dirs] if isinstance(run_dirs, str) else list(run_dirs), out_dir, overrides, **kwargs)


def sweep(config: Any, grid: list[str], overrides: list[str] | None = None, **kwargs: Any) -> Any:
    """Train a grid of runs (resumable) and summarise mean +- std over seeds."""
    from fairlora.sweep import sweep as run

    return run(config, grid, overrides, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("RunConfig", "load_config"):
        from fairlora import config

        return getattr(config, name)
    if name == "RunResult":
        from fairlora.report.results import RunResult

        return RunResult
    raise AttributeError(name)
