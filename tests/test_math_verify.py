"""Math answers: math-verify against the number extractor on tricky pairs, MATH-format files, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_config
from fairlora.config import DataConfig
from fairlora.data.registry import load_prepared
from fairlora.errors import DataError
from fairlora.metrics.math import answer_span, answer_text, exact_match, last_boxed
from fairlora.pipeline import train

pytest.importorskip("math_verify")

# (generated, reference, math-verify's verdict, the number extractor's verdict); docs/generation.md
# shows the same table.
TRICKY = [
    ("1/2", "0.5", True, True),
    ("The answer is: 1,000 apples", "#### 1000", True, True),
    ("5 dollars", "$5", True, True),
    ("The answer is: 3/4 of a cake", "0.75", True, True),
    (r"\frac{3}{4}", "0.75", True, False),  # the extractor reads 3 (the first number)
    (r"The answer is $\boxed{\frac{1}{2}}$", "0.5", True, False),  # the extractor reads 1
    ("50%", "0.5", True, False),  # math-verify reads 50% as 1/2
    ("12.0%", "12", False, True),  # ... and so 12% is not 12; the extractor drops the sign
    ("10^3", "1000", True, False),
    ("The answer is 1 000", "1000", True, False),  # a space as thousands separator
    ("0.333", "1/3", False, False),
    (r"\boxed{2\sqrt{2}}", r"\boxed{\sqrt{8}}", True, False),
    ("The answer is: 5. Question: Tom has 7 apples", "5", True, True),  # after the marker, the first
]


@pytest.mark.parametrize(("generated", "reference", "verified", "numbers"), TRICKY)
def test_tricky_pairs_math_verify_and_numbers(
    generated: str, reference: str, verified: bool, numbers: bool
) -> None:
    assert exact_match([generated], [reference], checker="math-verify").tolist() == [verified]
    assert exact_match([generated], [reference], checker="numbers").tolist() == [numbers]
    assert exact_match([generated], [reference]).tolist() == [verified]  # auto = math-verify when it parses


def test_auto_falls_back_to_numbers_when_a_side_does_not_parse() -> None:
    assert exact_match(["forty-two, i.e. 42"], ["-- 42 --"], checker="math-verify").tolist() == [True]
    unparsable = "\\frac{"  # math-verify finds nothing here; the extractor finds nothing either
    assert exact_match([unparsable], ["3"]).tolist() == [False]
    assert exact_match(["twelve"], ["12"], checker="math-verify").tolist() == [False]


def test_math_verify_works_off_the_main_thread() -> None:
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda pair: exact_match(*pair)[0], [(["1/2"], ["0.5"]), (["3"], ["4"])]))
    assert got == [True, False]


def test_last_boxed_and_the_answer_span() -> None:
    solution = r"First \boxed{1}, then $x = \boxed{\frac{a}{b^{2}}}$."
    assert last_boxed(solution) == r"\frac{a}{b^{2}}" and last_boxed("no box") is None
    assert answer_span(solution) == r"$\boxed{\frac{a}{b^{2}}}$"
    assert answer_span("The answer is 2. The answer is: 7 cats") == "The answer is: 7 cats"
    assert answer_text("The answer is: 1,000") == "1000"


def _math_file(tmp_path: Path) -> Path:
    file = tmp_path / "math.jsonl"
    pd.DataFrame(
        {
            "problem": [f"What is {i} + {i}?" for i in range(8)],
            "solution": [
                rf"We add: {i} + {i} = {2 * i}, so the answer is $\boxed{{{2 * i}}}$." for i in range(8)
            ],
        }
    ).to_json(file, orient="records", lines=True)
    return file


def test_math_format_file_loads_with_the_boxed_answer(tmp_path: Path) -> None:
    frame = load_prepared(DataConfig(name="math", path=str(_math_file(tmp_path))), "causal_lm", 0).frame
    assert len(frame) == 8 and frame["prompt"].str.startswith("What is").all()
    assert exact_match(
        ["The answer is 6"], [frame.set_index("prompt").loc["What is 3 + 3?", "text"]]
    ).tolist() == [True]
    bad = tmp_path / "bad.jsonl"
    pd.DataFrame({"problem": ["1+1?"], "solution": ["2"]}).to_json(bad, orient="records", lines=True)
    with pytest.raises(DataError, match=r"boxed"):
        load_prepared(DataConfig(name="math", path=str(bad)), "causal_lm", 0)
    with pytest.raises(DataError, match="data.path"):
        load_prepared(DataConfig(name="math"), "causal_lm", 0)


def test_math_file_scores_exact_match_in_a_run(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path,
        task="causal_lm",
        model={"name": "tiny-llama", "max_length": 96},
        data={"name": "math", "path": str(_math_file(tmp_path)), "test_size": 0.5},
        lora={"target_modules": ["q_proj", "v_proj"]},
        train={"max_steps": 1, "batch_size": 4},
        eval={"exact_match": True, "max_new_tokens": 3, "splits": ["test"]},
    )
    result = train(config)
    predictions = pd.read_parquet(result.run_dir / "predictions.parquet")
    assert {"generated", "answer", "exact_match"} <= set(predictions.columns)
    assert result.splits["test"].overall["exact_match"].value == pytest.approx(
        predictions["exact_match"].mean()
    )
