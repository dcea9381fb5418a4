"""Per-group accuracy, TPR, FPR and selection rate with 95% CIs: fairlora's utility table vs fairlearn.

Both sides get the same plain DataFrame of a binary classifier's predictions (label / pred / loss /
prob_0 / prob_1) with overlapping boolean group columns, and the same number of bootstrap draws:

- fairlora: one `utility_table(predictions, group_columns, n_boot=...)` call. It computes every group
  at once (and more than the four figures: precision, recall, F1, TNR, FNR, loss, worst group, gaps,
  DP / EO differences and ratios); accuracy, TPR, FPR and positive rate get Wilson intervals, the
  resamples feed the rest.
- fairlearn: `MetricFrame(metrics={accuracy, tpr, fpr, selection_rate}, n_boot=..., ci_quantiles=
  [0.025, 0.975])`. A MetricFrame takes one partition of the rows (several sensitive features are
  crossed, not overlapped), so overlapping groups need one MetricFrame per group column, with that
  column (True / False) as the sensitive feature; its time is the sum over the columns. Each frame
  also computes the False side and the overall figures (fairlora computes overall too).

The point estimates of both sides are checked equal (1e-9) before anything is timed. fairlora runs
--repeats times and its median is taken. fairlearn recomputes every figure per draw (resample the
frame, group, call each metric), so its time grows linearly with the draws, ~1 s per draw and group
column at 50,000 rows: 1000 draws x 10 columns take hours. It runs --fairlearn-repeats times (default
1) at --fairlearn-n-boot draws (default: --n-boot, the faithful comparison); with fewer draws its
time at --n-boot is extrapolated linearly from its timed 1-draw run and the k-draw runs (both
recorded in the JSON, which says "fairlearn_extrapolated"). Target: fairlora / fairlearn <= 0.5
(`ratio_vs_fairlearn`).

    .venv/bin/python benchmarks/audit_predictions.py [--rows 50000] [--groups 10] [--n-boot 1000]
        [--repeats 3] [--fairlearn-n-boot 1000] [--fairlearn-repeats 1] [--threads 2]
        [--out benchmarks/results/audit_predictions.json]

Timings never fail the run: a ratio over the target is reported, not raised.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fairlearn
import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
from rich.console import Console
from rich.table import Table
from sklearn.metrics import accuracy_score
from threadpoolctl import threadpool_limits

from fairlora.metrics.utility import utility_table

TARGET_RATIO = 0.5
FIGURES = {"accuracy": "accuracy", "tpr": "tpr", "fpr": "fpr", "selection_rate": "positive_rate"}


def predictions(rows: int, groups: int, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """A binary classifier's predictions with `groups` overlapping groups of 5% to 50% of the rows."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows)
    columns = [f"group_{g}" for g in range(groups)]
    shares = np.linspace(0.05, 0.5, groups)
    member = {c: rng.random(rows) < share for c, share in zip(columns, shares, strict=True)}
    lean = sum(0.05 * (g % 3 - 1) * member[c] for g, c in enumerate(columns))
    prob_1 = np.clip(1 / (1 + np.exp(-rng.normal(2.0 * label - 1.0 + lean, 1.2))), 1e-6, 1 - 1e-6)
    frame = pd.DataFrame({"id": np.arange(rows).astype(str), "split": "test", "label": label})
    frame["prob_1"], frame["prob_0"] = prob_1, 1 - prob_1
    frame["pred"] = (prob_1 > 0.5).astype(int)
    frame["loss"] = -np.log(np.where(label == 1, prob_1, 1 - prob_1))
    return frame.assign(**member), columns


def ours(frame: pd.DataFrame, columns: list[str], n_boot: int) -> dict[str, dict[str, float]]:
    """fairlora: every group's figures with CIs in one call."""
    table = utility_table(frame, columns, min_group_size=1, n_boot=n_boot, seed=0)
    return {c: {f: table.by_group[c][m].value for f, m in FIGURES.items()} for c in columns}


def theirs(frame: pd.DataFrame, columns: list[str], n_boot: int) -> dict[str, dict[str, float]]:
    """fairlearn: one bootstrapped MetricFrame per group column; the True row is the group."""
    metrics = {"accuracy": accuracy_score, "tpr": true_positive_rate, "fpr": false_positive_rate}
    metrics["selection_rate"] = selection_rate
    out = {}
    for column in columns:
        frame_ = MetricFrame(
            metrics=metrics,
            y_true=frame["label"],
            y_pred=frame["pred"],
            sensitive_features=frame[column],
            n_boot=n_boot,
            ci_quantiles=[0.025, 0.975],
            random_state=0,
        )
        out[column] = {f: float(frame_.by_group.loc[True, f]) for f in FIGURES}
    return out


