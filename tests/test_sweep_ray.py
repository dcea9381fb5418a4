"""`fairlora sweep --engine ray` and `audit.engine: ray` on a local Ray cluster (ray.init(num_cpus=2)):
the same run folders, results and summaries as the sequential engine; a SIGKILLed worker's cell is
retried from its last checkpoint; a user error stops the sweep untried again; Ray is imported only
when asked for."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from conftest import tiny_config
from fairlora.cli import app
from fairlora.errors import ConfigError, ModelError
from fairlora.ray_engine import ATTEMPTS_DIR, probe_node
from fairlora.sweeps import sweep

GRID = ["method=lora,none", "seed=1,2"]
SRC = Path(__file__).parents[1] / "src"


@pytest.fixture(scope="module")
def ray_cluster():
    """One local 2-CPU Ray cluster for the module (its start costs seconds on 2 cores)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():
    """The sequential oracle on one thread (torch and BLAS), like a Ray task with 1 CPU (OMP_NUM_THREADS=1):
    another thread count splits float reductions differently and moves bootstrap CI bounds by ~1e-8."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


def _config(tmp_path: Path, folder: str, **train) -> Path:
    config = tmp_path / f"{folder}.yaml"
    cfg = tiny_config(tmp_path / folder, name="sw", eval={"splits": ["test", "train"]})
    cfg["train"] |= train
    config.write_text(yaml.safe_dump(cfg))
    return config


def _results(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """results.json without its timings, and the predictions table."""
    results = json.loads((run_dir / "results.json").read_text())
    for key in [k for k in results["train"] if "runtime" in k or "per_second" in k]:
        del results["train"][key]
    return results, pd.read_parquet(run_dir / "predictions.parquet")


def _assert_same_run(ours: Path, oracle: Path) -> None:
    (results, predictions), (expected, expected_predictions) = _results(ours), _results(oracle)
    assert results["splits"] == expected["splits"]
    assert results["train"] == expected["train"]
    pd.testing.assert_frame_equal(predictions, expected_predictions)


def test_ray_engine_plumbing(tmp_path, ray_cluster):
    """The storage probe passes on the local cluster and names what a node cannot see; bad overrides and
    a bad engine fail before any task or file."""
    from fairlora.ray_engine import check_shared_storage

    check_shared_storage(ray_cluster, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())  # the probe files are gone
    assert "does not exist there" in probe_node(str(tmp_path / "elsewhere"), "out", "t")
    (tmp_path / "out" / ".probe-t").write_text("other")
    assert "another token" in probe_node(str(tmp_path), "out", "t")
    config = _config(tmp_path, "bad")
    with pytest.raises(ConfigError, match="lora.r"):
        sweep(config, ["lora.r=x,2"], progress=False, engine="ray")
    assert not (tmp_path / "bad" / "runs").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="--engine"):
        sweep(config, ["seed=1"], engine="dask")
    cli = CliRunner().invoke(app, ["sweep", str(config), "--grid", "seed=1", "--address", "auto"])
    assert cli.exit_code == 2 and "need --engine ray" in cli.output


class _CtrlCAtFirstFinish(Console):
    """A console that raises KeyboardInterrupt when the first task's finish line is printed."""

    def print(self, *objects, **kwargs):
        super().print(*objects, **kwargs)
        if str(objects[0]).startswith("finish"):
            raise KeyboardInterrupt


def test_ctrl_c_cancels_the_outstanding_tasks(tmp_path, ray_cluster):
    from fairlora.ray_engine import Job, RayOptions, run_jobs

    jobs = [Job("quick", time.sleep, args=(0.1,)), Job("slow", time.sleep, args=(120,))]
    jobs.append(Job("queued", time.sleep, args=(120,)))
    console = _CtrlCAtFirstFinish(file=io.StringIO(), width=200)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, RayOptions(), tmp_path, console, progress=False, what="job")
    assert time.monotonic() - start < 100  # the sleeping tasks did not run out
    output = console.file.getvalue()
    assert "finish quick" in output and "stopped: 1 of 3 jobs finished and kept, 2 cancelled" in output
    deadline = time.monotonic() + 60
    while ray_cluster.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_cluster.available_resources().get("CPU", 0) == 2  # the cancelled tasks hold no CPU


def test_a_checkpoint_cut_short_by_a_kill_is_passed_over_on_resume(tmp_path):
    from fairlora.training.trainer import COMPLETE_MARKER, last_complete_checkpoint

    for step, complete in [(2, True), (4, False), (6, False)]:  # 4, 6: the kill came before the marker
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"")
        if complete:
            (folder / COMPLETE_MARKER).write_text(str(step))
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-2" / COMPLETE_MARKER).unlink()
    assert last_complete_checkpoint(tmp_path) is None


def test_no_engine_does_not_import_ray(tmp_path):
    config = _config(tmp_path, "plain")
    script = (
        "import sys; from fairlora.cli import app; from typer.testing import CliRunner\n"
        f"out = CliRunner().invoke(app, ['sweep', {str(config)!r}, '--grid', 'method=none'])\n"
        "assert out.exit_code == 0, out.output\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    env = os.environ | {"PYTHONPATH": str(SRC)}
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "plain" / "runs" / "sw-sweep" / "sweep.json").is_file()


