"""The CI level reaches every table builder: a 50% interval lies inside the 95% one, on the same draws."""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from fairlora.metrics.auc import auc_table
from fairlora.metrics.benchmarks import score_crows_pairs
from fairlora.metrics.calibration import calibration_table
from fairlora.metrics.membership import loss_attack_table
from fairlora.metrics.probes import probe_items, token_probe
from fairlora.metrics.pronouns import pronoun_table
from fairlora.metrics.table import Estimate, MetricTable
from fairlora.metrics.utility import utility_table

N = 400


def _predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, N)
    prob = 1 / (1 + np.exp(-rng.normal(1.5 * label - 0.75, 1.0, N)))
    frame = pd.DataFrame(
        {"id": [str(i) for i in range(N)], "split": np.where(np.arange(N) < 200, "train", "test")}
    )
    frame["label"], frame["prob_1"], frame["prob_0"] = label, prob, 1 - prob
    frame["pred"] = (prob > 0.5).astype(int)
    frame["loss"] = -np.log(np.where(label == 1, prob, 1 - prob))
    frame["a"], frame["b"] = rng.random(N) < 0.5, rng.random(N) < 0.5
    return frame


def _generations() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    texts = rng.choice(["she left", "he left", "they left", "it left"], size=N)
    frame = pd.DataFrame({"generation": texts, "stereotype_gender": rng.choice(["male", "female"], size=N)})
    frame["a"] = rng.random(N) < 0.5
    return frame


def _random_scorer(texts: list[str], contexts: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """A "model" with a fixed pseudo-random log-likelihood per text."""
    values = [(zlib.crc32(t.encode()) % 1000) / 100.0 for t in texts]
    return -np.array(values), np.full(len(texts), 4.0)


def _crows() -> pd.DataFrame:
    more = [f"sentence {i} more" for i in range(N)]
    less = [f"sentence {i} less" for i in range(N)]
    return pd.DataFrame({"sent_more": more, "sent_less": less, "bias_type": ["gender", "race"] * (N // 2)})


BUILDERS: dict[str, Callable[[float], MetricTable]] = {
    "utility": lambda level: utility_table(_predictions(), ["a", "b"], n_boot=300, level=level),
    "auc": lambda level: auc_table(_predictions(), ["a", "b"], n_boot=300, level=level),
    "calibration": lambda level: calibration_table(_predictions(), ["a", "b"], n_boot=300, level=level),
    "membership": lambda level: loss_attack_table(_predictions(), ["a", "b"], n_boot=300, level=level),
    "generation": lambda level: pronoun_table(_generations(), ["a"], n_boot=300, level=level),
    "probe": lambda level: token_probe(
        _random_scorer, probe_items([f"Person {i} works." for i in range(60)]), n_boot=300, level=level
    ),
    "benchmark": lambda level: score_crows_pairs(_random_scorer, _crows(), n_boot=300, level=level),
}


def _intervals(table: MetricTable) -> list[tuple[str, Estimate]]:
    found = [(f"overall/{m}", e) for m, e in table.overall.items()]
    found += [(f"summary/{m}", e) for m, e in table.summary.items()]
    return [(name, e) for name, e in found if e.low is not None and e.high is not None and e.high > e.low]


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_a_lower_ci_level_gives_narrower_intervals(kind):
    wide, narrow = BUILDERS[kind](0.95), BUILDERS[kind](0.5)
    checked = _intervals(wide)
    assert checked, "no interval to compare"
    narrow_by_name = dict(_intervals(narrow)) | {f"overall/{m}": e for m, e in narrow.overall.items()}
    narrow_by_name |= {f"summary/{m}": e for m, e in narrow.summary.items()}
    for name, estimate in checked:
        other = narrow_by_name[name]
        assert other.value == estimate.value, name
        assert estimate.low <= other.low <= other.high <= estimate.high, name
        assert other.high - other.low < estimate.high - estimate.low, name
