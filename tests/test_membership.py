"""Membership inference: exact ROC figures against sklearn and by hand, bootstrap CIs, offline LiRA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import iter_weights
from fairlora.metrics.membership import (
    attack_figures,
    attack_table,
    downsample_curve,
    lira_scores,
    lira_statistic,
    loss_attack_table,
)
from fairlora.metrics.ranking import descending, rank_selection
from interval_oracles import bias_corrected


def draws(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The audit's bootstrap resample counts, (n_boot, n), drawn directly."""
    return np.concatenate(list(iter_weights(n, n_boot, seed)))


def weighted_figures(weights: np.ndarray, member: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
    """Attack figures under each row of integer example weights, as the bootstrap computes them."""
    order = descending(score)
    ranked = rank_selection(score[order], np.asarray(member, bool)[order], np.ones(len(order), bool))
    return attack_figures(np.asarray(weights).reshape(-1, len(order))[:, order].astype(np.int32), ranked)


def _sklearn_figures(member: np.ndarray, score: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(member, score, drop_intermediate=False)
    return {
        "auc": roc_auc_score(member, score),
        "best_balanced_accuracy": np.max((tpr + 1 - fpr) / 2),
        "tpr_at_1pct_fpr": tpr[fpr <= 0.01].max(),
        "tpr_at_0.1pct_fpr": tpr[fpr <= 0.001].max(),
    }


def _hand_made() -> tuple[np.ndarray, np.ndarray]:
    """200 non-members scored 0/200 .. 199/200; 3 members on top, 4 tied with the top non-member, 3 last."""
    score = np.concatenate([np.arange(200) / 200, [5.0] * 3, [199 / 200] * 4, [-1.0] * 3])
    member = np.concatenate([np.zeros(200, bool), np.ones(10, bool)])
    return member, score


def test_tpr_at_fpr_and_auc_against_a_hand_made_roc():
    # ROC points: (0, 0.3) above every non-member; the tie run adds 4 members and 1 non-member:
    # (0.005, 0.7); then non-members only up to (1, 0.7), and the last 3 members give (1, 1).
    # AUC = (3 * 200 + 4 * (199 + 0.5)) / (10 * 200) = 0.699; TPR@1% = 0.7; TPR@0.1% = 0.3;
    # best balanced accuracy at (0.005, 0.7) = (0.7 + 1 - 0.005) / 2 = 0.8475
    member, score = _hand_made()
    groups = pd.DataFrame({"all": np.ones(210, bool)})
    table = attack_table(member, score, groups, min_group_size=1, n_boot=50)
    figures = {name: estimate.value for name, estimate in table.overall.items()}
    assert figures["auc"] == pytest.approx(0.699)
    assert figures["tpr_at_1pct_fpr"] == pytest.approx(0.7)
    assert figures["tpr_at_0.1pct_fpr"] == pytest.approx(0.3)
    assert figures["best_balanced_accuracy"] == pytest.approx(0.8475)
    assert (figures["n_members"], figures["n_nonmembers"]) == (10, 200)
    unit = weighted_figures(np.ones((1, 210)), member, score)
    assert {k: v[0] for k, v in unit.items()} == pytest.approx({k: figures[k] for k in unit})


@pytest.mark.parametrize("levels", [3, 12, None])
def test_point_and_weighted_figures_equal_sklearn_with_ties(levels):
    rng = np.random.default_rng(levels or 0)
    for _ in range(20):
        n = int(rng.integers(20, 400))
        member = rng.random(n) < rng.uniform(0.2, 0.8)
        score = rng.random(n) if levels is None else rng.integers(0, levels, n).astype(float)
        score = score + 0.3 * member
        counts = rng.integers(0, 3, size=(3, n))
        counts[0] = 1
        weighted = weighted_figures(counts, member, score)
        for row in range(3):
            rows = np.repeat(np.arange(n), counts[row])  # integer weights = repeated examples
            expected = _sklearn_figures(member[rows], score[rows])
            assert {k: v[row] for k, v in weighted.items()} == pytest.approx(expected, abs=1e-12)
    table = attack_table(member, score, pd.DataFrame({"g": np.ones(n, bool)}), n_boot=20)
    assert table.overall["auc"].value == pytest.approx(roc_auc_score(member, score), abs=1e-12)


def _loss_table(n: int, seed: int = 0) -> pd.DataFrame:
    """Members (train) have lower loss, markedly so in group `leaky`; `tiny` has 5 members."""
    rng = np.random.default_rng(seed)
    split = np.where(rng.random(n) < 0.5, "train", "test")
    leaky = rng.random(n) < 0.4
    shift = np.where(leaky, 0.8, 0.2) * (split == "train")
    frame = pd.DataFrame({"id": [str(i) for i in range(n)], "split": split})
    frame["loss"] = np.exp(rng.normal(0.0, 1.0, n) - shift)
    frame["leaky"], frame["safe"] = leaky, ~leaky
    frame["tiny"] = (split == "test") & (rng.random(n) < 0.3)
    frame.loc[np.flatnonzero(split == "train")[:5], "tiny"] = True
    frame["empty"] = False
    return frame


def test_loss_attack_per_group_matches_sklearn_and_flags_small_groups():
    frame = _loss_table(1500)
    table = loss_attack_table(frame, ["leaky", "safe", "tiny", "empty"], min_group_size=20, n_boot=200)
    member, score = (frame["split"] == "train").to_numpy(), -frame["loss"].to_numpy()
    for group in ("leaky", "safe"):
        rows = frame[group].to_numpy()
        expected = _sklearn_figures(member[rows], score[rows])
        got = {k: table.by_group[group][k].value for k in expected}
        assert got == pytest.approx(expected)
        for name, estimate in table.by_group[group].items():
            if name in expected:
                assert estimate.low <= estimate.value <= estimate.high, name
                assert estimate.n == rows.sum()
    assert table.overall["auc"].value == pytest.approx(roc_auc_score(member, score))
    assert table.flagged == ["tiny", "empty"]
    assert table.by_group["leaky"]["auc"].value > table.by_group["safe"]["auc"].value
    assert table.labels["worst_group"] == "leaky"
    assert table.summary["worst_group_auc"].value == pytest.approx(table.by_group["leaky"]["auc"].value)
    gap = table.by_group["leaky"]["auc"].value - table.by_group["safe"]["auc"].value
    assert table.summary["auc_gap"].value == pytest.approx(gap)
    assert table.summary["auc_gap"].low > 0  # the planted leak is seen in (nearly) every resample
    empty = table.by_group["empty"]["auc"]
    assert (empty.value, empty.low, empty.high, empty.n) == (None, None, None, 0)
    assert "roc/empty" not in table.curves and "roc/leaky" in table.curves


def test_attack_cis_are_bias_corrected_percentiles_over_the_shared_resamples():
    frame = _loss_table(300, seed=1)
    table = loss_attack_table(frame, ["leaky"], min_group_size=1, n_boot=200, seed=5)
    member, score = (frame["split"] == "train").to_numpy(), -frame["loss"].to_numpy()
    resampled = weighted_figures(draws(300, 200, 5), member, score)
    for name in ("auc", "tpr_at_1pct_fpr"):
        low, high = bias_corrected(table.overall[name].value, resampled[name])
        assert table.overall[name].low == pytest.approx(low), name
        assert table.overall[name].high == pytest.approx(high), name


def test_cis_shrink_with_n():
    def width(n):
        auc = loss_attack_table(_loss_table(n), ["leaky"], n_boot=200).overall["auc"]
        return auc.high - auc.low

    assert width(8000) < width(400) / 2


def test_roc_curves_are_downsampled_keeping_ends_and_low_fpr_points():
    rng = np.random.default_rng(2)
    member = rng.random(5000) < 0.5
    score = rng.normal(member * 1.0, 1.0)
    fpr, tpr, _ = roc_curve(member, score, drop_intermediate=False)
    curve = downsample_curve(fpr, tpr, max_points=60)
    assert len(curve["x"]) <= 60
    assert (curve["x"][0], curve["y"][0]) == (0.0, 0.0) and (curve["x"][-1], curve["y"][-1]) == (1.0, 1.0)
    assert np.all(np.diff(curve["x"]) >= 0) and np.all(np.diff(curve["y"]) >= 0)
    for target in (0.001, 0.01):  # TPR at a low FPR reads the same off the plotted curve
        kept = np.array(curve["x"]) <= target
        assert max(np.array(curve["y"])[kept]) == pytest.approx(tpr[fpr <= target].max())
    table = attack_table(member, score, pd.DataFrame({"g": member | True}), n_boot=10, max_curve_points=60)
    assert table.curves["roc/overall"] == curve


def test_missing_split_raises_audit_error():
    frame = _loss_table(50)
    with pytest.raises(AuditError, match="no train rows") as error:
        loss_attack_table(frame[frame["split"] == "test"], ["leaky"])
    assert "eval.splits including train and test" in str(error.value)
    with pytest.raises(AuditError, match="no test rows"):
        loss_attack_table(frame[frame["split"] == "train"], ["leaky"])


def test_lira_statistic_is_the_logit_difference_for_binary():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(50, 2))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 2, 50)
    expected = logits[np.arange(50), labels] - logits[np.arange(50), 1 - labels]
    np.testing.assert_allclose(lira_statistic(probs, labels), expected, atol=1e-9)
    shadows = lira_statistic(np.stack([probs, probs[::-1]]), labels)  # (K, n, classes) -> (K, n)
    assert shadows.shape == (2, 50) and np.allclose(shadows[0], expected)
    extreme = lira_statistic(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 1]))
    assert np.all(np.isfinite(extreme)) and extreme[0] > 25 > -25 > extreme[1]  # clipped at 1e-12


