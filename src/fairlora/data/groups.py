"""Sensitive features as groups, the way fairlearn's `sensitive_features` names them.

A boolean-like column (bool, 0/1, true/false, yes/no) is one group: its members. Any other column is
categorical: one group per value, named `<column>=<value>` (`gender=female`); rows with a missing
value are in none of its groups and are counted. An intersection `[gender, race]` adds one group per
observed combination, `gender=female&race=black`; a boolean column takes part with its members only
(`religion_muslim&gender=female`). Every group ends up as one bool column, so groups may overlap and
every audit section treats them alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd

from fairlora.data.columns import to_bool
from fairlora.errors import DataError

VALUE_SEP = "="
CROSS_SEP = "&"
MAX_LEVELS = 50  # more distinct values than this is a number or an id, not a sensitive feature


def group_name(column: str, value: object) -> str:
    """'gender', 'female' -> 'gender=female'."""
    return f"{column}{VALUE_SEP}{value}"


def level_text(value: object) -> str:
    """A category's name: floats that hold whole numbers lose their '.0' (a CSV column of 1, 2, NaN)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _is_missing(series: pd.Series) -> pd.Series:
    """NaN / None, and blank strings."""
    blank = series.map(lambda v: isinstance(v, str) and not v.strip())
    return series.isna() | blank.astype(bool)


def expand_column(
    series: pd.Series, column: str, source: str, field: str
) -> tuple[dict[str, pd.Series], int]:
    """One column as groups: {name: members} and how many rows have a missing value."""
    missing = _is_missing(series)
    if bool(missing.all()):
        raise DataError(
            f"{field}: column {column!r} in {source} has no values (every row is missing); "
            f"fix: remove it from {field}, or point it at a filled column."
        )
    try:
        return {column: to_bool(series.where(~missing), column, source, field)}, int(missing.sum())
    except DataError:
        pass  # not boolean-like: a categorical column
    levels = series[~missing].map(level_text)
    values = sorted(pd.unique(levels).tolist(), key=str)
    if len(values) > MAX_LEVELS:
        raise DataError(
            f"{field}: column {column!r} in {source} has {len(values)} distinct values, more than the "
            f"{MAX_LEVELS} groups a sensitive feature may have (is it a number or an id?); fix: bin it "
            f"into a few categories first, or remove it from {field}."
        )
    groups = {group_name(column, v): (levels == v).reindex(series.index, fill_value=False) for v in values}
    return {name: members.astype(bool) for name, members in groups.items()}, int(missing.sum())


def sensitive_groups(
    table: pd.DataFrame, columns: Sequence[str], source: str, field: str = "data.group_columns"
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every named column as groups: a bool frame (one column per group) and missing counts per column."""
    members: dict[str, pd.Series] = {}
    missing: dict[str, int] = {}
    for column in dict.fromkeys(columns):
        if column not in table.columns:
            raise DataError(
                f"{field}: column {column!r} not found in {source}; available columns: "
                f"{', '.join(map(str, table.columns))}. Fix: name one of them."
            )
        groups, missing[column] = expand_column(table[column], column, source, field)
        members |= groups
    return pd.DataFrame(members, index=table.index), missing


def levels(members: pd.DataFrame, column: str) -> list[str]:
    """The group columns a sensitive feature stands for: itself (boolean) or its `column=value` groups."""
    if column in members.columns:
        return [column]
    prefix = column + VALUE_SEP
    return [str(c) for c in members.columns if str(c).startswith(prefix) and CROSS_SEP not in str(c)]


def crossed_groups(
    members: pd.DataFrame,
    intersections: Sequence[Sequence[str]],
    source: str,
    field: str = "data.intersections",
) -> pd.DataFrame:
    """The groups of each intersection: one bool column per combination with at least one member."""
    crossed: dict[str, pd.Series] = {}
    for spec in intersections:
        if len(spec) < 2:
            raise DataError(f"{field}: {list(spec)} crosses fewer than two columns; fix: name two or more")
        parts = [levels(members, column) for column in spec]
        unknown = [column for column, found in zip(spec, parts, strict=True) if not found]
        if unknown:
            raise DataError(
                f"{field}: {unknown[0]!r} in {list(spec)} is not a group column of {source}; "
                f"known: {', '.join(_features(members))}. Fix: cross group columns only."
            )
        for combination in itertools.product(*parts):
            inside = members[list(combination)].all(axis=1)
            if inside.any():
                crossed[CROSS_SEP.join(combination)] = inside
    return pd.DataFrame(crossed, index=members.index)


def _features(members: pd.DataFrame) -> list[str]:
    """The sensitive features behind group columns: 'gender=female' -> 'gender'."""
    names = (str(c).split(VALUE_SEP, 1)[0] for c in members.columns if CROSS_SEP not in str(c))
    return list(dict.fromkeys(names))


def missing_counts(frame: pd.DataFrame, groups: Sequence[str]) -> dict[str, int]:
    """Rows in no group of each categorical feature (its value was missing), from the bool columns alone."""
    features: dict[str, list[str]] = {}
    for group in groups:
        if CROSS_SEP not in group and VALUE_SEP in group:
            features.setdefault(group.split(VALUE_SEP, 1)[0], []).append(group)
    counts = {f: int((~frame[cols].to_numpy(bool).any(axis=1)).sum()) for f, cols in features.items()}
    return {f: n for f, n in counts.items() if n}
