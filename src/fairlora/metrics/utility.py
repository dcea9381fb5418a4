"""Utility and disparity per (overlapping) subgroup, each figure with a bootstrap CI.

Every metric here is a ratio of per-group counts or sums (true/false positives, loss, P(positive)),
so one `resampled_sums` call over an (n, metrics x groups) indicator matrix gives every group's
value under every resample; worst-group and gap figures are taken per resample from the same draws.

The `n` of each Estimate is the number of examples its denominator counts: group size for accuracy,
F1, rates of prediction, loss and mean P(positive); predicted positives for precision; actual
positives for recall, TPR and FNR; actual negatives for FPR and TNR; group size for the macro
metrics of multi-class tasks. Summary figures rest on the examples of the groups they use.

Intervals (see `fairlora.metrics.bootstrap`): Wilson score intervals on that n for the proportions
(accuracy, precision, recall, TPR, FPR, TNR, FNR, positive rate, per-class recall, exact match);
bias-corrected percentile intervals for the rest (F1, macro precision / recall / F1, loss,
perplexity, mean P(positive)) and for every summary figure: worst-group accuracy (its interval also
spans the worst group's own), the best-worst gap, worst-class recall, and for binary tasks the
demographic-parity and equalized-odds differences and ratios.

Ratios as fairlearn reports them, over the kept groups: `dp_ratio` is the lowest positive
(selection) rate over the highest; `eo_ratio` the smaller of the TPR ratio and the FPR ratio (a
ratio whose highest rate is 0 is undefined and left out). A `dp_ratio` under 0.8 breaks the
four-fifths rule: the table gets a note naming the lowest and highest groups and
labels["four_fifths"] = "violated" ("met" otherwise).
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
    nan_extremes,
    set_summary,
    spread,
    stacked_sums,
    used_rows,
    widen,
)
from fairlora.metrics.table import MetricTable

BINARY_PROPORTIONS = frozenset(
    {"accuracy", "precision", "recall", "tpr", "fpr", "tnr", "fnr", "positive_rate"}
    | {"recall_class_0", "recall_class_1"}
)
FOUR_FIFTHS = 0.8


def _proportions(point: dict[str, np.ndarray], binary: bool) -> frozenset[str]:
    """The metrics that are a count over their Estimate's n (Wilson intervals)."""
    if binary:
        return BINARY_PROPORTIONS
    return frozenset(m for m in point if m in ("accuracy", "exact_match") or m.startswith("recall_class_"))


def generation_scores(predictions: pd.DataFrame) -> list[str]:
    """Per-example scores of generated text in the predictions: exact_match, pass_at_<k> (k ascending)."""
    passes = [c for c in predictions.columns if str(c).startswith("pass_at_") and str(c)[8:].isdigit()]
    names = ["exact_match"] if "exact_match" in predictions.columns else []
    return names + sorted(passes, key=lambda c: int(c[8:]))


def _zero_one(predictions: pd.DataFrame, names: list[str]) -> frozenset[str]:
    """The generation scores that are 0/1 per example (counts: Wilson intervals); pass@k of samples is not."""
    return frozenset(n for n in names if np.isin(predictions[n].to_numpy(np.float64), (0.0, 1.0)).all())


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
    add_worst_and_gap(
        table, names, point["accuracy"], boot["accuracy"], keep, n, level, highest=False, metric="accuracy"
    )
    _worst_class_recall(table, point, boot, level)
    if binary:
        set_summary(table, "dp_difference", _dp(point, keep), _dp(boot, keep), n, level)
        set_summary(table, "dp_ratio", _dp_ratio(point, keep), _dp_ratio(boot, keep), n, level)
        set_summary(table, "eo_difference", _eo(point, keep), _eo(boot, keep), n, level)
        set_summary(table, "eo_ratio", _eo_ratio(point, keep), _eo_ratio(boot, keep), n, level)
        _four_fifths(table, point["positive_rate"], keep)


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
    widen(table.summary["worst_class_recall"], table.overall[names[worst]])
    table.labels["worst_class"] = f"class {worst}"


