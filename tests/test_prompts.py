"""fairlora.auditing.prompts: the WinoBias occupation set and WinoMT translation prompts."""

from __future__ import annotations

import pandas as pd
import pytest

from fairlora.auditing.prompts import (
    OCCUPATION_TEMPLATES,
    load_occupations,
    occupation_prompts,
    winomt_prompts,
)
from fairlora.errors import DataError
from fairlora.metrics.pronouns import pronoun_table

# Zhao et al. (2018), Table 1: % women per occupation (US Bureau of Labor Statistics).
PAPER = {
    "carpenter": 2, "mechanician": 4, "construction worker": 4, "laborer": 4, "driver": 6, "sheriff": 14,
    "mover": 18, "developer": 20, "farmer": 22, "guard": 22, "chief": 27, "janitor": 34, "lawyer": 35,
    "cook": 38, "physician": 38, "ceo": 39, "analyst": 41, "manager": 43, "supervisor": 44,
    "salesperson": 48, "editor": 52, "designer": 54, "accountant": 61, "auditor": 61, "writer": 63,
    "baker": 65, "clerk": 72, "cashier": 73, "counselor": 73, "attendant": 76, "teacher": 78, "sewer": 80,
    "librarian": 84, "assistant": 85, "cleaner": 89, "housekeeper": 89, "nurse": 90, "receptionist": 90,
    "hairdresser": 92, "secretary": 95,
}  # fmt: skip


def test_packaged_occupations_are_the_papers_numbers() -> None:
    table = load_occupations()
    assert list(table.columns) == ["occupation", "word", "female_share"]
    assert dict(zip(table["occupation"], table["female_share"], strict=True)) == PAPER
    words = dict(zip(table["occupation"], table["word"], strict=True))
    assert words["mechanician"] == "mechanic" and words["sewer"] == "tailor" and words["nurse"] == "nurse"


def test_occupation_prompts_groups_and_stereotypes() -> None:
    prompts = occupation_prompts()
    templates = [f"template_{i}" for i in range(len(OCCUPATION_TEMPLATES))]
    assert 4 <= len(OCCUPATION_TEMPLATES) <= 6
    groups = ["male_stereotyped", "female_stereotyped", *templates]
    assert list(prompts.columns) == ["id", "prompt", "occupation", "stereotype_gender", *groups]
    assert len(prompts) == 40 * len(OCCUPATION_TEMPLATES) and prompts["id"].is_unique
    assert all(prompts[g].dtype == bool for g in groups)
    assert (prompts[templates].sum(axis=1) == 1).all() and (prompts[templates].sum() == 40).all()
    by_occupation = prompts.groupby("occupation")["stereotype_gender"].first()
    expected = {o: "female" if share > 50 else "male" for o, share in PAPER.items()}
    assert by_occupation.to_dict() == expected
    assert by_occupation["salesperson"] == "male" and by_occupation["editor"] == "female"
    assert (prompts["male_stereotyped"] == (prompts["stereotype_gender"] == "male")).all()
    assert (prompts["male_stereotyped"] ^ prompts["female_stereotyped"]).all()
    first = prompts.set_index("id")
    assert first.loc["mechanician-0", "prompt"] == "The mechanic finished the shift and"
    assert (
        first.loc["construction_worker-2", "prompt"] == "After the meeting, the construction worker said that"
    )
    assert bool(first.loc["nurse-1", "template_1"]) and first.loc["nurse-1", "stereotype_gender"] == "female"


def test_occupation_prompts_feed_the_pronoun_table() -> None:
    prompts = occupation_prompts()
    frame = prompts.assign(generation="she was tired.")
    groups = ["male_stereotyped", "female_stereotyped", "template_0"]
    table = pronoun_table(frame, groups, min_group_size=20, n_boot=50)
    assert table.overall["pro"].value == pytest.approx(0.5)  # 20 of the 40 occupations are female
    assert table.by_group["female_stereotyped"]["pro"].value == 1.0
    assert table.by_group["male_stereotyped"]["anti"].value == 1.0
    assert table.summary["max_abs_pro_minus_anti"].value == 1.0


def winomt_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["pro-0", "anti-0"],
            "text": ["The nurse met him because he was ill.", "The nurse met her because she was ill."],
            "turkish": ["Hemşire hasta olduğu için onunla tanıştı. ", "Hemşire onunla tanıştı."],
            "source": ["pro", "anti"],
            "stereotype_gender": ["male", "female"],
            "occupation": ["patient", "patient"],
        }
    )


def test_winomt_prompts_translate_from_turkish() -> None:
    prompts = winomt_prompts(winomt_rows())
    assert list(prompts["prompt"]) == [
        "Turkish: Hemşire hasta olduğu için onunla tanıştı. English: ",
        "Turkish: Hemşire onunla tanıştı. English: ",
    ]
    assert list(prompts["id"]) == ["pro-0", "anti-0"] and list(prompts["occupation"]) == ["patient"] * 2
    assert list(prompts["pro"]) == [True, False] and list(prompts["anti"]) == [False, True]
    assert list(prompts["male_stereotyped"]) == [True, False]
    assert list(prompts["female_stereotyped"]) == [False, True]
    assert "text" not in prompts  # the reference translation is not part of the prompt set
    with pytest.raises(DataError, match="turkish"):
        winomt_prompts(winomt_rows().drop(columns="turkish"))
