"""Auditing any model's predictions: a table of labels, probabilities and sensitive features.

`fairlora audit --predictions scores.csv --label y --prob p_hateful --group gender` (or
`fairlora.audit(frame, out, label=..., prob=..., groups=[...])`) turns a user's table into the
prediction table a run stores (id, split, label, pred, prob_<k>, loss, one bool column per group)
and audits it with the same sections: utility, calibration, the threshold-free AUCs (binary) and,
with `member` and `loss` columns, the loss membership attack. Rows marked as members form the
"train" split, the others the "test" split the other sections read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairlora.data.columns import to_bool
from fairlora.data.files import read_table
from fairlora.data.groups import crossed_groups, level_text, sensitive_groups
from fairlora.errors import DataError

SUM_TOLERANCE = 1e-3
LOSS_FLOOR = 1e-12  # -log p is capped at -log(1e-12) for a probability of 0 on the true class
MEMBERSHIP_NOTE = (
    "membership skipped: give --member (true for training rows) and --loss to run the loss attack"
)
MODEL_SECTIONS_NOTE = (
    "lira, generation, probe and benchmarks skipped: they need the model, and a predictions table has none"
)


@dataclass(frozen=True)
class PredictionColumns:
    """Which columns of a user's predictions table hold what (every field names a column)."""

    label: str
    prob: str | None = None  # binary: P(positive class); labels are 0/1 or true/false
    prob_prefix: str | None = None  # one probability column per class: <prefix><class>
    groups: tuple[str, ...] = ()
    intersections: tuple[tuple[str, ...], ...] = ()
    pred: str | None = None  # the model's decisions; default: prob >= threshold, or the argmax
    id: str | None = None
    member: str | None = None  # membership attack: true for rows the model was trained on
    loss: str | None = None  # membership attack: the per-row loss
    positive: str | None = None  # with prob_prefix and two classes: the positive class
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if (self.prob is None) == (self.prob_prefix is None):
            raise DataError(
                "--prob / --prob-prefix: give exactly one: --prob COLUMN for a binary P(positive), or "
                "--prob-prefix PREFIX for one probability column per class (e.g. prob_)"
            )
        if self.member and not self.loss:
            raise DataError(
                f"--member {self.member}: the loss attack also needs each row's loss; fix: add --loss COLUMN"
            )
        if not 0.0 < self.threshold < 1.0:
            raise DataError(f"--threshold {self.threshold}: must lie in (0, 1)")


@dataclass
class PredictionsTable:
    """A user's predictions in the standard layout, with what a reader must know about them."""

    name: str
    source: str
    frame: pd.DataFrame
    groups: list[str]
    classes: list[str]
    notes: list[str] = field(default_factory=list)


def parse_spec(spec: str) -> tuple[str, Path]:
    """'lora=a.parquet' -> ('lora', a.parquet); 'a.parquet' -> ('a', a.parquet)."""
    name, sep, path = spec.partition("=")
    if sep and name and not Path(spec).exists():
        return name.strip(), Path(path)
    return Path(spec).stem, Path(spec)


def read_predictions_file(spec: str, columns: PredictionColumns) -> PredictionsTable:
    """Read and validate one --predictions table ([name=]path; CSV / JSONL / parquet)."""
    name, path = parse_spec(spec)
    return standard_predictions(read_table(path, "--predictions"), columns, name, str(path))


def _require(table: pd.DataFrame, wanted: dict[str, str | None], source: str) -> None:
    for option, column in wanted.items():
        if column is not None and column not in table.columns:
            raise DataError(
                f"{option} {column}: no such column in {source}; its columns are "
                f"{', '.join(map(str, table.columns))}. Fix: name one of them."
            )


def _probabilities(table: pd.DataFrame, columns: list[str], source: str, option: str) -> np.ndarray:
    """The probability columns as floats in [0, 1], or DataError naming the column."""
    probs = []
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values) | (values < 0) | (values > 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{option}: column {column!r} in {source} holds {table[column].iloc[row]!r} at row {row}, "
                f"not a probability in [0, 1]; fix: pass probabilities (a sigmoid / softmax of the "
                f"scores), not logits or labels."
            )
        probs.append(values)
    return np.stack(probs, axis=1)


