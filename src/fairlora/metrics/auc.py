"""Threshold-free per-group metrics of toxicity / hate-speech classifiers: ROC-AUC and the bias AUCs.

For a binary classifier scored by P(positive) (`prob_1`), after Borkan et al. 2019, "Nuanced Metrics
for Measuring Unintended Bias with Real Data for Text Classification" (the Jigsaw Unintended Bias
in Toxicity Classification metric):
  auc        overall ROC-AUC; per group, the Subgroup AUC (AUC on the group's own examples);
  bpsn_auc   Background Positive, Subgroup Negative: AUC on the group's negatives plus the positives
             outside the group (low = the group's harmless texts score like others' harmful ones);
  bnsp_auc   Background Negative, Subgroup Positive: AUC on the group's positives plus the negatives
             outside the group (low = the group's harmful texts score like others' harmless ones).
Summary over the groups of at least min_group_size members: the generalized mean with power -5 of
each bias AUC, M_p = (mean over groups of m_g^p)^(1/p), which leans on the worst groups; the final
score 0.25 * overall AUC + 0.75 * mean of the three generalized means; and the worst (lowest)
Subgroup AUC with the Subgroup AUC gap.

AUCs are Mann-Whitney statistics from ranks, ties counting half (as sklearn's `roc_auc_score`), and
weighted by the audit's shared bootstrap resample counts for CIs (see `fairlora.metrics.ranking`).
A constant score ties every pair: every AUC is 0.5. Every Estimate's `n` counts the examples its
AUC ranks (positives plus negatives).

Intervals (see `fairlora.metrics.bootstrap`): bias-corrected percentile intervals of the resampled
AUCs, generalized means and final score; the worst (lowest) Subgroup AUC's interval also spans that
group's own interval.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import iter_ordered_weights, safe_ratio
from fairlora.metrics.ranking import Ranked, cumulative, descending, rank_selection, weighted_auc
from fairlora.metrics.summary import (
    add_worst_and_gap,
    column_estimates,
    group_matrix,
    kept_columns,
    set_summary,
    used_rows,
)
from fairlora.metrics.table import MetricTable

POWER = -5.0
OVERALL_WEIGHT = 0.25
BIAS_AUCS = ("auc", "bpsn_auc", "bnsp_auc")  # per group; "auc" within a group is the Subgroup AUC
GENERALIZED_MEANS = {"auc": "gmean_subgroup_auc", "bpsn_auc": "gmean_bpsn_auc", "bnsp_auc": "gmean_bnsp_auc"}
FINAL_SCORE = "final_auc_score"


def _scores(predictions: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(P(positive), label == 1) of a binary classifier's predictions, or a clear AuditError."""
    classes = sorted(str(c) for c in predictions.columns if str(c).startswith("prob_"))
    if classes != ["prob_0", "prob_1"] or "label" not in predictions.columns:
        raise AuditError(
            f"the auc section needs a binary classifier's labels and prob_0 / prob_1, but the predictions "
            f"of {source} hold {classes or 'no probabilities'}; drop `auc` from audit.sections or audit a "
            "binary classification run"
        )
    score = predictions["prob_1"].to_numpy(np.float64)
    if np.isnan(score).any():
        raise AuditError(f"the auc section got NaN probabilities in the predictions of {source}")
    return score, predictions["label"].to_numpy().astype(np.int64) == 1


@dataclass(frozen=True)
class Layout:
    """Everything the AUCs need, in descending score order: the run bookkeeping of all examples (as
    ranked with the labels as they are and flipped), each group's own examples, group memberships."""

    order: np.ndarray
    overall: Ranked  # per negative: positives above / through its score run
    flipped: Ranked  # per positive: negatives above / through its score run
    subgroups: list[Ranked]
    positive_groups: np.ndarray  # (positives, G) float64 memberships
    negative_groups: np.ndarray  # (negatives, G)


def auc_layout(score: np.ndarray, positive: np.ndarray, masks: np.ndarray) -> Layout:
    """The `Layout` of scores, labels and (n, 1 + G) group masks (column 0: every example)."""
    order = descending(score)
    score, positive, masks = score[order], positive[order], masks[order]
    everyone = np.ones(len(order), dtype=bool)
    overall = rank_selection(score, positive, everyone)
    return Layout(
        order,
        overall,
        rank_selection(score, ~positive, everyone),
        [rank_selection(score, positive, masks[:, c]) for c in range(1, masks.shape[1])],
        masks[overall.positives, 1:].astype(np.float64),
        masks[overall.negatives, 1:].astype(np.float64),
    )


def weighted_aucs(weights: np.ndarray, layout: Layout) -> np.ndarray:
    """Every AUC under each row of integer weights (rows, n) in descending score order: (rows, 1 + 3G).

    Column 0 is the overall AUC, then per group its subgroup, BPSN and BNSP AUCs. With A(j) the
    weighted positives above negative j (ties half) and B(i) the weighted negatives below positive i,
    BPSN pairs of group g are sum over g's negatives of w A minus g's own pairs, BNSP pairs sum over
    g's positives of w B minus g's own pairs: one pass over all examples and two products with the
    memberships serve every group; only the subgroup AUCs rank each group's examples.
    """
    overall, flipped = layout.overall, layout.flipped
    positive_weights, negative_weights = weights[:, overall.positives], weights[:, overall.negatives]
    positives, negatives = cumulative(positive_weights), cumulative(negative_weights)
    above = positives[:, overall.before] + positives[:, overall.through]  # 2 A(j)
    below = 2 * negatives[:, -1:] - negatives[:, flipped.before] - negatives[:, flipped.through]  # 2 B(i)
    pairs_by_negative = negative_weights * (above / 2.0)
    pairs_by_positive = positive_weights * (below / 2.0)
    total_positive, total_negative = (
        positives[:, -1:].astype(np.float64),
        negatives[:, -1:].astype(np.float64),
    )
    positive_in = positive_weights @ layout.positive_groups
    negative_in = negative_weights @ layout.negative_groups
    subgroup = np.stack([weighted_auc(weights, r) for r in layout.subgroups], axis=1).reshape(
        len(weights), -1
    )
    own_pairs = np.nan_to_num(subgroup) * positive_in * negative_in
    bpsn = safe_ratio(
        pairs_by_negative @ layout.negative_groups - own_pairs, (total_positive - positive_in) * negative_in
    )
    bnsp = safe_ratio(
        pairs_by_positive @ layout.positive_groups - own_pairs, positive_in * (total_negative - negative_in)
    )
    everything = safe_ratio(pairs_by_negative.sum(axis=1, keepdims=True), total_positive * total_negative)
    per_group = np.stack([subgroup, bpsn, bnsp], axis=2).reshape(len(weights), -1)
    return np.concatenate([everything, per_group], axis=1)


