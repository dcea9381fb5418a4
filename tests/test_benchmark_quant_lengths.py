"""benchmarks/quantization.py and benchmarks/length_grouping.py run end to end at tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _run(script: str, *args: str, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    return json.loads(out.read_text())


def test_quantization_benchmark_compares_4bit_and_bf16(tmp_path):
    pytest.importorskip("bitsandbytes")
    args = ["--model", "tiny-llama", "--precision-model", "tiny-bert", "--seq", "8", "--steps", "1"]
    report = _run("quantization.py", *args, "--warmup", "0", "--memory-steps", "1", out=tmp_path / "q.json")
    assert report["quant"]["variants"][1] == {"model.quantization": "4bit"}
    assert report["precision"]["variants"][1] == {"train.precision": "bf16"}
    for name in ("quant", "precision"):
        assert report[name]["time_ratio"] > 0 and min(report[name]["peak_mib"]) > 0


def test_length_grouping_benchmark_on_real_data(tmp_path):
    out = tmp_path / "l.json"
    args = ["--model", "tiny-bert", "--rows", "48", "--epochs", "1", "--batch", "8"]
    env_has_data = any(
        (Path(d) / "ag_news").is_dir()
        for d in (os.environ.get("FAIRLORA_DATA_DIR", ""), ROOT.parent / "shared/data")
    )
    if not env_has_data:
        pytest.skip("AG News is not available (set FAIRLORA_DATA_DIR)")
    report = _run("length_grouping.py", *args, out=out)
    assert (
        report["time_ratio"]
        == report["runs"]["on"][0]["train_seconds"] / report["runs"]["off"][0]["train_seconds"]
    )
    assert all(0.0 <= run["test_accuracy"] <= 1.0 for runs in report["runs"].values() for run in runs)