def test_lira_scores_rank_members_above_their_out_distribution():
    shadows = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 4.0], [2.0, 1.0, 6.0]])  # 3 shadows x 3 examples
    target = np.array([2.0, 1.0, 0.0])
    # per example: mean 1, 1, 4; std (ddof=1) 1, 0 -> floored, 2; the score is z (Phi(z) is the likelihood)
    expected = np.array([(2.0 - 1.0) / 1.0, 0.0, (0.0 - 4.0) / 2.0])
    np.testing.assert_allclose(lira_scores(target, shadows), expected)
    pooled = np.sqrt((1.0 + 0.0 + 4.0) / 3)
    np.testing.assert_allclose(
        lira_scores(target, shadows, global_variance=True), (target - [1.0, 1.0, 4.0]) / pooled
    )
    rng = np.random.default_rng(4)
    out = rng.normal(0.0, 1.0, size=(8, 400)) + rng.normal(0.0, 2.0, 400)  # per-example difficulty
    member = np.arange(400) < 200
    target = out.mean(axis=0) + rng.normal(0.0, 0.3, 400) + 2.0 * member
    scores = lira_scores(target, out)
    assert scores[member].mean() > scores[~member].mean()
    table = attack_table(member, scores, pd.DataFrame({"g": np.ones(400, bool)}), n_boot=100)
    assert table.overall["auc"].value > 0.9 and table.overall["auc"].low > 0.85


