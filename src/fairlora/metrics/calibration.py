"""Calibration per (overlapping) subgroup: ECE, binary ECE, Brier score and reliability diagrams.

ECE over n_bins equal-width bins of the predicted class's confidence is
sum_b |sum_{i in b} (correct_i - conf_i)| / N, a function of per-bin sums, so it bootstraps with
the same resample counts as every other count-based figure. Bins are [0, 0.1), ..., [0.9, 1.0]
with 1.0 in the last bin. Every Estimate's `n` is the number of examples in its group.

Intervals (see `fairlora.metrics.bootstrap`): accuracy, a proportion, gets the Wilson score
interval on its n; ECE, binary ECE, Brier, mean confidence and the summary figures (worst-group
ECE, whose interval also spans the worst group's own, and the ECE gap) get bias-corrected
percentile intervals of their resamples.

The Brier score is the multi-class one for every task, binary included:
sum over classes k of (p_k - 1[y = k])^2, averaged over examples, in [0, 2]. For a binary task it is
twice the (p_1 - y)^2 form: sklearn's `brier_score_loss(..., scale_by_half=False)`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import iter_weights, safe_ratio
from fairlora.metrics.summary import (
    add_worst_and_gap,
    assemble,
    column_estimates,
    group_matrix,
    kept_columns,
    used_rows,
)
from fairlora.metrics.table import MetricTable

BRIER_DEFINITION = (
    "sum over classes of (p_k - 1[y = k])^2, mean over examples (0 to 2; for two classes twice (p_1 - y)^2)"
)


def bin_index(values: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Equal-width bin of each value in [0, 1]: floor(value * n_bins), with 1.0 in the last bin."""
    scaled = np.floor(np.asarray(values, np.float64) * n_bins)
    return np.clip(scaled, 0, n_bins - 1).astype(np.int64)


def _probabilities(predictions: pd.DataFrame, source: str) -> np.ndarray:
    columns = sorted(
        (c for c in predictions.columns if str(c).startswith("prob_")), key=lambda c: int(str(c)[5:])
    )
    if not columns:
        raise AuditError(
            f"calibration needs class probabilities, but the predictions of {source} hold none "
            "(a causal_lm run has no classification head); drop `calibration` from audit.sections "
            "or audit a classification run"
        )
    if "label" not in predictions.columns:
        raise AuditError(
            f"calibration needs labels, but the predictions of {source} hold no `label` column; "
            "predict again on a labelled evaluation split"
        )
    return predictions[columns].to_numpy(np.float64)


