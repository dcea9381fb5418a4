"""Token / answer-order probe: position-following vs content-following "models", and a tiny-llama run."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import numpy as np
import pandas as pd
import pytest

from fairlora.auditing.likelihood import sequence_logprobs
from fairlora.config import ModelConfig
from fairlora.metrics.probes import SHARES, TEMPLATES, probe_items, token_probe
from fairlora.metrics.table import MetricTable
from fairlora.models import load_model

TEXTS = ["The nurse finished the report before lunch.", "The pilot checked the weather.", "The chef cooked."]
Scorer = Callable[[list[str], list[str] | None], tuple[np.ndarray, np.ndarray]]


def lookup_scorer(items: pd.DataFrame, loss: Callable[[pd.Series], float]) -> Scorer:
    """A "model" whose mean token NLL of each full sequence is loss(item row); 4 tokens each."""
    nll = {row["sequence"]: loss(row) for _, row in items.iterrows()}

    def score(texts: list[str], contexts: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
        assert contexts is None  # the whole sequence (prompt + answer) is scored
        return np.array([-4.0 * nll[t] for t in texts]), np.full(len(texts), 4.0)

    return score


def test_probe_items_cover_every_template_order_and_answer() -> None:
    items = probe_items(TEXTS[:1])
    counts = items.groupby(["template", "order"]).size().to_dict()
    assert counts == {(t, o): 2 if t == "yes_no" else 3 for t in TEMPLATES for o in ("normal", "swapped")}
    letters = items[(items["template"] == "letters") & (items["order"] == "swapped")]
    assert letters["content"].tolist() == ["woman", "man", "unknown"]
    assert letters["sequence"].iloc[0].startswith(TEXTS[0]) and letters["sequence"].iloc[0].endswith(
        "Answer: A"
    )
    assert "B. man" in letters["sequence"].iloc[0]
    yes_no = items[items["template"] == "yes_no"]
    assert yes_no[["order", "answer", "content"]].to_numpy().tolist() == [
        ["normal", "Yes", "man"],
        ["normal", "No", "woman"],
        ["swapped", "Yes", "woman"],
        ["swapped", "No", "man"],
    ]
    assert items["sequence"].is_unique


def test_a_position_following_model_flips_on_every_template() -> None:
    items = probe_items(TEXTS)
    table = token_probe(lookup_scorer(items, lambda row: 1.0 + row["position"]), items, n_boot=100)
    assert table.kind == "probe" and set(table.by_group) == set(TEMPLATES)
    for template in TEMPLATES:
        metrics = {name: e.value for name, e in table.by_group[template].items()}
        assert (
            metrics["flip_rate"] == 1.0 and metrics["share_first"] == 1.0 and metrics["share_second"] == 0.0
        )
        assert metrics["share_man"] == 0.5 and metrics["share_woman"] == 0.5  # A = man, then A = woman
        if template == "yes_no":  # no third option: not applicable
            assert metrics["share_third"] is None and metrics["share_unknown"] is None
        else:
            assert metrics["share_third"] == 0.0 and metrics["share_unknown"] == 0.0
    assert table.overall["flip_rate"].value == 1.0 and table.overall["flip_rate"].n == 4 * len(TEXTS)
    assert table.overall["share_first"].n == 8 * len(TEXTS)  # 4 templates x 2 orders per example
    assert table.overall["share_third"].n == 6 * len(TEXTS)
    assert table.group_sizes == {t: len(TEXTS) for t in TEMPLATES}


def test_a_content_following_model_never_flips() -> None:
    items = probe_items(TEXTS)
    table = token_probe(
        lookup_scorer(items, lambda row: 0.5 if row["content"] == "woman" else 2.0), items, 100
    )
    for template in TEMPLATES:
        metrics = {name: e.value for name, e in table.by_group[template].items()}
        assert metrics["flip_rate"] == 0.0 and metrics["share_woman"] == 1.0 and metrics["share_man"] == 0.0
        # woman sits second in the normal order and first in the swapped one
        assert metrics["share_first"] == 0.5 and metrics["share_second"] == 0.5
    curve = table.curves["shares/letters"]
    assert curve["x"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert curve["y"] == [0.0, 1.0, 0.0, 0.5, 0.5, 0.0]
    assert table.labels["shares/letters"].split(", ") == list(SHARES)


def test_mixed_model_gives_partial_flip_rate_with_cis() -> None:
    # example 0 follows the first position, examples 1 and 2 choose "man": flip rate 1/3 per template
    items = probe_items(TEXTS)

    def loss(row: pd.Series) -> float:
        return 1.0 + row["position"] if row["example"] == 0 else (0.5 if row["content"] == "man" else 2.0)

    table = token_probe(lookup_scorer(items, loss), items, n_boot=300, seed=1)
    flip = table.by_group["numbers"]["flip_rate"]
    assert flip.value == pytest.approx(1 / 3) and flip.low <= flip.value <= flip.high and flip.n == 3
    # man: 2 of 2 decisions for examples 1, 2 and 1 of 2 for example 0 -> 5/6
    assert table.by_group["symbols"]["share_man"].value == pytest.approx(5 / 6)
    MetricTable.from_dict(json.loads(json.dumps(table.to_dict())))


def test_run_token_probe_on_tiny_llama() -> None:
    loaded = load_model(ModelConfig(name="tiny-llama"), "causal_lm")
    score = partial(sequence_logprobs, loaded.model, loaded.tokenizer, progress=False)
    table = token_probe(score, probe_items(list(TEXTS[:2])), n_boot=50)
    for template in TEMPLATES:
        metrics = table.by_group[template]
        first_two = metrics["share_first"].value + metrics["share_second"].value
        third = metrics["share_third"].value or 0.0
        assert first_two + third == pytest.approx(1.0)
        assert 0.0 <= metrics["flip_rate"].value <= 1.0
