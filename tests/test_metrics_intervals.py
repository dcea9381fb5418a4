"""Intervals that hold at the edges: Wilson for proportions, bias-corrected for the rest, every CI around
its estimate, and fairlearn's parity ratios with the four-fifths rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_ratio, equalized_odds_ratio

from fairlora.metrics.auc import auc_table
from fairlora.metrics.bootstrap import bc_interval, percentile_ci, wilson_interval
from fairlora.metrics.calibration import calibration_table
from fairlora.metrics.membership import loss_attack_table
from fairlora.metrics.table import MetricTable
from fairlora.metrics.utility import utility_table
from interval_oracles import wilson


def _predictions(n: int, seed: int, classes: int = 2, groups: int = 10) -> pd.DataFrame:
    """Predictions of train and test rows with overlapping groups of 5 to ~n/2 members, one always right."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(classes) * 2, size=n)
    labels = np.where(rng.random(n) < 0.75, probs.argmax(1), rng.integers(0, classes, n))
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "label": labels, "pred": probs.argmax(1)})
    frame["split"] = np.where(rng.random(n) < 0.5, "train", "test")
    for k in range(classes):
        frame[f"prob_{k}"] = probs[:, k]
    frame["loss"] = -np.log(probs[np.arange(n), labels]) * np.where(frame["split"] == "train", 0.8, 1.0)
    shares = np.linspace(0.02, 0.5, groups)
    for g, share in enumerate(shares):
        frame[f"g{g}"] = rng.random(n) < share
    right = frame["label"] == frame["pred"]
    frame["perfect"] = right & (rng.random(n) < 0.4)  # every prediction right: accuracy 1, FPR 0
    return frame


def _group_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("g") or c == "perfect"]


def _estimates(table: MetricTable):
    for scope in [table.overall, *table.by_group.values(), table.summary]:
        yield from scope.items()


def _assert_contains(table: MetricTable) -> int:
    """Every interval holds its estimate; returns how many intervals were checked."""
    checked = 0
    for metric, estimate in _estimates(table):
        if estimate.low is None or estimate.value is None:
            continue
        assert estimate.low <= estimate.value <= estimate.high, (table.kind, metric, estimate)
        checked += 1
    return checked


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_interval_of_every_table_contains_its_estimate(seed: int) -> None:
    frame = _predictions(700, seed)
    groups = _group_columns(frame)
    test = frame[frame["split"] == "test"]
    options = {"min_group_size": 10, "n_boot": 200, "seed": seed}
    tables = [
        utility_table(test, groups, **options),
        utility_table(_predictions(500, seed, classes=3).query("split == 'test'"), groups, **options),
        utility_table(test.drop(columns=["pred", "label"]), groups, **options),  # causal-LM shape
        calibration_table(test, groups, **options),
        auc_table(test, groups, **options),
        loss_attack_table(frame, groups, **options),
    ]
    for table in tables:
        assert _assert_contains(table) > 2 * len(groups)
        assert _assert_contains(MetricTable.from_dict(table.to_dict())) > 0


def _many_similar_groups(seed: int = 0) -> pd.DataFrame:
    """Twelve overlapping groups with the same selection rate: the bootstrap overstates their spread."""
    rng = np.random.default_rng(seed)
    n = 1200
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "split": "test", "label": rng.integers(0, 2, n)})
    frame["pred"] = (rng.random(n) < 0.3).astype(int)
    frame["prob_1"] = np.where(frame["pred"] == 1, 0.7, 0.3)
    frame["prob_0"], frame["loss"] = 1 - frame["prob_1"], 0.5
    for g in range(12):
        frame[f"g{g}"] = rng.random(n) < 0.08
    return frame


def test_gap_figures_keep_their_estimate_where_the_percentile_interval_loses_it() -> None:
    frame = _many_similar_groups()
    groups = [c for c in frame.columns if c.startswith("g")]
    table = utility_table(frame, groups, min_group_size=20, n_boot=400, seed=0)
    missed = []
    for name in ("dp_difference", "eo_difference", "best_worst_gap", "dp_ratio", "eo_ratio"):
        estimate = table.summary[name]
        low, high = percentile_ci(table.samples[f"summary/{name}"][:, None], 0.95)
        if not low[0] <= estimate.value <= high[0]:
            missed.append(name)
        assert estimate.low <= estimate.value <= estimate.high, name
    assert missed  # the case the percentile bootstrap gets wrong is exercised


