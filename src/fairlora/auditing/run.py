"""`fairlora audit`: every audit section of one or more runs, then results.json and the report.

Sections computed from a run's stored predictions (one prediction pass, written by `fairlora
train` / `fairlora eval`): utility and calibration per split, the loss membership attack. Sections
that need the model (LiRA shadows, generation, token probe, bias benchmarks) load it once and
cache their raw outputs under `<out>/cache/<run>/`, so a repeated audit only recomputes metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fairlora.auditing.results import AUDIT_FILE, AUDIT_KIND, AuditResult, RunAudit
from fairlora.config import RunConfig
from fairlora.errors import AuditError, ConfigError
from fairlora.metrics.calibration import calibration_table
from fairlora.metrics.membership import loss_attack_table
from fairlora.metrics.utility import utility_table
from fairlora.runs import CONFIG_FILE, group_columns, read_config, read_predictions

MODEL_SECTIONS = ("generation", "probe", "benchmarks")
AUDIT_OVERRIDE_PREFIXES = ("audit.", "eval.min_group_size")


def audit(
    run_dirs: list[str | Path], out_dir: str | Path, overrides: list[str] | None = None, progress: bool = True
) -> AuditResult:
    """Audit each run folder (the first is the reference of the comparison); writes the report to out_dir."""
    from fairlora.report.html import write_report

    if not run_dirs:
        raise AuditError("no run folder given: pass one or more folders written by `fairlora train`")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, [Path(d) for d in run_dirs])
    runs = [audit_run(Path(d), out_dir, overrides or [], progress) for d in run_dirs]
    _unique_names(runs)
    cfg = run_config(Path(run_dirs[0]), overrides or [])
    result = AuditResult(
        runs, options=cfg.audit.model_dump(mode="json") | {"min_group_size": cfg.eval.min_group_size}
    )
    write_report(result, out_dir)
    return result


def run_config(run_dir: Path, overrides: list[str]) -> RunConfig:
    """The run's resolved config plus audit.* / eval.min_group_size overrides."""
    for item in overrides:
        if not item.strip().startswith(AUDIT_OVERRIDE_PREFIXES):
            raise ConfigError(
                f"override {item!r}: an audit only takes audit.* and eval.min_group_size overrides; "
                f"other settings are fixed by the run (train a new run to change them)"
            )
    return read_config(run_dir, overrides)


def plan_sections(cfg: RunConfig, predictions: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(sections to compute, notes on what was skipped). Explicit sections must all apply."""
    splits = set(predictions["split"])
    classify = "pred" in predictions.columns
    if cfg.audit.sections is not None:
        return list(cfg.audit.sections), []
    sections, notes = ["utility"], []
    if classify:
        sections.append("calibration")
    else:
        notes.append("calibration skipped: a causal_lm run has no class probabilities")
    if {"train", "test"} <= splits:
        sections.append("membership")
    else:
        notes.append("membership skipped: the predictions lack the train or test split (eval.splits)")
    return sections, notes


def audit_run(run_dir: Path, out_dir: Path, overrides: list[str], progress: bool = True) -> RunAudit:
    """Every planned section of one run."""
    cfg = run_config(run_dir, overrides)
    predictions = read_predictions(run_dir)
    groups = group_columns(predictions)
    sections, notes = plan_sections(cfg, predictions)
    audit = RunAudit(cfg.name, cfg.method, cfg.model.name, cfg.data.name, cfg.task, str(run_dir), notes=notes)
    audit.notes += _empty_group_notes(predictions, groups)
    options = _table_options(cfg)
    test = predictions[predictions["split"] == "test"]
    for section in sections:
        if section == "utility":
            for split, rows in predictions.groupby("split", sort=False):
                audit.sections[f"utility/{split}"] = utility_table(rows, groups, **options)
        elif section == "calibration":
            source = f"run {run_dir}"
            audit.sections["calibration/test"] = calibration_table(test, groups, source=source, **options)
        elif section == "membership":
            audit.sections["membership/loss"] = loss_attack_table(predictions, groups, **options)
        elif section == "lira":
            from fairlora.auditing.shadows import lira_table

            audit.sections["membership/lira"] = lira_table(cfg, predictions, out_dir, progress)
    model_sections = [s for s in sections if s in MODEL_SECTIONS]
    if model_sections:
        from fairlora.auditing.model_sections import model_sections as compute

        audit.sections |= compute(cfg, model_sections, out_dir / "cache" / cfg.name, progress)
    return audit


def _table_options(cfg: RunConfig) -> dict[str, Any]:
    return {"min_group_size": cfg.eval.min_group_size, "n_boot": cfg.audit.n_boot, "seed": cfg.audit.seed}


def _empty_group_notes(predictions: pd.DataFrame, groups: list[str]) -> list[str]:
    notes = []
    for split, rows in predictions.groupby("split", sort=False):
        empty = [g for g in groups if not rows[g].any()]
        if empty:
            notes.append(f"{split}: groups with no members (reported as n=0, left out of summaries): {empty}")
    return notes


def _check_out_dir(out_dir: Path, run_dirs: list[Path]) -> None:
    """Never write the audit over a run folder or over a file that is not an earlier audit."""
    resolved = out_dir.resolve()
    if any(resolved == d.resolve() for d in run_dirs) or (out_dir / CONFIG_FILE).exists():
        raise AuditError(f"-o {out_dir} is a run folder; write the audit elsewhere, e.g. -o audits/<name>")
    existing = out_dir / AUDIT_FILE
    if existing.is_file():
        try:
            kind = json.loads(existing.read_text()).get("kind")
        except Exception:  # noqa: BLE001 - any unreadable file is not ours to replace
            kind = None
        if kind != AUDIT_KIND:
            raise AuditError(
                f"{existing} exists and is not a fairlora audit; choose another output folder (-o)"
            )


def _unique_names(runs: list[RunAudit]) -> None:
    """Runs with the same name (e.g. runs/a/lora, runs/b/lora) are told apart by their parent folder."""
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{Path(run.run_dir).parent.name}/{run.name}"
    if len({r.name for r in runs}) < len(runs):
        raise AuditError("the same run folder is given twice; pass each run once")