def check_equal(a: dict, b: dict) -> float:
    """The largest absolute difference of the point estimates; raises above 1e-9."""
    worst = max(abs(a[c][f] - b[c][f]) for c in a for f in FIGURES)
    if worst > 1e-9:
        raise SystemExit(f"fairlora and fairlearn disagree on a point estimate by {worst:.3g}")
    return worst


def timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed fairlora runs")
    parser.add_argument("--fairlearn-n-boot", type=int, default=None, help="default: --n-boot")
    parser.add_argument("--fairlearn-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="BLAS / OpenMP threads of both sides")
    parser.add_argument("--out", default="benchmarks/results/audit_predictions.json")
    args = parser.parse_args()
    args.fairlearn_n_boot = args.fairlearn_n_boot or args.n_boot
    frame, columns = predictions(args.rows, args.groups)
    with threadpool_limits(limits=args.threads):
        start = time.perf_counter()
        one_draw = theirs(frame, columns, 1)
        seconds: dict[str, list[float]] = {"fairlearn_1_draw": [time.perf_counter() - start]}
        difference = check_equal(ours(frame, columns, 0), one_draw)
        seconds |= {"fairlora": [], "fairlearn": []}
        for repeat in range(max(args.repeats, args.fairlearn_repeats)):
            if repeat < args.repeats:
                seconds["fairlora"].append(timed(ours, frame, columns, args.n_boot))
            if repeat < args.fairlearn_repeats:
                seconds["fairlearn"].append(timed(theirs, frame, columns, args.fairlearn_n_boot))
    report(args, seconds, difference)


def fairlearn_at(args: Any, seconds: dict[str, list[float]]) -> float:
    """fairlearn's median time at --n-boot draws: measured, or extrapolated linearly from 1 and k draws."""
    measured = statistics.median(seconds["fairlearn"])
    k = args.fairlearn_n_boot
    if k == args.n_boot:
        return measured
    one = seconds["fairlearn_1_draw"][0]
    return one + (measured - one) * (args.n_boot - 1) / max(k - 1, 1)


def report(args: Any, seconds: dict[str, list[float]], difference: float) -> None:
    medians = {side: statistics.median(values) for side, values in seconds.items()}
    extrapolated = args.fairlearn_n_boot != args.n_boot
    fairlearn_seconds = fairlearn_at(args, seconds)
    ratio = medians["fairlora"] / fairlearn_seconds
    title = (
        f"per-group accuracy / TPR / FPR / selection rate with CIs: {args.rows} rows, {args.groups} "
        f"overlapping groups, {args.n_boot} bootstrap draws, {args.threads} threads"
    )
    table = Table(title=title)
    for column in ("side", "median s", "ratio to fairlearn"):
        table.add_column(column, justify="right")
    table.add_row("fairlora utility_table (one call)", f"{medians['fairlora']:.3f}", f"{ratio:.4f}")
    how = f"extrapolated from {args.fairlearn_n_boot} draws" if extrapolated else "measured"
    table.add_row(
        f"fairlearn MetricFrame x {args.groups}, summed ({how})", f"{fairlearn_seconds:.3f}", "1.000"
    )
    console = Console()
    console.print(table)
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    console.print(f"fairlora / fairlearn = {ratio:.4f} ({verdict} the {TARGET_RATIO} target)")
    result = {
        "benchmark": "audit_predictions",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "threads": args.threads},
        "versions": {"fairlearn": fairlearn.__version__, "numpy": np.__version__, "pandas": pd.__version__},
        "rows": args.rows,
        "groups": args.groups,
        "n_boot": args.n_boot,
        "repeats": args.repeats,
        "fairlearn_n_boot": args.fairlearn_n_boot,
        "fairlearn_repeats": args.fairlearn_repeats,
        "fairlearn_extrapolated": extrapolated,
        "fairness": "one fairlearn MetricFrame per overlapping group column (True/False), times summed",
        "max_point_difference": difference,
        "seconds": seconds,
        "median_seconds": medians,
        "fairlearn_seconds_at_n_boot": fairlearn_seconds,
        "ratio_vs_fairlearn": ratio,
        "target": TARGET_RATIO,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    console.print(f"written: {out}")


if __name__ == "__main__":
    main()
