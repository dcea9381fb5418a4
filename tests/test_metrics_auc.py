"""Subgroup, BPSN and BNSP AUCs (Borkan et al. 2019) against sklearn, their generalized means and CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairlora.errors import AuditError
from fairlora.metrics.auc import FINAL_SCORE, auc_layout, auc_table, generalized_mean, weighted_aucs
from fairlora.metrics.bootstrap import iter_weights
from fairlora.metrics.ranking import descending, rank_selection, weighted_auc
from interval_oracles import bias_corrected

GROUPS = ["a", "b", "tiny"]


def _frame(n: int, seed: int = 0, levels: int | None = None) -> pd.DataFrame:
    """Binary predictions, scores shifted up for positives and down for group `a`'s negatives."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.4).astype(int)
    a, b = rng.random(n) < 0.4, rng.random(n) < 0.5
    score = rng.normal(0.0, 1.0, n) + 1.2 * label + 0.8 * (a & (label == 0))
    prob = 1 / (1 + np.exp(-score))
    if levels is not None:
        prob = np.round(prob * levels) / levels  # many ties
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "split": "test", "label": label})
    frame["prob_1"], frame["prob_0"] = prob, 1 - prob
    frame["pred"], frame["loss"] = (prob > 0.5).astype(int), 0.0
    frame["a"], frame["b"], frame["tiny"] = a, b, np.arange(n) < 8
    return frame


def _borkan(frame: pd.DataFrame, group: str) -> dict[str, float]:
    """The three AUCs of one group straight from their definitions, with sklearn."""
    inside, positive = frame[group].to_numpy(), frame["label"].to_numpy() == 1
    y, p = frame["label"].to_numpy(), frame["prob_1"].to_numpy()
    bpsn = inside & ~positive | ~inside & positive
    bnsp = inside & positive | ~inside & ~positive
    return {
        "auc": roc_auc_score(y[inside], p[inside]),
        "bpsn_auc": roc_auc_score(y[bpsn], p[bpsn]),
        "bnsp_auc": roc_auc_score(y[bnsp], p[bnsp]),
    }


@pytest.mark.parametrize("levels", [None, 5, 20])
def test_aucs_equal_sklearn_on_their_definitions_ties_included(levels):
    frame = _frame(600, seed=levels or 1, levels=levels)
    table = auc_table(frame, GROUPS, min_group_size=20, n_boot=0)
    assert table.overall["auc"].value == pytest.approx(
        roc_auc_score(frame["label"], frame["prob_1"]), abs=1e-12
    )
    for group in ("a", "b"):
        expected = _borkan(frame, group)
        got = {m: table.by_group[group][m].value for m in expected}
        assert got == pytest.approx(expected, abs=1e-12)
    assert table.by_group["a"]["auc"].n == frame["a"].sum()
    assert table.flagged == ["tiny"]


def test_weighted_auc_equals_sklearn_with_the_examples_repeated():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(20, 300))
        positive = rng.random(n) < 0.5
        score = rng.integers(0, 6, n).astype(float) + positive  # ties within and across classes
        counts = rng.integers(0, 3, size=(4, n)).astype(np.int32)
        order = descending(score)
        ranked = rank_selection(score[order], positive[order], np.ones(n, bool))
        got = weighted_auc(counts[:, order], ranked)
        for row in range(4):
            rows = np.repeat(np.arange(n), counts[row])
            if positive[rows].all() or not positive[rows].any():
                assert np.isnan(got[row])
            else:
                assert got[row] == pytest.approx(roc_auc_score(positive[rows], score[rows]), abs=1e-12)


def test_cis_are_bias_corrected_percentiles_of_the_weighted_auc_over_the_shared_resamples():
    frame = _frame(300, seed=4)
    table = auc_table(frame, GROUPS, min_group_size=20, n_boot=200, seed=9)
    weights = np.concatenate(list(iter_weights(300, 200, 9)))
    inside = frame["a"].to_numpy()
    rows = inside & (frame["label"] == 0).to_numpy() | ~inside & (frame["label"] == 1).to_numpy()  # BPSN
    samples = []
    for w in weights:
        repeated = np.repeat(np.arange(300)[rows], w[rows].astype(int))
        samples.append(
            roc_auc_score(frame["label"].to_numpy()[repeated], frame["prob_1"].to_numpy()[repeated])
        )
    low, high = bias_corrected(table.by_group["a"]["bpsn_auc"].value, np.array(samples))
    assert table.by_group["a"]["bpsn_auc"].low == pytest.approx(low)
    assert table.by_group["a"]["bpsn_auc"].high == pytest.approx(high)
    estimate = table.by_group["a"]["bpsn_auc"]
    assert estimate.low <= estimate.value <= estimate.high


