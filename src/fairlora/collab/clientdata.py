"""Client data: a split's rows as a task frame (id, text, label, category groups), split and encoded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from fairlora.collab.client import ClientData
from fairlora.collab.corpora import CATEGORY, TEXT
from fairlora.collab.splits import ClientSplit
from fairlora.config import DataConfig, RunConfig
from fairlora.data.split import split_frame
from fairlora.tasks import get_task

DATA_FILE = "data.jsonl"  # a client's rows, in its run folder: `fairlora audit` reloads them from here


def group_name(category: str) -> str:
    """The boolean group column of a category: cat_<snake_case>."""
    return "cat_" + re.sub(r"[^0-9a-z]+", "_", category.lower()).strip("_")


def client_frame(split: ClientSplit, categories: list[str], classifies: bool) -> pd.DataFrame:
    """id, text, (label = category index), one bool group column per category the client holds."""
    rows = split.rows
    frame = pd.DataFrame(
        {"id": [f"{split.name}-{k}" for k in range(len(rows))], "text": rows[TEXT].to_numpy()}
    )
    if classifies:
        frame["label"] = [categories.index(c) for c in rows[CATEGORY]]
    for category in categories:
        member = (rows[CATEGORY] == category).to_numpy()
        if member.any():
            frame[group_name(category)] = member
    return frame


def client_data_config(file: Path, val_share: float) -> DataConfig:
    """The data section of a client's run config: its own rows, validation held out as the test split."""
    return DataConfig(name=str(file.resolve()), test_size=val_share)


def encode_frames(run: RunConfig, tokenizer: Any, frame: pd.DataFrame, seed: int) -> ClientData:
    """Split a client frame (seeded, as `load_task_data` would) and encode both parts."""
    task = get_task(run.task)
    train, val = split_frame(frame, run.data.test_size, seed % 2**32, task.classifies, "collab client")
    encode = task.encode
    return ClientData(
        train,
        val,
        encode(train, tokenizer, run.model.max_length),
        encode(val, tokenizer, run.model.max_length),
    )


def reference_frame(reference: pd.DataFrame, classifies: bool) -> pd.DataFrame:
    """The shared reference rows as a task frame (labels unused: clients are compared on their logits)."""
    frame = pd.DataFrame(
        {"id": [f"ref-{k}" for k in range(len(reference))], "text": reference[TEXT].to_numpy()}
    )
    if classifies:
        frame["label"] = 0
    return frame
