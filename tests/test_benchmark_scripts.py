"""Every script in benchmarks/ runs end to end on the tiny models (one or two blocks or steps) and
writes the JSON keys its README table and the project's notes read. Timings here mean nothing: only
that each command works. A new benchmark adds one line to TINY."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Scripts run at tiny size by their own tests (and `resumable`, a module the claim scripts share).
TESTED_ELSEWHERE = {
    "quantization": "test_benchmark_quant_lengths.py",
    "length_grouping": "test_benchmark_quant_lengths.py",
    "humaneval": "test_humaneval_bench.py",
    "sweep_ray": "test_sweep_ray.py",
    "resumable": "test_claims_benchmarks.py",
}
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in TESTED_ELSEWHERE)
TINY_BERT = ["--batch", "2", "--seq", "16", "--threads", "1"]

# script: (tiny arguments, keys its JSON must hold); {tmp} is a scratch folder
TINY: dict[str, tuple[list[str], set[str]]] = {
    "aflora_efficiency": (
        ["--models", "tiny-bert", "--steps", "7", "--warm", "3", "--freeze-by", "4", *TINY_BERT],
        {"benchmark", "settings", "results"},
    ),
    "aflora_quality": (
        ["--model", "tiny-bert", "--data", "identity", "--seeds", "1", "--steps", "2", "--batch", "4"]
        + ["--length", "16", "--output-dir", "{tmp}/runs"],
        {"benchmark", "model", "settings", "variants", "results"},
    ),
    "audit_cost": (
        ["--repeats", "1", "--max-steps", "2", "--threads", "1", "--set", "model.name=tiny-bert"]
        + ["--set", "data.identity.examples_per_group=4", "--set", "audit.n_boot=10"],
        {"benchmark", "seconds", "median_seconds", "ratio", "rows", "groups"},
    ),
    "audit_predictions": (
        ["--rows", "300", "--groups", "3", "--n-boot", "10", "--repeats", "1", "--fairlearn-n-boot", "2"],
        {"benchmark", "rows", "groups", "median_seconds", "ratio_vs_fairlearn"},
    ),
    "balora_cost": (
        ["--models", "tiny-bert", "--blocks", "1", "--block", "1", "--memory-repeats", "1", *TINY_BERT],
        {"benchmark", "settings", "results"},
    ),
    "balora_quality": (
        ["--parts", "identity", "--seeds", "1", "--steps", "2", "--identity-examples", "4"]
        + ["--nlu-model", "tiny-bert", "--max-length", "16", "--threads", "1"],
        {"benchmark", "results"},
    ),
    "collab_scaling": (
        ["--memory-model", "tiny-llama", "--memory-clients", "1,8", "--time-clients", "2", "--rounds", "1"]
        + ["--trust-freq", "1", "--batch", "2", "--seq", "16", "--skip-flower", "--threads", "1"],
        {"memory"},
    ),
    "collab_strategies": (
        ["--model", "tiny-llama", "--corpus", "topics", "--splits", "mixed", "--seeds", "0"]
        + ["--strategies", "naive", "--examples", "8", "--iterations", "2", "--warmup", "1"]
        + ["--trust-freq", "1", "--batch", "2", "--seq", "16", "--runs-dir", "{tmp}/runs"],
        {"benchmark", "settings", "runs"},
    ),
    "reproduce_study": (
        [
            "--seeds",
            "1",
            "--detail-seed",
            "1",
            "--output-dir",
            "{tmp}/runs",
            "model.name=tiny-bert",
            "data.name=identity",
        ]
        + ["train.max_steps=2"],
        {"config", "seeds", "headline"},
    ),
    "step_overhead": (
        ["--models", "tiny-bert", "--steps", "2", "--block-steps", "1", "--skip-memory", *TINY_BERT],
        {"benchmark", "settings", "results"},
    ),
}
# the keys of one model's / one part's entry, where the script nests them
NESTED_KEYS = {
    "collab_scaling": (
        "memory",
        {"peak_mb", "memory_ratio_8_vs_1", "increment_mb", "increment_ratio_8_vs_1"},
    ),
}


def test_every_benchmark_has_tiny_arguments() -> None:
    missing = sorted(set(BENCHMARKS) - set(TINY))
    assert not missing, f"add a line to TINY in {Path(__file__).name} for {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_runs_on_tiny_models_and_writes_its_keys(tmp_path: Path, script: str) -> None:
    if script not in TINY:
        pytest.fail(f"no tiny arguments for benchmarks/{script}.py: add them to TINY")
    arguments, keys = TINY[script]
    out = tmp_path / f"{script}.json"
    command = [sys.executable, str(ROOT / "benchmarks" / f"{script}.py")]
    command += [a.format(tmp=tmp_path) for a in arguments] + ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert keys <= set(result), f"{script}: missing {sorted(keys - set(result))}; has {sorted(result)}"
    if script in NESTED_KEYS:
        section, inner = NESTED_KEYS[script]
        assert inner <= set(result[section]), f"{script}: missing {sorted(inner - set(result[section]))}"
