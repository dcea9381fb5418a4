"""A run's evaluation sets on other data (RUN/evals/<as>/, from `fairlora eval --data`) in its audit.

Each set gets the sections its stored predictions allow, under its own name: `utility/<as>`,
`auc/<as>`, `calibration/<as>`, with the set's own groups. Membership needs the run's train split,
so it is computed on the run's own data only.
"""

from __future__ import annotations

from pathlib import Path

from fairlora.auditing.results import RunAudit
from fairlora.auditing.settings import AuditSettings
from fairlora.errors import RunDirError
from fairlora.evalsets import RUN_SPLITS, read_set_record
from fairlora.runs import eval_set_dirs, group_columns, read_predictions

EVAL_SET_SECTIONS = ("utility", "auc", "calibration")


def add_eval_sets(audit: RunAudit, run_dir: Path, sections: list[str], settings: AuditSettings) -> None:
    """Add the planned prediction sections of each evaluation set of `run_dir` to `audit`, with a note."""
    from fairlora.auditing.run import prediction_sections

    wanted = [s for s in sections if s in EVAL_SET_SECTIONS]
    for set_name, folder in eval_set_dirs(run_dir).items():
        if set_name in RUN_SPLITS:
            audit.notes.append(f"evaluation set {folder} skipped: its name is one of the run's splits")
            continue
        try:
            predictions = read_predictions(folder).assign(split="test")  # sections read the "test" rows
        except RunDirError as error:
            raise RunDirError(
                f"evaluation set {set_name}: {error}. Fix: write it again with `fairlora eval {run_dir} "
                f"--data ... --as {set_name} --overwrite`, or remove {folder}"
            ) from None
        tables = prediction_sections(wanted, predictions, settings, f"evaluation set {folder}")
        audit.sections |= {f"{key.split('/', 1)[0]}/{set_name}": table for key, table in tables.items()}
        record = read_set_record(folder)
        groups = group_columns(predictions)
        audit.notes.append(
            f"evaluation set {set_name}: {record.get('source', folder)}, {len(predictions)} rows, "
            f"{len(groups)} groups ({', '.join(wanted)}; no membership: the set has no train split)"
        )
