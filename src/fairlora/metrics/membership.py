"""Membership inference per (overlapping) subgroup: the loss attack and offline LiRA scoring.

Point estimates come from sklearn's exact ROC (every distinct score is a threshold). CIs reuse the
audit's bootstrap resample counts: per resample, weighted cumulative member / non-member counts in
descending score order, read only at the last position of each run of equal scores, give the whole
weighted ROC at once (AUC by the trapezoid rule, so ties count half, as in `roc_auc_score`; see
`fairlora.metrics.ranking`, where members are the positives). Every Estimate's `n` is the number of
members plus non-members it rests on.

Intervals (see `fairlora.metrics.bootstrap`): bias-corrected percentile intervals of the resampled
figures, TPR at a fixed FPR included (its threshold is read off the non-members of each resample, so
it is no fixed-denominator proportion); the most vulnerable group's AUC (the worst group) also
spans that group's own interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import auc as trapezoid_auc
from sklearn.metrics import roc_curve

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import bc_interval, iter_ordered_weights, safe_ratio
from fairlora.metrics.ranking import Ranked, cumulative, descending, pair_auc, rank_selection
from fairlora.metrics.summary import add_worst_and_gap, group_matrix, used_rows
from fairlora.metrics.table import Estimate, MetricTable

FPR_TARGETS = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}
METRICS = ("auc", "best_balanced_accuracy", *FPR_TARGETS)
PROB_CLIP = 1e-12
MIN_STD = 1e-6


def _max_count(target: float, total: np.ndarray) -> np.ndarray:
    """The largest integer k with k / total <= target, compared as sklearn's division does (0 if total 0)."""
    total = np.where(total > 0, total, 1).astype(np.float64)
    k = np.floor(target * total)
    k += (k + 1) / total <= target
    k -= k / total > target
    return k.astype(np.int64)