def test_a_user_error_in_a_cell_stops_the_sweep_without_retries(tmp_path, ray_cluster):
    config = _config(tmp_path, "bad")
    with pytest.raises(ModelError, match="no-such-model"):
        sweep(config, ["model.name=no-such-model,tiny-bert"], progress=False, engine="ray")
    attempts = tmp_path / "bad" / "runs" / "sw-sweep" / ATTEMPTS_DIR / "sw_model.name-no-such-model.jsonl"
    assert len(attempts.read_text().splitlines()) == 1  # tried once, not retried


def test_ray_sweep_equals_the_sequential_sweep(tmp_path, ray_cluster, one_thread):
    sequential = sweep(_config(tmp_path, "seq"), GRID, progress=False)
    args = ["sweep", str(_config(tmp_path, "ray")), "--grid", GRID[0], "--grid", GRID[1], "--engine", "ray"]
    cli = CliRunner().invoke(app, [*args, "--cpus-per-run", "1"])
    assert cli.exit_code == 0, cli.output
    assert "mean ± std" in cli.output
    out_dir = tmp_path / "ray" / "runs" / "sw-sweep"
    for name in sequential.cells["run"]:
        _assert_same_run(out_dir / name, sequential.out_dir / name)
    assert (out_dir / "sweep.json").read_text() == (sequential.out_dir / "sweep.json").read_text()
    assert (out_dir / "sweep.md").read_text() == (sequential.out_dir / "sweep.md").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in out_dir.glob("*/results.json")}
    again = sweep(_config(tmp_path, "ray"), GRID, progress=False, engine="ray")  # finished cells: no task
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and again.wall_s == {}
    pd.testing.assert_frame_equal(again.summary, sequential.summary)


@pytest.mark.slow  # a 40-step cell killed once and retried: 15-70 s on 2 cores
def test_a_killed_worker_is_retried_from_its_checkpoint(tmp_path, ray_cluster, one_thread):
    import threading

    train = {"max_steps": 40, "save_strategy": "steps", "save_steps": 4, "logging_steps": 4}
    config = _config(tmp_path, "kill", **train)
    out_dir = tmp_path / "kill" / "runs" / "sw-sweep"
    victim = out_dir / "sw_seed-1"
    killed: list[int] = []

    def kill_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 240
        attempts = out_dir / ATTEMPTS_DIR / "sw_seed-1.jsonl"
        while time.monotonic() < deadline and not killed:
            if attempts.is_file() and list((victim / "checkpoints").glob("checkpoint-*")):
                pid = json.loads(attempts.read_text().splitlines()[0])["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    result = sweep(config, ["seed=1,2"], progress=False, engine="ray")
    killer.join()
    assert killed, "the cell finished before a checkpoint was seen"
    lines = (out_dir / ATTEMPTS_DIR / "sw_seed-1.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["pid"] != killed[0]  # retried in another process
    assert len(result.cells) == 2 and result.cells["accuracy"].notna().all()
    oracle = sweep(_config(tmp_path, "whole", **train), ["seed=1"], progress=False)
    _assert_same_run(victim, oracle.out_dir / "sw_seed-1")


def test_lira_shadows_on_ray_equal_the_sequential_ones(tmp_path, ray_cluster, one_thread):
    import fairlora

    data = {"identity": {"examples_per_group": 12}}
    cfg = tiny_config(tmp_path, eval={"splits": ["test", "train"]}, data=data)
    run = fairlora.train(cfg)
    options = ["audit.sections=[lira]", "audit.lira.shadows=2", "audit.n_boot=0"]
    sequential = fairlora.audit(run.run_dir, tmp_path / "seq", options, progress=False)
    on_ray = fairlora.audit(run.run_dir, tmp_path / "ray", [*options, "audit.engine=ray"], progress=False)
    lira = [a.runs[0].sections["membership/lira"].to_dict() for a in (sequential, on_ray)]
    assert lira[0] == lira[1]
    assert np.isfinite(lira[0]["overall"]["auc"]["value"])
    for k in range(2):
        shadow = Path("shadows") / "tiny" / f"shadow-{k}"
        _assert_same_run(tmp_path / "ray" / shadow, tmp_path / "seq" / shadow)


@pytest.mark.slow  # Ray's start plus 2 tiny cells twice: about a minute on 2 cores
def test_the_benchmark_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "sweep_ray.json"
    script = Path(__file__).parents[1] / "benchmarks" / "sweep_ray.py"
    command = [sys.executable, str(script), "--cells", "2", "--steps", "2", "--out", str(out)]
    env = os.environ | {"PYTHONPATH": str(SRC)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["parallelism"] == 2 and figures["ray_s"] > 0 and figures["speedup"] > 0
    expected = (figures["ray_s"] - figures["cell_s_ray"] * 2 / 2) / 2
    assert figures["overhead_per_cell_s"] == pytest.approx(expected)
    assert figures["summary_max_abs_diff"] < 1e-6
    assert "overhead_per_cell_s" in done.stdout
