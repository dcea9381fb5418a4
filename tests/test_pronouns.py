"""fairlora.metrics.pronouns: pronoun rules and the pro/anti/neutral/unknown table with bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import iter_weights
from fairlora.metrics.pronouns import pronoun_gender, pronoun_table, stereotype_outcome
from fairlora.metrics.table import MetricTable
from interval_oracles import bias_corrected, wilson


def draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The audit's bootstrap resample counts, (n_boot, n), drawn directly."""
    return np.concatenate(list(iter_weights(n, n_boot, seed)))


@pytest.mark.parametrize(
    ("text", "gender"),
    [
        ("She fixed the car.", "female"),
        ("I gave it to HER", "female"),
        ("the book is hers.", "female"),
        ("She did it herself", "female"),
        ("He fixed the car.", "male"),
        ("they thanked HIM", "male"),
        ("His tools; he's tired", "male"),
        ("The man did it himself", "male"),
        ("They fixed the car.", "neutral"),
        ("We thanked them for their help", "neutral"),
        ("Theirs was done by themselves", "neutral"),
        ("She said they would come", "female"),
        ("they told him", "male"),
        ("He said she would come", "unknown"),
        ("his book and hers", "unknown"),
        ("The hero then went there", "unknown"),  # "he" inside the/hero/then/there does not count
        ("The shepherd, the theme, history, hershey", "unknown"),
        ("", "unknown"),
        ("No pronoun at all.", "unknown"),
        ("he-man", "male"),
        ("\u201cShe\u201d", "female"),
    ],
)
def test_pronoun_gender_rules(text: str, gender: str) -> None:
    assert pronoun_gender(text) == gender


def test_stereotype_outcome_compares_with_the_referents_stereotype() -> None:
    assert stereotype_outcome("she left", "female") == "pro"
    assert stereotype_outcome("she left", "male") == "anti"
    assert stereotype_outcome("he left", "male") == "pro"
    assert stereotype_outcome("he left", "female") == "anti"
    assert stereotype_outcome("they left", "male") == "neutral"
    assert stereotype_outcome("he and she left", "male") == "unknown"
    assert stereotype_outcome("nobody left", "female") == "unknown"


def six_rows() -> pd.DataFrame:
    """Outcomes: pro, anti, neutral, unknown, unknown, pro; group a = rows 0,2,5; b = rows 0,1,3,4."""
    return pd.DataFrame(
        {
            "generation": [
                "She fixed it.",
                "He fixed it.",
                "They fixed it.",
                "Nobody fixed it.",
                "He and she fixed it.",
                "The tools were his.",
            ],
            "stereotype_gender": ["female", "female", "male", "male", "male", "male"],
            "a": [True, False, True, False, False, True],
            "b": [True, True, False, True, True, False],
        }
    )


def values(table: MetricTable, group: str | None = None) -> list[float | None]:
    metrics = table.overall if group is None else table.by_group[group]
    return [metrics[m].value for m in ("pro", "anti", "neutral", "unknown", "pro_minus_anti")]


def test_pronoun_table_ratios_by_hand() -> None:
    table = pronoun_table(six_rows(), ["a", "b"], min_group_size=4, n_boot=200, seed=1)
    assert table.kind == "generation"
    assert values(table) == pytest.approx([2 / 6, 1 / 6, 1 / 6, 2 / 6, 1 / 6])
    assert values(table, "a") == pytest.approx([2 / 3, 0, 1 / 3, 0, 2 / 3])
    assert values(table, "b") == pytest.approx([1 / 4, 1 / 4, 0, 2 / 4, 0])
    assert table.group_sizes == {"a": 3, "b": 4} and table.flagged == ["a"]
    assert table.overall["pro"].n == 6 and table.by_group["a"]["pro"].n == 3
    # Summary: the overall gap, and the largest |gap| over groups that are not flagged (a is).
    assert table.summary["pro_minus_anti"].value == pytest.approx(1 / 6)
    assert table.summary["max_abs_pro_minus_anti"].value == pytest.approx(0.0)
    assert table.labels["max_abs_gap_group"] == "b"
    assert table.labels["ratios_order"] == "pro, anti, neutral, unknown"
    assert table.curves["ratios/overall"] == {
        "x": [0, 1, 2, 3],
        "y": pytest.approx([2 / 6, 1 / 6, 1 / 6, 2 / 6]),
    }
    assert table.curves["ratios/a"]["y"] == pytest.approx([2 / 3, 0, 1 / 3, 0])
    assert set(table.curves) == {"ratios/overall", "ratios/a", "ratios/b"}
    frame = table.frame()
    assert frame.loc["a", "pro"] == pytest.approx(2 / 3) and bool(frame.loc["a", "flagged"])

    small = pronoun_table(six_rows(), ["a", "b"], min_group_size=1, n_boot=0)
    assert small.flagged == [] and small.labels["max_abs_gap_group"] == "a"
    assert small.summary["max_abs_pro_minus_anti"].value == pytest.approx(2 / 3)


