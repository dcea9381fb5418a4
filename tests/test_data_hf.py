"""data.hf_config, hf_split and data_files reach `datasets.load_dataset`, offline on local folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fairlora.config import DataConfig
from fairlora.data import load_task_data
from fairlora.data.registry import load_prepared
from fairlora.errors import DataError

datasets = pytest.importorskip("datasets")

README = """---
configs:
- config_name: hate
  data_files:
  - split: train
    path: hate/train.csv
  - split: test
    path: hate/test.csv
- config_name: offensive
  data_files:
  - split: test
    path: offensive/test.csv
---
A local dataset laid out like tweet_eval on the hub: one folder per configuration.
"""


def _rows(prefix: str, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"{prefix} {i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "g": [i < 4 for i in range(n)],
        }
    )


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dataset folder with two configurations (hate: train 20 + test 10 rows; offensive: test 12 rows)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    root = tmp_path / "tweets"
    for config, split, n in (("hate", "train", 20), ("hate", "test", 10), ("offensive", "test", 12)):
        (root / config).mkdir(parents=True, exist_ok=True)
        _rows(f"{config}-{split}", n).to_csv(root / config / f"{split}.csv", index=False)
    (root / "README.md").write_text(README)
    return root


def test_hf_config_and_split_pick_the_files_of_a_configuration(folder: Path) -> None:
    hate_test = load_prepared(
        DataConfig(name=str(folder), hf_config="hate", hf_split="test"), "classification", 0
    )
    assert sorted(hate_test.frame["text"]) == sorted(f"hate-test {i}" for i in range(10))
    offensive = load_prepared(
        DataConfig(name=str(folder), hf_config="offensive", hf_split="test"), "classification", 0
    )
    assert len(offensive.frame) == 12 and offensive.frame["text"].str.startswith("offensive-test").all()
    assert offensive.group_columns == ["g"] and int(offensive.frame["g"].sum()) == 4
    data = load_task_data(DataConfig(name=str(folder), hf_config="hate"), "classification", 0)
    assert len(data.train) + len(data.test) == 20  # hf_split defaults to train


def test_data_files_load_csv_and_jsonl_through_the_same_call(folder: Path, tmp_path: Path) -> None:
    by_pattern = load_prepared(
        DataConfig(name=str(folder), data_files="offensive/*.csv"), "classification", 0
    )  # a folder plus files in it: one train split of those files
    assert len(by_pattern.frame) == 12
    lines = tmp_path / "extra.jsonl"
    _rows("jsonl", 8).to_json(lines, orient="records", lines=True)
    builder = DataConfig(name="json", data_files={"test": str(lines)}, hf_split="test")
    assert sorted(load_prepared(builder, "classification", 0).frame["text"]) == sorted(
        f"jsonl {i}" for i in range(8)
    )


def test_the_options_reach_load_dataset_and_a_bad_config_names_them(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match=r"data\.hf_split='train', data\.hf_config='irony'.*hf_config"):
        load_prepared(DataConfig(name=str(folder), hf_config="irony"), "classification", 0)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real = datasets.load_dataset

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", recording)
    load_prepared(DataConfig(name=str(folder), hf_config="hate", hf_split="test"), "classification", 0)
    assert calls == [((str(folder),), {"split": "test", "name": "hate"})]
