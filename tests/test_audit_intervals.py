"""Real audit output of a tiny run: every interval in results.json holds its estimate."""

from __future__ import annotations

import json

import fairlora
from conftest import tiny_config


def test_every_interval_in_results_json_contains_its_estimate(tmp_path):
    config = tiny_config(tmp_path, name="tiny-intervals", train={"max_steps": 2})
    run_dir = fairlora.train(config).run_dir
    fairlora.audit(run_dir, tmp_path / "audit", ["audit.n_boot=200"], progress=False)
    (run,) = json.loads((tmp_path / "audit" / "results.json").read_text())["runs"]
    assert {"utility/test", "utility/train", "auc/test", "calibration/test", "membership/loss"} <= set(
        run["sections"]
    )
    checked = 0
    for key, section in run["sections"].items():
        scopes = {"overall": section["overall"], "summary": section["summary"], **section["by_group"]}
        for scope, metrics in scopes.items():
            for metric, estimate in metrics.items():
                if estimate["ci"] is None or estimate["value"] is None or None in estimate["ci"]:
                    continue
                low, high = estimate["ci"]
                assert low <= estimate["value"] <= high, (key, scope, metric, estimate)
                checked += 1
    assert checked > 500
    utility = run["sections"]["utility/test"]
    assert {"dp_ratio", "eo_ratio", "dp_difference", "eo_difference"} <= set(utility["summary"])
