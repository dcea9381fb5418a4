"""Math answers: equivalence checked by math-verify, a GSM8K-style number extractor as the fallback.

`exact_match` compares a generated text with its reference through `math_verify` (parse + verify:
LaTeX, \\boxed{}, fractions, percentages, sets, symbolic equality), reading each text after its last
"The answer is:" / "####" marker when it has one and no \\boxed{}. When math-verify is not installed
or cannot parse one side, the pair is scored by the number extractor below (see docs/generation.md
for the pairs where the two disagree). math-verify's timeouts use SIGALRM, which only works in the
main thread: elsewhere it runs without its timeout.

The fallback: the answer of a generated text is the first number after the LAST "The answer is:" (case and the
colon optional), else the last number in the text; a gold answer written GSM8K-style after "####"
is read from there. Thousands commas, currency signs and units are stripped; fractions ("3/4")
and decimals become numbers, so "1,000 apples", "$1000" and "1000.0" all match 1000.
"""

from __future__ import annotations

import importlib.util
import math
import re
import threading
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
    """The first number of the last \\boxed{}, else after the last "The answer is:" / "####", else last."""
    boxed = last_boxed(text)
    if boxed is not None and _numbers(boxed):
        return parse_number(_numbers(boxed)[0])
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


def numbers_match(generated: str, reference: str) -> bool:
    """The fallback check: the extracted numbers of the two texts are equal."""
    return answers_match(extract_answer(generated), extract_answer(reference))


def has_math_verify() -> bool:
    """True when the math-verify package is importable."""
    return importlib.util.find_spec("math_verify") is not None


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None when absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    opening = text.index("{", start)
    depth = 0
    for position in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[opening + 1 : position]
    return None


def answer_span(text: str) -> str:
    """What math-verify parses: the last \\boxed{} (as LaTeX), else the text from its last answer marker."""
    boxed = last_boxed(text)
    if boxed is not None:
        return f"$\\boxed{{{boxed}}}$"
    for marker in (_ANSWER_IS, re.compile(re.escape(_GOLD_MARK))):
        found = list(marker.finditer(text))
        if found:
            return text[found[-1].start() :]  # with the marker: math-verify anchors on "answer is"
    return text


def parsed_answer(text: str, timeout_s: int = 5) -> list:
    """math_verify.parse of the text's answer span ([] if nothing parses); timeout only in the main thread."""
    from math_verify import parse

    main = threading.current_thread() is threading.main_thread()
    return parse(answer_span(text), parsing_timeout=timeout_s if main else None)  # type: ignore[arg-type]


def verified_match(generated: str, reference: str, timeout_s: int = 5) -> bool | None:
    """math_verify's verdict on the two texts' answers; None when either side does not parse."""
    from math_verify import verify

    gold, predicted = parsed_answer(reference, timeout_s), parsed_answer(generated, timeout_s)
    if not gold or not predicted:
        return None
    main = threading.current_thread() is threading.main_thread()
    return bool(verify(gold, predicted, timeout_seconds=timeout_s if main else None))


def answer_text(text: str) -> str | None:
    """The answer read from `text`, as a string: math-verify's parse, else the fallback's number."""
    parsed = parsed_answer(text) if has_math_verify() else []
    if parsed:
        return str(parsed[-1])
    number = extract_answer(text)
    return None if number is None else f"{number:g}"


def exact_match(generated: Sequence[str], references: Sequence[str], checker: str = "auto") -> np.ndarray:
    """Per example: the generated answer equals the reference's (math-verify, else the number fallback).

    checker "auto" uses math-verify where installed and falls back per pair when a side does not
    parse; "numbers" uses the number extractor only; "math-verify" never falls back (unparsed = False).
    """
    if checker not in ("auto", "numbers", "math-verify"):
        raise ValueError(f"checker must be auto, numbers or math-verify; got {checker!r}")
    verify_first = checker != "numbers" and has_math_verify()
    if checker == "math-verify" and not verify_first:
        raise ImportError("checker='math-verify' needs `pip install math-verify`")
    out = []
    for g, r in zip(generated, references, strict=True):
        verdict = verified_match(g, r) if verify_first else None
        out.append(verdict if verdict is not None or checker == "math-verify" else numbers_match(g, r))
    return np.array([bool(v) for v in out], dtype=bool)
