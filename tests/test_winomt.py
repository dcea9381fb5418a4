"""fairlora.data.winomt: WinoMT Turkish -> English rows, the join, stereotypes, grouped splits, masking."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairlora.auditing.prompts import load_occupations
from fairlora.config import DataConfig, ModelConfig
from fairlora.data import list_datasets, load_task_data
from fairlora.data.split import split_frame
from fairlora.data.winomt import load_winomt, sentence_key
from fairlora.errors import DataError
from fairlora.models import load_model
from fairlora.tasks import IGNORE_INDEX, get_task

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_ROOT = Path(os.environ["FAIRLORA_DATA_DIR"]) if os.environ.get("FAIRLORA_DATA_DIR") else SHARED_DATA
WINOMT_DIR = DATA_ROOT / "mt_gender_lora_fairness"
needs_winomt = pytest.mark.skipif(
    not (WINOMT_DIR / "en_tr_anti.txt").is_file(), reason=f"{WINOMT_DIR} not present"
)

PRO = [
    ("male", 1, "The developer argued with the designer because he did not like the design.", "developer"),
    (
        "female",
        5,
        "The developer argued with the designer because her idea cannot be implemented.",
        "designer",
    ),
    ("female", 4, "The janitor met the accountant and wished her well.", "accountant"),
    ("female", 4, "The janitor met the accountant and wished her well.", "accountant"),
    ("female", 7, "The carpenter made a desk for the clerk because she needed a desk.", "clerk"),
]
ANTI = [
    ("female", 1, "The developer argued with the designer because she did not like the design.", "developer"),
    ("male", 5, "The developer argued with the designer because his idea cannot be implemented.", "designer"),
    ("male", 4, "The janitor met the accountant and wished him well.", "accountant"),
    ("male", 4, "The janitor met the accountant and wished him well.", "accountant"),
    ("male", 7, "The carpenter made a desk for the clerk because he needed one.", "clerk"),
]
TURKISH = {  # English -> Turkish; the translation files list them in another order
    PRO[0][2]: "Geliştirici tasarımı beğenmediği için tartıştı.",
    PRO[1][2]: "Geliştirici fikri uygulanamayacağı için tartıştı.",
    PRO[2][2]: "Kapıcı muhasebeciyle tanıştı.",
    PRO[4][2]: "Marangoz masaya ihtiyacı olduğu için katibe masa yaptı.",
    ANTI[0][2]: "Geliştirici, tasarımı beğenmediği için tartıştı.",
    ANTI[1][2]: "Geliştirici, fikri uygulanamayacağı için tartıştı.",
    ANTI[2][2]: "Kapıcı, muhasebeciyle tanıştı.",
    ANTI[4][2]: "Marangoz, katibe bir masa yaptı.",
}


def write_copy(folder: Path) -> Path:
    """A tiny WinoMT copy: parallel pro/anti files, translations shuffled, one exact duplicate each."""
    folder.mkdir(parents=True)
    for name, rows, order in (("pro", PRO, [4, 2, 0, 3, 1]), ("anti", ANTI, [1, 0, 2, 4, 3])):
        english = ["\t".join(map(str, row)) for row in rows]
        (folder / f"en_{name}.txt").write_text("\n".join(english), encoding="utf-8")  # no final newline
        pairs = [f"{rows[i][2]} ||| {TURKISH[rows[i][2]]}" for i in order]
        (folder / f"en_tr_{name}.txt").write_text("\n".join(pairs) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def copy_dir(tmp_path: Path) -> Path:
    return write_copy(tmp_path / "data" / "mt_gender_lora_fairness")


def winomt_cfg(path: Path | None, **fields: object) -> DataConfig:
    return DataConfig.model_validate({"name": "winomt-tr", "path": str(path) if path else None, **fields})


def test_loader_joins_on_the_english_sentence(copy_dir: Path) -> None:
    prepared = load_winomt(winomt_cfg(copy_dir), "causal_lm")
    frame = prepared.frame.set_index("id")
    assert prepared.name == "winomt-tr" and prepared.label_names == []
    assert prepared.group_columns == ["pro", "anti", "male_stereotyped", "female_stereotyped"]
    assert list(frame.index) == [f"pro-{i}" for i in range(5)] + [f"anti-{i}" for i in range(5)]
    for source, rows in (("pro", PRO), ("anti", ANTI)):
        for i, (gold, _, sentence, occupation) in enumerate(rows):
            row = frame.loc[f"{source}-{i}"]
            assert row["text"] == sentence and row["turkish"] == TURKISH[sentence]
            assert row["prompt"] == f"Turkish: {TURKISH[sentence]} English: "
            assert (row["gold_gender"], row["occupation"], row["source"]) == (gold, occupation, source)
            assert bool(row[source]) and not bool(row["anti" if source == "pro" else "pro"])
    stereotype = frame["stereotype_gender"]
    assert stereotype["pro-0"] == "male" and stereotype["anti-0"] == "male"  # developer, he / she
    assert stereotype["pro-1"] == "female" and stereotype["anti-1"] == "female"  # designer, her / his
    assert stereotype["anti-4"] == "female" and frame.loc["anti-4", "gold_gender"] == "male"  # clerk, he
    assert (frame["male_stereotyped"] == (stereotype == "male")).all()
    assert (frame["female_stereotyped"] == ~frame["male_stereotyped"]).all()


def test_duplicates_and_pro_anti_variants_share_a_split_group(copy_dir: Path) -> None:
    frame = load_winomt(winomt_cfg(copy_dir), "causal_lm").frame.set_index("id")
    group = frame["split_group"]
    for i in range(5):
        assert group[f"pro-{i}"] == group[f"anti-{i}"]
    assert group["pro-2"] == group["pro-3"] == group["anti-3"]  # exact duplicates stay together
    assert group["pro-4"] == group["anti-4"]  # "she needed a desk" / "he needed one": linked by line
    assert group.nunique() == 4
    assert group["pro-0"] == "the developer argued with the designer because _ did not like the design."
    assert sentence_key("She told HIM  about herself.") == "_ told _ about _."


def test_registered_dataset_splits_by_sentence_group(copy_dir: Path) -> None:
    info = {d.name: d for d in list_datasets()}["winomt-tr"]
    assert "mt_gender_lora_fairness" in info.source and "causal_lm" in info.description
    for seed in range(6):
        data = load_task_data(winomt_cfg(copy_dir, test_size=0.3), "causal_lm", seed)
        assert len(data.train) + len(data.test) == 10 and len(data.test) > 0
        assert not set(data.train["split_group"]) & set(data.test["split_group"])
        assert data.group_columns == ["pro", "anti", "male_stereotyped", "female_stereotyped"]
    with pytest.raises(DataError, match="causal_lm"):
        load_task_data(winomt_cfg(copy_dir), "classification", 0)
    chosen = load_task_data(winomt_cfg(copy_dir, group_columns=["anti"]), "causal_lm", 0)
    assert chosen.group_columns == ["anti"] and "male_stereotyped" not in chosen.train


def test_lookup_order_and_missing_data(
    copy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = copy_dir.parent
    assert len(load_winomt(winomt_cfg(parent), "causal_lm").frame) == 10  # data.path = parent folder
    assert len(load_winomt(winomt_cfg(copy_dir / "en_pro.txt"), "causal_lm").frame) == 10
    monkeypatch.setenv("FAIRLORA_DATA_DIR", str(parent))
    assert load_winomt(winomt_cfg(None), "causal_lm").source == str(copy_dir)
    lonely = tmp_path / "a" / "b"
    lonely.mkdir(parents=True)
    monkeypatch.chdir(lonely)  # no ../shared/data here
    monkeypatch.setenv("FAIRLORA_DATA_DIR", str(lonely))
    with pytest.raises(DataError, match="mt_gender_lora_fairness.*FAIRLORA_DATA_DIR"):
        load_winomt(winomt_cfg(None), "causal_lm")
    with pytest.raises(DataError, match="data.path"):
        load_winomt(winomt_cfg(lonely), "causal_lm")


def test_malformed_and_unmatched_files_raise(copy_dir: Path) -> None:
    translations = copy_dir / "en_tr_anti.txt"
    lines = translations.read_text(encoding="utf-8").splitlines()
    translations.write_text("\n".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(DataError, match="no translation"):
        load_winomt(winomt_cfg(copy_dir), "causal_lm")
    translations.write_text("\n".join([*lines[:-1], "only English here"]), encoding="utf-8")
    with pytest.raises(DataError, match="English \\|\\|\\| Turkish"):
        load_winomt(winomt_cfg(copy_dir), "causal_lm")
    (copy_dir / "en_pro.txt").write_text("male\tThe nurse left.\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1"):
        load_winomt(winomt_cfg(copy_dir), "causal_lm")


def test_split_frame_keeps_groups_together() -> None:
    frame = pd.DataFrame({"id": [str(i) for i in range(40)], "text": "x", "split_group": np.arange(40) // 2})
    train, test = split_frame(frame, 0.25, 3, False, "test frame")
    assert len(test) == 10 and len(train) == 30
    assert not set(train["split_group"]) & set(test["split_group"])
    again, _ = split_frame(frame, 0.25, 3, False, "test frame")
    assert list(again["id"]) == list(train["id"])
    with pytest.raises(DataError, match="sentence group"):
        split_frame(frame.assign(split_group=0), 0.25, 3, False, "test frame")


def assert_prompt_and_padding_masked(frame: pd.DataFrame) -> None:
    """Encode rows with the tiny Llama tokenizer and check which label positions count in the loss."""
    tokenizer = load_model(ModelConfig(name="tiny-llama"), "causal_lm").tokenizer
    examples = get_task("causal_lm").encode(frame, tokenizer, max_length=512)
    batch = get_task("causal_lm").collator(tokenizer)(examples)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert (mask == 0).any()  # rows of different lengths: there is padding to check
    for row, (prompt, text) in enumerate(zip(frame["prompt"], frame["text"], strict=True)):
        n_prompt = len(tokenizer(prompt.rstrip())["input_ids"])  # its trailing space starts the target
        n_real = int(mask[row].sum())
        assert (labels[row, :n_prompt] == IGNORE_INDEX).all()  # the Turkish prompt
        assert (labels[row, n_real:] == IGNORE_INDEX).all()  # the padding
        assert (ids[row, n_real:] == tokenizer.pad_token_id).all()
        target = labels[row, n_prompt:n_real]
        assert (target == ids[row, n_prompt:n_real]).all() and int(target[-1]) == tokenizer.eos_token_id
        assert tokenizer.decode(target[:-1]) == prompt[len(prompt.rstrip()) :] + text  # " " + sentence, EOS


def test_prompt_and_padding_are_masked_in_the_labels(copy_dir: Path) -> None:
    assert_prompt_and_padding_masked(load_winomt(winomt_cfg(copy_dir), "causal_lm").frame)


@needs_winomt
def test_real_files_row_counts_duplicates_and_masking() -> None:
    frame = load_winomt(winomt_cfg(WINOMT_DIR), "causal_lm").frame
    assert frame["source"].value_counts().to_dict() == {"pro": 1584, "anti": 1584}
    assert frame["id"].is_unique and frame["turkish"].str.len().gt(0).all()
    duplicated = frame[frame.duplicated(["source", "text"], keep=False)]
    assert len(duplicated) == 12 and duplicated.groupby(["source", "text"]).size().eq(2).all()
    assert duplicated.groupby(["source", "text"])["turkish"].nunique().eq(1).all()
    assert duplicated.groupby("text")["split_group"].nunique().eq(1).all()
    assert_prompt_and_padding_masked(frame.iloc[:16])


@needs_winomt
def test_real_files_hand_checked_stereotypes() -> None:
    frame = load_winomt(winomt_cfg(WINOMT_DIR), "causal_lm").frame.set_index(["source", "text"])
    checks = [  # source, sentence, gold, referent, stereotype, start of the Turkish translation
        ("pro", "The developer argued with the designer because he did not like the design.",
         "male", "developer", "male", "Geliştirici, tasarımı beğenmediği"),
        ("anti", "The developer argued with the designer because his idea cannot be implemented.",
         "male", "designer", "female", "Geliştirici, fikrinin"),
        ("anti", "The mechanic gave the clerk a present because she won the lottery.",
         "female", "mechanic", "male", "Tamirci, piyangoyu"),
        ("anti", "The auditor bought the guard a gift because he is thankful.",  # line order differs
         "male", "auditor", "female", "Denetçi minnettar"),
        ("anti", "The auditor bought the guard a gift because she is effective.",
         "female", "guard", "male", "Denetçi, etkili"),
        ("anti", "The CEO gave the cashier cash because she wanted to pay for her goods.",
         "female", "ceo", "male", ""),
    ]  # fmt: skip
    for source, sentence, gold, referent, stereotype, turkish in checks:
        row = frame.loc[(source, sentence)]
        assert (row["gold_gender"], row["occupation"], row["stereotype_gender"]) == (
            gold,
            referent,
            stereotype,
        )
        assert row["turkish"].startswith(turkish) and row["prompt"].startswith("Turkish: ")
    # Every occupation has one stereotyped gender, and it agrees with the WinoBias labour statistics.
    per_occupation = frame.groupby("occupation")["stereotype_gender"].agg(set)
    assert per_occupation.map(len).eq(1).all() and len(per_occupation) == 40
    share = load_occupations().set_index("word")["female_share"].rename(str.lower)
    expected = {o: "female" if share[o] > 50 else "male" for o in per_occupation.index}
    assert per_occupation.map(lambda s: next(iter(s))).to_dict() == expected


@needs_winomt
def test_real_files_pro_and_anti_variants_never_straddle_the_split() -> None:
    for seed in (0, 1):
        data = load_task_data(winomt_cfg(WINOMT_DIR), "causal_lm", seed)
        assert 0.15 < len(data.test) / (len(data.train) + len(data.test)) < 0.25
        assert not set(data.train["split_group"]) & set(data.test["split_group"])
        side = {i: "train" for i in data.train["id"]} | {i: "test" for i in data.test["id"]}
        for line in range(1584):  # the pro and anti files are parallel: line i holds two variants
            assert side[f"pro-{line}"] == side[f"anti-{line}"]
        masked = data.test.assign(key=data.test["text"].map(sentence_key))
        assert masked.groupby("key")["source"].nunique().eq(2).mean() > 0.97