def _binary_classes(table: pd.DataFrame, columns: PredictionColumns, source: str) -> tuple[np.ndarray, list]:
    """Labels 0/1 and P(class 0), P(class 1) from a label column and one P(positive) column."""
    try:
        labels = to_bool(table[columns.label], columns.label, source, "--label").to_numpy(np.int64)
    except DataError:
        found = sorted(map(level_text, pd.unique(table[columns.label].dropna())))[:6]
        raise DataError(
            f"--label {columns.label}: {source} holds labels {found}, but --prob {columns.prob} is "
            f"P(positive) of a binary task whose labels are 0/1 or true/false; fix: map the labels to "
            f"0/1, or give one probability column per class with --prob-prefix (columns <prefix><label>)."
        ) from None
    positive = _probabilities(table, [columns.prob], source, "--prob")[:, 0]
    return labels, [np.column_stack([1.0 - positive, positive]), ["0", "1"]]


def _class_columns(table: pd.DataFrame, prefix: str, source: str) -> dict[str, str]:
    """Class name -> its probability column, in the table's column order."""
    found = {str(c)[len(prefix) :]: str(c) for c in table.columns if str(c).startswith(prefix)}
    if len(found) < 2:
        raise DataError(
            f"--prob-prefix {prefix}: {source} has {len(found)} column(s) starting with {prefix!r}; a "
            f"classifier needs one per class (at least two). Fix: check the prefix."
        )
    return found


def _ordered_classes(names: list[str], positive: str | None, source: str) -> list[str]:
    """Classes in index order; with two, the positive class is index 1."""
    if len(names) != 2:
        return names
    if positive is None:
        natural = {"0": 0, "1": 1, "false": 0, "true": 1}
        if {n.lower() for n in names} not in ({"0", "1"}, {"false", "true"}):
            raise DataError(
                f"--positive: {source} has two classes ({', '.join(names)}); name the positive one "
                f"(the class TPR, FPR and the AUCs are about) with --positive, e.g. --positive {names[0]}"
            )
        return sorted(names, key=lambda n: natural[n.lower()])
    if positive not in names:
        raise DataError(f"--positive {positive}: not a class of {source}; its classes are {', '.join(names)}")
    return [n for n in names if n != positive] + [positive]


def _multiclass(table: pd.DataFrame, columns: PredictionColumns, source: str) -> tuple[np.ndarray, list]:
    """Labels as class indices and one probability column per class (rows summing to 1)."""
    by_class = _class_columns(table, columns.prob_prefix or "", source)
    classes = _ordered_classes(list(by_class), columns.positive, source)
    probs = _probabilities(table, [by_class[c] for c in classes], source, "--prob-prefix")
    sums = probs.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if off.size:
        raise DataError(
            f"--prob-prefix {columns.prob_prefix}: the columns {', '.join(by_class.values())} of {source} "
            f"sum to {sums[off[0]]:.4f} at row {int(off[0])} ({off.size} rows off by more than "
            f"{SUM_TOLERANCE}); fix: pass the softmax of the scores, one column per class."
        )
    labels = table[columns.label].map(level_text)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise DataError(
            f"--label {columns.label}: values {unknown[:6]} of {source} have no probability column "
            f"({columns.prob_prefix}<label>); the columns give classes {', '.join(classes)}. Fix: rename "
            f"the columns or map the labels so that both name the same classes."
        )
    return labels.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64), [probs, classes]


def _decisions(
    table: pd.DataFrame, columns: PredictionColumns, probs: np.ndarray, classes: list[str]
) -> np.ndarray:
    """The predicted class per row: the given column, else threshold (binary) or argmax."""
    if columns.pred is None:
        if len(classes) == 2:
            return (probs[:, 1] >= columns.threshold).astype(np.int64)
        return probs.argmax(axis=1)
    if len(classes) == 2 and classes == ["0", "1"]:
        return to_bool(table[columns.pred], columns.pred, "--pred", "--pred").to_numpy(np.int64)
    decided = table[columns.pred].map(level_text)
    unknown = sorted(set(decided) - set(classes))
    if unknown:
        raise DataError(f"--pred {columns.pred}: values {unknown[:6]} are not classes ({', '.join(classes)})")
    return decided.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)


def _ids(table: pd.DataFrame, column: str | None, source: str) -> np.ndarray:
    if column is None:
        return np.array([str(i) for i in range(len(table))], dtype=object)
    ids = table[column]
    if ids.isna().any() or not ids.is_unique:
        raise DataError(f"--id {column}: {source} has missing or repeated ids; fix: name a unique id column")
    return ids.astype(str).to_numpy(dtype=object)


