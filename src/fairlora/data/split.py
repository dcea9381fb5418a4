"""Seeded subsampling and train/test splitting (stratified by label, or by sentence group)."""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from fairlora.data.types import LABEL, SPLIT_GROUP
from fairlora.errors import DataError


def subsample(frame: pd.DataFrame, max_examples: int | None, seed: int) -> pd.DataFrame:
    """Keep a seeded random `max_examples` rows (in their original order); all rows when None."""
    if max_examples is None or len(frame) <= max_examples:
        return frame.reset_index(drop=True)
    return frame.sample(n=max_examples, random_state=seed).sort_index().reset_index(drop=True)


def split_frame(
    frame: pd.DataFrame, test_size: float, seed: int, stratify: bool, source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/test split; by `split_group` when present, else stratified by label when possible."""
    if len(frame) < 2:
        raise DataError(
            f"{source} has {len(frame)} usable row(s) after filtering; a train/test split needs at "
            f"least 2. Fix: check data.name / data.path and the filters (data.target_attribute), or "
            f"raise data.max_examples."
        )
    if SPLIT_GROUP in frame.columns:
        return _group_split(frame, test_size, seed, source)
    labels = frame[LABEL] if stratify and LABEL in frame.columns else None
    try:
        train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=labels)
    except ValueError:
        if labels is None:
            raise DataError(
                f"{source}: data.test_size={test_size} leaves no rows on one side of the split of "
                f"{len(frame)} rows; fix: change data.test_size or use more data."
            ) from None
        # Too few rows per class to stratify: fall back to a plain seeded split.
        train, test = train_test_split(frame, test_size=test_size, random_state=seed)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _group_split(
    frame: pd.DataFrame, test_size: float, seed: int, source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded split of whole groups: rows sharing a split_group never land on both sides."""
    groups = frame[SPLIT_GROUP].astype(str).to_numpy()
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    try:
        train_rows, test_rows = next(splitter.split(frame, groups=groups))
    except ValueError:
        train_rows = test_rows = []
    if len(train_rows) == 0 or len(test_rows) == 0:
        raise DataError(
            f"{source}: data.test_size={test_size} leaves no sentence group on one side of the split "
            f"of {len(set(groups))} groups ({len(frame)} rows); fix: change data.test_size or use more data."
        )
    train, test = frame.iloc[train_rows], frame.iloc[test_rows]
    return train.reset_index(drop=True), test.reset_index(drop=True)


def downsample_classes(
    train: pd.DataFrame, class_ratio: dict[str, float], label_names: list[str], seed: int
) -> pd.DataFrame:
    """Keep a seeded share `class_ratio[name]` of the train rows of each named class (data.class_ratio).

    Classes are named as in the dataset's label names (or by their label id); at least one row of a
    class is kept. Other classes keep every row; the row order is kept.
    """
    if not class_ratio:
        return train
    ids = {name: i for i, name in enumerate(label_names)} | {str(i): i for i in range(len(label_names))}
    unknown = [name for name in class_ratio if str(name) not in ids]
    if unknown:
        raise DataError(
            f"data.class_ratio: unknown class(es) {unknown}; the classes are {label_names} "
            f"(or their ids 0..{len(label_names) - 1}). Fix: use those names."
        )
    drop: list[int] = []
    for offset, (name, share) in enumerate(sorted(class_ratio.items())):
        rows = train.index[train[LABEL] == ids[str(name)]]
        keep = max(1, round(share * len(rows))) if len(rows) else 0
        kept = pd.Series(rows).sample(n=keep, random_state=(seed + offset) % 2**32) if keep else []
        drop += sorted(set(rows) - set(kept))
    return train.drop(index=drop).reset_index(drop=True)
