"""Weighted ROC bookkeeping: positives and negatives of a selection in descending score order.

Integer example weights (bootstrap resample counts, or ones for the point estimate) turn every
pairwise count into running sums: the weighted Mann-Whitney AUC is
sum over negatives j of w_j * (positive weight strictly above j + half the positive weight tied
with j) / (W_pos * W_neg), which equals sklearn's `roc_auc_score` (trapezoid rule, ties count half)
on the examples repeated by their weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairlora.metrics.bootstrap import safe_ratio

Columns = np.ndarray | slice


@dataclass(frozen=True)
class Ranked:
    """One selection in descending score order: where its positives and negatives sit, and run counts.

    Positions index the score-sorted order of all examples. For each negative, `before` / `through`
    pick the running positive count over tie runs strictly above / up to the end of its own run;
    `false_before` / `false_through` do the same for negatives (slices where no copy is needed).
    """

    positives: np.ndarray
    negatives: np.ndarray
    before: np.ndarray
    through: Columns
    false_before: Columns
    false_through: Columns
    corner_before: np.ndarray  # (before, false_before) of the first negative after each positive
    corner_false_before: np.ndarray

    @property
    def size(self) -> int:
        """Positives plus negatives."""
        return len(self.positives) + len(self.negatives)


def _as_columns(index: np.ndarray, same_as: np.ndarray | None = None) -> Columns:
    """`index`, or a slice / `same_as` where that selects the same columns without a copy."""
    if same_as is not None and np.array_equal(index, same_as):
        return same_as
    start = int(index[0]) if len(index) else 0
    if np.array_equal(index, np.arange(start, start + len(index))):
        return slice(start, start + len(index))
    return index


def rank_selection(sorted_score: np.ndarray, sorted_positive: np.ndarray, mask: np.ndarray) -> Ranked:
    """The run bookkeeping of the examples in `mask` (all arrays in descending score order)."""
    positions = np.flatnonzero(mask)
    score, positive = sorted_score[positions], sorted_positive[positions]
    new_run = np.ones(len(positions), dtype=bool)
    new_run[1:] = score[1:] != score[:-1]
    run = np.cumsum(new_run) - 1
    runs = int(run[-1]) + 1 if len(run) else 0

    def counts(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        through = np.cumsum(np.bincount(run, weights=flags, minlength=runs)).astype(np.int64)
        return np.concatenate([[0], through[:-1]]).astype(np.int64)[own], through[own]

    own = run[~positive]
    before, through = counts(positive)
    false_before, false_through = counts(~positive)
    # TPR - FPR can only peak before the first negative run that follows new positives
    corner = np.ones(len(before), dtype=bool)
    corner[1:] = before[1:] != before[:-1]
    return Ranked(
        positions[positive],
        positions[~positive],
        before,
        _as_columns(through, before),
        _as_columns(false_before),
        _as_columns(false_through),
        before[corner],
        false_before[corner],
    )


def cumulative(weights: np.ndarray) -> np.ndarray:
    """Running sums along each row with a leading 0 column: (rows, len + 1) int32.

    Integer counts (a resample holds at most n < 2**31 draws): exact, and numpy's integer cumsum
    runs several times faster than its float one.
    """
    totals = np.zeros((len(weights), weights.shape[1] + 1), dtype=np.int32)
    np.cumsum(weights, axis=1, dtype=np.int32, out=totals[:, 1:])
    return totals


def pair_auc(positive_totals: np.ndarray, negative_weights: np.ndarray, ranked: Ranked) -> np.ndarray:
    """Weighted AUC per row from the positives' running sums and the negatives' own weights."""
    above = positive_totals[:, ranked.before]
    tied = above if ranked.through is ranked.before else positive_totals[:, ranked.through]
    pairs = np.einsum("ij,ij->i", negative_weights, above + tied, dtype=np.float64) / 2.0
    total = positive_totals[:, -1].astype(np.float64) * negative_weights.sum(axis=1, dtype=np.float64)
    return safe_ratio(pairs, total)


def weighted_auc(weights: np.ndarray, ranked: Ranked) -> np.ndarray:
    """AUC of the selection under each row of integer weights (rows, n) given in descending score order."""
    if not len(ranked.positives) or not len(ranked.negatives):
        return np.full(len(weights), np.nan)
    return pair_auc(cumulative(weights[:, ranked.positives]), weights[:, ranked.negatives], ranked)


def descending(score: np.ndarray) -> np.ndarray:
    """The stable order of `score` from highest to lowest."""
    return np.argsort(-np.asarray(score, np.float64), kind="stable")
