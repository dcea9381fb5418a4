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

import numpy as np
import pandas as pd

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import iter_weights
from fairlora.metrics.ranking import Ranked, descending, rank_selection, weighted_auc
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
ROWS_PER_STEP = 64  # resamples handled together


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


def _selections(masks: np.ndarray, positive: np.ndarray) -> list[np.ndarray]:
    """Row masks of every AUC: overall, then per group its subgroup, BPSN and BNSP examples."""
    selections = [masks[:, 0]]
    for column in range(1, masks.shape[1]):
        inside = masks[:, column]
        selections += [
            inside,
            inside & ~positive | ~inside & positive,
            inside & positive | ~inside & ~positive,
        ]
    return selections


def _resampled(ranked: list[Ranked], order: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Each selection's AUC under each resample: (n_boot, selections)."""
    parts = []
    for chunk in iter_weights(len(order), n_boot, seed):
        for start in range(0, len(chunk), ROWS_PER_STEP):
            weights = chunk[start : start + ROWS_PER_STEP][:, order].astype(np.int32)
            parts.append(np.stack([weighted_auc(weights, r) for r in ranked], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, len(ranked)))


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
    order = descending(score)
    ranked = [rank_selection(score[order], positive[order], s[order]) for s in _selections(masks, positive)]
    ones = np.ones((1, len(order)), dtype=np.int32)
    point = _by_metric(np.array([weighted_auc(ones, r)[0] for r in ranked]))
    boot = _by_metric(_resampled(ranked, order, n_boot, seed))
    support = _by_metric(np.array([r.size for r in ranked], dtype=np.float64), fill=0.0)
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
