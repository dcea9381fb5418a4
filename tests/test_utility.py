"""Utility per group with bootstrap CIs: checked against fairlearn-based group_metrics and by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import bootstrap_weights, percentile_ci
from fairlora.metrics.groups import group_metrics
from fairlora.metrics.utility import utility_table

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


@pytest.mark.parametrize("classes", [2, 3])
def test_point_estimates_match_group_metrics(classes):
    frame = _table(400, seed=classes, classes=classes)
    table = utility_table(frame, GROUPS, min_group_size=20, n_boot=50)
    reference = group_metrics(frame, GROUPS, min_group_size=20)
    ours = table.frame()
    for metric in reference.by_group.columns.drop(["n", "flagged"]):
        np.testing.assert_allclose(ours[metric], reference.by_group[metric], equal_nan=True, err_msg=metric)
    for metric, value in reference.overall.items():
        if metric != "n":
            assert table.overall[metric].value == pytest.approx(value), metric
    assert list(ours["n"]) == list(reference.by_group["n"])
    assert table.flagged == ["empty"]
    for key in ("worst_group_accuracy", "best_worst_gap", "dp_difference", "eo_difference"):
        if key in reference.disparity:
            assert table.summary[key].value == pytest.approx(reference.disparity[key]), key
    assert table.labels["worst_group"] == reference.disparity["worst_group"]
    assert ("dp_difference" in table.summary) == (classes == 2)


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


def test_cis_are_percentiles_over_the_shared_resamples():
    frame = _table(250, seed=3)
    table = utility_table(frame, GROUPS, n_boot=200, seed=7)
    weights = bootstrap_weights(len(frame), 200, 7).astype(np.float64)
    correct = (frame["label"] == frame["pred"]).to_numpy(float)
    accuracy = {g: (weights @ (correct * frame[g])) / (weights @ frame[g].to_numpy(float)) for g in "abc"}
    low, high = percentile_ci(accuracy["b"][:, None])
    assert table.by_group["b"]["accuracy"].low == pytest.approx(low[0])
    assert table.by_group["b"]["accuracy"].high == pytest.approx(high[0])
    # the worst group is taken per resample, over the same draws as the group figures
    worst = np.minimum.reduce([accuracy[g] for g in "abc"])
    low, high = percentile_ci(worst[:, None])
    assert table.summary["worst_group_accuracy"].low == pytest.approx(low[0])
    assert table.summary["worst_group_accuracy"].high == pytest.approx(high[0])


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
    assert table.summary["worst_group_accuracy"].low == 1.0  # the small group is out of every resample
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
