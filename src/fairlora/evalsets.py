"""A finished run evaluated on another dataset: `fairlora eval RUN --data NAME --as SET`.

Every row of the other dataset (after data.max_examples) is predicted by the run's trained model,
its labels mapped onto the run's classes by name or by `--label-map`, and the result stored as an
evaluation set of the run: `RUN/evals/<SET>/` with predictions.parquet (split = SET), results.json
(per-group utility) and eval.yaml (the resolved data config and the label mapping). The folder is
written atomically; the run's own predictions and results are never touched. `fairlora audit RUN`
reports each evaluation set next to the run's own splits.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fairlora.config import DataConfig, build_config, read_yaml_mapping
from fairlora.data.registry import load_prepared
from fairlora.data.types import LABEL, Prepared
from fairlora.errors import ConfigError, DataError, RunDirError
from fairlora.metrics.utility import utility_table
from fairlora.runs import (
    EVAL_SET_FILE,
    EVALS_DIR,
    PREDICTIONS_FILE,
    RunResult,
    read_config,
)
from fairlora.storage import write_dir_atomic
from fairlora.tasks import get_task
from fairlora.tasks.predict import predict_frame

RUN_SPLITS = ("train", "val", "test")  # the run's own splits: an evaluation set may not take their names
LabelMap = dict[str, str | int]


def evaluate_on(
    run_dir: str | Path,
    data: str | Path | dict[str, Any] | DataConfig | None = None,
    overrides: list[str] | None = None,
    *,
    name: str | None = None,
    label_map: LabelMap | str | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Evaluate a finished run on another dataset; writes RUN/evals/<name>/ and returns its results.

    `data`: a dataset name (registered, a local table, an HF id), a YAML file with a `data:` section,
    a mapping of data keys, or a DataConfig; `overrides`: data.* / eval.* / model.max_length key=value pairs.
    `name` defaults to the dataset's name; `label_map` maps the data's labels to the run's classes
    (names or class ids), e.g. "hateful=1,non-hateful=0".
    """
    from fairlora.pipeline import (
        BOOTSTRAP_SEED,
        load_trained_model,
        run_label_names,
        trained_weights,
        with_generation_scores,
    )
    from fairlora.tasks.codegen import check_generation_options

    data_overrides, eval_overrides = _split_overrides(overrides or [])
    requested_map = parse_label_map(label_map)  # a malformed map fails before any data is read
    cfg = read_config(run_dir, eval_overrides)
    trained_weights(cfg)
    data_cfg = eval_data_config(data, data_overrides)
    set_name = check_set_name(name or default_set_name(data_cfg), cfg.run_dir, overwrite)
    prepared = load_prepared(data_cfg, cfg.task, cfg.seed)
    task = get_task(cfg.task)
    task.check_frame(prepared.frame)
    check_generation_options(cfg.eval, cfg.task, data_cfg.prompt_template, prepared.frame.columns)
    class_names = run_label_names(cfg)
    frame, mapping = prepared.frame, {}
    if task.classifies:
        mapping = label_mapping(prepared, class_names, requested_map, cfg.name)
        frame = frame.assign(**{LABEL: frame[LABEL].map(lambda i: mapping[prepared.label_names[i]])})
    loaded = load_trained_model(cfg, max(len(class_names), 2))
    if data_cfg.prompt_template == "chat":
        from fairlora.tasks.chat import chat_frame, check_chat_template

        check_chat_template(loaded.tokenizer, cfg.model.name)
        frame = chat_frame(frame, loaded.tokenizer)
    groups = list(prepared.group_columns)
    predictions = predict_frame(
        loaded.model,
        loaded.tokenizer,
        frame,
        cfg.task,
        cfg.model.max_length,
        cfg.eval.batch_size,
        set_name,
        groups,
        cfg.train.progress_bar,
    )
    predictions = with_generation_scores(cfg, loaded.model, loaded.tokenizer, frame, predictions)
    utility = utility_table(
        predictions,
        groups,
        min_group_size=cfg.eval.min_group_size,
        n_boot=cfg.eval.n_boot,
        seed=BOOTSTRAP_SEED,
    )
    result = RunResult(
        cfg.name,
        cfg.method,
        cfg.model.name,
        prepared.name,
        cfg.task,
        {set_name: utility},
        {},
        None,
        class_names,
    )
    record = {
        "as": set_name,
        "source": prepared.source,
        "rows": len(predictions),
        "labels": {label: class_names[i] for label, i in mapping.items()},
        "data": data_cfg.model_dump(mode="json"),
        "max_length": cfg.model.max_length,
    }
    folder = cfg.run_dir / EVALS_DIR / set_name
    write_dir_atomic(folder, lambda path: _write_set(path, predictions, result, record))
    result.run_dir = folder
    return result


def _write_set(path: Path, predictions: pd.DataFrame, result: RunResult, record: dict[str, Any]) -> None:
    predictions.to_parquet(path / PREDICTIONS_FILE, index=False)
    result.save(path)
    (path / EVAL_SET_FILE).write_text(yaml.safe_dump(record, sort_keys=False))