def _supports(layout: Layout) -> np.ndarray:
    """The examples each AUC ranks, in `weighted_aucs` column order."""
    positive_in, negative_in = layout.positive_groups.sum(axis=0), layout.negative_groups.sum(axis=0)
    positives, negatives = len(layout.overall.positives), len(layout.overall.negatives)
    per_group = np.stack(
        [
            positive_in + negative_in,
            negative_in + positives - positive_in,
            positive_in + negatives - negative_in,
        ],
        axis=1,
    )
    return np.concatenate([[positives + negatives], per_group.reshape(-1)]).astype(np.float64)


def _resampled(layout: Layout, n_boot: int, seed: int) -> np.ndarray:
    """Every AUC under each resample: (n_boot, 1 + 3G)."""
    parts = [weighted_aucs(weights, layout) for weights in iter_ordered_weights(layout.order, n_boot, seed)]
    return np.concatenate(parts) if parts else np.zeros((0, 1 + 3 * len(layout.subgroups)))


def generalized_mean(values: np.ndarray, keep: np.ndarray, power: float = POWER) -> np.ndarray:
    """(mean over kept columns of v^power)^(1/power) along the last axis, NaN columns left out."""
    chosen = np.asarray(values, np.float64)[..., np.asarray(keep, bool)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(chosen**power, axis=-1) if chosen.shape[-1] else np.full(chosen.shape[:-1], np.nan)
        return means ** (1.0 / power)


def _by_metric(values: np.ndarray, fill: float = np.nan) -> dict[str, np.ndarray]:
    """(..., 1 + 3G) selection values -> {metric: (..., 1 + G)}: column 0 overall (`fill` for BPSN/BNSP)."""
    overall = values[..., :1]
    groups = values[..., 1:].reshape(*values.shape[:-1], (values.shape[-1] - 1) // 3, 3)
    filled = np.full_like(overall, fill)
    return {
        metric: np.concatenate([overall if i == 0 else filled, groups[..., i]], axis=-1)
        for i, metric in enumerate(BIAS_AUCS)
    }


def _final_figures(
    point: dict[str, np.ndarray], boot: dict[str, np.ndarray], keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The three generalized means and the final score: point (4,) and resampled (B, 4)."""
    point_means = [generalized_mean(point[m], keep) for m in BIAS_AUCS]
    boot_means = [generalized_mean(boot[m], keep) for m in BIAS_AUCS]
    final = OVERALL_WEIGHT * point["auc"][0] + (1 - OVERALL_WEIGHT) * np.mean(point_means)
    boot_final = OVERALL_WEIGHT * boot["auc"][:, 0] + (1 - OVERALL_WEIGHT) * np.mean(boot_means, axis=0)
    return (
        np.array([*point_means, final]),
        np.stack([*boot_means, boot_final], axis=1) if len(boot_final) else np.zeros((0, 4)),
    )


def auc_table(
    predictions: pd.DataFrame,
    group_columns: list[str],
    min_group_size: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    source: str = "this run",
) -> MetricTable:
    """Overall and Subgroup / BPSN / BNSP AUCs with CIs, their generalized means and the final score."""
    score, positive = _scores(predictions, source)
    masks = group_matrix(predictions, group_columns, "the auc section")
    layout = auc_layout(score, positive, masks)
    point = _by_metric(weighted_aucs(np.ones((1, len(score)), dtype=np.int32), layout)[0])
    boot = _by_metric(_resampled(layout, n_boot, seed))
    support = _by_metric(_supports(layout), fill=0.0)
    estimates = column_estimates(point, boot, support, level)
    sizes = masks.sum(axis=0)
    table = MetricTable("auc", {"auc": estimates[0]["auc"]})
    table.by_group = dict(zip(group_columns, estimates[1:], strict=True))
    table.group_sizes = {g: int(s) for g, s in zip(group_columns, sizes[1:], strict=True)}
    table.flagged = [g for g in group_columns if table.group_sizes[g] < min_group_size]
    table.samples["overall/auc"] = boot["auc"][:, 0]
    keep = kept_columns(sizes, min_group_size)
    means, boot_means = _final_figures(point, boot, keep)
    for index, name in enumerate([*GENERALIZED_MEANS.values(), FINAL_SCORE]):
        set_summary(table, name, means[index], boot_means[:, index], len(predictions), level)
    names = ("worst_group_auc", "auc_gap")
    n_used = used_rows(masks, keep)
    add_worst_and_gap(table, names, point["auc"], boot["auc"], keep, n_used, level, False, metric="auc")
    if len(np.unique(score)) == 1:
        table.notes.append(
            f"constant score: P(positive) = {score[0]:.3g} for every example, so every AUC is 0.5"
        )
    return table