def _losses(
    table: pd.DataFrame, columns: PredictionColumns, labels: np.ndarray, probs: np.ndarray
) -> np.ndarray:
    """The given loss column, else the cross-entropy of the probabilities (sklearn's log_loss per row)."""
    if columns.loss is None:
        return -np.log(np.clip(probs[np.arange(len(labels)), labels], LOSS_FLOOR, None))
    loss = pd.to_numeric(table[columns.loss], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(loss).all():
        raise DataError(
            f"--loss {columns.loss}: holds missing or non-numeric values; fix: one number per row"
        )
    return loss


def standard_predictions(
    table: pd.DataFrame, columns: PredictionColumns, name: str, source: str
) -> PredictionsTable:
    """Validate a user's table and bring it into the layout of a run's stored predictions."""
    _require(
        table,
        {"--label": columns.label, "--prob": columns.prob, "--pred": columns.pred, "--id": columns.id},
        source,
    )
    _require(table, {"--member": columns.member, "--loss": columns.loss}, source)
    if table.empty:
        raise DataError(f"--predictions: {source} has no rows")
    if table[columns.label].isna().any():
        raise DataError(f"--label {columns.label}: {source} has rows without a label; fix: drop them first")
    binary = columns.prob is not None
    labels, (probs, classes) = (_binary_classes if binary else _multiclass)(table, columns, source)
    split = np.full(len(table), "test", dtype=object)
    if columns.member:
        member = to_bool(table[columns.member], columns.member, source, "--member").to_numpy()
        split[member] = "train"
    frame = pd.DataFrame({"id": _ids(table, columns.id, source), "split": split, "label": labels})
    frame["loss"] = _losses(table, columns, labels, probs)
    frame["pred"] = _decisions(table, columns, probs, classes)
    for k in range(probs.shape[1]):
        frame[f"prob_{k}"] = probs[:, k]
    crossed = [c for spec in columns.intersections for c in spec]
    for column in crossed:
        _require(table, {"--intersect": column}, source)
    features = [*columns.groups, *crossed]
    members, _ = sensitive_groups(table.reset_index(drop=True), features, source, "--group")
    crossing = crossed_groups(members, [list(s) for s in columns.intersections], source, "--intersect")
    groups = [*members.columns, *crossing.columns]
    frame = pd.concat([frame, members, crossing], axis=1)
    if columns.id:  # tables of the same rows in another order still pair up in comparisons
        frame = frame.sort_values("id", kind="stable", ignore_index=True)
    notes = (
        [f"classes: {', '.join(f'{i} = {c}' for i, c in enumerate(classes))}"]
        if classes != ["0", "1"]
        else []
    )
    return PredictionsTable(name, source, frame, groups, classes, notes)


def prediction_columns(**options: object) -> PredictionColumns:
    """PredictionColumns from keyword options (lists accepted for groups and intersections)."""
    groups = tuple(str(g) for g in options.pop("groups", None) or ())  # type: ignore[union-attr]
    crossed = tuple(tuple(spec) for spec in options.pop("intersections", None) or ())  # type: ignore[union-attr]
    return PredictionColumns(groups=groups, intersections=crossed, **options)  # type: ignore[arg-type]


def split_targets(targets: object, options: dict[str, object]) -> tuple[list[Path], list[PredictionsTable]]:
    """Run folders and predictions tables from `fairlora.audit`'s arguments (options: column keywords).

    `targets` is a run folder, a DataFrame, a {name: DataFrame} mapping, or a list of these;
    `options` may hold `predictions` (files, "[name=]path") and the fields of PredictionColumns.
    """
    items = list(targets.items()) if isinstance(targets, dict) else targets
    if isinstance(items, (str, Path, pd.DataFrame)) or not isinstance(items, list | tuple):
        items = [items]
    runs, frames = [], []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], pd.DataFrame):
            frames.append((str(item[0]), item[1]))
        elif isinstance(item, pd.DataFrame):
            frames.append((f"predictions-{len(frames) + 1}", item))
        else:
            runs.append(Path(item))  # type: ignore[arg-type]
    files = [str(f) for f in options.pop("predictions", None) or []]  # type: ignore[union-attr]
    if not frames and not files:
        return runs, []
    columns = prediction_columns(**options)
    tables = [standard_predictions(frame, columns, name, f"DataFrame {name!r}") for name, frame in frames]
    return runs, tables + [read_predictions_file(spec, columns) for spec in files]
