"""Real audit output of the demo's runs (tiny model swapped in): every interval holds its estimate."""

from __future__ import annotations

import json

from fairlora.demo import audit_demo, run_demo

TINY_DEMO = [
    "model.name=tiny-bert",
    "model.max_length=48",
    "data.identity.examples_per_group=8",
    "train.max_steps=3",
    "train.progress_bar=false",
    "eval.n_boot=50",
]


def test_every_interval_of_the_demo_audit_contains_its_estimate(tmp_path):
    results = run_demo(tmp_path, ["none", "lora", "full"], TINY_DEMO)
    audit_demo(results, tmp_path)
    runs = json.loads((tmp_path / "audit" / "results.json").read_text())["runs"]
    assert len(runs) == 3
    checked = 0
    for run in runs:
        assert {"utility/test", "utility/train", "auc/test", "calibration/test", "membership/loss"} <= set(
            run["sections"]
        )
        for key, section in run["sections"].items():
            scopes = {"overall": section["overall"], "summary": section["summary"], **section["by_group"]}
            for scope, metrics in scopes.items():
                for metric, estimate in metrics.items():
                    if estimate["ci"] is None or estimate["value"] is None or None in estimate["ci"]:
                        continue
                    low, high = estimate["ci"]
                    assert low <= estimate["value"] <= high, (run["name"], key, scope, metric, estimate)
                    checked += 1
        utility = run["sections"]["utility/test"]
        assert {"dp_ratio", "eo_ratio", "dp_difference", "eo_difference"} <= set(utility["summary"])
    assert checked > 1500
