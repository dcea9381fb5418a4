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
from fairlora.metrics.bootstrap import safe_ratio
from fairlora.metrics.summary import (
    add_worst_and_gap,
    assemble,
    column_estimates,
    group_matrix,
    kept_columns,
    set_summary,
    spread,
    stacked_sums,
    used_rows,
)
from fairlora.metrics.table import MetricTable


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
    metrics |= {"recall_class_0": metrics["tnr"], "recall_class_1": metrics["tpr"]}
    support = {m: n for m in metrics} | {"precision": predicted}
    support |= {m: positives for m in ("recall", "tpr", "fnr", "recall_class_1")}
    support |= {m: negatives for m in ("fpr", "tnr", "recall_class_0")}
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
    support = {m: n for m in metrics}
    for c in range(k):
        metrics[f"recall_class_{c}"] = safe_ratio(tp[..., c, :], true[..., c, :])
        support[f"recall_class_{c}"] = true[..., c, :]
    return metrics, support


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


def _classification_summary(
    table: MetricTable,
    point: dict[str, np.ndarray],
    boot: dict[str, np.ndarray],
    keep: np.ndarray,
    binary: bool,
    n: int,
    level: float,
) -> None:
    """Worst-group accuracy, best-worst gap and (binary) DP/EO differences over the kept groups."""
    names = ("worst_group_accuracy", "best_worst_gap")
    add_worst_and_gap(table, names, point["accuracy"], boot["accuracy"], keep, n, level, highest=False)
    _worst_class_recall(table, point, boot, level)
    if binary:
        set_summary(table, "dp_difference", _dp(point, keep), _dp(boot, keep), n, level)
        set_summary(table, "eo_difference", _eo(point, keep), _eo(boot, keep), n, level)


def _worst_class_recall(
    table: MetricTable, point: dict[str, np.ndarray], boot: dict[str, np.ndarray], level: float
) -> None:
    """Minority-class figure: the lowest per-class recall over all examples (column 0), labelled by class."""
    names = sorted(
        (m for m in point if m.startswith("recall_class_")), key=lambda m: int(m.rsplit("_", 1)[1])
    )
    if not names:
        return
    recalls = np.stack([point[m][0] for m in names])
    if np.isnan(recalls).all():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        boot_min = np.nanmin(np.stack([boot[m][..., 0] for m in names], axis=-1), axis=-1)
    worst = int(np.nanargmin(recalls))
    n = int(table.overall[names[worst]].n)
    set_summary(table, "worst_class_recall", float(recalls[worst]), boot_min, n, level)
    table.labels["worst_class"] = f"class {worst}"


def _dp(values: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Demographic-parity difference: the largest gap in positive-prediction rate."""
    return spread(values["positive_rate"], keep)


def _eo(values: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Equalized-odds difference: the larger of the TPR gap and the FPR gap."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.fmax(spread(values["tpr"], keep), spread(values["fpr"], keep))


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
    """Mean loss and perplexity (and exact match, when the predictions hold generated answers)."""
    loss = predictions["loss"].to_numpy(np.float64)
    values = [np.ones_like(loss), loss]
    scored = "exact_match" in predictions.columns
    if scored:
        values.append(predictions["exact_match"].to_numpy(np.float64))
    point_sums, boot_sums = stacked_sums(values, masks, n_boot, seed)

    def metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
        mean = safe_ratio(sums[..., 1, :], sums[..., 0, :])
        with np.errstate(over="ignore"):
            out = {"loss": mean, "perplexity": np.exp(mean)}
        if scored:
            out["exact_match"] = safe_ratio(sums[..., 2, :], sums[..., 0, :])
        return out

    sizes = point_sums[0]
    return metrics(point_sums), metrics(boot_sums), {m: sizes for m in metrics(point_sums)}


def constant_predictor_notes(
    predictions: pd.DataFrame, masks: np.ndarray, group_columns: list[str], keep: np.ndarray
) -> list[str]:
    """Plain notes where one class is predicted for every example: the run, else each kept group."""
    pred = predictions["pred"].to_numpy()
    classes = np.unique(pred)
    if len(classes) == 1:
        return [f"constant predictor: predicts class {classes[0]} for every example"]
    notes = []
    for column, group in enumerate(group_columns, start=1):
        chosen = np.unique(pred[masks[:, column]])
        if keep[column] and len(chosen) == 1:
            notes.append(f"group {group}: constant predictor: predicts class {chosen[0]} for every example")
    return notes


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
    CIs are percentile intervals at `level`. A classifier that predicts one class for every example
    (of the run, or of a group of at least min_group_size) gets a note saying so.
    """
    masks = group_matrix(predictions, group_columns, "the utility audit")
    causal = "pred" not in predictions.columns
    _require(predictions, ["loss"] if causal else ["label", "pred", "loss"])
    if causal:
        point, boot, support = _loss_table(predictions, masks, n_boot, seed)
    else:
        point, boot, support, binary = _classification_table(predictions, masks, n_boot, seed)
    sizes = masks.sum(axis=0)
    estimates = column_estimates(point, boot, support, level)
    table = assemble("utility", estimates, group_columns, sizes, min_group_size, boot)
    keep = kept_columns(sizes, min_group_size)
    n_used = used_rows(masks, keep)
    if causal:
        names = ("worst_group_loss", "loss_gap")
        add_worst_and_gap(table, names, point["loss"], boot["loss"], keep, n_used, level, highest=True)
    else:
        _classification_summary(table, point, boot, keep, binary, n_used, level)
        table.notes += constant_predictor_notes(predictions, masks, group_columns, keep)
    return table
