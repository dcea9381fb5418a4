"""Flower deployment on loopback with real processes and no shared disk: a SuperLink and 3 SuperNodes,
each SuperNode in its own temporary working directory and HOME, unable to read the submitter's config
file and output folder (both under this test's tmp_path). Root reads every file, so as root (here and
in CI) each SuperNode runs either as the user `nobody` (`setpriv`; tmp_path is 0700) when `nobody` can
start this Python and its children, or else in its own mount namespace (`unshare --mount`) with an
empty tmpfs mounted over tmp_path; the test first checks that the SuperNode's view cannot read the
config. As another user the SuperNodes run as that user (they are not given the paths, but could read
them). Everything comes back through messages: the submitter's run folder holds every client's results
and adapter, `fairlora audit` reads them, and `--resume` works. Slow: each message starts a ClientApp
process (minutes on 2 cores)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import skip_or_fail
from fairlora.collab.results import load_collab_results

BIN = Path(sys.executable).parent
ROOT = os.geteuid() == 0
NOBODY = 65534
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]  # above its subprocesses' own limits


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _config(tmp_path: Path, engine: str, name: str) -> Path:
    data = {
        "name": name,
        "output_dir": str(tmp_path / "out"),
        "model": {"name": "tiny-llama", "max_length": 24},
        "lora": {"r": 2, "alpha": 4, "dropout": 0.1},
        "train": {"lr": 0.01, "batch_size": 4, "progress_bar": False},
        "eval": {"batch_size": 8, "n_boot": 0},
        "engine": engine,
        "flower": {
            "mode": "deployment",
            "address": "127.0.0.1:8000",
            "timeout_s": 1500,
            "return_adapters": True,
        },
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


def _isolated(hidden: Path, env: dict[str, str]) -> Callable[[list[str]], list[str]]:
    """How to start a process that cannot read `hidden` (see the module docstring)."""
    if not ROOT:
        return lambda command: command

    def as_nobody(command: list[str]) -> list[str]:
        return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]

    def unshared(command: list[str]) -> list[str]:
        mount = 'mount -t tmpfs fairlora-hidden "$0" && exec "$@"'
        return ["unshare", "--mount", "sh", "-c", mount, str(hidden), *command]

    # A SuperNode starts its children by path (flower-superexec, flwr-clientapp), so probe a child: a
    # wrapper may exec this Python where its children cannot (an interpreter under a 0700 home)
    spawn = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import flwr'], check=True)"
    probe = [sys.executable, "-c", spawn]
    for wrap in (as_nobody, unshared):
        if subprocess.run(wrap(probe), env=env, cwd="/", capture_output=True).returncode == 0:
            return wrap
    raise AssertionError("as root, neither `setpriv` to nobody nor `unshare --mount` can run this Python")


def _node_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="fairlora-supernode-"))
    if ROOT:
        os.chown(home, NOBODY, NOBODY)
    return home


def _supernode(
    partition: int, env: dict[str, str], isolated: Callable[[list[str]], list[str]]
) -> tuple[subprocess.Popen, Path]:
    home = _node_home()
    command = [str(BIN / "flower-supernode"), "--insecure", "--superlink", "127.0.0.1:8000"]
    command += ["--node-config", f"partition-id={partition}", "--port", str(9300 + partition)]
    node_env = env | {"HOME": str(home), "FLWR_HOME": str(home / ".flwr"), "TMPDIR": str(home)}
    with (home / "supernode.log").open("wb") as log:
        process = subprocess.Popen(isolated(command), env=node_env, cwd=home, stdout=log, stderr=log)
    return process, home


def _started(processes: list[subprocess.Popen], homes: list[Path]) -> None:
    """Fail at once, with its log, when a SuperNode did not stay up (instead of waiting out the timeout)."""
    time.sleep(5)
    for process, home in zip(processes, homes, strict=True):
        log = (home / "supernode.log").read_text(errors="replace")
        assert process.poll() is None, f"a SuperNode exited with {process.returncode}:\n{log[-3000:]}"


def test_supernodes_without_the_submitters_disk_match_in_process(tmp_path: Path) -> None:
    for binary in ("flower-superlink", "flower-supernode"):
        if not (BIN / binary).is_file():
            skip_or_fail(f"{BIN / binary} not found: pip install 'flwr>=1.41,<1.43'")
    if not _free(8000):
        pytest.skip("port 8000 is taken (a SuperLink already runs here)")
    source = Path(__file__).resolve().parents[1] / "src"
    python_path = os.pathsep.join(p for p in (str(source), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": python_path,
    }
    config = _config(tmp_path, "flower", "loop")
    isolated = _isolated(tmp_path, env)
    if ROOT:  # the guard this test stands on: a SuperNode cannot read the submitter's files
        probe = subprocess.run(isolated(["cat", str(config)]), env=env, cwd="/", capture_output=True)
        assert probe.returncode != 0 and b"collab" not in probe.stdout
    link_dir = Path(tempfile.mkdtemp(prefix="fairlora-superlink-"))
    superlink = [str(BIN / "flower-superlink"), "--insecure", "--database", ":flwr-in-memory:"]
    superlink.append("--disable-runtime-dependency-installation")  # fairlora is installed; no index here
    processes = [
        subprocess.Popen(
            superlink, env=env, cwd=link_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    ]
    homes = []
    try:
        time.sleep(3)
        for partition in range(3):
            process, home = _supernode(partition, env, isolated)
            processes.append(process)
            homes.append(home)
        _started(processes[1:], homes)
        fairlora = [str(BIN / "fairlora"), "collab"]
        subprocess.run([*fairlora, str(config)], env=env, check=True, timeout=1800)
        client_dir = tmp_path / "out" / "loop" / "naive" / "client-1"
        stamp = (client_dir / "results.json").stat().st_mtime_ns
        subprocess.run([*fairlora, str(config), "--resume"], env=env, check=True, timeout=600)
        assert (client_dir / "results.json").stat().st_mtime_ns == stamp  # finished: kept, not rerun
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        for home in [*homes, link_dir]:
            shutil.rmtree(home, ignore_errors=True)
    subprocess.run(
        [str(BIN / "fairlora"), "collab", str(_config(tmp_path, "simulation", "local"))], env=env, check=True
    )
    remote = load_collab_results(tmp_path / "out" / "loop")["strategies"][0]
    local = load_collab_results(tmp_path / "out" / "local")["strategies"][0]
    for client, metrics in local["final"].items():
        assert remote["final"][client]["perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-5)
        run = tmp_path / "out" / "loop" / "naive" / client
        assert (run / "adapter" / "adapter_model.safetensors").is_file() and (
            run / "predictions.parquet"
        ).is_file()
        assert json.loads((run / "results.json").read_text())["train"]["engine"] == "flower"
    assert len(remote["rounds"]) == 2
    audit_dir = tmp_path / "audit"
    subprocess.run(
        [str(BIN / "fairlora"), "audit", str(client_dir), "--output", str(audit_dir)], env=env, check=True
    )
    assert json.loads((audit_dir / "results.json").read_text())["runs"]
