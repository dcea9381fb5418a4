"""Local tables (.csv/.jsonl/.json/.parquet) and Hugging Face datasets with user-named columns."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.api import types as ptypes

from fairlora.config import DataConfig
from fairlora.data.columns import (
    assemble,
    check_reserved,
    drop_or_reject_empty,
    encode_labels,
    require_columns,
    stable_ids,
)
from fairlora.data.groups import sensitive_groups
from fairlora.data.types import ID, Prepared
from fairlora.errors import DataError
from fairlora.tasks import Task

TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
# Names ending like this are meant as files, but fairlora cannot read them.
OTHER_FILE_SUFFIXES = (".tsv", ".txt", ".xlsx", ".xls", ".pkl", ".feather", ".arrow", ".gz", ".zip")


def is_table_name(name: str) -> bool:
    """True when `name` names a local table file (by its extension)."""
    return name.lower().endswith(TABLE_SUFFIXES)


def looks_like_file(name: str) -> bool:
    """True when `name` is an existing file or ends with a file extension fairlora cannot read."""
    return Path(name).is_file() or name.lower().endswith(OTHER_FILE_SUFFIXES)


def read_table(path: str | Path, field: str) -> pd.DataFrame:
    """Read a .csv/.jsonl/.json/.parquet file into a DataFrame, or raise DataError naming `field`."""
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"{field}: {file} has an unsupported extension {suffix or '(none)'!r}; supported: "
            f"{', '.join(TABLE_SUFFIXES)}. Fix: convert the file to one of these formats."
        )
    if not file.is_file():
        raise DataError(
            f"{field}: file {file} not found (relative paths start at {Path.cwd()}); "
            f"fix: give the path of an existing {', '.join(TABLE_SUFFIXES)} file."
        )
    try:
        if suffix == ".csv":
            return pd.read_csv(file)
        if suffix == ".parquet":
            return pd.read_parquet(file)
        if suffix == ".jsonl":
            return pd.read_json(file, lines=True)
        try:
            return pd.read_json(file)
        except ValueError:
            return pd.read_json(file, lines=True)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{field}: could not read {file} as {suffix[1:]}: {exc}") from None


def wheel_data_file(cfg: DataConfig, package: str, relative: Path, install: str, instead: str) -> Path:
    """data.path when set, else `relative` inside the installed `package` (found without importing it)."""
    if cfg.path:
        return Path(cfg.path).expanduser()
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DataError(
            f"data.name: {cfg.name} is read from the {package} wheel, which is not installed. "
            f"Fix: `{install}`, or set data.path to {instead}"
        )
    file = Path(spec.origin).parent / relative
    if not file.is_file():
        reinstall = install.replace("install ", "install --force-reinstall ", 1)
        raise DataError(f"{file} is missing: `{reinstall}`")
    return file


def default_group_columns(frame: pd.DataFrame, exclude: set[str]) -> list[str]:
    """A table's default groups: its columns of bool dtype other than text/label/prompt/id."""
    return [str(c) for c in frame.columns if c not in exclude and ptypes.is_bool_dtype(frame[c].dtype)]


def prepare_table(
    raw: pd.DataFrame,
    cfg: DataConfig,
    task: Task,
    name: str,
    source: str,
    class_names: list[str] | None = None,
) -> Prepared:
    """Turn a user table into the standard frame, using data.text_column / label_column / group_columns."""
    needed = {cfg.text_column: "data.text_column"}
    if task.classifies:
        needed[cfg.label_column] = "data.label_column"
    if not task.classifies and cfg.prompt_column:
        needed[cfg.prompt_column] = "data.prompt_column"
    require_columns(raw, needed, source)
    ids = stable_ids(raw, ID)
    keep = raw[cfg.text_column].notna()
    if task.classifies:
        keep &= raw[cfg.label_column].notna()
        if class_names is not None:  # ClassLabel uses -1 for "no label"
            keep &= raw[cfg.label_column] >= 0
    if not keep.all():
        warnings.warn(f"{source}: dropped {int((~keep).sum())} rows with missing text or label", stacklevel=3)
    table, ids = raw[keep], ids[keep]
    if table.empty:
        raise DataError(f"{source} has no rows with text and label; fix: check data.text_column/label_column")
    explicit = bool(cfg.group_columns)
    exclude = {cfg.text_column, cfg.label_column, cfg.prompt_column or "", ID}
    features = list(cfg.group_columns) if explicit else default_group_columns(table, exclude)
    features += [c for spec in cfg.intersections for c in spec if c in table.columns]  # crossed later
    check_reserved(features, source)
    _not_text_or_label(features, cfg, source)
    members, missing = sensitive_groups(table, features, source)
    for column, count in missing.items():
        if count and column not in members.columns:  # categorical: those rows are in none of its groups
            note = f"{source}: {count} rows have no {column!r} value; they are in no {column} group"
            warnings.warn(note, stacklevel=3)
    groups = drop_or_reject_empty(members, list(members.columns), explicit, source)
    labels, label_names = None, []
    if task.classifies:
        labels, label_names = encode_labels(table[cfg.label_column], cfg.label_column, source, class_names)
    prompts = table[cfg.prompt_column] if not task.classifies and cfg.prompt_column else None
    frame = assemble(ids, table[cfg.text_column], labels, prompts, {g: members[g] for g in groups})
    return Prepared(name, frame, groups, label_names, source)


