"""--resume on the Flower engine (Flower's simulation engine, Ray actors): a strategy killed after its
first aggregation round continues from the state the clients sent back to the ServerApp, and ends where
an uninterrupted run ends; the in-process engine continues from the same files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray  # noqa: F401 - the simulation engine's backend; a missing Ray fails here, not skipped
from rich.console import Console
from safetensors.torch import load_file

from fairlora.collab import flower_app
from fairlora.collab.command import run_collab
from fairlora.collab.config import build_collab_config

pytestmark = pytest.mark.slow  # two runs on Ray: each starts Ray and one process per actor

STRATEGY = "dynamic-ref"


class Killed(Exception):
    """The ServerApp stops right after a round's state was saved (as if its machine went down)."""


def _config(tmp_path: Path, engine: str) -> dict[str, Any]:
    return {
        "name": "collab",
        "output_dir": str(tmp_path),
        "model": {"name": "tiny-llama", "max_length": 24},
        "lora": {"r": 2, "alpha": 4, "dropout": 0.1},  # dropout: the clients' RNG streams must resume too
        "train": {"lr": 0.01, "batch_size": 4, "progress_bar": False},
        "eval": {"batch_size": 8, "n_boot": 0},
        "engine": engine,
        "flower": {"mode": "simulation", "client_cpus": 1, "client_gpus": 0, "return_adapters": True},
        "collab": {
            "clients": 3,
            "corpus": "topics",
            "split": "mixed",
            "examples_per_client": 16,
            "iterations": 4,
            "pretraining_rounds": 2,
            "trust_freq": 1,  # aggregations after iterations 1, 2 and 3: three rounds
            "strategies": [STRATEGY],
        },
    }


def _run(data: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    cfg = build_collab_config(data)
    return run_collab(cfg, overwrite=False, resume=resume, console=Console(quiet=True))[0]


def _adapter(folder: Path, client: str) -> dict[str, Any]:
    return load_file(folder / "collab" / STRATEGY / client / "adapter" / "adapter_model.safetensors")


def _assert_same_run(ours: dict[str, Any], theirs: dict[str, Any], ours_dir: Path, theirs_dir: Path) -> None:
    assert [r["iteration"] for r in theirs["rounds"]] == [r["iteration"] for r in ours["rounds"]]
    for ra, rb in zip(ours["rounds"], theirs["rounds"], strict=True):
        assert np.allclose(ra["trust"], rb["trust"], atol=1e-8)
        for ma, mb in zip(ra["metrics"], rb["metrics"], strict=True):
            assert mb["perplexity"] == pytest.approx(ma["perplexity"], rel=1e-6)
    for client, metrics in ours["final"].items():
        assert theirs["final"][client]["loss"] == pytest.approx(metrics["loss"], rel=1e-6)
        expected, got = _adapter(ours_dir, client), _adapter(theirs_dir, client)
        assert expected.keys() == got.keys()
        assert all(np.allclose(expected[k].numpy(), got[k].numpy(), atol=1e-6) for k in expected)


def test_killed_flower_strategy_resumes_from_its_last_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole_dir, killed_dir, crossed_dir = tmp_path / "whole", tmp_path / "killed", tmp_path / "crossed"
    whole = _run(_config(whole_dir, "simulation"))  # uninterrupted (the in-process engine equals Flower)
    save = flower_app.save_states

    def killed_after_first_round(*args: Any) -> None:
        save(*args)
        raise Killed

    monkeypatch.setattr(flower_app, "save_states", killed_after_first_round)
    flower = _config(killed_dir, "flower")
    with pytest.raises(Killed):
        _run(flower)
    monkeypatch.undo()
    state = killed_dir / "collab" / STRATEGY / "state"
    progress = json.loads((state / "progress.json").read_text())
    assert progress["iteration"] == 1 and len(progress["rounds"]) == 1
    assert sorted(p.stem for p in state.glob("*.safetensors")) == ["client-0", "client-1", "client-2"]
    assert not (killed_dir / "collab" / STRATEGY / "summary.json").exists()

    shutil.copytree(killed_dir, crossed_dir)  # the in-process engine reads the state the ServerApp wrote
    (crossed_dir / "collab" / "collab.yaml").unlink()  # its saved config names the other output_dir
    crossed = _run(_config(crossed_dir, "simulation"), resume=True)

    resumed = _run(flower, resume=True)
    assert resumed["rounds"][0]["seconds"] == progress["rounds"][0]["seconds"]  # kept, not trained again
    _assert_same_run(whole, resumed, whole_dir, killed_dir)
    _assert_same_run(whole, crossed, whole_dir, crossed_dir)
