"""A run's results.json holds one MetricTable per split (schema 2); older files get a clear error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairlora.errors import RunDirError
from fairlora.metrics.utility import utility_table
from fairlora.runs import RESULTS_FILE, SCHEMA_VERSION, RunResult, load_results


def _result() -> RunResult:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"id": [str(i) for i in range(60)], "split": "test", "label": rng.integers(0, 2, 60)}
    )
    frame["prob_1"] = rng.random(60)
    frame["prob_0"], frame["pred"] = 1 - frame["prob_1"], (frame["prob_1"] > 0.5).astype(int)
    frame["loss"], frame["g"] = 0.5, np.arange(60) < 30
    table = utility_table(frame, ["g"], min_group_size=5, n_boot=30)
    return RunResult("run", "lora", "tiny-bert", "identity", "classification", {"test": table}, {"steps": 4})


def test_results_round_trip_with_estimates_and_cis(tmp_path):
    result = _result()
    result.save(tmp_path)
    again = load_results(tmp_path)
    assert again.test.to_dict() == result.test.to_dict()
    accuracy = again.test.overall["accuracy"]
    assert accuracy.low <= accuracy.value <= accuracy.high and accuracy.n == 60
    assert again.test.by_group["g"]["accuracy"].n == 30 and again.train == {"steps": 4}
    assert json.loads((tmp_path / RESULTS_FILE).read_text())["schema_version"] == SCHEMA_VERSION == 2


def test_results_of_the_old_schema_are_refused_with_the_command_that_rewrites_them(tmp_path):
    data = _result().to_dict() | {"schema_version": 1}
    (tmp_path / RESULTS_FILE).write_text(json.dumps(data))
    with pytest.raises(RunDirError, match=r"schema_version 1, this fairlora reads 2.*fairlora eval"):
        load_results(tmp_path)
