"""fairlora.data: identity set, D-Lab preparation, HateCheck, local files, HF ids, splits, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fairlora.config import DataConfig
from fairlora.data import DatasetInfo, TaskData, list_datasets, load_task_data
from fairlora.data.hate import DLAB_GROUPS
from fairlora.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HATECHECK_DIR = SHARED_DATA / "hatecheck"
needs_hatecheck = pytest.mark.skipif(
    not (HATECHECK_DIR / "test_suite_cases.csv").is_file(), reason="../shared/data/hatecheck not present"
)


def data_cfg(**fields: Any) -> DataConfig:
    """A DataConfig from keyword fields (nested `identity` as a dict)."""
    return DataConfig.model_validate(fields)


def both(data: TaskData) -> pd.DataFrame:
    """Train and test stacked."""
    return pd.concat([data.train, data.test], ignore_index=True)


# ---------------------------------------------------------------- generated identity dataset


def test_identity_default_shape_groups_and_balance() -> None:
    data = load_task_data(DataConfig(), "classification", seed=42)
    full = both(data)
    assert data.name == "identity" and data.label_names == ["non-hateful", "hateful"]
    assert len(data.group_columns) == 24 and (len(data.train), len(data.test)) == (1152, 288)
    attributes = {g.split("_", 1)[0] for g in data.group_columns}
    assert attributes == {"race", "religion", "gender", "sexuality", "age", "disability"}
    assert {"race_black", "religion_muslim", "gender_women", "age_elderly", "disability_blind"} <= set(
        data.group_columns
    )
    assert list(full.columns[:3]) == ["id", "text", "label"]
    assert full["id"].is_unique and full["text"].is_unique
    assert full["label"].mean() == 0.5
    for group in data.group_columns:
        rows = full[full[group]]
        assert 60 <= len(rows) <= 80, group
        assert 0.4 <= rows["label"].mean() <= 0.6, group
    assert all(full[g].dtype == bool for g in data.group_columns)


def test_identity_is_deterministic_and_seed_changes_only_the_split() -> None:
    cfg = data_cfg(identity={"examples_per_group": 10})
    first, again = load_task_data(cfg, "classification", 5), load_task_data(cfg, "classification", 5)
    pd.testing.assert_frame_equal(first.train, again.train)
    pd.testing.assert_frame_equal(first.test, again.test)
    other = load_task_data(cfg, "classification", 6)
    assert set(first.test["id"]) != set(other.test["id"])
    assert sorted(both(first)["text"]) == sorted(both(other)["text"])
    assert len(both(load_task_data(cfg, "classification", -1))) == 240  # any int seed works


def test_identity_overlap_names_two_groups_of_different_attributes() -> None:
    data = load_task_data(data_cfg(identity={"overlap_rate": 0.2}), "classification", 1)
    full = both(data)
    counts = full[data.group_columns].sum(axis=1)
    assert set(counts) == {1, 2}
    assert (counts == 2).mean() == pytest.approx(0.2, abs=0.02)
    for _, row in full[counts == 2].head(30).iterrows():
        named = [g for g in data.group_columns if row[g]]
        assert len({g.split("_", 1)[0] for g in named}) == 2
        assert " and " in row["text"]
    none = both(load_task_data(data_cfg(identity={"overlap_rate": 0.0}), "classification", 1))
    assert (none[data.group_columns].sum(axis=1) == 1).all()


def test_identity_bias_injection_only_in_train_and_only_for_bias_groups() -> None:
    biased_groups = ["religion_muslim", "gender_women"]
    clean = load_task_data(DataConfig(), "classification", 3)
    biased = load_task_data(
        data_cfg(identity={"bias_groups": biased_groups, "bias_rate": 0.6}), "classification", 3
    )
    pd.testing.assert_frame_equal(clean.test, biased.test)
    assert list(clean.train["id"]) == list(biased.train["id"])
    flipped = clean.train["label"] != biased.train["label"]
    assert flipped.any()
    assert (clean.train.loc[flipped, "label"] == 0).all() and (biased.train.loc[flipped, "label"] == 1).all()
    assert clean.train.loc[flipped, biased_groups].any(axis=1).all()
    for group in biased_groups:
        rows = clean.train[group]
        negatives = int((clean.train.loc[rows, "label"] == 0).sum())
        assert biased.train.loc[rows, "label"].mean() > clean.train.loc[rows, "label"].mean() + 0.2
        assert int(flipped[rows].sum()) == pytest.approx(0.6 * negatives, abs=4)
    untouched = ~clean.train[biased_groups].any(axis=1)
    assert (clean.train.loc[untouched, "label"] == biased.train.loc[untouched, "label"]).all()


def test_identity_unknown_bias_group_lists_groups() -> None:
    with pytest.raises(DataError, match=r"data\.identity\.bias_groups: 'race_martian'.*race_black"):
        load_task_data(data_cfg(identity={"bias_groups": ["race_martian"]}), "classification", 0)


def test_identity_group_subset_and_unknown_group() -> None:
    data = load_task_data(data_cfg(group_columns=["race_asian", "age_teen"]), "classification", 0)
    assert data.group_columns == ["race_asian", "age_teen"]
    assert list(data.train.columns) == ["id", "text", "label", "race_asian", "age_teen"]
    with pytest.raises(DataError, match=r"data\.group_columns: 'nope' not found.*available groups"):
        load_task_data(data_cfg(group_columns=["nope"]), "classification", 0)


def test_list_datasets_describes_registered_sets() -> None:
    infos = {info.name: info for info in list_datasets()}
    assert {"identity", "dlab-hatespeech", "hatecheck", "winomt-tr", "ag_news", "asdiv"} <= set(infos)
    assert all(isinstance(info, DatasetInfo) for info in infos.values())
    assert "generated" in infos["identity"].description.lower()


# ---------------------------------------------------------------- D-Lab measuring hate speech


def _dlab_row(text: str, score: float, cid: int, targets: dict[str, list[str]]) -> dict[str, Any]:
    row: dict[str, Any] = {"comment_id": cid, "text": text, "hate_speech_score": score}
    for attribute, groups in DLAB_GROUPS.items():
        row[f"target_{attribute}"] = attribute in targets
        for group in groups:
            row[f"target_{attribute}_{group}"] = group in targets.get(attribute, [])
    return row


def write_dlab(path: Path) -> Path:
    """A small D-Lab-shaped file: race/religion targets, duplicates, a non-target row, score 0.5."""
    rows = []
    for i in range(12):
        groups = ["black"] if i % 3 == 0 else ["asian", "white"] if i % 3 == 1 else ["latinx"]
        rows.append(_dlab_row(f"race comment {i}", -1.0 + 0.3 * i, 100 + i, {"race": groups}))
    for i in range(8):
        rows.append(_dlab_row(f"religion comment {i}", 2.0 - 0.5 * i, 200 + i, {"religion": ["muslim"]}))
    rows.append(_dlab_row("boundary", 0.5, 300, {"race": ["black"]}))
    rows.append(_dlab_row("unrelated", 3.0, 301, {}))
    # duplicates: the first annotator row decides label and targets
    rows.append(_dlab_row("race comment 0", 3.0, 100, {"religion": ["jewish"]}))
    rows.append(_dlab_row("first says religion", 1.5, 302, {"religion": ["jewish"]}))
    rows.append(_dlab_row("first says religion", 1.5, 302, {"race": ["asian"]}))
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return path


def test_dlab_preparation_threshold_dedup_filter_groups(tmp_path: Path) -> None:
    file = write_dlab(tmp_path / "mhs.csv")
    cfg = data_cfg(name="dlab-hatespeech", path=str(file), target_attribute="race", test_size=0.25)
    data = load_task_data(cfg, "classification", 0)
    full = both(data).set_index("text")
    assert data.name == "dlab-hatespeech" and data.label_names == ["non-hateful", "hateful"]
    assert sorted(full.index) == sorted([f"race comment {i}" for i in range(12)] + ["boundary"])
    assert data.group_columns == ["race_asian", "race_black", "race_latinx", "race_white"]
    assert full.loc["race comment 0", "label"] == 0  # first row: score -1.0, not the duplicate's 3.0
    assert full.loc["boundary", "label"] == 0  # > 0.5, not >= 0.5
    assert full.loc["race comment 11", "label"] == 1  # -1.0 + 3.3 = 2.3
    assert bool(full.loc["race comment 1", "race_asian"]) and bool(full.loc["race comment 1", "race_white"])
    assert set(full["id"]) >= {"100", "300"}


def test_dlab_all_keeps_every_unique_text_and_accepts_target_prefixed_groups(tmp_path: Path) -> None:
    file = tmp_path / "mhs.jsonl"
    pd.read_csv(write_dlab(tmp_path / "mhs.csv")).to_json(file, orient="records", lines=True)
    data = load_task_data(data_cfg(name="dlab-hatespeech", path=str(file)), "classification", 0)
    assert len(both(data)) == 12 + 8 + 3  # unique texts, no target filter for "all"
    assert "religion_muslim" in data.group_columns and "religion_jewish" in data.group_columns
    picked = data_cfg(name="dlab-hatespeech", path=str(file), group_columns=["target_religion_muslim"])
    assert load_task_data(picked, "classification", 0).group_columns == ["religion_muslim"]


def test_dlab_from_the_hub_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    frame = pd.read_csv(write_dlab(tmp_path / "mhs.csv"))
    calls = []

    def fake_hub(name: str, split: str) -> Any:
        calls.append((name, split))
        return datasets.Dataset.from_pandas(frame)

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    data = load_task_data(data_cfg(name="dlab-hatespeech", target_attribute="religion"), "classification", 0)
    assert calls == [("ucberkeley-dlab/measuring-hate-speech", "train")]
    assert len(both(data)) == 9 and data.group_columns == ["religion_jewish", "religion_muslim"]


def test_dlab_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write_dlab(tmp_path / "mhs.csv")
    with pytest.raises(DataError, match=r"data\.target_attribute: no rows .*target_age == True"):
        load_task_data(
            data_cfg(name="dlab-hatespeech", path=str(file), target_attribute="age"), "classification", 0
        )
    pd.read_csv(file).drop(columns="hate_speech_score").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(
        DataError, match=r"'hate_speech_score' not found .*available columns: comment_id, text"
    ):
        load_task_data(data_cfg(name="dlab-hatespeech", path=str(tmp_path / "bad.csv")), "classification", 0)
    import datasets

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"measuring-hate-speech.*ConnectionError.*data\.path"):
        load_task_data(data_cfg(name="dlab-hatespeech"), "classification", 0)


# ---------------------------------------------------------------- HateCheck (real data)


@needs_hatecheck
def test_hatecheck_from_real_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRLORA_DATA_DIR", str(SHARED_DATA))
    data = load_task_data(data_cfg(name="hatecheck"), "classification", 0)
    full = both(data)
    assert len(full) == 3728 and full["id"].is_unique
    assert int(full["label"].sum()) == 2563
    assert data.group_columns == [
        "black_people", "disabled_people", "gay_people", "immigrants", "muslims", "trans_people", "women",
    ]  # fmt: skip
    assert (full[data.group_columns].sum(axis=1) == 0).sum() == 292
    assert full.loc[full["id"] == "1", "text"].item() == "I hate women."
    picked = data_cfg(name="hatecheck", path=str(HATECHECK_DIR), group_columns=["Muslims"])
    by_path = load_task_data(picked, "classification", 0)
    assert by_path.group_columns == ["muslims"]


def test_hatecheck_missing_files_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"hatecheck: test_suite_cases\.csv not found .*data\.path"):
        load_task_data(data_cfg(name="hatecheck", path=str(tmp_path)), "classification", 0)


# ---------------------------------------------------------------- local files and HF ids


def table(n: int = 40) -> pd.DataFrame:
    """A user table: str labels (30% 'toxic'), overlapping groups in three boolean-like encodings."""
    return pd.DataFrame(
        {
            "sentence": [f"sentence number {i}" for i in range(n)],
            "y": ["toxic" if i % 10 < 3 else "fine" for i in range(n)],
            "women": [str(i % 2 == 0).lower() for i in range(n)],
            "young": [int(i % 3 == 0) for i in range(n)],
            "flag": [i % 5 == 0 for i in range(n)],
            "senior": ["Yes" if i % 4 == 0 else "no" for i in range(n)],
        }
    )


def test_local_csv_str_labels_and_overlapping_groups(tmp_path: Path) -> None:
    file = tmp_path / "mine.csv"
    table().to_csv(file, index=False)
    groups = ["women", "young", "senior"]
    cfg = data_cfg(name=str(file), text_column="sentence", label_column="y", group_columns=groups)
    data = load_task_data(cfg, "classification", 0)
    full = both(data)
    assert data.name == "mine" and data.label_names == ["fine", "toxic"]
    assert data.group_columns == groups
    assert list(data.train.columns) == ["id", "text", "label", *groups]
    assert all(full[g].dtype == bool for g in groups)
    assert (
        int(full["women"].sum()) == 20 and int(full["young"].sum()) == 14 and int(full["senior"].sum()) == 10
    )
    assert (full["women"] & full["young"]).sum() == 7
    assert full["label"].sum() == 12
    row = full.set_index("id").loc["3"]
    assert row["text"] == "sentence number 3" and row["label"] == 0 and not row["women"] and row["young"]


def test_local_jsonl_bool_labels_default_groups(tmp_path: Path) -> None:
    file = tmp_path / "mine.jsonl"
    frame = table().assign(y=[i % 4 == 0 for i in range(40)])
    frame.to_json(file, orient="records", lines=True)
    data = load_task_data(
        data_cfg(name=str(file), text_column="sentence", label_column="y"), "classification", 0
    )
    assert data.label_names == ["False", "True"]
    assert data.group_columns == ["flag"]  # bool-typed columns are the default groups
    assert both(data)["label"].sum() == 10


def test_local_parquet_int_labels_and_json(tmp_path: Path) -> None:
    frame = table(60).assign(y=[(i % 3) + 1 for i in range(60)], id=[f"ex{i}" for i in range(60)])
    frame.to_parquet(tmp_path / "mine.parquet")
    cfg = data_cfg(name=str(tmp_path / "mine.parquet"), text_column="sentence", label_column="y")
    data = load_task_data(cfg.model_copy(update={"group_columns": ["young"]}), "classification", 0)
    assert data.label_names == ["1", "2", "3"] and set(both(data)["label"]) == {0, 1, 2}
    assert set(both(data)["id"]) == {f"ex{i}" for i in range(60)}
    (tmp_path / "mine.json").write_text(json.dumps(frame.to_dict(orient="records")))
    again = load_task_data(cfg.model_copy(update={"name": str(tmp_path / "mine.json")}), "classification", 0)
    assert len(both(again)) == 60


def test_causal_lm_frames_have_prompt_and_no_label(tmp_path: Path) -> None:
    file = tmp_path / "lm.jsonl"
    rows = [{"src": f"Turkish: o {i}", "tgt": f"English: he {i}", "male": i % 2 == 0} for i in range(10)]
    file.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = data_cfg(name=str(file), text_column="tgt", prompt_column="src")
    data = load_task_data(cfg, "causal_lm", 0)
    assert list(data.train.columns) == ["id", "text", "prompt", "male"] and data.label_names == []
    assert both(data).set_index("id").loc["2", "prompt"] == "Turkish: o 2"


@needs_hatecheck
def test_causal_lm_on_a_registered_dataset_drops_labels() -> None:
    data = load_task_data(data_cfg(name="hatecheck", path=str(HATECHECK_DIR)), "causal_lm", 0)
    assert "label" not in data.train.columns and data.label_names == []
    assert len(data.group_columns) == 7


def test_split_reproducible_stratified_and_subsampled(tmp_path: Path) -> None:
    file = tmp_path / "mine.csv"
    table(100).to_csv(file, index=False)
    cfg = data_cfg(name=str(file), text_column="sentence", label_column="y", test_size=0.2)
    first, again = load_task_data(cfg, "classification", 9), load_task_data(cfg, "classification", 9)
    assert list(first.test["id"]) == list(again.test["id"])
    assert list(first.test["id"]) != list(load_task_data(cfg, "classification", 10).test["id"])
    assert len(first.test) == 20 and first.test["label"].sum() == 6  # stratified: 30% of 20
    assert not set(first.train["id"]) & set(first.test["id"])
    small = cfg.model_copy(update={"max_examples": 50})
    sub, sub_again = load_task_data(small, "classification", 1), load_task_data(small, "classification", 1)
    assert len(both(sub)) == 50 and list(sub.train["id"]) == list(sub_again.train["id"])


def test_hf_id_path_loads_a_local_dataset_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos", "mixed"]),
         "grp": datasets.Value("bool")}
    )  # fmt: skip
    rows = {
        "sentence": [f"s{i}" for i in range(20)],
        "y": [i % 2 for i in range(20)],
        "grp": [i < 5 for i in range(20)],
    }
    folder = tmp_path / "hfdata"
    folder.mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(folder / "train.parquet")
    cfg = data_cfg(name=str(folder), text_column="sentence", label_column="y")
    data = load_task_data(cfg, "classification", 0)
    assert data.label_names == ["neg", "pos", "mixed"] and data.group_columns == ["grp"]
    assert len(both(data)) == 20


def test_unknown_hf_id_offline_lists_registered_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'org/x' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError,
        match=r"'org/x' is not a registered dataset \(identity, dlab-hatespeech, hatecheck, winomt-tr, "
        r"[^)]*\).*local \.csv",
    ):
        load_task_data(data_cfg(name="org/x"), "classification", 0)


# ---------------------------------------------------------------- errors


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.name: file .*missing\.csv not found"):
        load_task_data(data_cfg(name=str(tmp_path / "missing.csv")), "classification", 0)
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unsupported extension '\.xlsx'; supported: \.csv, \.jsonl"):
        load_task_data(data_cfg(name=str(tmp_path / "data.xlsx")), "classification", 0)


COLUMN_ERRORS = [
    ({"text_column": "body"}, r"data\.text_column: column 'body' not found .*columns: sentence, y, women"),
    ({"label_column": "target"}, r"data\.label_column: column 'target' not found .*available columns"),
    ({"group_columns": ["men"]}, r"data\.group_columns: column 'men' not found .*available columns"),
    ({"group_columns": ["sentence"]}, r"'sentence' .* is data\.text_column, not a sensitive feature"),
    ({"group_columns": ["empty"]}, r"group 'empty' has no members .*remove it from data\.group_columns"),
    ({"label_column": "same"}, r"data\.label_column: .* single label class \(a\)"),
]


@pytest.mark.parametrize(("fields", "message"), COLUMN_ERRORS)
def test_column_errors(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    file = tmp_path / "mine.csv"
    table().assign(empty=False, same="a").to_csv(file, index=False)
    base = {"name": str(file), "text_column": "sentence", "label_column": "y"}
    with pytest.raises(DataError, match=message):
        load_task_data(data_cfg(**(base | fields)), "classification", 0)


def test_empty_dataset_error(tmp_path: Path) -> None:
    file = tmp_path / "blank.csv"
    pd.DataFrame({"text": [None, None], "label": [1, 0]}).to_csv(file, index=False)
    with (
        pytest.warns(UserWarning, match="dropped 2 rows"),
        pytest.raises(DataError, match="no rows with text and label"),
    ):
        load_task_data(data_cfg(name=str(file)), "classification", 0)


def test_a_prompt_that_fills_max_length_is_a_clear_error() -> None:
    from fairlora.config import ModelConfig
    from fairlora.models import load_model
    from fairlora.tasks import get_task

    tokenizer = load_model(ModelConfig(name="tiny-llama"), "causal_lm").tokenizer
    frame = pd.DataFrame({"id": ["a", "b"], "prompt": ["x" * 40, "short: "], "text": ["target", "target"]})
    with pytest.raises(DataError, match=r"1 of 2 examples keep no target tokens within model.max_length=20"):
        get_task("causal_lm").encode(frame, tokenizer, 20)
    assert len(get_task("causal_lm").encode(frame, tokenizer, 60)) == 2
