"""Imbalanced classification: data.class_ratio, train.class_weight: balanced, per-class recall, AG News."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from fairlora.config import build_config
from fairlora.data import load_task_data
from fairlora.data.split import downsample_classes
from fairlora.errors import ConfigError, DataError
from fairlora.metrics.utility import utility_table
from fairlora.pipeline import train
from fairlora.training.losses import balanced_class_weights, weighted_cross_entropy

AG_NEWS = Path("..") / "shared" / "data" / "ag_news"
needs_ag_news = pytest.mark.skipif(
    not (AG_NEWS / "test.csv").is_file(), reason="../shared/data/ag_news absent"
)


def _train_frame(counts: dict[int, int]) -> pd.DataFrame:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"id": [str(i) for i in range(len(labels))], "text": "x", "label": labels})


def test_class_ratio_keeps_a_seeded_share_of_one_class() -> None:
    train = _train_frame({0: 100, 1: 50, 2: 30})
    kept = downsample_classes(train, {"b": 0.1}, ["a", "b", "c"], seed=1)
    assert kept["label"].value_counts().to_dict() == {0: 100, 1: 5, 2: 30}
    again = downsample_classes(train, {"1": 0.1}, ["a", "b", "c"], seed=1)  # by id, same draw
    assert kept["id"].tolist() == again["id"].tolist()
    other = downsample_classes(train, {"b": 0.1}, ["a", "b", "c"], seed=2)
    assert kept["id"].tolist() != other["id"].tolist()
    with pytest.raises(DataError, match=r"data.class_ratio: unknown class\(es\) \['d'\]"):
        downsample_classes(train, {"d": 0.5}, ["a", "b", "c"], seed=1)


def test_class_ratio_applies_to_train_only(tmp_path: Path) -> None:
    cfg = build_config(tiny_config(tmp_path, data={"class_ratio": {"hateful": 0.2}}))
    full = load_task_data(cfg.data.model_copy(update={"class_ratio": {}}), cfg.task, cfg.seed)
    data = load_task_data(cfg.data, cfg.task, cfg.seed)
    hateful = data.label_names.index("hateful")
    before, after = (int((d.train["label"] == hateful).sum()) for d in (full, data))
    assert after == round(0.2 * before) and data.test.equals(full.test)
    with pytest.raises(ConfigError, match=r"data.class_ratio: each share must lie in \(0, 1\]"):
        build_config(tiny_config(tmp_path, data={"class_ratio": {"hateful": 1.5}}))


def test_balanced_weights_and_weighted_loss() -> None:
    weights = balanced_class_weights([0, 0, 0, 1], 3)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0, 0.0])  # n / (k * count), k = present classes
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1])
    outputs = type("Out", (), {"logits": logits})()
    got = weighted_cross_entropy(weights)(outputs, {"labels": labels})
    per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (weights[0] * per_row[0] + weights[1] * per_row[1]) / (weights[0] + weights[1])
    assert got.item() == pytest.approx(expected.item())


def test_class_weight_balanced_changes_training_and_needs_classes(tmp_path: Path) -> None:
    data = {"class_ratio": {"hateful": 0.2}}
    plain = train(tiny_config(tmp_path, name="plain", data=data))
    weighted = train(tiny_config(tmp_path, name="weighted", data=data, train={"class_weight": "balanced"}))
    loss = [json.loads((r.run_dir / "train_log.json").read_text())[0]["loss"] for r in (plain, weighted)]
    assert loss[0] != loss[1]
    lora = {"target_modules": ["q_proj", "v_proj"]}
    bad = tiny_config(tmp_path, name="bad", task="causal_lm", model={"name": "tiny-llama"}, lora=lora)
    with pytest.raises(ConfigError, match="train.class_weight"):
        train({**bad, "train": {**bad["train"], "class_weight": "balanced"}})
    assert not (tmp_path / "runs" / "bad").exists()


def _predictions(labels: list[int], preds: list[int], k: int) -> pd.DataFrame:
    frame = pd.DataFrame({"id": [str(i) for i in range(len(labels))], "split": "test", "label": labels})
    frame["pred"], frame["loss"] = preds, 0.5
    for c in range(k):
        frame[f"prob_{c}"] = (np.asarray(preds) == c).astype(float)
    return frame


@pytest.mark.parametrize("k", [2, 3])
def test_per_class_recall_and_worst_class(k: int) -> None:
    labels = [0] * 6 + [1] * 4 + ([2] * 2 if k == 3 else [])
    preds = [0] * 6 + [1, 1, 1, 0] + ([0, 2] if k == 3 else [])
    table = utility_table(_predictions(labels, preds, k), [], n_boot=50)
    recalls = [table.overall[f"recall_class_{c}"].value for c in range(k)]
    assert recalls == pytest.approx([1.0, 0.75, 0.5][:k])
    assert table.overall["recall_class_1"].n == 4
    assert table.summary["worst_class_recall"].value == pytest.approx(min(recalls))
    assert table.labels["worst_class"] == f"class {int(np.argmin(recalls))}"


@needs_ag_news
def test_ag_news_with_a_minority_topic() -> None:
    cfg = build_config({"data": {"name": "ag_news", "class_ratio": {"World": 0.1}}})
    data = load_task_data(cfg.data, cfg.task, 0)
    assert data.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert data.group_columns == ["topic_world", "topic_sports", "topic_business", "topic_sci_tech"]
    counts = data.train["label"].value_counts()
    assert counts[0] == round(0.1 * counts[1]) and len(data.test) == 1520
    assert (data.train["topic_world"] == (data.train["label"] == 0)).all()


def test_ag_news_missing_folder_names_the_fix(tmp_path: Path) -> None:
    cfg = build_config({"data": {"name": "ag_news", "path": str(tmp_path)}})
    with pytest.raises(DataError, match="data.path to the folder"):
        load_task_data(cfg.data, cfg.task, 0)
