"""Utility per group with bootstrap CIs: fairlearn as the oracle of every point figure, and by hand."""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import iter_weights
from fairlora.metrics.table import MetricTable
from fairlora.metrics.utility import utility_table
from interval_oracles import bias_corrected, wilson


def draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The audit's bootstrap resample counts, (n_boot, n), drawn directly."""
    return np.concatenate(list(iter_weights(n, n_boot, seed)))


GROUPS = ["a", "b", "c", "empty"]


def _table(n: int, seed: int = 0, classes: int = 2) -> pd.DataFrame:
    """Random predictions with three overlapping groups and one empty group."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(classes), size=n)
    labels = np.where(rng.random(n) < 0.7, probs.argmax(1), rng.integers(0, classes, n))
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "split": "test", "label": labels})
    frame["loss"] = -np.log(probs[np.arange(n), labels])
    frame["pred"] = probs.argmax(1)
    for k in range(classes):
        frame[f"prob_{k}"] = probs[:, k]
    frame["a"] = rng.random(n) < 0.5
    frame["b"] = rng.random(n) < 0.3
    frame["c"] = frame["a"] & (rng.random(n) < 0.4)  # nested in a: heavy overlap
    frame["empty"] = False
    return frame


def _group_rows(frame: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """One row per (example, group it belongs to): overlapping groups as one categorical column."""
    parts = [frame[frame[g]].assign(group=g) for g in groups if frame[g].any()]
    return pd.concat(parts, ignore_index=True)


def _oracle_metrics(classes: int) -> dict:
    if classes > 2:
        macro = {"average": "macro", "zero_division": 0.0}
        return {
            "accuracy": accuracy_score,
            "precision": partial(precision_score, **macro),
            "recall": partial(recall_score, **macro),
            "f1": partial(f1_score, **macro),
        }
    return {
        "accuracy": accuracy_score,
        "precision": partial(precision_score, zero_division=0.0),
        "recall": partial(recall_score, zero_division=0.0),
        "f1": partial(f1_score, zero_division=0.0),
        "tpr": true_positive_rate,
        "fpr": false_positive_rate,
        "positive_rate": selection_rate,
    }


def _metric_frame(frame: pd.DataFrame, groups: list[str], classes: int) -> MetricFrame:
    rows = _group_rows(frame, groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MetricFrame(
            metrics=_oracle_metrics(classes),
            y_true=rows["label"],
            y_pred=rows["pred"],
            sensitive_features=rows["group"],
        )


@pytest.mark.parametrize("classes", [2, 3])
def test_per_group_and_overall_figures_match_fairlearn_metric_frame(classes):
    frame = _table(400, seed=classes, classes=classes)
    table = utility_table(frame, GROUPS, min_group_size=20, n_boot=50)
    oracle = _metric_frame(frame, GROUPS, classes)
    ours = table.frame()
    for metric in oracle.by_group.columns:
        for group in ("a", "b", "c"):
            assert ours.loc[group, metric] == pytest.approx(oracle.by_group.loc[group, metric]), metric
        everyone = _oracle_metrics(classes)[metric]
        assert table.overall[metric].value == pytest.approx(everyone(frame["label"], frame["pred"])), metric
    assert ours.loc["empty", "n"] == 0 and table.by_group["empty"]["accuracy"].value is None
    assert table.flagged == ["empty"]
    accuracy = oracle.by_group["accuracy"]
    assert table.summary["worst_group_accuracy"].value == pytest.approx(accuracy.min())
    assert table.summary["best_worst_gap"].value == pytest.approx(accuracy.max() - accuracy.min())
    assert table.labels["worst_group"] == accuracy.idxmin()
    assert ("dp_difference" in table.summary) == (classes == 2)


def test_dp_and_eo_differences_match_fairlearn():
    frame = _table(600, seed=7)
    table = utility_table(frame, ["a", "b", "c"], min_group_size=20, n_boot=0)
    rows = _group_rows(frame, ["a", "b", "c"])  # overlapping groups: one row per (example, group)
    options = {"y_true": rows["label"], "y_pred": rows["pred"], "sensitive_features": rows["group"]}
    assert table.summary["dp_difference"].value == pytest.approx(demographic_parity_difference(**options))
    assert table.summary["eo_difference"].value == pytest.approx(equalized_odds_difference(**options))
    # one boolean group column against its complement is fairlearn's two-group case, row for row
    frame["not_b"] = ~frame["b"]
    pair = utility_table(frame, ["b", "not_b"], min_group_size=1, n_boot=0)
    options = {"y_true": frame["label"], "y_pred": frame["pred"], "sensitive_features": frame["b"]}
    assert pair.summary["dp_difference"].value == pytest.approx(demographic_parity_difference(**options))
    assert pair.summary["eo_difference"].value == pytest.approx(equalized_odds_difference(**options))


def test_cis_contain_the_point_and_shrink_with_n():
    small = utility_table(_table(300, seed=1), GROUPS, n_boot=200)
    large = utility_table(_table(6000, seed=1), GROUPS, n_boot=200)
    for table in (small, large):
        for metrics in [table.overall, *(table.by_group[g] for g in ("a", "b", "c"))]:
            for name, estimate in metrics.items():
                assert estimate.low <= estimate.value <= estimate.high, name
        for name, estimate in table.summary.items():
            assert estimate.low <= estimate.high, name

    def width(table, name):
        return table.by_group["a"][name].high - table.by_group["a"][name].low

    for name in ("accuracy", "f1", "tpr", "positive_rate", "loss"):
        assert width(large, name) < width(small, name) / 2, name  # ~sqrt(20) narrower


def test_proportions_get_wilson_and_the_rest_bias_corrected_intervals_over_the_shared_resamples():
    frame = _table(250, seed=3)
    table = utility_table(frame, GROUPS, n_boot=200, seed=7)
    group = frame[frame["b"]]
    right = int((group["label"] == group["pred"]).sum())
    low, high = wilson(right, len(group))
    assert table.by_group["b"]["accuracy"].low == pytest.approx(low, abs=1e-12)
    assert table.by_group["b"]["accuracy"].high == pytest.approx(high, abs=1e-12)
    negatives = group[group["label"] == 0]
    low, high = wilson(int((negatives["pred"] == 1).sum()), len(negatives))
    assert (table.by_group["b"]["fpr"].low, table.by_group["b"]["fpr"].high) == pytest.approx((low, high))
    weights = draws(len(frame), 200, 7).astype(np.float64)
    correct = (frame["label"] == frame["pred"]).to_numpy(float)
    accuracy = {g: (weights @ (correct * frame[g])) / (weights @ frame[g].to_numpy(float)) for g in "abc"}
    loss = (weights @ (frame["loss"] * frame["b"])) / (weights @ frame["b"].to_numpy(float))
    low, high = bias_corrected(table.by_group["b"]["loss"].value, loss)
    assert (table.by_group["b"]["loss"].low, table.by_group["b"]["loss"].high) == pytest.approx((low, high))
    # the worst group is taken per resample, over the same draws as the group figures; its interval
    # also spans the worst group's own Wilson interval
    worst = np.minimum.reduce([accuracy[g] for g in "abc"])
    estimate = table.summary["worst_group_accuracy"]
    low, high = bias_corrected(estimate.value, worst)
    own = table.by_group[table.labels["worst_group"]]["accuracy"]
    assert estimate.low == pytest.approx(min(low, own.low))
    assert estimate.high == pytest.approx(max(high, own.high))


def test_n_counts_the_examples_each_metric_divides_by():
    frame = _table(300, seed=4)
    table = utility_table(frame, GROUPS, n_boot=20)
    group = frame[frame["a"]]
    metrics = table.by_group["a"]
    assert metrics["accuracy"].n == len(group) == table.group_sizes["a"]
    assert metrics["precision"].n == (group["pred"] == 1).sum()
    assert metrics["tpr"].n == metrics["recall"].n == (group["label"] == 1).sum()
    assert metrics["fpr"].n == metrics["tnr"].n == (group["label"] == 0).sum()


def test_flagged_groups_are_reported_but_left_out_of_summaries():
    rng = np.random.default_rng(0)
    n = 200
    labels = rng.integers(0, 2, n)
    small = np.arange(n) < 6
    preds = np.where(small, 1 - labels, labels)  # the small group is always wrong, the rest always right
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "label": labels, "pred": preds, "loss": 0.1})
    frame["prob_1"], frame["prob_0"] = preds * 0.8 + 0.1, 0.9 - preds * 0.8
    frame["big"], frame["small"], frame["rest"] = ~small, small, np.arange(n) >= 100
    table = utility_table(frame, ["big", "small", "rest"], min_group_size=20, n_boot=100)
    assert table.flagged == ["small"]
    assert table.by_group["small"]["accuracy"].value == 0.0
    assert table.summary["worst_group_accuracy"].value == 1.0
    # the small group is out of every resample: the resampled minimum is always 1, and the interval is
    # the worst group's own Wilson interval
    worst = table.labels["worst_group"]
    low, high = wilson(table.group_sizes[worst], table.group_sizes[worst])
    assert (table.summary["worst_group_accuracy"].low, table.summary["worst_group_accuracy"].high) == (
        pytest.approx(low),
        1.0,
    )
    assert table.summary["best_worst_gap"].value == 0.0
    assert table.labels["worst_group"] in {"big", "rest"}


def test_group_without_members_gives_none_and_no_summary_crash():
    frame = _table(100, seed=5)
    table = utility_table(frame, ["empty"], min_group_size=1, n_boot=50)
    estimate = table.by_group["empty"]["accuracy"]
    assert (estimate.value, estimate.low, estimate.high, estimate.n) == (None, None, None, 0)
    assert table.group_sizes["empty"] == 0 and table.flagged == ["empty"]
    assert table.summary["worst_group_accuracy"].value is None
    assert "worst_group" not in table.labels
    assert table.to_dict()["by_group"]["empty"]["accuracy"] == {"value": None, "ci": None, "n": 0}


def test_causal_lm_predictions_report_loss_and_perplexity():
    frame = pd.DataFrame({"id": list("012345"), "loss": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    frame["g"] = [True, True, True, False, False, False]  # mean loss 2
    frame["h"] = [False, False, True, True, True, True]  # mean loss 4.5
    table = utility_table(frame, ["g", "h"], min_group_size=1, n_boot=200)
    assert table.overall["loss"].value == pytest.approx(3.5)
    assert table.by_group["g"]["perplexity"].value == pytest.approx(np.exp(2.0))
    assert table.summary["worst_group_loss"].value == pytest.approx(4.5)
    assert table.summary["loss_gap"].value == pytest.approx(2.5)
    assert table.labels["worst_group"] == "h"
    low, high = table.by_group["h"]["loss"].low, table.by_group["h"]["loss"].high
    assert 3.0 <= low <= 4.5 <= high <= 6.0  # a mean of the group's own losses
    assert "accuracy" not in table.overall


def test_missing_group_column_raises_audit_error():
    with pytest.raises(AuditError, match="missing_group"):
        utility_table(_table(20), ["missing_group"], n_boot=10)


def test_ci_level_sets_the_width_of_every_interval():
    frame = _table(500, seed=8)
    wide = utility_table(frame, GROUPS, n_boot=300, seed=2, level=0.95)
    narrow = utility_table(frame, GROUPS, n_boot=300, seed=2, level=0.5)
    for name in ("accuracy", "f1", "tpr"):
        for a, b in (
            (wide.overall[name], narrow.overall[name]),
            (wide.by_group["a"][name], narrow.by_group["a"][name]),
        ):
            assert b.value == a.value
            assert a.low < b.low <= b.high < a.high, name
    w, n = wide.summary["worst_group_accuracy"], narrow.summary["worst_group_accuracy"]
    assert n.high - n.low < w.high - w.low


def _constant(n: int = 120) -> pd.DataFrame:
    """A classifier that gives every example P(positive) ~ 0.22 and predicts class 0 throughout."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "split": "test"})
    frame["label"] = rng.integers(0, 2, n)
    frame["prob_1"] = 0.22 + rng.normal(0, 1e-3, n)
    frame["prob_0"] = 1 - frame["prob_1"]
    frame["pred"] = 0
    frame["loss"] = -np.log(np.where(frame["label"] == 1, frame["prob_1"], frame["prob_0"]))
    frame["a"], frame["b"] = np.arange(n) < 60, np.arange(n) >= 40
    return frame


