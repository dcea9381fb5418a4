"""`fairlora audit`: every audit section of one or more runs, then results.json and the report.

Sections computed from a run's stored predictions (one prediction pass, written by `fairlora
train` / `fairlora eval`): utility per split, threshold-free bias AUCs (binary classification) and
calibration on the test split, the loss membership attack. Sections that need the model (LiRA
shadows, generation, token probe, bias benchmarks) load it once and cache their raw outputs under
`<out>/cache/<run>/`, so a repeated audit only recomputes metrics. One set of settings (see
`fairlora.auditing.settings`) applies to every run, and the runs' differences to the first run get
paired bootstrap CIs where their rows align.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fairlora.auditing.predictions import MEMBERSHIP_NOTE, MODEL_SECTIONS_NOTE, PredictionsTable
from fairlora.auditing.results import AUDIT_FILE, AUDIT_KIND, AuditResult, RunAudit
from fairlora.auditing.settings import AuditSettings, audit_settings, run_config
from fairlora.data.groups import missing_counts
from fairlora.errors import AuditError
from fairlora.metrics.auc import auc_table
from fairlora.metrics.bootstrap import rows_key
from fairlora.metrics.calibration import calibration_table
from fairlora.metrics.membership import loss_attack_table
from fairlora.metrics.table import MetricTable
from fairlora.metrics.utility import utility_table
from fairlora.runs import CONFIG_FILE, group_columns, read_predictions

MODEL_SECTIONS = ("generation", "probe", "benchmarks")


def audit(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    overrides: list[str] | None = None,
    progress: bool = True,
    config_file: str | Path | None = None,
    predictions: list[PredictionsTable] | None = None,
) -> AuditResult:
    """Audit each run folder, then each predictions table (the first is the reference of the comparison).

    The settings come from the defaults, the `audit:` section of `config_file` (a YAML file) and the
    audit.* / eval.min_group_size `overrides`, and apply to every run alike; they are recorded under
    "options" in results.json. A run's own `audit:` section is not read. The report goes to out_dir.
    """
    from fairlora.report.html import write_report

    if not run_dirs and not predictions:
        raise AuditError(
            "nothing to audit: pass run folders written by `fairlora train`, or --predictions FILE"
        )
    settings = audit_settings(overrides, config_file)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, [Path(d) for d in run_dirs])
    tables = [(table, plan_table(settings, table)) for table in predictions or []]
    runs = [audit_run(Path(d), out_dir, settings, progress) for d in run_dirs]
    runs += [audit_table(table, plan, settings) for table, plan in tables]
    _unique_names(runs)
    result = AuditResult(runs, options=settings.record())
    result.compare(settings.audit.ci_level)
    write_report(result, out_dir)
    return result


def _binary(predictions: pd.DataFrame) -> bool:
    return sorted(c for c in predictions.columns if str(c).startswith("prob_")) == ["prob_0", "prob_1"]


def plan_sections(explicit: list[str] | None, predictions: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(sections to compute, notes on what was skipped). Explicit sections (audit.sections) all apply."""
    splits = set(predictions["split"])
    classify = "pred" in predictions.columns
    if explicit is not None:
        return list(explicit), []
    sections, notes = ["utility"], []
    if classify:
        sections.append("calibration")
    else:
        notes.append("calibration skipped: a causal_lm run has no class probabilities")
    if _binary(predictions):
        sections.append("auc")
    else:
        reason = "a causal_lm run has no class probabilities" if not classify else "the task is not binary"
        notes.append(f"auc skipped: subgroup / BPSN / BNSP AUCs need a binary classifier ({reason})")
    if {"train", "test"} <= splits:
        sections.append("membership")
    else:
        notes.append("membership skipped: the predictions lack the train or test split (eval.splits)")
    return sections, notes


def _stamped(table: MetricTable, rows: pd.DataFrame) -> MetricTable:
    """The table with the fingerprint of the rows it resampled (ids and labels: pairs runs in comparisons)."""
    labels = [rows["label"]] if "label" in rows.columns else []
    table.rows = rows_key(rows["split"], rows["id"], *labels)
    return table


