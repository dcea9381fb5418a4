"""Offline LiRA: K shadow models trained through the normal pipeline, a Gaussian per audit example.

The audit set is a held-back slice of the run's training rows (members: the run trained on them)
plus a slice of its test rows (non-members). Each shadow trains like the run, on a random half of
the remaining training rows, so every shadow is OUT for every audit example. A shadow is an
ordinary run folder under `<audit out>/shadows/<run>/`: a finished shadow is reused, a killed one
resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairlora.config import RunConfig, build_config
from fairlora.data import TaskData, load_task_data
from fairlora.errors import AuditError, ConfigError, RunDirError
from fairlora.metrics.bootstrap import rows_key
from fairlora.metrics.membership import attack_table, lira_scores, lira_statistic
from fairlora.metrics.table import MetricTable
from fairlora.runs import PREDICTIONS_FILE
from fairlora.tasks import get_task

MEMBER = "member"


def audit_set(data: TaskData, cfg: RunConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(audit rows with a `member` column, the training pool the shadows draw from)."""
    lira = cfg.audit.lira
    rng = np.random.default_rng(cfg.audit.seed)
    members = data.train.sample(frac=lira.member_fraction, random_state=rng.integers(2**31))
    nonmembers = data.test.sample(frac=lira.nonmember_fraction, random_state=rng.integers(2**31))
    if len(members) < 2 or len(nonmembers) < 2:
        raise AuditError(
            f"LiRA: the audit set of {cfg.name} has {len(members)} members and {len(nonmembers)} "
            f"non-members; raise audit.lira.member_fraction / nonmember_fraction or use more data"
        )
    frame = pd.concat([members.assign(**{MEMBER: True}), nonmembers.assign(**{MEMBER: False})])
    pool = data.train.drop(index=members.index)
    return frame.reset_index(drop=True), pool


def lira_table(
    cfg: RunConfig, predictions: pd.DataFrame, out_dir: Path, progress: bool = True
) -> MetricTable:
    """Train (or reuse) K shadows, score the run's audit examples, and report the attack per group."""
    if not get_task(cfg.task).classifies:
        raise AuditError(
            f"LiRA needs class probabilities; {cfg.name} is a {cfg.task} run. Drop `lira` from "
            f"audit.sections or audit a classification run (classification, image_classification)"
        )
    data = load_task_data(cfg.data, cfg.task, cfg.seed)
    frame, pool = audit_set(data, cfg)
    target = _target_statistics(predictions, frame)
    shadows = np.stack(_train_shadows(cfg, pool, frame, data, Path(out_dir), progress))
    scores = lira_scores(target, shadows, global_variance=cfg.audit.lira.global_variance)
    table = attack_table(
        frame[MEMBER].to_numpy(),
        scores,
        frame[data.group_columns].astype(bool),
        cfg.eval.min_group_size,
        cfg.audit.n_boot,
        cfg.audit.seed,
        cfg.audit.ci_level,
    )
    table.rows = rows_key(frame["id"], frame[MEMBER])
    return table


def _statistics(predictions: pd.DataFrame) -> np.ndarray:
    probs = predictions[[c for c in predictions.columns if c.startswith("prob_")]].to_numpy()
    return lira_statistic(probs, predictions["label"].to_numpy())


def _target_statistics(predictions: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """The run's statistic for each audit row, from its stored train/test predictions."""
    indexed = predictions.assign(id=predictions["id"].astype(str)).set_index(["split", "id"])
    keys = pd.MultiIndex.from_arrays(
        [np.where(frame[MEMBER], "train", "test"), frame["id"].astype(str)], names=["split", "id"]
    )
    missing = keys.difference(indexed.index)
    if len(missing):
        raise AuditError(
            f"LiRA: {len(missing)} audit rows (e.g. {missing[0]}) are not in the run's predictions; "
            f"evaluate the run with eval.splits=[test, train] (`fairlora eval RUN_DIR`)"
        )
    return _statistics(indexed.loc[keys].reset_index())


def _train_shadows(
    cfg: RunConfig, pool: pd.DataFrame, frame: pd.DataFrame, data: TaskData, out_dir: Path, progress: bool
) -> list[np.ndarray]:
    """The K shadows' statistics, trained one after another or as Ray tasks (audit.engine)."""
    audit = cfg.audit
    ray = audit.engine == "ray"
    bars = progress and not ray  # Ray tasks print one line per shadow, not a bar per training
    shadows = [_shadow_run(cfg, k, pool, frame, data, out_dir, bars) for k in range(audit.lira.shadows)]
    if not ray:
        return [shadow_statistics(shadow, shadow_data) for shadow, shadow_data in shadows]
    from fairlora.ray_engine import Job, RayOptions, run_jobs

    jobs = [
        Job(shadow.name, shadow_statistics, {"shadow": shadow.model_dump(mode="json"), "data": shadow_data})
        for shadow, shadow_data in shadows
    ]
    options = RayOptions(audit.ray_address, audit.cpus_per_run, audit.gpus_per_run)
    outputs = run_jobs(jobs, options, Path(out_dir) / "shadows" / cfg.name, progress=progress, what="shadow")
    return [output.value for output in outputs]


def _shadow_run(
    cfg: RunConfig,
    k: int,
    pool: pd.DataFrame,
    frame: pd.DataFrame,
    data: TaskData,
    out_dir: Path,
    progress: bool,
) -> tuple[RunConfig, TaskData]:
    """Shadow k's config and data: trained like the run on a random half of the pool."""
    shadow_dir = Path(out_dir) / "shadows" / cfg.name
    # the audit's settings do not change a shadow: a new n_boot or min_group_size reuses it
    settings = cfg.model_dump(mode="json", exclude={"audit": True, "eval": {"min_group_size"}})
    shadow = build_config(
        settings,
        [
            f"name=shadow-{k}",
            f"output_dir={shadow_dir}",
            f"seed={cfg.seed + 1 + k}",
            "eval.splits=[test]",
            f"train.progress_bar={str(progress).lower()}",
        ],
    )
    half = pool.sample(frac=0.5, random_state=cfg.audit.seed * 1009 + k)
    audit_rows = frame.drop(columns=MEMBER)
    return shadow, TaskData(data.name, half, audit_rows, data.group_columns, data.label_names)


def shadow_statistics(shadow: RunConfig | dict[str, Any], data: TaskData) -> np.ndarray:
    """Train one shadow on its data (or reuse it) and score the audit rows (its test split)."""
    from fairlora.pipeline import train  # the audit reaches back only for shadows

    shadow = shadow if isinstance(shadow, RunConfig) else build_config(shadow)  # a dict from a Ray task
    try:
        train(shadow, resume=True, data=data)
    except (ConfigError, RunDirError):  # a shadow of other settings: train it again
        train(shadow, overwrite=True, data=data)
    predictions = pd.read_parquet(shadow.run_dir / PREDICTIONS_FILE)
    if (
        len(predictions) != len(data.test)
        or (predictions["id"].astype(str).to_numpy() != data.test["id"].astype(str)).any()
    ):
        train(shadow, overwrite=True, data=data)  # it was trained for another audit set
        predictions = pd.read_parquet(shadow.run_dir / PREDICTIONS_FILE)
    return _statistics(predictions)