def _per_example(probs: np.ndarray, label: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Confidence of the predicted class, correctness and Brier score of each example."""
    confidence = np.take_along_axis(probs, pred[:, None], axis=1)[:, 0]
    onehot = np.arange(probs.shape[1])[None, :] == label[:, None]
    brier = ((probs - onehot) ** 2).sum(axis=1)  # one definition for every number of classes
    return {"confidence": confidence, "correct": (pred == label).astype(np.float64), "brier": brier}


def _bin_entries(
    binned: list[tuple[np.ndarray, np.ndarray]], masks: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(example, column, value) of every nonzero per-bin entry: column = (set, bin, mask column)."""
    rows, groups = np.nonzero(masks)
    columns = masks.shape[1]
    examples, targets, values = [], [], []
    for index, (bins, gap) in enumerate(binned):
        examples.append(rows)
        targets.append((index * n_bins + bins[rows]) * columns + groups)
        values.append(gap[rows])
    return np.concatenate(examples), np.concatenate(targets), np.concatenate(values)


def _binned_sums(
    dense: list[np.ndarray], binned: list[tuple[np.ndarray, np.ndarray]], masks: np.ndarray, n_bins: int
) -> np.ndarray:
    """Sums per mask column of each dense value, then of each binned gap per bin: (V, C) float64."""
    columns = masks.shape[1]
    _, targets, values = _bin_entries(binned, masks, n_bins)
    per_bin = np.bincount(targets, weights=values, minlength=len(binned) * n_bins * columns)
    stacked = np.stack(dense) @ masks.astype(np.float64)
    return np.concatenate([stacked, per_bin.reshape(-1, columns)], axis=0)


def _resampled_binned_sums(
    dense: list[np.ndarray],
    binned: list[tuple[np.ndarray, np.ndarray]],
    masks: np.ndarray,
    n_bins: int,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """`_binned_sums` under each resample: (n_boot, V, C).

    Each example sits in one bin, so the per-bin sums go through a sparse matrix: n x C work per
    bin set rather than n x C x n_bins.
    """
    n, columns = masks.shape
    table = (np.stack(dense, axis=1).astype(np.float32)[:, :, None] * masks[:, None, :]).reshape(n, -1)
    examples, targets, values = _bin_entries(binned, masks, n_bins)
    width = len(binned) * n_bins * columns
    spread = sparse.csr_matrix((values.astype(np.float32), (targets, examples)), shape=(width, n))
    chunks = []
    for weights in iter_weights(n, n_boot, seed):
        chunks.append(np.concatenate([weights @ table, (spread @ weights.T).T], axis=1))
    height = len(dense) + len(binned) * n_bins
    if not chunks:
        return np.zeros((0, height, columns))
    return np.concatenate(chunks).astype(np.float64).reshape(-1, height, columns)


def _metrics(sums: np.ndarray, n_bins: int, binary: bool) -> dict[str, np.ndarray]:
    """Metrics from stacked sums [count, correct, confidence, brier, ece bins.., binary ece bins..]."""
    count = sums[..., 0, :]
    ece_bins = sums[..., 4 : 4 + n_bins, :]
    metrics = {
        "ece": safe_ratio(np.abs(ece_bins).sum(axis=-2), count),
        "brier": safe_ratio(sums[..., 3, :], count),
        "mean_confidence": safe_ratio(sums[..., 2, :], count),
        "accuracy": safe_ratio(sums[..., 1, :], count),
    }
    if binary:
        binary_bins = sums[..., 4 + n_bins : 4 + 2 * n_bins, :]
        metrics["ece_binary"] = safe_ratio(np.abs(binary_bins).sum(axis=-2), count)
    return metrics


def _reliability(
    example: dict[str, np.ndarray], bins: np.ndarray, rows: np.ndarray, n_bins: int
) -> dict[str, list]:
    """Reliability diagram of the selected rows: per bin mean confidence, accuracy and count."""
    count = np.bincount(bins[rows], minlength=n_bins)
    confidence = np.bincount(bins[rows], weights=example["confidence"][rows], minlength=n_bins)
    correct = np.bincount(bins[rows], weights=example["correct"][rows], minlength=n_bins)

    def per_bin(total: np.ndarray) -> list[float | None]:
        return [float(t / c) if c else None for t, c in zip(total, count, strict=True)]

    return {
        "x": per_bin(confidence),
        "y": per_bin(correct),
        "count": [int(c) for c in count],
        "edges": [b / n_bins for b in range(n_bins + 1)],
    }


def calibration_table(
    predictions: pd.DataFrame,
    group_columns: list[str],
    min_group_size: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 10,
    level: float = 0.95,
    source: str = "this run",
) -> MetricTable:
    """ECE, binary ECE, Brier, mean confidence and accuracy per group with CIs (kind "calibration").

    Brier is the multi-class sum over classes (see BRIER_DEFINITION), also for binary tasks; the
    table's labels say so. `source` names the run in the error raised when the predictions hold no
    probabilities.
    """
    probs = _probabilities(predictions, source)
    masks = group_matrix(predictions, group_columns, "the calibration audit")
    label = predictions["label"].to_numpy().astype(np.int64)
    pred = predictions["pred"].to_numpy().astype(np.int64) if "pred" in predictions else probs.argmax(1)
    binary = probs.shape[1] == 2
    example = _per_example(probs, label, pred)
    bins = bin_index(example["confidence"], n_bins)
    dense = [np.ones(len(label)), example["correct"], example["confidence"], example["brier"]]
    binned = [(bins, example["correct"] - example["confidence"])]
    if binary:
        binned.append((bin_index(probs[:, 1], n_bins), label - probs[:, 1]))
    point_sums = _binned_sums(dense, binned, masks, n_bins)
    boot_sums = _resampled_binned_sums(dense, binned, masks, n_bins, n_boot, seed)
    point, boot = _metrics(point_sums, n_bins, binary), _metrics(boot_sums, n_bins, binary)
    sizes = masks.sum(axis=0)
    support = {m: sizes for m in point}
    estimates = column_estimates(point, boot, support, level, proportions={"accuracy"})
    table = assemble("calibration", estimates, group_columns, sizes, min_group_size, boot)
    keep = kept_columns(sizes, min_group_size)
    names = ("worst_group_ece", "ece_gap")
    n_used = used_rows(masks, keep)
    add_worst_and_gap(table, names, point["ece"], boot["ece"], keep, n_used, level, True, metric="ece")
    table.labels["brier"] = BRIER_DEFINITION
    names = ["overall", *group_columns]
    table.curves = {
        f"reliability/{name}": _reliability(example, bins, masks[:, c], n_bins)
        for c, name in enumerate(names)
    }
    return table
