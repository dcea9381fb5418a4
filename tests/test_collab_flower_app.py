"""The collab run as a Flower App: the pyproject `flwr run` reads, the run config round trip (with
`--run-config` overrides parsed by flwr itself), version refusals, and client files kept in their folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import flwr
import pytest
import tomli
import yaml
from flwr.common.config import get_fused_config_from_dir, parse_config_args
from typer.testing import CliRunner

import fairlora
from fairlora.cli import app
from fairlora.collab.config import build_collab_config
from fairlora.collab.flower_app import check_flower
from fairlora.collab.flower_appdir import check_versions, from_run_config, to_run_config, write_app
from fairlora.collab.runfolders import write_client_files
from fairlora.errors import ConfigError, RunDirError


def _data(tmp_path: Path) -> dict:
    return {
        "name": "app",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": "tiny-llama", "max_length": 24},
        "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]},
        "engine": "flower",
        "flower": {"mode": "deployment", "return_adapters": True},
        "collab": {
            "clients": 3,
            "strategies": ["naive", "dynamic-token"],
            "iterations": 6,
            "eval_batches": None,
        },
    }


def test_flower_app_runs_the_same_config_with_run_config_overrides(tmp_path: Path) -> None:
    cfg = build_collab_config(_data(tmp_path))
    folder = write_app(cfg, tmp_path / "app")
    project = tomli.loads((folder / "pyproject.toml").read_text())
    assert project["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "fairlora.collab.flower_app:server_app",
        "clientapp": "fairlora.collab.flower_client:client_app",
    }
    assert f"fairlora=={fairlora.__version__}" in project["project"]["dependencies"]
    overrides = parse_config_args(["collab.iterations=9 resume=true collab.eval-batches=2 lora.r=4"])
    run_config = get_fused_config_from_dir(folder, overrides)  # what `flwr run` hands the ServerApp
    assert run_config["collab.iterations"] == 9 and run_config["model.name"] == "tiny-llama"
    back, resume = from_run_config(dict(run_config))
    assert resume is True
    expected = build_collab_config(
        _data(tmp_path)
        | {"collab": _data(tmp_path)["collab"] | {"iterations": 9, "eval_batches": 2}}
        | {"lora": _data(tmp_path)["lora"] | {"r": 4}}
    )
    assert back.to_dict() == expected.to_dict()
    assert back.run.lora.target_modules == ["q_proj", "v_proj"] and back.collab.strategies == [
        "naive",
        "dynamic-token",
    ]


def test_run_config_of_another_version_is_refused_naming_both(tmp_path: Path) -> None:
    run_config = to_run_config(build_collab_config(_data(tmp_path))) | {"submitter.flwr-version": "1.0.0"}
    with pytest.raises(
        ConfigError, match=rf"flwr {flwr.__version__} but the run was submitted with flwr 1\.0\.0"
    ):
        from_run_config(run_config)
    with pytest.raises(
        ConfigError, match=r"SuperNode of partition-id=2 runs fairlora 0\.0\.9 .* fairlora 0\.1"
    ):
        check_versions("the SuperNode of partition-id=2", {"fairlora": "0.0.9"}, {"fairlora": "0.1.0"})
    check_versions(
        "the ServerApp", {"fairlora": "0.1.0", "flwr": "1.42.0"}, {"fairlora": "0.1.0", "flwr": "1.42.0"}
    )


def test_client_files_stay_in_the_client_run_folder(tmp_path: Path) -> None:
    cfg = build_collab_config(_data(tmp_path))
    run = cfg.run.model_copy(update={"name": "client-0", "output_dir": str(tmp_path / "naive")})
    folder = write_client_files(run, {"results.json": b"{}", "adapter/adapter_config.json": b"{}"})
    assert (folder / "adapter" / "adapter_config.json").read_bytes() == b"{}"
    assert yaml.safe_load((folder / "config.yaml").read_text())["name"] == "client-0"
    with pytest.raises(RunDirError, match="outside its run folder"):
        write_client_files(run, {"../../escape.txt": b"x"})
    assert not (tmp_path / "escape.txt").exists()


def test_cli_writes_the_flower_app(tmp_path: Path) -> None:
    config = tmp_path / "collab.yaml"
    config.write_text(yaml.safe_dump(_data(tmp_path)))
    result = CliRunner().invoke(
        app, ["collab", str(config), "collab.clients=4", "--flower-app", str(tmp_path / "fl")]
    )
    assert result.exit_code == 0, result.output
    project = tomli.loads((tmp_path / "fl" / "pyproject.toml").read_text())
    assert project["tool"]["flwr"]["app"]["config"]["collab"]["clients"] == 4
    assert not (tmp_path / "runs").exists()  # writing the app runs nothing


def test_simulation_without_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a)
    )
    cfg = build_collab_config(_data(tmp_path) | {"flower": {"mode": "simulation"}})
    with pytest.raises(ConfigError, match=r'pip install "fairlora\[simulation\]"'):
        check_flower(cfg)