def test_lira_keeps_the_order_of_large_z_where_the_normal_cdf_rounds_to_one():
    # regression: scoring with norm.cdf(z) tied every z above ~8.3 at 1.0, exactly the examples that
    # decide TPR at 0.1% FPR
    shadows = np.stack([np.zeros(2000), np.full(2000, 0.2)])  # OUT std 0.141 for every example
    z = np.concatenate([np.linspace(9.0, 40.0, 1000), np.linspace(8.5, 39.5, 1000)])
    member = np.arange(2000) < 1000
    target = 0.1 + z * np.sqrt(0.02)
    assert (norm.cdf(z) == 1.0).all()  # the old score could not tell any of them apart
    scores = lira_scores(target, shadows)
    np.testing.assert_allclose(scores, z, rtol=1e-9)
    assert len(np.unique(scores)) == 2000
    table = attack_table(member, scores, pd.DataFrame({"g": np.ones(2000, bool)}), min_group_size=1, n_boot=0)
    fpr, tpr, _ = roc_curve(member, z)
    assert table.overall["tpr_at_0.1pct_fpr"].value == pytest.approx(tpr[fpr <= 0.001].max())
    assert table.overall["tpr_at_0.1pct_fpr"].value > 0.0
    tied = attack_table(member, norm.cdf(z), pd.DataFrame({"g": np.ones(2000, bool)}), n_boot=0)
    assert tied.overall["tpr_at_0.1pct_fpr"].value == 0.0  # what ties at 1.0 reported


def test_lira_needs_two_shadows():
    with pytest.raises(AuditError, match="at least 2 shadow models"):
        lira_scores(np.zeros(3), np.zeros((1, 3)))