def test_a_group_of_88_always_right_keeps_a_real_interval() -> None:
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 2, n)
    perfect = np.arange(n) < 88
    preds = np.where(perfect | (rng.random(n) < 0.7), labels, 1 - labels)
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "split": "test", "label": labels, "pred": preds})
    frame["prob_1"] = np.where(preds == 1, 0.8, 0.2)
    frame["prob_0"], frame["loss"] = 1 - frame["prob_1"], 0.3
    frame["perfect"], frame["rest"] = perfect, ~perfect
    table = utility_table(frame, ["perfect", "rest"], n_boot=200)
    accuracy = table.by_group["perfect"]["accuracy"]
    assert (accuracy.value, accuracy.n, accuracy.high) == (1.0, 88, 1.0)
    assert accuracy.low < 0.97
    assert accuracy.low == pytest.approx(wilson(88, 88)[0], abs=1e-12)  # ~0.958
    fpr = table.by_group["perfect"]["fpr"]
    assert fpr.value == 0.0 and fpr.low == 0.0
    assert fpr.high > 0
    assert fpr.high == pytest.approx(wilson(0, fpr.n)[1], abs=1e-12)
    calibration = calibration_table(frame, ["perfect", "rest"], n_boot=200)
    assert calibration.by_group["perfect"]["accuracy"].low == pytest.approx(accuracy.low)
    # the worst group at 1 keeps the interval of its own accuracy
    only = utility_table(frame[perfect], ["perfect"], n_boot=200)
    assert only.summary["worst_group_accuracy"].value == 1.0
    assert only.summary["worst_group_accuracy"].low == pytest.approx(accuracy.low)


@pytest.mark.parametrize(("successes", "n"), [(0, 1), (0, 17), (3, 10), (88, 88), (511, 1000)])
def test_wilson_matches_scipy(successes: int, n: int) -> None:
    for level in (0.9, 0.95, 0.99):
        low, high = wilson_interval(np.array([successes / n]), np.array([n]), level)
        assert (low[0], high[0]) == pytest.approx(wilson(successes, n, level), abs=1e-12)


def test_bias_corrected_interval_falls_back_where_the_correction_is_undefined() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(0.0, 1.0, size=(500, 3))
    samples[:, 1] += 5.0  # every resample above the estimate: z0 undefined
    samples[:, 2] = np.nan
    low, high = bc_interval(np.zeros(3), samples, 0.95)
    assert low[0] < 0 < high[0]
    median = np.median(samples[:, 1])
    shifted = np.percentile(samples[:, 1], [2.5, 97.5]) - median
    assert (low[1], high[1]) == pytest.approx((max(shifted[0], 0.0), shifted[1]))
    assert np.isnan(low[2]) and np.isnan(high[2])
    same = bc_interval(np.array([0.5]), np.full((100, 1), 0.5), 0.95)
    assert (same[0][0], same[1][0]) == (0.5, 0.5)


def _one_feature(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Binary predictions and one categorical feature with four values, as one bool column per value."""
    rng = np.random.default_rng(seed)
    n = 2000
    feature = rng.choice(["w", "x", "y", "z"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    labels = rng.integers(0, 2, n)
    lean = pd.Series(feature).map({"w": 0.0, "x": 0.1, "y": -0.15, "z": 0.25}).to_numpy()
    preds = (rng.random(n) < 0.35 + lean + 0.3 * labels).astype(int)
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "split": "test", "label": labels, "pred": preds})
    frame["prob_1"] = np.where(preds == 1, 0.7, 0.3)
    frame["prob_0"], frame["loss"] = 1 - frame["prob_1"], 0.5
    for value in "wxyz":
        frame[value] = feature == value
    return frame, feature


@pytest.mark.parametrize("seed", [0, 1])
def test_parity_ratios_match_fairlearn(seed: int) -> None:
    frame, feature = _one_feature(seed)
    table = utility_table(frame, list("wxyz"), min_group_size=1, n_boot=200, seed=seed)
    y, p = frame["label"], frame["pred"]
    assert table.summary["dp_ratio"].value == pytest.approx(
        demographic_parity_ratio(y, p, sensitive_features=feature), abs=1e-12
    )
    assert table.summary["eo_ratio"].value == pytest.approx(
        equalized_odds_ratio(y, p, sensitive_features=feature), abs=1e-12
    )
    for name in ("dp_ratio", "eo_ratio"):
        estimate = table.summary[name]
        assert 0.0 <= estimate.low <= estimate.value <= estimate.high <= 1.0
        assert len(table.samples[f"summary/{name}"]) == 200


def test_four_fifths_rule_is_noted_and_labelled() -> None:
    frame, _ = _one_feature(0)
    table = utility_table(frame, list("wxyz"), min_group_size=1, n_boot=0)
    rates = {g: table.by_group[g]["positive_rate"].value for g in "wxyz"}
    lowest, highest = min(rates, key=rates.get), max(rates, key=rates.get)
    assert table.summary["dp_ratio"].value == pytest.approx(rates[lowest] / rates[highest])
    assert table.summary["dp_ratio"].value < 0.8
    assert table.labels["four_fifths"] == "violated"
    (note,) = [n for n in table.notes if n.startswith("four-fifths rule")]
    assert f"{lowest} ({rates[lowest]:.3f})" in note and f"{highest} ({rates[highest]:.3f})" in note
    fair = utility_table(frame, ["w", "x"], min_group_size=1, n_boot=0)
    assert fair.summary["dp_ratio"].value >= 0.8
    assert fair.labels["four_fifths"] == "met"
    assert not [n for n in fair.notes if n.startswith("four-fifths rule")]
    assert MetricTable.from_dict(table.to_dict()).labels["four_fifths"] == "violated"