def _dp(values: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Demographic-parity difference: the largest gap in positive-prediction rate."""
    return spread(values["positive_rate"], keep)


def _eo(values: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Equalized-odds difference: the larger of the TPR gap and the FPR gap."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.fmax(spread(values["tpr"], keep), spread(values["fpr"], keep))


def _ratio(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Lowest over highest value of the kept columns (NaN where the highest is 0 or none is defined)."""
    low, high = nan_extremes(values, keep)
    return safe_ratio(low, high)


def _dp_ratio(values: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Demographic-parity ratio: the lowest positive-prediction rate over the highest."""
    return _ratio(values["positive_rate"], keep)


def _eo_ratio(values: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Equalized-odds ratio: the smaller of the TPR ratio and the FPR ratio."""
    return np.fmin(_ratio(values["tpr"], keep), _ratio(values["fpr"], keep))


def _four_fifths(table: MetricTable, rates: np.ndarray, keep: np.ndarray) -> None:
    """Label the four-fifths rule met or violated; a violation gets a note naming both groups."""
    kept = np.where(np.asarray(keep, bool), np.asarray(rates, np.float64), np.nan)
    ratio = table.summary["dp_ratio"].value
    if ratio is None or np.isnan(kept).all():
        return
    if ratio >= FOUR_FIFTHS:
        table.labels["four_fifths"] = "met"
        return
    groups = list(table.by_group)
    lowest, highest = int(np.nanargmin(kept)), int(np.nanargmax(kept))
    table.labels["four_fifths"] = "violated"
    table.notes.append(
        f"four-fifths rule violated: the positive rate of {groups[lowest - 1]} ({kept[lowest]:.3f}) is "
        f"{ratio:.2f} of that of {groups[highest - 1]} ({kept[highest]:.3f}), below {FOUR_FIFTHS}"
    )


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
    scored = generation_scores(predictions)
    values += [predictions[name].to_numpy(np.float64) for name in scored]
    point_sums, boot_sums = stacked_sums(values, masks, n_boot, seed)

    def metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
        mean = safe_ratio(sums[..., 1, :], sums[..., 0, :])
        with np.errstate(over="ignore"):
            out = {"loss": mean, "perplexity": np.exp(mean)}
        for position, name in enumerate(scored, start=2):
            out[name] = safe_ratio(sums[..., position, :], sums[..., 0, :])
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
    CIs at `level`: Wilson for proportions, bias-corrected percentile for the rest (see the module
    docstring). A classifier that predicts one class for every example
    (of the run, or of a group of at least min_group_size) gets a note saying so.
    """
    masks = group_matrix(predictions, group_columns, "the utility audit")
    causal = "pred" not in predictions.columns
    _require(predictions, ["loss"] if causal else ["label", "pred", "loss"])
    binary = False
    if causal:
        point, boot, support = _loss_table(predictions, masks, n_boot, seed)
    else:
        point, boot, support, binary = _classification_table(predictions, masks, n_boot, seed)
    sizes = masks.sum(axis=0)
    proportions = _proportions(point, binary)
    if causal:
        proportions = _zero_one(predictions, generation_scores(predictions))
    estimates = column_estimates(point, boot, support, level, proportions)
    table = assemble("utility", estimates, group_columns, sizes, min_group_size, boot)
    keep = kept_columns(sizes, min_group_size)
    n_used = used_rows(masks, keep)
    if causal:
        names = ("worst_group_loss", "loss_gap")
        add_worst_and_gap(
            table, names, point["loss"], boot["loss"], keep, n_used, level, highest=True, metric="loss"
        )
    else:
        _classification_summary(table, point, boot, keep, binary, n_used, level)
        table.notes += constant_predictor_notes(predictions, masks, group_columns, keep)
    return table
