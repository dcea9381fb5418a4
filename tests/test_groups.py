"""Per-group metrics with overlapping groups, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairlora.metrics.groups import GroupMetrics, explode_groups, group_metrics


def _predictions(labels, preds, groups: dict[str, list[bool]]) -> pd.DataFrame:
    labels, preds = np.asarray(labels), np.asarray(preds)
    frame = pd.DataFrame({"id": [str(i) for i in range(len(labels))], "label": labels, "pred": preds})
    frame["prob_1"] = np.where(preds == 1, 0.8, 0.3)
    frame["prob_0"] = 1 - frame["prob_1"]
    frame["loss"] = np.linspace(0.1, 1.0, len(labels))
    for name, mask in groups.items():
        frame[name] = mask
    return frame


def test_overlapping_groups_use_each_member_once_per_group():
    #            0  1  2  3  4  5
    labels = [1, 0, 1, 0, 1, 0]
    preds = [1, 1, 0, 0, 1, 0]
    a = [True, True, True, False, False, False]
    b = [False, True, True, True, True, False]  # rows 1 and 2 are in both groups
    frame = _predictions(labels, preds, {"a": a, "b": b})
    assert len(explode_groups(frame, ["a", "b"])) == 7
    metrics = group_metrics(frame, ["a", "b"], min_group_size=1)
    row_a, row_b = metrics.by_group.loc["a"], metrics.by_group.loc["b"]
    assert row_a["n"] == 3 and row_b["n"] == 4
    assert row_a["accuracy"] == pytest.approx(1 / 3)  # rows 0 ok, 1 wrong, 2 wrong
    assert row_b["accuracy"] == pytest.approx(2 / 4)  # rows 3, 4 ok
    assert row_a["fpr"] == pytest.approx(1.0) and row_b["fpr"] == pytest.approx(0.5)
    assert row_a["tpr"] == pytest.approx(0.5) and row_b["tpr"] == pytest.approx(0.5)
    assert row_a["positive_rate"] == pytest.approx(2 / 3) and row_b["positive_rate"] == pytest.approx(2 / 4)
    assert metrics.overall["accuracy"] == pytest.approx(4 / 6) and metrics.overall["n"] == 6
    assert metrics.disparity["worst_group"] == "a"
    assert metrics.disparity["best_worst_gap"] == pytest.approx(0.5 - 1 / 3)
    assert metrics.disparity["dp_difference"] == pytest.approx(2 / 3 - 0.5)
    assert metrics.disparity["eo_difference"] == pytest.approx(0.5)  # FPR gap 1.0 - 0.5
    assert metrics.difference()["accuracy"] == pytest.approx(0.5 - 1 / 3)
    assert metrics.ratio()["accuracy"] == pytest.approx((1 / 3) / 0.5)


def test_small_groups_are_flagged_and_left_out_of_disparity():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 100)
    preds = labels.copy()
    small = np.zeros(100, bool)
    small[:5] = True
    preds[:5] = 1 - labels[:5]  # the small group is always wrong
    frame = _predictions(labels, preds, {"big": ~small, "small": small, "empty": np.zeros(100, bool)})
    metrics = group_metrics(frame, ["big", "small", "empty"], min_group_size=20)
    assert list(metrics.by_group["flagged"]) == [False, True, True]
    assert metrics.by_group.loc["empty", "n"] == 0
    assert metrics.disparity["worst_group"] == "big"
    assert metrics.disparity["worst_group_accuracy"] == pytest.approx(1.0)


def test_round_trip_through_dict_keeps_values():
    frame = _predictions([1, 0, 1, 0], [1, 0, 0, 0], {"g": [True, True, False, True]})
    metrics = group_metrics(frame, ["g"], min_group_size=1)
    again = GroupMetrics.from_dict(metrics.to_dict())
    assert again.overall == pytest.approx(metrics.overall)
    pd.testing.assert_frame_equal(again.by_group, metrics.by_group, check_dtype=False, check_names=False)


def test_causal_lm_predictions_report_loss_per_group():
    frame = pd.DataFrame({"id": ["0", "1", "2"], "loss": [1.0, 2.0, 3.0], "g": [True, False, True]})
    metrics = group_metrics(frame, ["g"], min_group_size=1)
    assert metrics.by_group.loc["g", "loss"] == pytest.approx(2.0)
    assert metrics.overall["perplexity"] == pytest.approx(np.exp(2.0))
    assert metrics.disparity["worst_group"] == "g"
