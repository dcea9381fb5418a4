"""Sensitive features as groups: categorical columns, crossed groups, missing values, in data and runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fairlora
from conftest import tiny_config
from fairlora.config import DataConfig
from fairlora.data.groups import crossed_groups, missing_counts, sensitive_groups
from fairlora.data.registry import load_task_data
from fairlora.errors import DataError


def people(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """A table with a categorical gender (some missing), a race column and a 0/1 group column."""
    rng = np.random.default_rng(seed)
    gender = rng.choice(["female", "male", "nonbinary"], n).astype(object)
    gender[::17] = None
    return pd.DataFrame(
        {
            "text": [f"sentence number {i} about things" for i in range(n)],
            "label": rng.integers(0, 2, n),
            "gender": gender,
            "race": rng.choice(["asian", "black"], n),
            "veteran": rng.integers(0, 2, n),
        }
    )


def test_a_categorical_column_gives_one_group_per_value_and_counts_missing():
    table = people()
    members, missing = sensitive_groups(table, ["gender", "veteran"], "t")
    assert list(members.columns) == ["gender=female", "gender=male", "gender=nonbinary", "veteran"]
    assert members["gender=male"].sum() == (table["gender"] == "male").sum()
    assert members["veteran"].equals(table["veteran"].astype(bool))
    assert missing["gender"] == table["gender"].isna().sum() and missing["veteran"] == 0
    assert not members.loc[table["gender"].isna(), ["gender=female", "gender=male"]].any().any()
    assert missing_counts(members, list(members.columns)) == {"gender": int(table["gender"].isna().sum())}


def test_crossed_groups_keep_observed_combinations_only():
    table = pd.DataFrame({"gender": ["f", "f", "m", None], "race": ["a", "b", "a", "b"], "old": [1, 0, 1, 1]})
    members, _ = sensitive_groups(table, ["gender", "race", "old"], "t")
    crossed = crossed_groups(members, [["gender", "race"], ["old", "gender"]], "t")
    assert list(crossed.columns) == [
        "gender=f&race=a",
        "gender=f&race=b",
        "gender=m&race=a",
        "old&gender=f",
        "old&gender=m",
    ]
    assert crossed["gender=f&race=b"].tolist() == [False, True, False, False]
    with pytest.raises(DataError, match="data.intersections: 'religion'"):
        crossed_groups(members, [["gender", "religion"]], "t")


def test_bad_group_columns_fail_with_the_fix():
    table = people().assign(empty=None, code=np.arange(240))
    with pytest.raises(DataError, match="'empty'.*no values"):
        sensitive_groups(table, ["empty"], "t")
    with pytest.raises(DataError, match="240 distinct values.*bin it"):
        sensitive_groups(table, ["code"], "t")


def test_local_table_with_categorical_groups_and_intersections(tmp_path):
    path = tmp_path / "people.csv"
    people().to_csv(path, index=False)
    cfg = DataConfig(name=str(path), group_columns=["gender", "veteran"], intersections=[["gender", "race"]])
    with pytest.warns(UserWarning, match="rows have no 'gender' value"):
        data = load_task_data(cfg, "classification", seed=0)
    assert "gender=female&race=black" in data.group_columns and "race=asian" in data.group_columns
    assert "veteran" in data.group_columns
    rows = pd.concat([data.train, data.test])
    source = people()
    crossed = ((source["gender"] == "female") & (source["race"] == "black")).to_numpy()
    assert (rows["gender=female&race=black"].to_numpy() == crossed[rows["id"].astype(int)]).all()


def test_intersections_of_a_registered_dataset_cross_its_groups():
    cfg = DataConfig(
        name="identity",
        group_columns=["gender_women", "religion_muslim"],
        intersections=[["gender_women", "religion_muslim"]],
        identity={"examples_per_group": 30, "overlap_rate": 0.5},
    )
    data = load_task_data(cfg, "classification", seed=0)
    assert data.group_columns[-1] == "gender_women&religion_muslim"
    both = data.test["gender_women"] & data.test["religion_muslim"]
    assert data.test["gender_women&religion_muslim"].equals(both)


def test_a_run_on_categorical_groups_is_audited_per_value(tmp_path):
    path = tmp_path / "people.csv"
    people(n=160).to_csv(path, index=False)
    config = tiny_config(
        tmp_path, data={"name": str(path), "group_columns": ["gender"], "intersections": [["gender", "race"]]}
    )
    with pytest.warns(UserWarning):
        run = fairlora.train(config)
    result = fairlora.audit(run.run_dir, tmp_path / "audit", ["audit.n_boot=20"])
    utility = result.runs[0].sections["utility/test"]
    assert {
        "gender=female",
        "gender=male",
        "gender=nonbinary",
        "race=asian",
        "gender=male&race=black",
    } <= set(utility.by_group)
    assert any("have no 'gender' value" in note for note in result.runs[0].notes)
