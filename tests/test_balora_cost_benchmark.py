"""benchmarks/balora_cost.py runs on the tiny models and writes the keys the bars are read from."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "balora_cost.py"


def test_balora_cost_runs_on_tiny_models(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("balora_cost", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cost.json"
    argv = ["--models", "tiny-bert,tiny-llama", "--blocks", "2", "--block", "1", "--epochs", "2"]
    argv += ["--epoch-batches", "2", "--memory-repeats", "1", "--threads", "1", "--out", str(out)]
    module.main(argv)
    report = json.loads(out.read_text())
    classification, causal = report["results"]
    for result in (classification, causal):
        assert result["time_ratio"] > 0 and len(result["block_ratios"]) == 2
        blocks = result["block_s"]  # per block: terms share = ratio - 1 - the teacher's part, paired
        forwards = result["teacher_forwards_per_run"] or 1
        expected = [
            b / p - 1 - t * forwards / p
            for p, b, t in zip(blocks["pissa"], blocks["ba-lora"], blocks["teacher"], strict=True)
        ]
        assert result["block_terms_shares"] == pytest.approx(expected)
        assert result["terms_share"] == pytest.approx(sorted(expected)[0] / 2 + sorted(expected)[1] / 2)
        low, high = result["terms_share_ci"]
        assert min(expected) <= low <= high <= max(expected)
        assert not result["memory_errors"] and result["memory_ratio"] > 0
        increments = result["memory_increment_mib"]
        assert all(0 <= increments[m] < result["peak_memory_mib"][m] for m in ("pissa", "ba-lora"))
    assert classification["teacher_cached"] and classification["teacher_forwards_per_run"] == 2  # epoch 1
    assert classification["steps_per_block"] == 4 and classification["bars"]["time_ratio"] == 1.15
    assert not causal["teacher_cached"] and causal["teacher_share_in_run"] == pytest.approx(
        causal["teacher_share_of_pissa_step"]
    )
    assert causal["bars"]["terms_share"] == 0.10