def test_generalized_means_and_the_final_score():
    frame = _frame(800, seed=5)
    table = auc_table(frame, GROUPS, min_group_size=20, n_boot=50)
    means = {}
    for metric, name in (
        ("auc", "gmean_subgroup_auc"),
        ("bpsn_auc", "gmean_bpsn_auc"),
        ("bnsp_auc", "gmean_bnsp_auc"),
    ):
        values = np.array([table.by_group[g][metric].value for g in ("a", "b")])  # tiny is flagged: left out
        means[name] = np.mean(values**-5.0) ** (-1 / 5.0)
        assert table.summary[name].value == pytest.approx(means[name])
        assert min(values) <= means[name] <= np.mean(values)  # p = -5 leans on the worst group
    final = 0.25 * table.overall["auc"].value + 0.75 * np.mean(list(means.values()))
    assert table.summary[FINAL_SCORE].value == pytest.approx(final)
    assert (
        table.by_group["a"]["bpsn_auc"].value < table.by_group["b"]["bpsn_auc"].value
    )  # a's negatives score high
    assert table.summary["worst_group_auc"].value == pytest.approx(
        min(table.by_group[g]["auc"].value for g in ("a", "b"))
    )
    summary = table.summary[FINAL_SCORE]
    assert summary.low <= summary.value <= summary.high


def test_generalized_mean_skips_undefined_groups_and_a_zero_pulls_it_to_zero():
    keep = np.array([False, True, True, True])
    assert generalized_mean(np.array([0.9, 0.8, np.nan, 0.8]), keep) == pytest.approx(0.8)
    assert generalized_mean(np.array([0.9, 0.0, 0.9, 0.9]), keep) == 0.0
    assert np.isnan(generalized_mean(np.array([0.9, np.nan, np.nan, np.nan]), keep))


def test_a_constant_predictor_has_auc_one_half_everywhere():
    frame = _frame(200, seed=6)
    frame["prob_1"], frame["prob_0"], frame["pred"] = 0.22, 0.78, 0
    table = auc_table(frame, GROUPS, min_group_size=20, n_boot=30)
    assert table.overall["auc"].value == 0.5
    assert (table.overall["auc"].low, table.overall["auc"].high) == (0.5, 0.5)
    for group in ("a", "b"):
        assert all(table.by_group[group][m].value == 0.5 for m in ("auc", "bpsn_auc", "bnsp_auc"))
    assert table.summary[FINAL_SCORE].value == pytest.approx(0.5)
    assert table.notes and "every AUC is 0.5" in table.notes[0]


def test_a_group_with_one_class_has_no_subgroup_auc_and_stays_out_of_the_means():
    frame = _frame(400, seed=7)
    frame["negatives"] = frame["label"] == 0
    table = auc_table(frame, ["a", "negatives"], min_group_size=20, n_boot=20)
    assert table.by_group["negatives"]["auc"].value is None
    assert table.by_group["negatives"]["bpsn_auc"].value == pytest.approx(
        roc_auc_score(frame["label"], frame["prob_1"])  # every example: its negatives + others' positives
    )
    assert table.summary["gmean_subgroup_auc"].value == pytest.approx(table.by_group["a"]["auc"].value)


def test_multiclass_predictions_are_refused_clearly():
    frame = _frame(50).assign(prob_2=0.0)
    with pytest.raises(AuditError, match="binary classifier"):
        auc_table(frame, ["a"], n_boot=0)


def test_every_resampled_auc_equals_sklearn_on_the_repeated_rows_with_ties():
    frame = _frame(240, seed=6, levels=8)  # few distinct scores: many ties
    frame["c"] = frame["a"] & frame["b"]
    groups = ["a", "b", "c", "tiny"]
    label, prob = frame["label"].to_numpy(), frame["prob_1"].to_numpy()
    positive = label == 1
    masks = np.column_stack([np.ones(240, bool), frame[groups].to_numpy(bool)])
    layout = auc_layout(prob, positive, masks)
    weights = np.concatenate(list(iter_weights(240, 6, 2))).astype(np.int32)
    got = weighted_aucs(weights[:, layout.order], layout)  # overall, then (subgroup, BPSN, BNSP) per group
    for column, selected in enumerate(_selections(frame, groups, positive)):
        expected = []
        for w in weights.astype(int):
            repeated = np.repeat(np.arange(240)[selected], w[selected])
            both = len(set(label[repeated])) == 2
            expected.append(roc_auc_score(label[repeated], prob[repeated]) if both else np.nan)
        np.testing.assert_allclose(got[:, column], expected, rtol=0, atol=1e-12, err_msg=str(column))


def _selections(frame: pd.DataFrame, groups: list[str], positive: np.ndarray) -> list[np.ndarray]:
    """The rows of every AUC from the definitions: all, then per group subgroup, BPSN, BNSP."""
    out = [np.ones(len(frame), bool)]
    for group in groups:
        inside = frame[group].to_numpy()
        out += [inside, inside & ~positive | ~inside & positive, inside & positive | ~inside & ~positive]
    return out