def test_a_constant_predictor_is_named_plainly():
    table = utility_table(_constant(), ["a", "b"], min_group_size=20, n_boot=20)
    assert table.notes == ["constant predictor: predicts class 0 for every example"]
    assert table.overall["positive_rate"].value == 0.0
    assert MetricTable.from_dict(table.to_dict()).notes == table.notes


def test_a_group_predicted_constantly_is_named_when_large_enough():
    frame = _constant()
    frame.loc[frame.index >= 100, "pred"] = 1  # the run varies; group a (rows 0-59) does not
    frame["tiny"] = np.arange(len(frame)) < 5
    table = utility_table(frame, ["a", "b", "tiny"], min_group_size=20, n_boot=0)
    constant = [note for note in table.notes if "constant predictor" in note]
    assert constant == ["group a: constant predictor: predicts class 0 for every example"]


def test_results_json_utility_equals_the_audit_utility_on_the_same_draws():
    from fairlora.auditing.run import prediction_sections
    from fairlora.auditing.settings import audit_settings
    from fairlora.runs import RunResult

    test = _table(300, seed=9)
    train = _table(500, seed=10).assign(split="train")
    predictions = pd.concat([test, train], ignore_index=True)
    evaluated = utility_table(test, GROUPS, min_group_size=20, n_boot=200, seed=0, level=0.95)
    stored = RunResult("run", "lora", "m", "d", "classification", {"test": evaluated}).to_dict()
    settings = audit_settings(["audit.n_boot=200", "audit.seed=0", "eval.min_group_size=20"])
    audited = prediction_sections(["utility"], predictions, settings, "run")["utility/test"]
    assert RunResult.from_dict(stored).test.to_dict() == audited.to_dict()
