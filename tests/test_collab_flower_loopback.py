"""Flower on loopback with real processes: a SuperLink and 3 SuperNodes, 2 rounds, the same per-client
results as the in-process engine. Slow (each message starts a ClientApp process): minutes on 2 cores."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fairlora.collab.results import load_collab_results

BIN = Path(sys.executable).parent
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None, reason="flwr not installed"),
]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _config(tmp_path: Path, engine: str, name: str) -> Path:
    data = {
        "name": name,
        "output_dir": str(tmp_path),
        "model": {"name": "tiny-llama", "max_length": 24},
        "lora": {"r": 2, "alpha": 4, "dropout": 0.1},
        "train": {"lr": 0.01, "batch_size": 4, "progress_bar": False},
        "eval": {"batch_size": 8, "n_boot": 0},
        "engine": engine,
        "flower": {"mode": "deployment", "address": "127.0.0.1:8000", "timeout_s": 1500},
        "collab": {
            "clients": 3,
            "corpus": "topics",
            "split": "mixed",
            "examples_per_client": 16,
            "iterations": 3,
            "pretraining_rounds": 2,
            "trust_freq": 1,
            "strategies": ["naive"],
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_superlink_and_supernodes_match_in_process(tmp_path: Path) -> None:
    if not _free(8000):
        pytest.skip("port 8000 is taken (a SuperLink already runs here)")
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [str(BIN / "flower-superlink"), "--insecure", "--database", ":flwr-in-memory:"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        time.sleep(3)
        for partition in range(3):
            command = [str(BIN / "flower-supernode"), "--insecure", "--superlink", "127.0.0.1:8000"]
            command += ["--node-config", f"partition-id={partition}", "--port", str(9300 + partition)]
            processes.append(
                subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        fairlora = [str(BIN / "fairlora"), "collab"]
        subprocess.run(
            [*fairlora, str(_config(tmp_path, "flower", "loop"))], env=env, check=True, timeout=1800
        )
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    subprocess.run(
        [str(BIN / "fairlora"), "collab", str(_config(tmp_path, "simulation", "local"))], env=env, check=True
    )
    remote = load_collab_results(tmp_path / "loop")["strategies"][0]
    local = load_collab_results(tmp_path / "local")["strategies"][0]
    for client, metrics in local["final"].items():
        assert remote["final"][client]["perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-5)
    assert len(remote["rounds"]) == 2
    assert json.loads((tmp_path / "loop" / "naive" / "client-0" / "results.json").read_text())