def prediction_sections(
    sections: list[str], predictions: pd.DataFrame, settings: AuditSettings, source: str
) -> dict[str, MetricTable]:
    """The sections computed from stored predictions alone: utility, auc, calibration, membership."""
    groups = group_columns(predictions)
    options = settings.table_options()
    test = predictions[predictions["split"] == "test"]
    out: dict[str, MetricTable] = {}
    if "utility" in sections:
        for split, rows in predictions.groupby("split", sort=False):
            out[f"utility/{split}"] = _stamped(utility_table(rows, groups, **options), rows)
    if "auc" in sections:
        out["auc/test"] = _stamped(auc_table(test, groups, source=source, **options), test)
    if "calibration" in sections:
        out["calibration/test"] = _stamped(calibration_table(test, groups, source=source, **options), test)
    if "membership" in sections:
        rows = predictions[predictions["split"].astype(str).isin(["train", "test"])]
        out["membership/loss"] = _stamped(loss_attack_table(predictions, groups, **options), rows)
    return out


def audit_run(run_dir: Path, out_dir: Path, settings: AuditSettings, progress: bool = True) -> RunAudit:
    """Every planned section of one run, with the audit's settings."""
    cfg = run_config(run_dir, settings)
    predictions = read_predictions(run_dir)
    sections, notes = plan_sections(cfg.audit.sections, predictions)
    audit = RunAudit(cfg.name, cfg.method, cfg.model.name, cfg.data.name, cfg.task, str(run_dir), notes=notes)
    audit.notes += group_notes(predictions, group_columns(predictions))
    audit.sections = prediction_sections(sections, predictions, settings, f"run {run_dir}")
    if "lira" in sections:
        from fairlora.auditing.shadows import lira_table

        audit.sections["membership/lira"] = lira_table(cfg, predictions, out_dir, progress)
    model_sections = [s for s in sections if s in MODEL_SECTIONS]
    if model_sections:
        from fairlora.auditing.model_sections import model_sections as compute

        audit.sections |= compute(cfg, model_sections, out_dir / "cache" / cfg.name, progress)
    from fairlora.auditing.evalsets import add_eval_sets

    add_eval_sets(audit, run_dir, sections, settings)  # RUN/evals/<as>/: sections <section>/<as>
    return audit


def plan_table(settings: AuditSettings, table: PredictionsTable) -> tuple[list[str], list[str]]:
    """The sections a predictions table gets; model sections asked for by name are refused."""
    explicit = settings.audit.sections
    needs_model = [s for s in explicit or [] if s in (*MODEL_SECTIONS, "lira")]
    if needs_model:
        raise AuditError(
            f"audit.sections: {needs_model} need the model, and --predictions {table.source} has none; "
            f"fix: leave them out, or audit a run folder"
        )
    sections, notes = plan_sections(explicit, table.frame)
    notes = [n if not n.startswith("membership") else MEMBERSHIP_NOTE for n in notes]
    return sections, [*notes, MODEL_SECTIONS_NOTE]


def audit_table(
    table: PredictionsTable, plan: tuple[list[str], list[str]], settings: AuditSettings
) -> RunAudit:
    """Every planned section of a predictions table (see `fairlora.auditing.predictions`)."""
    sections, notes = plan
    audit = RunAudit(table.name, "-", "-", table.source, "classification", table.source)
    audit.notes = [*table.notes, *notes, *group_notes(table.frame, table.groups)]
    audit.sections = prediction_sections(sections, table.frame, settings, f"predictions {table.source}")
    return audit


def group_notes(predictions: pd.DataFrame, groups: list[str]) -> list[str]:
    """Per split: groups with no members, and rows in no group of a categorical feature (value missing)."""
    notes = []
    for split, rows in predictions.groupby("split", sort=False):
        empty = [g for g in groups if not rows[g].any()]
        if empty:
            notes.append(f"{split}: groups with no members (reported as n=0, left out of summaries): {empty}")
        for feature, count in missing_counts(rows, groups).items():
            notes.append(
                f"{split}: {count} of {len(rows)} rows have no {feature!r} value (in no {feature} group)"
            )
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
