"""Utility and disparity per (overlapping) subgroup, each figure with a bootstrap CI.

Every metric here is a ratio of per-group counts or sums (true/false positives, loss, P(positive)),
so one `resampled_sums` call over an (n, metrics x groups) indicator matrix gives every group's
value under every resample; worst-group and gap figures are taken per resample from the same draws.

The `n` of each Estimate is the number of examples its denominator counts: group size for accuracy,
F1, rates of prediction, loss and mean P(positive); predicted positives for precision; actual
positives for recall, TPR and FNR; actual negatives for FPR and TNR; group size for the macro
metrics of multi-class tasks. Summary figures rest on the examples of the groups they use.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import percentile_ci, resampled_sums, safe_ratio
from fairlora.metrics.table import Estimate, MetricTable


def group_matrix(frame: pd.DataFrame, group_columns: list[str], what: str = "the audit") -> np.ndarray:
    """(n, 1 + G) bool matrix: column 0 is every row, then one column per (overlapping) group."""
    missing = [c for c in group_columns if c not in frame.columns]
    if missing:
        raise AuditError(
            f"{what} needs the group columns {missing}, but the predictions hold no such columns; "
            "predict again on data that defines these groups, or drop them from the audit"
        )
    if not len(frame):
        raise AuditError(f"{what} got no predictions; evaluate on a split that holds examples")
    groups = frame[group_columns].to_numpy(dtype=bool).reshape(len(frame), len(group_columns))
    return np.concatenate([np.ones((len(frame), 1), dtype=bool), groups], axis=1)


def stacked_sums(
    values: list[np.ndarray], masks: np.ndarray, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Point and resampled sums of each per-example value within each mask column.

    Returns (point (V, C) float64, boot (n_boot, V, C) float64) for V values and C mask columns.
    """
    stacked = np.stack([np.asarray(v, np.float64) for v in values])  # (V, n)
    point = stacked @ masks.astype(np.float64)
    table = (stacked.T.astype(np.float32)[:, :, None] * masks[:, None, :]).reshape(len(masks), -1)
    boot = resampled_sums(table, n_boot, seed).reshape((-1, *point.shape))
    return point, boot


