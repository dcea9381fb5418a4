"""Calibration per group: hand-computed ECE, sklearn's Brier score, reliability bins and CIs."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import iter_weights
from fairlora.metrics.calibration import bin_index, calibration_table
from interval_oracles import bias_corrected


def draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The audit's bootstrap resample counts, (n_boot, n), drawn directly."""
    return np.concatenate(list(iter_weights(n, n_boot, seed)))


def _binary(prob_1, labels, **groups) -> pd.DataFrame:
    prob_1 = np.asarray(prob_1, dtype=float)
    frame = pd.DataFrame({"id": [str(i) for i in range(len(prob_1))], "split": "test", "label": labels})
    frame["loss"] = 0.0
    frame["pred"] = (prob_1 > 0.5).astype(int)
    frame["prob_0"], frame["prob_1"] = 1.0 - prob_1, prob_1
    for name, mask in groups.items():
        frame[name] = mask
    return frame


SIX = _binary(
    [0.95, 0.85, 0.20, 0.35, 0.60, 0.45],
    [1, 0, 0, 1, 1, 0],
    g=[True, True, True, False, False, False],
)


def test_hand_computed_ece_on_six_examples():
    # predicted class, its confidence, correct?, bin:
    #   0: 1, 0.95, yes, bin 9    1: 1, 0.85, no, bin 8    2: 0, 0.80, yes, bin 8
    #   3: 0, 0.65, no, bin 6     4: 1, 0.60, yes, bin 6   5: 0, 0.55, yes, bin 5
    # per bin |sum correct - sum confidence|:
    #   bin 5: |1 - 0.55| = 0.45; bin 6: |1 - 1.25| = 0.25; bin 8: |1 - 1.65| = 0.65; bin 9: |1 - 0.95| = 0.05
    # ECE = (0.45 + 0.25 + 0.65 + 0.05) / 6 = 1.40 / 6; group g (rows 0-2) = (0.65 + 0.05) / 3
    # binary ECE, one example per bin of prob_1: |y - p| = 0.05 + 0.85 + 0.20 + 0.65 + 0.40 + 0.45 = 2.60
    # Brier, summed over both classes: 2 * (0.0025 + 0.7225 + 0.04 + 0.4225 + 0.16 + 0.2025) = 3.10
    table = calibration_table(SIX, ["g"], min_group_size=1, n_boot=50)
    assert table.overall["ece"].value == pytest.approx(1.40 / 6)
    assert table.by_group["g"]["ece"].value == pytest.approx(0.70 / 3)
    assert table.overall["ece_binary"].value == pytest.approx(2.60 / 6)
    assert table.overall["brier"].value == pytest.approx(3.10 / 6)
    assert table.overall["accuracy"].value == pytest.approx(4 / 6)
    assert table.overall["mean_confidence"].value == pytest.approx(4.40 / 6)
    curve = table.curves["reliability/overall"]
    assert curve["count"] == [0, 0, 0, 0, 0, 1, 2, 0, 2, 1]
    assert curve["x"][6] == pytest.approx(0.625) and curve["y"][6] == pytest.approx(0.5)
    assert curve["x"][:5] == [None] * 5 and curve["y"][7] is None
    assert curve["edges"] == pytest.approx([b / 10 for b in range(11)])
    assert table.curves["reliability/g"]["count"] == [0, 0, 0, 0, 0, 0, 0, 0, 2, 1]


def test_bins_are_half_open_with_one_in_the_last_bin():
    assert list(bin_index(np.array([0.0, 0.1, 0.3, 0.6, 0.7, 0.99, 1.0]))) == [0, 1, 3, 6, 7, 9, 9]


def test_perfectly_calibrated_data_has_ece_near_zero_and_skewed_data_does_not():
    rng = np.random.default_rng(0)
    prob_1 = rng.random(20000)
    labels = (rng.random(20000) < prob_1).astype(int)
    calibrated = calibration_table(_binary(prob_1, labels, g=prob_1 < 0.5), ["g"], n_boot=200)
    assert calibrated.overall["ece"].value < 0.02
    assert calibrated.overall["ece_binary"].value < 0.02
    skewed = calibration_table(_binary(prob_1**3, labels, g=prob_1 < 0.5), ["g"], n_boot=200)
    assert skewed.overall["ece_binary"].value > 0.15
    for table in (calibrated, skewed):
        for name, estimate in table.overall.items():
            assert estimate.low <= estimate.value <= estimate.high, name


