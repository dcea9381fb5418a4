"""Column checks and conversions shared by every loader: booleans, labels, groups, ids."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from fairlora.data.types import ID, LABEL, PROMPT, RESERVED_COLUMNS, TEXT
from fairlora.errors import DataError

_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0", ""})


def snake_case(name: str) -> str:
    """'Black people' -> 'black_people'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def _listing(names: Iterable[object], limit: int = 40) -> str:
    items = [str(n) for n in names]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def require_columns(frame: pd.DataFrame, columns: dict[str, str], source: str) -> None:
    """Raise DataError naming the config field when a column is missing; `columns` maps column -> field."""
    for column, field in columns.items():
        if column not in frame.columns:
            raise DataError(
                f"{field}: column {column!r} not found in {source}; available columns: "
                f"{_listing(frame.columns)}. Fix: set {field} to one of them."
            )


def to_bool(series: pd.Series, column: str, source: str, field: str = "data.group_columns") -> pd.Series:
    """Coerce a boolean-like column (bool, 0/1, 'true'/'false', 'yes'/'no'; missing = False) to bool."""
    if ptypes.is_bool_dtype(series.dtype):
        return series.fillna(False).astype(bool)
    present = series.dropna()
    if ptypes.is_numeric_dtype(series.dtype):
        if present.isin([0, 1]).all():
            return series.fillna(0).astype(bool)
    elif present.map(lambda v: isinstance(v, (bool, np.bool_, str, int, np.integer))).all():
        lowered = present.map(lambda v: str(v).strip().lower())
        if lowered.isin(_TRUE | _FALSE).all():
            result = pd.Series(False, index=series.index)
            result[lowered.index] = lowered.isin(_TRUE).to_numpy()
            return result
    odd = [v for v in pd.unique(present) if str(v).strip().lower() not in _TRUE | _FALSE][:5]
    raise DataError(
        f"{field}: column {column!r} in {source} is not boolean-like (bool, 0/1 or true/false); "
        f"found values such as {odd}. Fix: convert it to true/false, or remove it from {field}."
    )


def encode_labels(
    series: pd.Series, column: str, source: str, class_names: list[str] | None = None
) -> tuple[pd.Series, list[str]]:
    """Map bool/int/str labels to ids 0..K-1 (sorted unique values); `class_names` keeps given int ids."""
    if class_names is not None:
        return series.astype(int), list(class_names)
    if ptypes.is_bool_dtype(series.dtype):
        values = series.astype(bool)
    elif ptypes.is_numeric_dtype(series.dtype):
        if not np.all(np.mod(series.to_numpy(float), 1) == 0):
            raise DataError(
                f"data.label_column: column {column!r} in {source} holds non-integer numbers (a score?); "
                f"fix: threshold it into classes first, or point data.label_column at a class column."
            )
        values = series.astype(int)
    else:
        values = series.map(lambda v: str(v).strip())
    uniques = sorted(pd.unique(values).tolist())
    ids = {value: index for index, value in enumerate(uniques)}
    return values.map(ids).astype(int), [str(v) for v in uniques]


def check_label_classes(frame: pd.DataFrame, label_names: list[str], source: str, field: str) -> None:
    """Raise DataError when the labels of `frame` hold fewer than two classes."""
    present = sorted(pd.unique(frame[LABEL]).tolist())
    if len(present) < 2:
        found = [label_names[i] if i < len(label_names) else str(i) for i in present]
        raise DataError(
            f"{field}: {source} has a single label class ({', '.join(found) or 'none'}); "
            f"classification needs at least two. Fix: check {field}, use data with both classes, "
            f"or raise data.max_examples."
        )


def choose_groups(
    available: list[str],
    requested: list[str],
    source: str,
    alias: Callable[[str], str] | None = None,
) -> list[str]:
    """Resolve data.group_columns against a dataset's groups (empty request = all available)."""
    if not requested:
        return list(available)
    chosen: list[str] = []
    unknown: list[str] = []
    for name in requested:
        key = alias(name) if alias else name
        if key in available:
            if key not in chosen:
                chosen.append(key)
        else:
            unknown.append(name)
    if unknown:
        raise DataError(
            f"data.group_columns: {', '.join(map(repr, unknown))} not found in {source}; available "
            f"groups: {_listing(available)}. Fix: use those names, or leave data.group_columns empty "
            f"for the dataset's default groups."
        )
    return chosen


def drop_or_reject_empty(frame: pd.DataFrame, groups: list[str], explicit: bool, source: str) -> list[str]:
    """Default groups without members are dropped; requested ones raise DataError."""
    empty = [g for g in groups if not frame[g].any()]
    if empty and explicit:
        raise DataError(
            f"data.group_columns: group {empty[0]!r} has no members in {source} "
            f"(its column is false in every row); fix: remove it from data.group_columns."
        )
    return [g for g in groups if g not in empty]


def check_reserved(groups: list[str], source: str) -> None:
    """Group column names must not clash with id/text/label/prompt."""
    clash = [g for g in groups if g in RESERVED_COLUMNS]
    if clash:
        raise DataError(
            f"data.group_columns: {clash[0]!r} in {source} clashes with a reserved column name "
            f"({', '.join(RESERVED_COLUMNS)}); fix: rename that column in the data."
        )


def stable_ids(frame: pd.DataFrame, column: str | None = None, prefix: str = "") -> pd.Series:
    """Ids from a unique source column when there is one, else from the row position in the source."""
    if column is not None and column in frame.columns:
        values = frame[column]
        if values.notna().all() and values.is_unique:
            return prefix + values.astype(str)
    return pd.Series([f"{prefix}{i}" for i in range(len(frame))], index=frame.index, dtype=object)


def assemble(
    ids: pd.Series,
    texts: pd.Series,
    labels: pd.Series | None,
    prompts: pd.Series | None,
    groups: dict[str, pd.Series],
) -> pd.DataFrame:
    """Build the standard frame: id, text, [prompt], [label], one bool column per group."""
    columns: dict[str, object] = {ID: ids.astype(str).tolist(), TEXT: texts.astype(str).tolist()}
    if prompts is not None:
        columns[PROMPT] = prompts.fillna("").astype(str).tolist()
    if labels is not None:
        columns[LABEL] = labels.astype(int).to_numpy()
    for name, values in groups.items():
        columns[name] = values.astype(bool).to_numpy()
    return pd.DataFrame(columns)