def _not_text_or_label(features: list[str], cfg: DataConfig, source: str) -> None:
    """A sensitive feature is never the text or the label column."""
    for column, field in ((cfg.text_column, "data.text_column"), (cfg.label_column, "data.label_column")):
        if column in features:
            raise DataError(
                f"data.group_columns: {column!r} in {source} is {field}, not a sensitive feature; "
                f"fix: name a column that says which group a row belongs to."
            )


def load_local_table(cfg: DataConfig, task: Task) -> Prepared:
    """data.name is a local file: read it and use the configured columns."""
    raw = read_table(cfg.name, "data.name")
    return prepare_table(raw, cfg, task, Path(cfg.name).stem, str(cfg.name))


def load_hub_table(cfg: DataConfig, task: Task, registered: list[str]) -> Prepared:
    """data.name is a Hugging Face dataset id (or a local dataset folder): load it with `datasets`."""
    dataset = load_hf_split(
        cfg.name, cfg.hf_split, registered, config=cfg.hf_config, data_files=cfg.data_files
    )
    class_names = _class_names(dataset.features.get(cfg.label_column)) if task.classifies else None
    raw = dataset.to_pandas()
    config = f", config {cfg.hf_config!r}" if cfg.hf_config else ""
    source = f"HF dataset {cfg.name!r} (split {cfg.hf_split!r}{config})"
    return prepare_table(raw, cfg, task, cfg.name, source, class_names)


def load_hf_split(
    name: str,
    split: str,
    registered: list[str],
    hint: str = "",
    *,
    config: str | None = None,
    data_files: str | list[str] | dict[str, Any] | None = None,
) -> Any:
    """`datasets.load_dataset(name, name=config, split=split, data_files=...)`, every failure a DataError."""
    loader: Callable[..., Any]
    try:
        from datasets import load_dataset as loader
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataError(f"data.name: loading {name!r} needs the `datasets` package ({exc})") from None
    try:
        options = {"name": config, "data_files": data_files}
        return loader(name, split=split, **{key: value for key, value in options.items() if value})
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, bad split, bad files: one message
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        settings = f"data.hf_split={split!r}"
        settings += f", data.hf_config={config!r}" if config else ""
        settings += f", data.data_files={data_files!r}" if data_files else ""
        raise DataError(
            f"data.name: {name!r} is not a registered dataset ({', '.join(registered)}) and could not "
            f"be loaded with the Hugging Face `datasets` library ({settings}): {reason}. "
            f"Fix: use a registered name, a local .csv/.jsonl/.parquet file as data.name"
            f"{hint}, check data.hf_config / data.hf_split / data.data_files, or go online / "
            f"pre-download the dataset into the HF cache."
        ) from None


def _class_names(feature: Any) -> list[str] | None:
    """Names of a `datasets.ClassLabel` feature, else None."""
    names = getattr(feature, "names", None)
    return list(names) if isinstance(names, list) and names else None


def default_data_dirs(folder: str) -> list[Path]:
    """Where a data set's `folder` may live: $FAIRLORA_DATA_DIR/<folder>, then ../shared/data/<folder>."""
    env = os.environ.get("FAIRLORA_DATA_DIR")
    roots = [Path(env).expanduser()] if env else []
    return [root / folder for root in [*roots, Path("..") / "shared" / "data"]]
