"""Method details: fractional rank selection, PiSSA with randomized SVD, reproducible runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import fairlora
from conftest import tiny_config
from fairlora.errors import ConfigError
from fairlora.methods.adapters import resolve_targets, select_fraction

NAMES = [f"layer.{i}.attn.{p}" for i in range(4) for p in ("q", "v")]


@pytest.mark.parametrize(
    ("fraction", "side", "expected"),
    [
        (0.25, "front", ["layer.0.attn.q", "layer.0.attn.v"]),
        (0.25, "back", ["layer.3.attn.q", "layer.3.attn.v"]),
        (1.0, "front", NAMES),
        (0.01, "back", ["layer.3.attn.v"]),  # at least one module
    ],
)
def test_select_fraction_front_and_back(fraction, side, expected):
    assert select_fraction(NAMES, fraction, side, seed=0) == expected


def test_random_fraction_is_seeded_and_keeps_model_order():
    first, again = select_fraction(NAMES, 0.5, "random", 1), select_fraction(NAMES, 0.5, "random", 1)
    assert first == again and len(first) == 4
    assert first == [n for n in NAMES if n in first]
    assert len({tuple(select_fraction(NAMES, 0.5, "random", s)) for s in range(10)}) > 1


def test_unknown_target_lists_the_model_layer_names():
    with pytest.raises(ConfigError, match=r"lora.target_modules: \['k'\] not found .* q, v"):
        resolve_targets(NAMES, ["k"], "lora", "tiny")


def test_pissa_with_randomized_svd_saves_a_plain_lora_adapter_of_double_rank(tmp_path):
    config = tiny_config(tmp_path, method="pissa", lora={"r": 2, "alpha": 2, "pissa_niter": 2})
    result = fairlora.train(config)
    adapter = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 4 and adapter["init_lora_weights"] is True


def test_same_seed_same_predictions(tmp_path):
    first = fairlora.train(tiny_config(tmp_path, name="a"))
    second = fairlora.train(tiny_config(tmp_path, name="b"))
    a = pd.read_parquet(first.run_dir / "predictions.parquet")
    b = pd.read_parquet(second.run_dir / "predictions.parquet")
    pd.testing.assert_frame_equal(a, b)
    third = fairlora.train(tiny_config(tmp_path, name="c", seed=4))
    c = pd.read_parquet(third.run_dir / "predictions.parquet")
    assert not a["id"].equals(c["id"]) or not a["prob_1"].equals(c["prob_1"])
