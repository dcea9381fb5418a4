"""Utility and disparity per (overlapping) subgroup, read like fairlearn's MetricFrame."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, selection_rate
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

GROUP = "group"


def _rate(y_true: np.ndarray, y_pred: np.ndarray, true_value: int, pred_value: int) -> float:
    """P(pred == pred_value | true == true_value); NaN when the group has no such true labels."""
    mask = np.asarray(y_true) == true_value
    return float(np.mean(np.asarray(y_pred)[mask] == pred_value)) if mask.any() else float("nan")


def _binary_metrics() -> dict[str, Any]:
    return {
        "accuracy": accuracy_score,
        "precision": partial(precision_score, zero_division=0.0),
        "recall": partial(recall_score, zero_division=0.0),
        "f1": partial(f1_score, zero_division=0.0),
        "tpr": partial(_rate, true_value=1, pred_value=1),
        "fpr": partial(_rate, true_value=0, pred_value=1),
        "tnr": partial(_rate, true_value=0, pred_value=0),
        "fnr": partial(_rate, true_value=1, pred_value=0),
        "positive_rate": partial(selection_rate, pos_label=1),
    }


def _multiclass_metrics() -> dict[str, Any]:
    macro = {"average": "macro", "zero_division": 0.0}
    return {
        "accuracy": accuracy_score,
        "precision": partial(precision_score, **macro),
        "recall": partial(recall_score, **macro),
        "f1": partial(f1_score, **macro),
    }


@dataclass
class GroupMetrics:
    """Metrics overall and per group, plus disparity figures over groups of adequate size."""

    overall: dict[str, float]
    by_group: pd.DataFrame  # index: group name; columns: metrics, "n", "flagged"
    disparity: dict[str, Any]

    def _adequate(self) -> pd.DataFrame:
        return self.by_group[~self.by_group["flagged"]].drop(columns=["n", "flagged"])

    def difference(self) -> pd.Series:
        """Max minus min of each metric over the groups that are not flagged as too small."""
        groups = self._adequate()
        return groups.max() - groups.min()

    def ratio(self) -> pd.Series:
        """Min over max of each metric over the groups that are not flagged as too small."""
        groups = self._adequate()
        with np.errstate(divide="ignore", invalid="ignore"):
            return groups.min() / groups.max()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN becomes None)."""
        by_group = self.by_group.astype(object).where(self.by_group.notna(), None)
        return {
            "overall": _clean(self.overall),
            "by_group": {str(g): _clean(row.to_dict()) for g, row in by_group.iterrows()},
            "disparity": _clean(self.disparity),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupMetrics:
        """Inverse of `to_dict`."""
        by_group = pd.DataFrame.from_dict(data["by_group"], orient="index")
        if by_group.empty:
            by_group = pd.DataFrame(columns=["n", "flagged"])
        by_group = by_group.astype({"flagged": bool}) if "flagged" in by_group else by_group
        return cls(overall=dict(data["overall"]), by_group=by_group, disparity=dict(data["disparity"]))


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (np.floating, float)):
            value = None if np.isnan(value) else float(value)
        elif isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.bool_):
            value = bool(value)
        out[key] = value
    return out


def explode_groups(predictions: pd.DataFrame, group_columns: list[str]) -> pd.DataFrame:
    """One row per (example, group it belongs to): overlapping groups become a single `group` column."""
    parts = [predictions[predictions[c]].assign(**{GROUP: c}) for c in group_columns]
    parts = [p for p in parts if len(p)]
    if not parts:
        return predictions.iloc[0:0].assign(**{GROUP: pd.Series(dtype=str)})
    return pd.concat(parts, ignore_index=True)


def group_metrics(
    predictions: pd.DataFrame, group_columns: list[str], min_group_size: int = 20
) -> GroupMetrics:
    """Per-group utility and disparity from a prediction table (see `predict_frame`)."""
    if "pred" not in predictions:
        return _loss_metrics(predictions, group_columns, min_group_size)
    num_classes = sum(c.startswith("prob_") for c in predictions.columns)
    metrics = _binary_metrics() if num_classes == 2 else _multiclass_metrics()
    long = explode_groups(predictions, group_columns)
    overall = _frame(metrics, predictions, pd.Series("all", index=predictions.index)).loc["all"]
    by_group = _frame(metrics, long, long[GROUP]) if len(long) else pd.DataFrame(columns=list(metrics))
    extra = {"loss": "loss"} | ({"mean_p_positive": "prob_1"} if num_classes == 2 else {})
    overall_dict = overall.to_dict() | {k: float(predictions[c].mean()) for k, c in extra.items()}
    overall_dict["n"] = len(predictions)
    for key, column in extra.items():
        by_group[key] = long.groupby(GROUP)[column].mean()
    by_group = _with_sizes(by_group, long, group_columns, min_group_size)
    return GroupMetrics(overall_dict, by_group, _disparity(by_group, num_classes == 2))


def _frame(metrics: dict[str, Any], data: pd.DataFrame, sensitive: pd.Series) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = MetricFrame(
            metrics=metrics, y_true=data["label"], y_pred=data["pred"], sensitive_features=sensitive
        )
    return frame.by_group.astype(float)


def _with_sizes(
    by_group: pd.DataFrame, long: pd.DataFrame, group_columns: list[str], min_group_size: int
) -> pd.DataFrame:
    sizes = long.groupby(GROUP).size() if len(long) else pd.Series(dtype=int)
    by_group = by_group.reindex(group_columns)
    by_group["n"] = sizes.reindex(group_columns).fillna(0).astype(int)
    by_group["flagged"] = by_group["n"] < min_group_size
    by_group.index.name = GROUP
    return by_group


def _disparity(by_group: pd.DataFrame, binary: bool) -> dict[str, Any]:
    adequate = by_group[~by_group["flagged"]]
    result: dict[str, Any] = {
        "groups_used": int(len(adequate)),
        "groups_flagged": int(by_group["flagged"].sum()),
    }
    if adequate.empty:
        return result
    accuracy = adequate["accuracy"]
    result |= {
        "worst_group": str(accuracy.idxmin()),
        "worst_group_accuracy": float(accuracy.min()),
        "best_worst_gap": float(accuracy.max() - accuracy.min()),
    }
    if binary:
        gap = {m: float(adequate[m].max() - adequate[m].min()) for m in ("positive_rate", "tpr", "fpr")}
        result["dp_difference"] = gap["positive_rate"]
        result["eo_difference"] = max(gap["tpr"], gap["fpr"])
    return result


def _loss_metrics(predictions: pd.DataFrame, group_columns: list[str], min_group_size: int) -> GroupMetrics:
    """Causal LM: mean per-example loss and perplexity, overall and per group."""
    long = explode_groups(predictions, group_columns)
    by_group = long.groupby(GROUP)["loss"].mean().to_frame() if len(long) else pd.DataFrame(columns=["loss"])
    by_group["perplexity"] = np.exp(by_group["loss"])
    loss = float(predictions["loss"].mean())
    overall = {"loss": loss, "perplexity": float(np.exp(loss)), "n": len(predictions)}
    by_group = _with_sizes(by_group, long, group_columns, min_group_size)
    adequate = by_group[~by_group["flagged"]]
    disparity: dict[str, Any] = {"groups_used": int(len(adequate))}
    if not adequate.empty:
        disparity |= {
            "worst_group": str(adequate["loss"].idxmax()),
            "worst_group_loss": float(adequate["loss"].max()),
            "loss_gap": float(adequate["loss"].max() - adequate["loss"].min()),
        }
    return GroupMetrics(overall, by_group, disparity)
