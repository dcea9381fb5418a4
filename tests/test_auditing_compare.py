"""Differences between runs with paired bootstrap CIs, unpaired where rows differ, in results and report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import fairlora
from fairlora.auditing.compare import NO_CI, PAIRED, UNPAIRED, compare_sections
from fairlora.auditing.results import load_audit
from fairlora.metrics.bootstrap import iter_weights, percentile_ci
from fairlora.metrics.table import Estimate, MetricTable
from fairlora.report.tables import audit_tables
from test_auditing_settings import predictions, run_folder


def _accuracy_samples(frame: pd.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    """Test-split accuracy under each of the audit's resamples, computed by hand."""
    test = frame[frame["split"] == "test"]
    weights = np.concatenate(list(iter_weights(len(test), n_boot, seed))).astype(np.float64)
    correct = (test["pred"] == test["label"]).to_numpy(float)
    return weights @ correct / weights.sum(axis=1)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """Three runs: a reference, a close variant on the same rows, and the variant with shuffled rows."""
    root = tmp_path_factory.mktemp("compare")
    reference, variant = predictions(900, seed=1), predictions(900, seed=1, flip=0.04)
    shuffled = variant.sample(frac=1.0, random_state=3).reset_index(drop=True)
    runs = [
        run_folder(root, "reference", reference),
        run_folder(root, "variant", variant),
        run_folder(root, "shuffled", shuffled),
    ]
    result = fairlora.audit(runs, root / "out", ["audit.n_boot=300", "audit.seed=4"])
    return result, root / "out", reference, variant


def test_runs_on_the_same_rows_get_a_paired_ci(audited):
    result, _, reference, variant = audited
    difference = result.comparison["utility/test"]["overall"]["accuracy"]["variant"]
    assert difference.pairing == PAIRED
    own = [r.sections["utility/test"].overall["accuracy"] for r in result.runs[:2]]
    assert difference.estimate.value == pytest.approx(own[1].value - own[0].value)
    paired = _accuracy_samples(variant, 300, 4) - _accuracy_samples(reference, 300, 4)
    low, high = percentile_ci(paired[:, None], 0.95)
    assert (difference.estimate.low, difference.estimate.high) == pytest.approx((low[0], high[0]))
    assert difference.estimate.high - difference.estimate.low < 0.75 * (own[0].high - own[0].low)


def test_runs_on_other_rows_get_an_unpaired_ci_and_a_note(audited):
    result, *_ = audited
    paired = result.comparison["utility/test"]["overall"]["accuracy"]["variant"].estimate
    unpaired = result.comparison["utility/test"]["overall"]["accuracy"]["shuffled"]
    assert unpaired.pairing == UNPAIRED
    assert unpaired.estimate.value == pytest.approx(paired.value)  # the same predictions, reordered
    assert unpaired.estimate.high - unpaired.estimate.low > 2 * (paired.high - paired.low)
    assert any("utility/test" in note and "unpaired" in note for note in result.runs[2].notes)
    assert not any("unpaired" in note for note in result.runs[1].notes)
    summary = result.comparison["utility/test"]["summary"]["worst_group_accuracy"]["variant"]
    assert summary.pairing == PAIRED and summary.estimate.low is not None


def test_differences_with_cis_are_stored_and_reported(audited):
    result, out, *_ = audited
    stored = json.loads((out / "results.json").read_text())["comparison"]
    entry = stored["auc/test"]["overall"]["auc"]["variant"]
    assert entry["pairing"] == "paired" and len(entry["ci"]) == 2 and entry["n"] > 0
    assert "reference" not in stored["auc/test"]["overall"]["auc"]
    again = load_audit(out)
    assert again.comparison["auc/test"]["overall"]["auc"]["variant"].to_dict() == entry
    markdown = (out / "report.md").read_text()
    row = next(line for line in markdown.splitlines() if line.startswith("| `utility/test` | `accuracy`"))
    assert row.count("[") == 3 + 2 and row.rstrip(" |").endswith("‡")  # 3 runs' CIs, 2 differences' CIs
    assert "paired resamples" in markdown
    html = (out / "report.html").read_text()
    assert 'class="delta' in html and "‡" in html
    console = Console(record=True, width=250)
    for table in audit_tables(again):
        console.print(table)
    text = console.export_text()
    assert "Δ variant − reference" in text and "(overall, 95% CI)" in text


def test_without_resamples_a_difference_has_no_ci():
    def table(value: float, samples: bool) -> MetricTable:
        out = MetricTable("utility", {"accuracy": Estimate(value, value - 0.1, value + 0.1, 50)}, rows="r")
        out.samples = {"overall/accuracy": np.linspace(value - 0.1, value + 0.1, 20)} if samples else {}
        return out

    comparison, notes = compare_sections({"a": {"s": table(0.5, False)}, "b": {"s": table(0.7, True)}}, 0.95)
    difference = comparison["s"]["overall"]["accuracy"]["b"]
    assert difference.pairing == NO_CI and difference.estimate.value == pytest.approx(0.2)
    assert difference.estimate.low is None and notes == {"a": [], "b": []}
    comparison, _ = compare_sections({"a": {"s": table(0.5, True)}, "b": {"s": table(0.7, True)}}, 0.95)
    paired = comparison["s"]["overall"]["accuracy"]["b"]
    assert paired.pairing == PAIRED and paired.estimate.low == pytest.approx(0.2)  # identical spread