def nan_extremes(values: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max over the kept columns of the last axis, ignoring NaN (all NaN -> NaN)."""
    chosen = np.asarray(values, np.float64)[..., np.asarray(keep, bool)]
    if chosen.shape[-1] == 0:
        nan = np.full(chosen.shape[:-1], np.nan)
        return nan, nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(chosen, axis=-1), np.nanmax(chosen, axis=-1)


def column_estimates(
    point: dict[str, np.ndarray], boot: dict[str, np.ndarray], support: dict[str, np.ndarray], level: float
) -> list[dict[str, Estimate]]:
    """One {metric: Estimate} per column from point (C,), resampled (B, C) values and n (C,)."""
    bounds = {m: percentile_ci(boot[m], level) for m in point}
    columns = len(next(iter(point.values()))) if point else 0
    return [
        {m: Estimate(point[m][c], bounds[m][0][c], bounds[m][1][c], support[m][c]) for m in point}
        for c in range(columns)
    ]


def summary_estimate(point: float, boot: np.ndarray, n: int, level: float) -> Estimate:
    """A summary figure (worst group, gap) with its percentile CI over the resamples."""
    low, high = percentile_ci(np.asarray(boot, np.float64)[:, None], level)
    return Estimate(point, low[0], high[0], n)


def assemble(
    kind: str,
    estimates: list[dict[str, Estimate]],
    group_columns: list[str],
    sizes: np.ndarray,
    min_group_size: int,
) -> MetricTable:
    """A MetricTable from per-column estimates (column 0 overall), sizes and the size flag."""
    group_sizes = {g: int(s) for g, s in zip(group_columns, sizes[1:], strict=True)}
    return MetricTable(
        kind=kind,
        overall=estimates[0],
        by_group=dict(zip(group_columns, estimates[1:], strict=True)),
        group_sizes=group_sizes,
        flagged=[g for g in group_columns if group_sizes[g] < min_group_size],
    )


def used_rows(masks: np.ndarray, keep: np.ndarray) -> int:
    """Number of distinct examples in the kept group columns (column 0, overall, excluded)."""
    keep = np.asarray(keep, bool).copy()
    keep[0] = False
    return int(masks[:, keep].any(axis=1).sum()) if keep.any() else 0


def _require(predictions: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in predictions.columns]
    if missing:
        raise AuditError(
            f"the utility audit needs the prediction columns {missing}, which the predictions lack; "
            "predict again with a labelled evaluation split"
        )


def _binary_metrics(sums: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Metrics and their n from stacked sums [tp, fp, fn, tn, loss, prob_1] (leading axes free)."""
    tp, fp, fn, tn, loss, prob = (sums[..., i, :] for i in range(6))
    n, positives, negatives, predicted = tp + fp + fn + tn, tp + fn, fp + tn, tp + fp

    def zero_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.where(n > 0, np.nan_to_num(safe_ratio(num, den), nan=0.0), np.nan)

    metrics = {
        "accuracy": safe_ratio(tp + tn, n),
        "precision": zero_div(tp, predicted),
        "recall": zero_div(tp, positives),
        "f1": zero_div(2 * tp, 2 * tp + fp + fn),
        "tpr": safe_ratio(tp, positives),
        "fpr": safe_ratio(fp, negatives),
        "tnr": safe_ratio(tn, negatives),
        "fnr": safe_ratio(fn, positives),
        "positive_rate": safe_ratio(predicted, n),
        "mean_p_positive": safe_ratio(prob, n),
        "loss": safe_ratio(loss, n),
    }
    support = {m: n for m in metrics} | {"precision": predicted}
    support |= {m: positives for m in ("recall", "tpr", "fnr")} | {m: negatives for m in ("fpr", "tnr")}
    return metrics, support


def _multiclass_metrics(sums: np.ndarray, k: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Accuracy, macro precision/recall/F1 and loss from sums [tp_k.., true_k.., pred_k.., loss]."""
    tp, true, pred = sums[..., :k, :], sums[..., k : 2 * k, :], sums[..., 2 * k : 3 * k, :]
    loss, n = sums[..., 3 * k, :], true.sum(axis=-2)
    present = (true + pred) > 0  # sklearn averages over the labels seen in y_true or y_pred
    count = present.sum(axis=-2)

    def macro(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        per_class = np.nan_to_num(safe_ratio(num, den), nan=0.0)
        return safe_ratio((per_class * present).sum(axis=-2), count)

    metrics = {
        "accuracy": safe_ratio(tp.sum(axis=-2), n),
        "precision": macro(tp, pred),
        "recall": macro(tp, true),
        "f1": macro(2 * tp, true + pred),
        "loss": safe_ratio(loss, n),
    }
    return metrics, {m: n for m in metrics}


def _classification_values(predictions: pd.DataFrame, binary: bool) -> tuple[list[np.ndarray], int]:
    label = predictions["label"].to_numpy().astype(np.int64)
    pred = predictions["pred"].to_numpy().astype(np.int64)
    loss = predictions["loss"].to_numpy(np.float64)
    if binary:
        prob = predictions["prob_1"].to_numpy(np.float64)
        pairs = [(1, 1), (0, 1), (1, 0), (0, 0)]  # tp, fp, fn, tn as (label, pred)
        return [(label == y) & (pred == p) for y, p in pairs] + [loss, prob], 2
    k = max(_num_classes(predictions), int(label.max(initial=-1)) + 1, int(pred.max(initial=-1)) + 1)
    classes = range(k)
    tp = [(label == c) & (pred == c) for c in classes]
    return tp + [label == c for c in classes] + [pred == c for c in classes] + [loss], k


def _num_classes(predictions: pd.DataFrame) -> int:
    return sum(str(c).startswith("prob_") for c in predictions.columns)


def _summary(
    point: dict[str, np.ndarray],
    boot: dict[str, np.ndarray],
    keep: np.ndarray,
    binary: bool,
    n: int,
    level: float,
) -> dict[str, Estimate]:
    """Worst-group accuracy, best-worst gap and (binary) DP/EO differences over kept groups."""

    def figures(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        low, high = nan_extremes(values["accuracy"], keep)
        out = {"worst_group_accuracy": low, "best_worst_gap": high - low}
        if binary:
            gaps = {m: _gap(values[m], keep) for m in ("positive_rate", "tpr", "fpr")}
            out["dp_difference"] = gaps["positive_rate"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out["eo_difference"] = np.fmax(gaps["tpr"], gaps["fpr"])
        return out

    at_point, resampled = figures(point), figures(boot)
    return {m: summary_estimate(at_point[m], resampled[m], n, level) for m in at_point}


def _gap(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    low, high = nan_extremes(values, keep)
    return high - low


def _classification_table(
    predictions: pd.DataFrame, masks: np.ndarray, n_boot: int, seed: int
) -> tuple[dict, dict, dict, bool]:
    binary = _num_classes(predictions) == 2
    values, k = _classification_values(predictions, binary)
    point_sums, boot_sums = stacked_sums(values, masks, n_boot, seed)
    if binary:
        point, support = _binary_metrics(point_sums)
        boot, _ = _binary_metrics(boot_sums)
    else:
        point, support = _multiclass_metrics(point_sums, k)
        boot, _ = _multiclass_metrics(boot_sums, k)
    return point, boot, support, binary


def _loss_table(
    predictions: pd.DataFrame, masks: np.ndarray, n_boot: int, seed: int
) -> tuple[dict, dict, dict]:
    loss = predictions["loss"].to_numpy(np.float64)
    point_sums, boot_sums = stacked_sums([np.ones_like(loss), loss], masks, n_boot, seed)

    def metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
        mean = safe_ratio(sums[..., 1, :], sums[..., 0, :])
        with np.errstate(over="ignore"):
            return {"loss": mean, "perplexity": np.exp(mean)}

    sizes = point_sums[0]
    return metrics(point_sums), metrics(boot_sums), {"loss": sizes, "perplexity": sizes}


def utility_table(
    predictions: pd.DataFrame,
    group_columns: list[str],
    min_group_size: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> MetricTable:
    """Utility per group with bootstrap CIs, plus worst-group and disparity figures (kind "utility").

    Classification runs report accuracy, precision, recall, F1 (macro for multi-class), loss and, for
    binary tasks, TPR/FPR/TNR/FNR, positive rate and mean P(positive); causal-LM runs (no `pred`
    column) report mean loss and perplexity. All rows of `predictions` are used: pass one split.
    """
    masks = group_matrix(predictions, group_columns, "the utility audit")
    causal = "pred" not in predictions.columns
    _require(predictions, ["loss"] if causal else ["label", "pred", "loss"])
    if causal:
        point, boot, support = _loss_table(predictions, masks, n_boot, seed)
    else:
        point, boot, support, binary = _classification_table(predictions, masks, n_boot, seed)
    sizes = masks.sum(axis=0)
    table = assemble(
        "utility", column_estimates(point, boot, support, level), group_columns, sizes, min_group_size
    )
    keep = sizes >= min_group_size
    keep[0] = False
    n_used = used_rows(masks, keep)
    if causal:
        table.summary = _loss_summary(point, boot, keep, n_used, level)
        worst = np.where(keep, np.nan_to_num(point["loss"], nan=-np.inf), -np.inf)
    else:
        table.summary = _summary(point, boot, keep, binary, n_used, level)
        worst = -np.where(keep, np.nan_to_num(point["accuracy"], nan=np.inf), np.inf)
    if np.isfinite(worst).any():
        table.labels["worst_group"] = group_columns[int(np.argmax(worst)) - 1]
    return table


def _loss_summary(
    point: dict[str, np.ndarray], boot: dict[str, np.ndarray], keep: np.ndarray, n: int, level: float
) -> dict[str, Estimate]:
    """Worst-group (highest) loss and the loss gap over the kept groups."""
    low, high = nan_extremes(point["loss"], keep)
    boot_low, boot_high = nan_extremes(boot["loss"], keep)
    return {
        "worst_group_loss": summary_estimate(high, boot_high, n, level),
        "loss_gap": summary_estimate(high - low, boot_high - boot_low, n, level),
    }
