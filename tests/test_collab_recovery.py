"""Trust recovery end to end: 4 clients in 2 known pairs (prose, code) find their same-kind peer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from fairlora.collab.command import run_collab
from fairlora.collab.config import build_collab_config

PEER = {0: 2, 1: 3, 2: 0, 3: 1}  # split=specific: client i holds category i % 2


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only wait on each other
    yield None
    torch.set_num_threads(threads)


def test_dynamic_strategies_trust_the_same_kind_peer(tmp_path: Path, one_thread: None) -> None:
    data = {
        "name": "recovery",
        "output_dir": str(tmp_path),
        "model": {"name": "tiny-llama", "max_length": 32},
        "lora": {"r": 4, "alpha": 32, "dropout": 0.0},
        "train": {"lr": 0.02, "batch_size": 4, "progress_bar": False},
        "eval": {"batch_size": 8, "n_boot": 0},
        "collab": {
            "clients": 4,
            "corpus": "prose_code",
            "split": "specific",
            "examples_per_client": 64,
            "iterations": 81,
            "pretraining_rounds": 80,  # one mixing round, after 79 local steps
            "trust_freq": 10,
            "shared_init": True,
            "client_runs": False,
            "strategies": ["dynamic", "dynamic-ref", "dynamic-token"],
        },
    }
    summaries = run_collab(
        build_collab_config(data), overwrite=False, resume=False, console=Console(quiet=True)
    )
    for summary in summaries:
        trust = np.array(summary["rounds"][0]["trust"])
        off = trust * (1 - np.eye(4))
        share = np.array([off[i, PEER[i]] / off[i].sum() for i in range(4)])
        assert all(np.argmax(off[i]) == PEER[i] for i in range(4)), (summary["strategy"], trust)
        if summary["strategy"] != "dynamic":  # cosine scores in [-1, 1] at tau = 1: soft weights
            assert (share > 0.5).all(), (summary["strategy"], trust)