def test_brier_is_the_sum_over_classes_for_binary_and_multiclass_alike():
    rng = np.random.default_rng(1)
    prob_1 = rng.random(500)
    labels = (rng.random(500) < 0.6).astype(int)
    group = rng.random(500) < 0.4
    table = calibration_table(_binary(prob_1, labels, g=group), ["g"], n_boot=50)
    unscaled = partial(brier_score_loss, scale_by_half=False)  # sklearn's sum over classes
    assert table.overall["brier"].value == pytest.approx(unscaled(labels, prob_1))
    assert table.overall["brier"].value == pytest.approx(2 * np.mean((prob_1 - labels) ** 2))
    assert table.by_group["g"]["brier"].value == pytest.approx(unscaled(labels[group], prob_1[group]))
    assert "sum over classes" in table.labels["brier"]
    probs = rng.dirichlet(np.ones(3), size=300)
    labels = rng.integers(0, 3, 300)
    frame = pd.DataFrame({"id": [str(i) for i in range(300)], "label": labels, "pred": probs.argmax(1)})
    for k in range(3):
        frame[f"prob_{k}"] = probs[:, k]
    frame["g"] = True
    table = calibration_table(frame, ["g"], n_boot=50)
    expected = np.mean(((probs - np.eye(3)[labels]) ** 2).sum(axis=1))
    assert table.overall["brier"].value == pytest.approx(expected)
    assert table.overall["brier"].value == pytest.approx(unscaled(labels, probs))
    assert "ece_binary" not in table.overall


def test_a_binary_task_and_the_same_task_with_an_empty_third_class_have_one_brier():
    # regression: binary used (p1 - y)^2, multi-class the sum over classes: a factor 2 apart
    rng = np.random.default_rng(5)
    prob_1 = rng.random(200)
    labels = (rng.random(200) < prob_1).astype(int)
    binary = _binary(prob_1, labels, g=np.ones(200, bool))
    three = binary.assign(prob_2=0.0)
    brier = [calibration_table(f, ["g"], n_boot=0).overall["brier"].value for f in (binary, three)]
    assert brier[0] == pytest.approx(brier[1])


def test_ece_ci_uses_the_shared_resample_counts():
    rng = np.random.default_rng(2)
    prob_1 = rng.random(300)
    labels = (rng.random(300) < 0.5).astype(int)
    frame = _binary(prob_1, labels, g=rng.random(300) < 0.5)
    table = calibration_table(frame, ["g"], n_boot=200, seed=11)
    weights = draws(300, 200, 11).astype(np.float64)
    confidence = np.maximum(prob_1, 1 - prob_1)
    gap = (frame["pred"] == frame["label"]).to_numpy(float) - confidence
    bins = bin_index(confidence)
    per_bin = np.stack([weights @ np.where(bins == b, gap, 0.0) for b in range(10)], axis=1)
    ece = np.abs(per_bin).sum(axis=1) / weights.sum(axis=1)
    low, high = bias_corrected(table.overall["ece"].value, ece)
    assert table.overall["ece"].low == pytest.approx(low)
    assert table.overall["ece"].high == pytest.approx(high)


def test_reliability_counts_sum_to_group_sizes():
    rng = np.random.default_rng(3)
    prob_1 = rng.random(400)
    frame = _binary(prob_1, (rng.random(400) < prob_1).astype(int), a=rng.random(400) < 0.3)
    frame["b"] = frame["a"] | (rng.random(400) < 0.3)
    table = calibration_table(frame, ["a", "b"], n_boot=20)
    assert sum(table.curves["reliability/overall"]["count"]) == 400
    for group in ("a", "b"):
        assert sum(table.curves[f"reliability/{group}"]["count"]) == table.group_sizes[group]


def test_flagged_and_empty_groups_are_left_out_of_the_summary():
    rng = np.random.default_rng(4)
    prob_1 = rng.random(300)
    labels = (rng.random(300) < prob_1).astype(int)
    small = np.arange(300) < 10
    prob_1[small] = 0.99  # confidently ...
    labels[small] = 0  # ... wrong: ECE near 1
    frame = _binary(prob_1, labels, big=~small, half=np.arange(300) >= 150, small=small, empty=False)
    table = calibration_table(frame, ["big", "half", "small", "empty"], min_group_size=20, n_boot=100)
    assert table.flagged == ["small", "empty"]
    assert table.by_group["small"]["ece"].value == pytest.approx(0.99)
    kept = [table.by_group[g]["ece"].value for g in ("big", "half")]
    assert table.summary["worst_group_ece"].value == pytest.approx(max(kept))
    assert table.summary["ece_gap"].value == pytest.approx(max(kept) - min(kept))
    assert table.summary["worst_group_ece"].high < 0.5
    assert table.labels["worst_group"] in {"big", "half"}
    empty = table.by_group["empty"]["ece"]
    assert (empty.value, empty.low, empty.high, empty.n) == (None, None, None, 0)
    assert table.curves["reliability/empty"]["count"] == [0] * 10


def test_predictions_without_probabilities_raise_audit_error():
    frame = pd.DataFrame({"id": ["0", "1"], "loss": [1.0, 2.0], "g": [True, False]})
    with pytest.raises(AuditError, match="runs/lm-run hold none") as error:
        calibration_table(frame, ["g"], source="runs/lm-run")
    assert "drop `calibration` from audit.sections" in str(error.value)
    assert error.value.exit_code == 5
