"""Math word problems: a GSM8K-style answer extractor and exact-match scoring (pure functions).

The answer of a generated text is the first number after the LAST "The answer is:" (case and the
colon optional), else the last number in the text; a gold answer written GSM8K-style after "####"
is read from there. Thousands commas, currency signs and units are stripped; fractions ("3/4")
and decimals become numbers, so "1,000 apples", "$1000" and "1000.0" all match 1000.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?|-?\.\d+")
_ANSWER_IS = re.compile(r"the answer is\s*:?", re.IGNORECASE)
_GOLD_MARK = "####"


def parse_number(text: str) -> float | None:
    """A number written as "1,234", "-3.5", "3/4", ".5" (commas dropped); None when it is not one."""
    cleaned = text.replace(",", "").replace(" ", "")
    if not cleaned:
        return None
    try:
        if "/" in cleaned:
            num, den = cleaned.split("/", 1)
            return float(num) / float(den) if float(den) != 0 else None
        return float(cleaned)
    except ValueError:
        return None


def _numbers(text: str) -> list[str]:
    return [m.group(0) for m in _NUMBER.finditer(text) if re.search(r"\d", m.group(0))]


def extract_answer(text: str) -> float | None:
    """The number after the last "The answer is:" (else after the last "####"), else the last number."""
    for marker in (_ANSWER_IS, re.compile(re.escape(_GOLD_MARK))):
        found = list(marker.finditer(text))
        if found:
            after = _numbers(text[found[-1].end() :])
            if after:
                return parse_number(after[0])
    numbers = _numbers(text)
    return parse_number(numbers[-1]) if numbers else None


def answers_match(predicted: float | None, gold: float | None, rel_tol: float = 1e-6) -> bool:
    """True when both are numbers and equal (to rel_tol, so 0.3333333 matches 1/3 only when written 1/3)."""
    if predicted is None or gold is None:
        return False
    return math.isclose(predicted, gold, rel_tol=rel_tol, abs_tol=1e-9)


def exact_match(generated: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per example: the answer extracted from the generated text equals the reference's answer."""
    return np.array(
        [
            answers_match(extract_answer(g), extract_answer(r))
            for g, r in zip(generated, references, strict=True)
        ],
        dtype=bool,
    )
