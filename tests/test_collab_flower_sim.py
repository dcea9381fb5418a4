"""The Flower engine on Flower's own simulation engine (Ray actors run the ClientApp): the same per-client
metrics, trust matrices and adapter tensors as the in-process engine, and a client that dies mid-run is
left out of its round. Ray must import (the dev extra installs flwr[simulation]): no skip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray  # noqa: F401 - the simulation engine's backend; a missing Ray fails here, not skipped
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from rich.console import Console
from safetensors.torch import load_file

from fairlora.collab import flower_client
from fairlora.collab.command import prepare_folder, run_collab
from fairlora.collab.config import build_collab_config
from fairlora.collab.flower_sim import simulate
from fairlora.collab.plan import make_plan
from fairlora.runs import load_results

pytestmark = pytest.mark.slow  # Ray's start and one process per actor: over a minute on 2 cores


def _config(tmp_path: Path, name: str, engine: str, **collab: Any) -> dict[str, Any]:
    settings = {
        "clients": 4,
        "corpus": "topics",
        "split": "mixed",
        "examples_per_client": 16,
        "iterations": 3,
        "pretraining_rounds": 2,
        "trust_freq": 1,  # aggregations after iterations 1 and 2: two rounds
        "strategies": ["naive", "dynamic-ref"],
    } | collab
    return {
        "name": name,
        "output_dir": str(tmp_path),
        "model": {"name": "tiny-llama", "max_length": 24},
        "lora": {"r": 2, "alpha": 4, "dropout": 0.1},
        "train": {"lr": 0.01, "batch_size": 4, "progress_bar": False},
        "eval": {"batch_size": 8, "n_boot": 0},
        "engine": engine,
        "flower": {"mode": "simulation", "client_cpus": 1, "client_gpus": 0, "return_adapters": True},
        "collab": settings,
    }


def _run(data: dict[str, Any]) -> list[dict[str, Any]]:
    return run_collab(build_collab_config(data), overwrite=False, resume=False, console=Console(quiet=True))


def test_flower_simulation_engine_equals_in_process_per_client(tmp_path: Path) -> None:
    local = _run(_config(tmp_path, "local", "simulation"))
    flower = _run(_config(tmp_path, "ray", "flower"))
    for a, b in zip(local, flower, strict=True):
        assert len(b["rounds"]) == 2
        for client in a["clients"]:
            assert b["final"][client]["perplexity"] == pytest.approx(
                a["final"][client]["perplexity"], rel=1e-6
            )
            assert b["final"][client]["loss"] == pytest.approx(a["final"][client]["loss"], rel=1e-6)
        for ra, rb in zip(a["rounds"], b["rounds"], strict=True):
            assert np.allclose(ra["trust"], rb["trust"], atol=1e-8)
            assert ra["bytes"] == rb["bytes"]
        for client in a["clients"]:  # the adapters came back through messages, tensor for tensor
            ours = load_file(
                tmp_path / "local" / a["strategy"] / client / "adapter" / "adapter_model.safetensors"
            )
            theirs = load_file(
                tmp_path / "ray" / b["strategy"] / client / "adapter" / "adapter_model.safetensors"
            )
            assert ours.keys() == theirs.keys()
            assert all(np.allclose(ours[k].numpy(), theirs[k].numpy(), atol=1e-6) for k in ours)
    result = load_results(tmp_path / "ray" / "dynamic-ref" / "client-3")
    assert result.train["engine"] == "flower" and result.train["collab_strategy"] == "dynamic-ref"
    assert (
        result.test.to_dict() == load_results(tmp_path / "local" / "dynamic-ref" / "client-3").test.to_dict()
    )


def _dies_after_warm_up(message: Message, context: Context) -> Message:
    if int(context.node_config["partition-id"]) == 2 and not bool(message.content["cfg"]["reset"]):
        raise RuntimeError("client 2 lost its power")
    return flower_client.handle_train(flower_client.process_runtimes(), message, context)


def _evaluate(message: Message, context: Context) -> Message:
    return flower_client.handle_evaluate(flower_client.process_runtimes(), message, context)


def _query(message: Message, context: Context) -> Message:
    return flower_client.handle_query(flower_client.process_runtimes(), message, context)


def test_dead_flower_client_does_not_stop_the_round(tmp_path: Path) -> None:
    data = _config(tmp_path, "dead", "flower", clients=3, strategies=["naive"])
    plan = make_plan(build_collab_config(data))
    prepare_folder(plan, overwrite=False)
    app = ClientApp()
    app.train()(_dies_after_warm_up)
    app.evaluate()(_evaluate)
    app.query()(_query)
    summary = simulate(plan, client_app=app)[0]
    first, second = summary["rounds"]
    assert first["excluded"] == {} and "dropped" in second["excluded"]["2"]
    assert np.allclose(np.array(second["trust"])[:2, 2], 0.0)
    assert np.isfinite(summary["final"]["client-0"]["perplexity"])
