"""The shapes the data package hands out: task data, dataset descriptions, loader output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from fairlora.errors import DataError

ID, TEXT, LABEL, PROMPT = "id", "text", "label", "prompt"
SPLIT_GROUP = "split_group"  # rows sharing a value stay on one side of the train/test split
RESERVED_COLUMNS = (ID, TEXT, LABEL, PROMPT, SPLIT_GROUP)


@dataclass
class TaskData:
    """Train, test (and validation) frames of one task, with the boolean group columns present in all."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    group_columns: list[str]
    label_names: list[str]  # classification: index = label id; causal_lm: []
    val: pd.DataFrame | None = None  # held out from train (data.val_size); None or empty: no validation split

    def split(self, name: str) -> pd.DataFrame:
        """The frame of split `name` (train, val or test)."""
        frames = {"train": self.train, "val": self.val, "test": self.test}
        frame = frames.get(name)
        if frame is None or (name == "val" and frame.empty):
            raise DataError(f"eval.splits: no {name!r} split; set data.val_size > 0 for a validation split")
        return frame


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its name, what it is, and where it comes from."""

    name: str
    description: str
    source: str


@dataclass
class Prepared:
    """A loader's output before subsampling and splitting.

    `frame` holds id, text, label (classification), optional prompt, optional split_group (rows
    with one value stay on one side of the split) and one bool column per entry of `group_columns`;
    `adjust_train(train, seed)` may change the train split after the split
    (the identity set injects label bias there).
    """

    name: str
    frame: pd.DataFrame
    group_columns: list[str]
    label_names: list[str]
    source: str
    adjust_train: Callable[[pd.DataFrame, int], pd.DataFrame] | None = None
