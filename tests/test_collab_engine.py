"""Collab runs end to end on the tiny random Llama: client run folders, resume,
robustness, and input errors raised before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from fairlora.collab import command as collab_command
from fairlora.collab.command import run_collab, run_command
from fairlora.collab.config import build_collab_config
from fairlora.collab.engine import aggregate
from fairlora.collab.plan import build_session, encode_clients, load_shared_model, make_plan
from fairlora.collab.results import load_collab_results
from fairlora.errors import ConfigError, DataError, RunDirError
from fairlora.pipeline import evaluate_run, load_run
from fairlora.runs import load_results


def _config(tmp_path: Path, name: str, **collab: Any) -> dict[str, Any]:
    settings = {
        "clients": 3,
        "corpus": "topics",
        "split": "mixed",
        "examples_per_client": 16,
        "iterations": 5,
        "pretraining_rounds": 2,
        "trust_freq": 2,
        "strategies": ["naive", "dynamic-token"],
    } | collab
    return {
        "name": name,
        "output_dir": str(tmp_path),
        "model": {"name": "tiny-llama", "max_length": 24},
        "method": "lora",
        "lora": {"r": 2, "alpha": 4, "dropout": 0.1},
        "train": {"lr": 0.01, "batch_size": 4, "progress_bar": False},
        "eval": {"batch_size": 8, "n_boot": 0},
        "collab": settings,
    }


AFLORA = {"method": "aflora", "aflora": {"r": 2, "window": 1, "t_initial_steps": 1, "t_final_steps": 2}}


def _run(data: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    cfg = build_collab_config(data)
    return run_collab(
        cfg,
        overwrite=kwargs.get("overwrite", False),
        resume=kwargs.get("resume", False),
        console=Console(quiet=True),
    )


def _final_ppl(summaries: list[dict[str, Any]]) -> dict[str, list[float]]:
    return {s["strategy"]: [s["final"][c]["perplexity"] for c in s["clients"]] for s in summaries}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("collab")
    summaries = _run(_config(root, "base", strategies=["none", "naive", "dynamic-token"]))
    return root / "base", summaries


def test_collab_writes_results_report_and_client_runs(finished: tuple[Path, list[dict[str, Any]]]) -> None:
    folder, summaries = finished
    results = load_collab_results(folder)
    assert [s["strategy"] for s in results["strategies"]] == ["none", "naive", "dynamic-token"]
    none, naive = summaries[0], summaries[1]
    assert all(np.allclose(r["trust"], np.eye(3)) for r in none["rounds"]) and none["bytes_total"] == 0
    assert np.allclose(naive["rounds"][0]["trust"], 1 / 3) and naive["bytes_per_round"] > 0
    assert [r["iteration"] for r in naive["rounds"]] == [1, 3]  # warm-up 2, then every 2
    for held in results["facts"]["clients"].values():
        assert sorted(held["held"].values()) == pytest.approx([0.25, 0.75])
    html = (folder / "report.html").read_text()
    assert "Trust matrices over rounds" in html and "worst" in html and "bytes" in html


def test_client_run_is_a_normal_run_folder(finished: tuple[Path, list[dict[str, Any]]]) -> None:
    folder, summaries = finished
    client_dir = folder / "dynamic-token" / "client-1"
    result = load_results(client_dir)
    assert result.train["collab_strategy"] == "dynamic-token"
    assert result.train["perplexity"] == pytest.approx(summaries[2]["final"]["client-1"]["perplexity"])
    cfg, data, loaded = load_run(client_dir)  # what `fairlora audit` does for model-based sections
    assert cfg.method == "lora" and any(c.startswith("cat_") for c in data.group_columns)
    predictions = __import__("pandas").read_parquet(client_dir / "predictions.parquet")
    assert set(predictions[predictions["split"] == "test"]["id"]) == set(data.test["id"])


@pytest.mark.parametrize("method", [{}, AFLORA], ids=["lora", "aflora"])
def test_killed_run_resumes_with_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: dict[str, Any]
) -> None:
    data = _config(tmp_path, "whole", strategies=["dynamic"], iterations=7) | method
    whole = _run(data)
    saved = collab_command.save_state
    calls = {"n": 0}

    def dies_after_first_round(*args: Any) -> None:
        saved(*args)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed after round 0 was saved

    monkeypatch.setattr(collab_command, "save_state", dies_after_first_round)
    killed = data | {"name": "killed"}
    with pytest.raises(KeyboardInterrupt):
        _run(killed)
    with pytest.raises(RunDirError, match="--resume"):
        _run(killed)
    from fairlora.collab.flower_app import serve_run

    collab_file = tmp_path / "killed" / "collab.yaml"
    written = collab_file.read_text()
    lora = {"lora": {"r": 4, "alpha": 4, "dropout": 0.1}}
    for changed in (lora, {"collab": killed["collab"] | {"trust_freq": 3}}):
        with pytest.raises(ConfigError, match="--resume: the config differs from .*collab.yaml"):
            _run(killed | changed, resume=True)
        with pytest.raises(ConfigError, match="--resume: the config differs"):  # the ServerApp's own check
            serve_run(None, build_collab_config(killed | changed), resume=True)
    assert collab_file.read_text() == written  # refused before anything was written
    resumed = _run(killed, resume=True)
    assert _final_ppl(resumed)["dynamic"] == pytest.approx(_final_ppl(whole)["dynamic"], rel=1e-9)
    assert len(resumed[0]["rounds"]) == 3


def test_nan_client_is_excluded_and_recovers(tmp_path: Path) -> None:
    plan = make_plan(build_collab_config(_config(tmp_path, "nan")))
    loaded = load_shared_model(plan)
    session = build_session(plan, loaded, encode_clients(plan, loaded.tokenizer))
    bad = session.clients[1]
    bad.set_state({k: torch.full_like(v, float("nan")) for k, v in bad.initial.items()})
    record = aggregate(session, "naive", 0, 1)
    assert set(record.excluded) == {1}
    assert np.allclose(np.array(record.trust)[:, 1], [0.0, 1.0, 0.0])  # it skips the mixture
    for client in session.clients:
        assert all(torch.isfinite(t).all() for t in client.get_state().values())


def test_aflora_clients_freeze_and_every_strategy_starts_alike(tmp_path: Path) -> None:
    both = _run(_config(tmp_path, "both", strategies=["none", "naive"], iterations=7) | AFLORA)
    alone = _run(_config(tmp_path, "alone", strategies=["naive"], iterations=7) | AFLORA)
    assert _final_ppl(both)["naive"] == pytest.approx(_final_ppl(alone)["naive"], rel=1e-9)
    client_dir = tmp_path / "both" / "naive" / "client-0"
    saved = load_results(client_dir)
    steps = saved.train["aflora_freeze_steps"]
    assert steps and all(step is not None and step <= 5 for step in steps.values())  # all frozen by T - t_f
    reloaded = evaluate_run(client_dir)  # the adapter folder gives back the model collab evaluated
    assert reloaded.test.to_dict()["overall"]["loss"]["value"] == pytest.approx(
        saved.test.to_dict()["overall"]["loss"]["value"], rel=1e-5
    )


def test_pissa_clients_start_alike_on_one_residual_base(tmp_path: Path) -> None:
    plan = make_plan(build_collab_config(_config(tmp_path, "pissa") | {"method": "pissa"}))
    loaded = load_shared_model(plan)
    batch = {"input_ids": torch.tensor([[5, 9, 14, 20, 7]]), "attention_mask": torch.ones(1, 5, dtype=int)}
    with torch.no_grad():
        original = loaded.model.eval()(**batch).logits
    session = build_session(plan, loaded, encode_clients(plan, loaded.tokenizer))
    first = session.clients[0].initial
    assert all(torch.equal(c.initial[k], first[k]) for c in session.clients for k in first)
    for client in session.clients:  # W_res + B0 A0 = W for every client: the base was rewritten once
        client.setup.activate()
        with torch.no_grad():
            assert torch.allclose(client.setup.model.eval()(**batch).logits, original, atol=1e-4)


@pytest.mark.parametrize("method", ["pissa", "ba-lora"])
def test_pissa_based_clients_train_and_save_plain_lora(tmp_path: Path, method: str) -> None:
    summaries = _run(_config(tmp_path, method, strategies=["none", "naive"]) | {"method": method})
    assert all(np.isfinite(v["perplexity"]) for s in summaries for v in s["final"].values())
    client_dir = tmp_path / method / "naive" / "client-1"
    saved = load_results(client_dir)
    reloaded = evaluate_run(client_dir)  # the adapter, converted to LoRA, on the ORIGINAL base weights
    assert reloaded.test.to_dict()["overall"]["loss"]["value"] == pytest.approx(
        saved.test.to_dict()["overall"]["loss"]["value"], rel=1e-5
    )


def test_mixing_leaves_frozen_aflora_matrices_alone(tmp_path: Path) -> None:
    plan = make_plan(build_collab_config(_config(tmp_path, "frozen") | AFLORA))
    loaded = load_shared_model(plan)
    session = build_session(plan, loaded, encode_clients(plan, loaded.tokenizer))
    first = session.clients[0]
    freezer = first.setup.extra_state
    frozen = next(iter(freezer.trainable))
    freezer.freeze([frozen], step=0, optimizer=first.step_state.optimizer)
    before = first.get_state()
    (key,) = first.setup.frozen_keys()
    key = key.replace(".client-0.", ".")
    aggregate(session, "naive", 0, 1)
    mean = {k: torch.stack([c.initial[k] for c in session.clients]).mean(0) for k in before}  # FedAvg
    after = first.get_state()
    assert torch.equal(after[key], before[key]) and not torch.allclose(after[key], mean[key])
    assert all(torch.allclose(after[k], mean[k]) for k in before if k != key)
    assert torch.allclose(session.clients[1].get_state()[key], mean[key])  # the frozen matrix still counts


def test_vera_classification_clients(tmp_path: Path) -> None:
    data = _config(
        tmp_path, "cls", strategies=["static", "dynamic-topk"], split="specific", clients=4, topk=2
    )
    data |= {"task": "classification", "method": "vera", "vera": {"r": 8}}
    summaries = _run(data)
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in summaries[0]["final"].values())
    static = np.array(summaries[0]["rounds"][0]["trust"])
    assert np.allclose(static, np.eye(4))  # one topic per client: nobody shares a distribution
    assert ((np.array(summaries[1]["rounds"][0]["trust"]) > 0).sum(axis=1) <= 2).all()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"collab": {"strategies": ["trusty"]}}, ConfigError, "collab.strategies.0"),
        ({"collab": {"strategies": ["naive-topk"], "topk": 5}}, ConfigError, "topk=5 exceeds clients=3"),
        ({"collab": {"examples_per_client": 600}}, DataError, "more client data than the corpus holds"),
        ({"collab": {"categories": ["sports", "law"]}}, DataError, "'law'"),
        ({"method": "full"}, ConfigError, "use an adapter method"),
        ({"method": "aflora", "aflora": {"t_final_steps": 9}}, ConfigError, "must be below the total steps"),
        ({"data": {"name": "identity"}}, ConfigError, "collab.corpus"),
        ({"collab": {"corpus": "ag_news", "data_path": "/nonexistent"}}, DataError, "collab.data_path"),
        (
            {"engine": "flower", "flower": {"mode": "deployment", "address": "127.0.0.1:9", "timeout_s": 2}},
            ConfigError,
            "no Flower SuperLink answers",
        ),
    ],
)
def test_bad_input_fails_before_writing(tmp_path: Path, change: dict, error: type, match: str) -> None:
    data = _config(tmp_path, "bad")
    for key, value in change.items():
        data[key] = data[key] | value if isinstance(data.get(key), dict) else value
    with pytest.raises(error, match=match):
        _run(data)
    assert not (tmp_path / "bad").exists()


def test_run_command_reads_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "collab.yaml"
    path.write_text(json.dumps(_config(tmp_path, "cmd", strategies=["none"], iterations=2)))
    run_command(path, ["collab.clients=2"], overwrite=False, resume=False, console=Console(quiet=True))
    assert load_collab_results(tmp_path / "cmd")["facts"]["collab"]["clients"] == 2
    with pytest.raises(ConfigError, match="not both"):
        run_command(path, [], overwrite=True, resume=True, console=Console(quiet=True))