def _split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(data.* overrides, run overrides: eval.* and model.max_length); any other key is a ConfigError.

    model.max_length only sets how far the evaluation set's rows are encoded (longer prompts than the
    run trained on); the weights are the run's.
    """
    data = [o for o in overrides if o.strip().startswith("data.")]
    run = [o for o in overrides if o.strip().startswith(("eval.", "model.max_length="))]
    other = [o for o in overrides if o not in data and o not in run]
    if other:
        raise ConfigError(
            f"override {other[0]!r}: an evaluation on other data takes data.*, eval.* and "
            f"model.max_length overrides only (e.g. data.label_column=y, eval.batch_size=16); the run's "
            f"model and training are fixed"
        )
    return data, run


def eval_data_config(
    data: str | Path | dict[str, Any] | DataConfig | None, overrides: list[str]
) -> DataConfig:
    """The evaluation set's data config: --data (name, YAML data: section, mapping) + data.* overrides."""
    if isinstance(data, DataConfig):
        section: dict[str, Any] = data.model_dump()
    elif isinstance(data, dict):
        section = dict(data)
    elif data is None:
        section = {}
    elif str(data).lower().endswith((".yaml", ".yml")):
        loaded = read_yaml_mapping(data, "--data")
        if not isinstance(loaded.get("data"), dict):
            raise ConfigError(
                f"--data {data}: the file has no data: section; write the dataset's keys under data: "
                f"(as in a run config), or pass the dataset's name"
            )
        section = loaded["data"]
    else:
        section = {"name": str(data)}
    named = "name" in section or any(o.strip().startswith("data.name=") for o in overrides)
    if not named:
        raise ConfigError("no dataset to evaluate on: pass --data NAME (see `fairlora list datasets`)")
    return build_config({"data": section}, overrides).data


def default_set_name(data_cfg: DataConfig) -> str:
    """The name an evaluation set takes without --as: the dataset's file stem or id (plus hf_config)."""
    name = data_cfg.name.rstrip("/")
    stem = Path(name).stem if Path(name).suffix.lower() in (".csv", ".jsonl", ".json", ".parquet") else name
    stem = stem.rsplit("/", 1)[-1] + (f"-{data_cfg.hf_config}" if data_cfg.hf_config else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip("._-") or "eval"


def check_set_name(name: str, run_dir: Path, overwrite: bool) -> str:
    """A valid --as name that is not a split of the run and (without --overwrite) not an existing set."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"--as {name!r}: use letters, digits, '.', '_' or '-' (it becomes a folder name)")
    if name in RUN_SPLITS:
        raise ConfigError(
            f"--as {name}: the run's own {name} split has this name (its audit sections would collide); "
            f"choose another name, e.g. --as {name}-other"
        )
    existing = run_dir / EVALS_DIR / name
    if existing.exists() and not overwrite:
        raise RunDirError(
            f"{existing} already holds an evaluation set named {name!r}; pass --overwrite to replace it, "
            f"or choose another name with --as"
        )
    return name


def parse_label_map(label_map: LabelMap | str | None) -> LabelMap:
    """'hateful=1,non-hateful=0' (or a mapping) -> {data label: run class name or id}."""
    if label_map is None or isinstance(label_map, dict):
        return {str(k): v for k, v in (label_map or {}).items()}
    mapping: LabelMap = {}
    for pair in filter(None, (p.strip() for p in label_map.split(","))):
        label, sep, target = pair.rpartition("=")
        if not sep or not label.strip() or not target.strip():
            raise ConfigError(
                f"--label-map: {pair!r} is not label=class; write e.g. --label-map hateful=1,non-hateful=0"
            )
        mapping[label.strip()] = target.strip()
    return mapping


def label_mapping(
    prepared: Prepared, class_names: list[str], label_map: LabelMap, run: str
) -> dict[str, int]:
    """{data label: run class id} for every label in the data: --label-map first, then equal names."""
    data_labels = [prepared.label_names[i] for i in sorted(pd.unique(prepared.frame[LABEL]))]
    unknown = [label for label in label_map if label not in prepared.label_names]
    if unknown:
        raise DataError(
            f"--label-map: {', '.join(map(repr, unknown))} is not a label of {prepared.source}; "
            f"its labels: {', '.join(data_labels)}"
        )
    mapping = {label: _class_id(target, class_names, label) for label, target in label_map.items()}
    for label in data_labels:
        if label not in mapping and label in class_names:
            mapping[label] = class_names.index(label)
    unmapped = [label for label in data_labels if label not in mapping]
    if unmapped:
        classes = ", ".join(f"{i}={n}" for i, n in enumerate(class_names))
        suggestion = ",".join(
            f"{label}={i % max(len(class_names), 1)}" for i, label in enumerate(data_labels)
        )
        raise DataError(
            f"the labels of {prepared.source} ({', '.join(data_labels)}) do not map onto the classes of run "
            f"{run} ({classes}): {', '.join(map(repr, unmapped))} names no class. Fix: map each label to a "
            f"class id or name, e.g. --label-map {suggestion} (check the pairing), or set "
            f"data.label_column to a column with the run's classes."
        )
    return mapping


def _class_id(target: str | int, class_names: list[str], label: str) -> int:
    """A --label-map target: one of the run's class names, else a class id."""
    if str(target) in class_names:
        return class_names.index(str(target))
    if re.fullmatch(r"\d+", str(target)) and int(target) < len(class_names):
        return int(target)
    raise ConfigError(
        f"--label-map: {label}={target}: {target!r} is not a class of the run; its classes: "
        f"{', '.join(f'{i}={n}' for i, n in enumerate(class_names))}"
    )


def read_set_record(folder: Path) -> dict[str, Any]:
    """The eval.yaml record of an evaluation set folder ({} when absent or unreadable)."""
    try:
        record = yaml.safe_load((folder / EVAL_SET_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return record if isinstance(record, dict) else {}