def _first_above(running: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Per row of `running` (non-decreasing int rows), how many entries are <= each of its limits.

    limits is (rows, targets); one searchsorted over the rows laid end to end answers them all.
    """
    rows, width = running.shape
    offsets = np.arange(rows, dtype=np.int64) * (int(running[:, -1].max(initial=0)) + 1)
    flat = (running + offsets[:, None]).ravel()
    found = np.searchsorted(flat, (limits + offsets[:, None]).ravel(), side="right").reshape(limits.shape)
    return found - (np.arange(rows) * width)[:, None]


def _best_spread(members: np.ndarray, nonmembers: np.ndarray, ranked: Ranked) -> np.ndarray:
    """max(0, max over corners of TP * N - FP * P): picked in float32, then evaluated exactly."""
    positives, negatives = members[:, -1:].astype(np.int64), nonmembers[:, -1:].astype(np.int64)
    true_counts = members[:, ranked.corner_before]
    false_counts = nonmembers[:, ranked.corner_false_before]
    rates = np.multiply(true_counts, _inverse(positives), dtype=np.float32)
    rates -= np.multiply(false_counts, _inverse(negatives), dtype=np.float32)
    pick = rates.argmax(axis=1)[:, None]
    true_at = np.take_along_axis(true_counts, pick, axis=1).astype(np.int64)
    false_at = np.take_along_axis(false_counts, pick, axis=1).astype(np.int64)
    return np.maximum(true_at * negatives - false_at * positives, 0)[:, 0].astype(np.float64)


def _inverse(counts: np.ndarray) -> np.ndarray:
    """1 / counts as float32, 0 where a count is 0 (those rows are NaN in the end anyway)."""
    return np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0).astype(np.float32)


def attack_figures(weights: np.ndarray, ranked: Ranked) -> dict[str, np.ndarray]:
    """Attack metrics under each row of integer weights (rows, n) given in descending score order."""
    if not len(ranked.positives) or not len(ranked.negatives):
        return {m: np.full(len(weights), np.nan) for m in METRICS}
    members = cumulative(weights[:, ranked.positives])
    nonmember_weights = weights[:, ranked.negatives]
    nonmembers = cumulative(nonmember_weights)
    positives, negatives = members[:, -1].astype(np.int64), nonmembers[:, -1].astype(np.int64)
    figures = {"auc": pair_auc(members, nonmember_weights, ranked)}
    best = _best_spread(members, nonmembers, ranked)
    figures["best_balanced_accuracy"] = 0.5 + safe_ratio(best, 2.0 * positives.astype(np.float64) * negatives)
    # the first non-member whose run pushes FPR above a target ends that target's admissible points
    above = members[:, ranked.before]
    limits = np.stack([_max_count(t, negatives) for t in FPR_TARGETS.values()], axis=1)
    firsts = _first_above(nonmembers[:, ranked.false_through], limits)
    for column, name in enumerate(FPR_TARGETS):
        first = firsts[:, column]
        inside = first < above.shape[1]
        reached = np.take_along_axis(above, np.where(inside, first, 0)[:, None], axis=1)[:, 0]
        rate = safe_ratio(np.where(inside, reached, positives), positives)
        figures[name] = np.where(negatives > 0, rate, np.nan)
    return figures


def _resampled(ranked: list[Ranked], order: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Each metric under each resample: {metric: (n_boot, groups)}."""
    parts: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for weights in iter_ordered_weights(order, n_boot, seed):
        columns = [attack_figures(weights, r) for r in ranked]
        for m in METRICS:
            parts[m].append(np.stack([c[m] for c in columns], axis=1))
    width = len(ranked)
    return {m: np.concatenate(p) if p else np.zeros((0, width)) for m, p in parts.items()}


def _point(member: np.ndarray, score: np.ndarray) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """sklearn's exact ROC of one group: metrics, and the full (fpr, tpr) curve."""
    if member.all() or not member.any():
        return {m: np.nan for m in METRICS}, np.zeros(0), np.zeros(0)
    fpr, tpr, _ = roc_curve(member, score, drop_intermediate=False)
    figures = {"auc": trapezoid_auc(fpr, tpr), "best_balanced_accuracy": float(np.max((tpr + 1 - fpr) / 2))}
    figures |= {name: float(tpr[fpr <= target].max()) for name, target in FPR_TARGETS.items()}
    return figures, fpr, tpr


def downsample_curve(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """At most max_points of an ROC curve: both ends, and the corners next to log- and linear-spaced FPRs.

    Each grid FPR keeps the highest point at or below it and the next one, so steps stay steps and the
    TPR at 1% / 0.1% FPR reads the same off the curve as from the full ROC.
    """
    last = len(fpr) - 1
    if len(fpr) <= max_points:
        keep = np.arange(len(fpr))
    else:
        per_grid = max(1, (max_points - 2 - 2 * len(FPR_TARGETS)) // 4)
        grids = [np.geomspace(1e-4, 1.0, per_grid), np.linspace(0.0, 1.0, per_grid)]
        targets = np.concatenate([*grids, list(FPR_TARGETS.values())])  # TPR@FPR points stay on it
        below = np.clip(np.searchsorted(fpr, targets, side="right") - 1, 0, last)
        keep = np.unique(np.concatenate([[0, last], below, np.minimum(below + 1, last)]))
        if len(keep) > max_points:
            keep = keep[np.unique(np.linspace(0, len(keep) - 1, max(max_points, 2)).round().astype(int))]
    return {"x": [float(v) for v in fpr[keep]], "y": [float(v) for v in tpr[keep]]}


def _clean_scores(score: np.ndarray) -> np.ndarray:
    score = np.asarray(score, np.float64)
    if np.isnan(score).any():
        raise AuditError(
            f"the membership audit got {int(np.isnan(score).sum())} NaN attack scores (e.g. a NaN loss); "
            "fix the model's predictions or drop those examples before auditing"
        )
    if np.isfinite(score).all():
        return score
    return np.unique(score, return_inverse=True)[1].astype(np.float64)  # ranks keep the ROC; inf is fine


def attack_table(
    is_member: np.ndarray,
    score: np.ndarray,
    groups: pd.DataFrame,
    min_group_size: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    max_curve_points: int = 200,
) -> MetricTable:
    """Attack AUC, best balanced accuracy and TPR at 1% / 0.1% FPR per group (kind "membership").

    Higher `score` means "member". A group is flagged when its members or non-members number
    fewer than min_group_size; the summary (most vulnerable group's AUC, AUC gap) skips flagged groups.
    """
    member = np.asarray(is_member, bool).reshape(-1)
    score = _clean_scores(score).reshape(-1)
    if not len(member) == len(score) == len(groups):
        raise AuditError(
            f"the membership audit got {len(member)} membership flags, {len(score)} scores and "
            f"{len(groups)} group rows; pass one of each per example"
        )
    names = [str(c) for c in groups.columns]
    masks = group_matrix(groups, list(groups.columns), "the membership audit")
    order = descending(score)
    ranked = [rank_selection(score[order], member[order], masks[order, c]) for c in range(masks.shape[1])]
    boot = _resampled(ranked, order, n_boot, seed)
    table = MetricTable(kind="membership", overall={})
    points = [_point(member[masks[:, c]], score[masks[:, c]]) for c in range(masks.shape[1])]
    point = {m: np.array([figures[m] for figures, _, _ in points], np.float64) for m in METRICS}
    bounds = {m: bc_interval(point[m], boot[m], level) for m in METRICS}
    for c, name in enumerate(["overall", *names]):
        estimates = _estimates(
            {m: (point[m][c], bounds[m][0][c], bounds[m][1][c]) for m in METRICS}, ranked[c]
        )
        if c == 0:
            table.overall = estimates
        else:
            table.by_group[name] = estimates
            table.group_sizes[name] = ranked[c].size
        _, fpr, tpr = points[c]
        if len(fpr):
            table.curves[f"roc/{name}"] = downsample_curve(fpr, tpr, max_curve_points)
    keep = np.array([min(len(r.positives), len(r.negatives)) >= min_group_size for r in ranked])
    keep[0] = False
    table.flagged = [name for name, kept in zip(names, keep[1:], strict=True) if not kept]
    table.samples = {f"overall/{m}": boot[m][:, 0] for m in METRICS}
    # the most vulnerable group has the highest attack AUC
    names, n_used = ("worst_group_auc", "auc_gap"), used_rows(masks, keep)
    add_worst_and_gap(table, names, point["auc"], boot["auc"], keep, n_used, level, True, metric="auc")
    return table


def _estimates(figures: dict[str, tuple[float, float, float]], ranked: Ranked) -> dict[str, Estimate]:
    """{metric: Estimate} of one group from (value, low, high) per metric, plus its member counts."""
    members, nonmembers = len(ranked.positives), len(ranked.negatives)
    out = {m: Estimate(*figures[m], members + nonmembers) for m in METRICS}
    out["n_members"] = Estimate(members, n=members)
    out["n_nonmembers"] = Estimate(nonmembers, n=nonmembers)
    return out


def loss_attack_table(
    predictions: pd.DataFrame,
    group_columns: list[str],
    min_group_size: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    source: str = "this run",
) -> MetricTable:
    """The loss attack: train rows are members, test rows non-members, score = -loss."""
    for column in ("split", "loss"):
        if column not in predictions.columns:
            raise AuditError(
                f"the membership audit needs a `{column}` column, but the predictions of {source} lack it; "
                "predict again with eval.splits including train and test"
            )
    split = predictions["split"].astype(str)
    for name, role in (("train", "members"), ("test", "non-members")):
        if not (split == name).any():
            raise AuditError(
                f"the membership audit needs predictions on the {name} split ({role}), but the predictions "
                f"of {source} hold no {name} rows; evaluate with eval.splits including train and test"
            )
    rows = predictions[split.isin(["train", "test"])]
    masks = group_matrix(rows, group_columns, "the membership audit")
    groups = pd.DataFrame(masks[:, 1:], columns=list(group_columns), index=rows.index)
    member = (rows["split"].astype(str) == "train").to_numpy()
    score = -rows["loss"].to_numpy(np.float64)
    return attack_table(member, score, groups, min_group_size, n_boot, seed, level)


def lira_statistic(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's per-example statistic log p_y - log(1 - p_y); probs (..., n, K), labels (n,)."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    index = np.broadcast_to(labels[:, None], (*probs.shape[:-1], 1))
    p_true = np.clip(np.take_along_axis(probs, index, axis=-1)[..., 0], PROB_CLIP, 1.0 - PROB_CLIP)
    return np.log(p_true) - np.log1p(-p_true)


def lira_scores(
    target_stat: np.ndarray, shadow_stats: np.ndarray, global_variance: bool = False
) -> np.ndarray:
    """Offline LiRA score: z = (target statistic - OUT mean) / OUT std under a Gaussian fit per example.

    The one-sided likelihood P(OUT statistic < target statistic) is Phi(z), a monotone function of z,
    so z ranks examples (and gives every ROC figure) exactly as Phi(z) would, without Phi's rounding
    to 1.0 for large z, which would tie the most exposed examples exactly where TPR at 0.1% FPR is
    read. shadow_stats is (K, n), every shadow trained without every audit example. The std uses
    ddof=1; `global_variance` pools one variance over all examples (better for small K).
    Higher = member.
    """
    target = np.asarray(target_stat, np.float64).reshape(-1)
    shadows = np.asarray(shadow_stats, np.float64)
    shadows = shadows.reshape(1, -1) if shadows.ndim == 1 else shadows
    if shadows.shape[0] < 2:
        raise AuditError(
            f"offline LiRA needs at least 2 shadow models to fit a Gaussian per example, but got "
            f"{shadows.shape[0]}; train and score at least 2 shadow models"
        )
    if shadows.shape[1] != len(target):
        raise AuditError(
            f"offline LiRA got target statistics for {len(target)} examples but shadow statistics for "
            f"{shadows.shape[1]}; score the same audit examples with the target and every shadow"
        )
    variance = shadows.var(axis=0, ddof=1)
    if global_variance:
        variance = np.full_like(variance, variance.mean())
    std = np.maximum(np.sqrt(variance), MIN_STD)
    return (target - shadows.mean(axis=0)) / std
