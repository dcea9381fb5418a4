"""The embedded demo: base vs LoRA vs full fine-tuning on biased generated data, compared per group."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml

from fairlora.auditing.results import AuditResult
from fairlora.config import build_config
from fairlora.pipeline import train
from fairlora.runs import RunResult

# full fine-tuning moves every weight: a smaller learning rate than the adapter methods
METHOD_OVERRIDES = {"full": ["train.lr=5e-5"], "none": ["train.lr=2e-3"]}


def demo_config() -> dict:
    """The packaged demo config as a dict."""
    return yaml.safe_load(files("fairlora").joinpath("resources/demo.yaml").read_text())


def run_demo(output_dir: Path, methods: list[str], overrides: list[str]) -> list[RunResult]:
    """Train and evaluate each method on the demo config (fresh runs each time); return the results."""
    base = demo_config()
    build_config(base, overrides)  # fail on a bad override before anything trains
    results = []
    for method in methods:
        run_overrides = [
            f"method={method}",
            f"name=demo-{method}",
            f"output_dir={output_dir}",
            *METHOD_OVERRIDES.get(method, []),
            *overrides,
        ]
        results.append(train(base, run_overrides, overwrite=True))
    return results


def audit_demo(results: list[RunResult], output_dir: Path) -> AuditResult:
    """Audit the demo runs side by side (the first is the reference) into `output_dir/audit`."""
    from fairlora.auditing.run import audit

    return audit([r.run_dir for r in results if r.run_dir is not None], output_dir / "audit")