def test_pronoun_table_cis_match_a_direct_bootstrap() -> None:
    frame = pd.concat([six_rows()] * 10, ignore_index=True)
    table = pronoun_table(frame, ["a", "b"], min_group_size=1, n_boot=300, seed=7)
    weights = draws(len(frame), 300, 7).astype(np.float64)  # the same resamples, drawn directly
    outcomes = np.array(
        [stereotype_outcome(g, s) for g, s in zip(frame.generation, frame.stereotype_gender, strict=True)]
    )
    pro, anti = outcomes == "pro", outcomes == "anti"
    member = frame["a"].to_numpy()
    pro_a = (weights @ (pro & member)) / (weights @ member)
    gap_a = pro_a - (weights @ (anti & member)) / (weights @ member)
    estimate = table.by_group["a"]["pro"]
    assert (estimate.low, estimate.high) == pytest.approx(
        wilson(round(estimate.value * member.sum()), member.sum())
    )
    estimate = table.by_group["a"]["pro_minus_anti"]
    assert (estimate.low, estimate.high) == pytest.approx(bias_corrected(estimate.value, gap_a))
    overall_gap = (weights @ pro - weights @ anti) / len(frame)
    summary = table.summary["pro_minus_anti"]
    assert summary.low == pytest.approx(bias_corrected(summary.value, overall_gap)[0])


def test_pronoun_table_cis_contain_the_estimate_narrow_with_n_and_are_seeded() -> None:
    small = pronoun_table(pd.concat([six_rows()] * 5, ignore_index=True), ["a", "b"], 1, 400, seed=3)
    large = pronoun_table(pd.concat([six_rows()] * 100, ignore_index=True), ["a", "b"], 1, 400, seed=3)
    for table in (small, large):
        for metrics in [table.overall, *table.by_group.values(), table.summary]:
            for estimate in metrics.values():
                assert estimate.low is not None and estimate.high is not None
                assert estimate.low - 1e-9 <= estimate.value <= estimate.high + 1e-9
    small_width, large_width = (t.overall["pro"].high - t.overall["pro"].low for t in (small, large))
    assert large_width < small_width / 2
    neutral = small.by_group["b"]["neutral"]  # a share of 0 keeps a real (Wilson) interval
    assert neutral.low == 0.0 < neutral.high
    again = pronoun_table(pd.concat([six_rows()] * 5, ignore_index=True), ["a", "b"], 1, 400, seed=3)
    assert again.to_dict() == small.to_dict()
    assert MetricTable.from_dict(small.to_dict()).to_dict() == small.to_dict()
    no_boot = pronoun_table(six_rows(), ["a"], n_boot=0)
    assert no_boot.overall["pro"].to_dict() == {"value": pytest.approx(2 / 6), "ci": None, "n": 6}


def test_pronoun_table_empty_group_and_bad_input() -> None:
    frame = six_rows().assign(c=False)
    table = pronoun_table(frame, ["c"], min_group_size=1, n_boot=50)
    assert table.group_sizes == {"c": 0} and table.flagged == ["c"]
    assert table.by_group["c"]["pro"].value is None
    assert table.summary["max_abs_pro_minus_anti"].value is None and "max_abs_gap_group" not in table.labels
    with pytest.raises(AuditError, match="'generation'"):
        pronoun_table(frame.drop(columns="generation"), [], n_boot=0)
    with pytest.raises(AuditError, match="'missing'"):
        pronoun_table(frame, ["missing"], n_boot=0)
    with pytest.raises(AuditError, match="male"):
        pronoun_table(frame.assign(stereotype_gender="nonbinary"), [], n_boot=0)
    with pytest.raises(AuditError, match="empty"):
        pronoun_table(frame.iloc[:0], [], n_boot=0)
