"""The Python API beside the CLI (collab, export); `fairlora config show`; where `train --help` points."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

import fairlora
from conftest import tiny_config
from fairlora.cli import app
from fairlora.collab.results import load_collab_results
from fairlora.config import build_config, config_class
from fairlora.methods.registry import registered_sections


def test_export_wraps_what_the_cli_calls(tmp_path: Path) -> None:
    run_dir = fairlora.train(tiny_config(tmp_path, eval={"splits": ["test"], "n_boot": 0})).run_dir
    peft_dir = fairlora.export(run_dir, tmp_path / "peft")
    assert json.loads((peft_dir / "adapter_config.json").read_text())["peft_type"] == "LORA"
    merged = fairlora.export(run_dir, tmp_path / "merged", merge=True)
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()


def test_collab_wraps_what_the_cli_calls(tmp_path: Path) -> None:
    config = {
        "name": "api",
        "output_dir": str(tmp_path),
        "model": {"name": "tiny-llama", "max_length": 24},
        "lora": {"r": 2, "alpha": 4},
        "train": {"lr": 0.01, "batch_size": 4, "progress_bar": False},
        "eval": {"batch_size": 8, "n_boot": 0},
        "collab": {
            "clients": 2,
            "corpus": "topics",
            "split": "mixed",
            "examples_per_client": 12,
            "iterations": 2,
            "pretraining_rounds": 1,
            "trust_freq": 1,
            "strategies": ["naive"],
        },
    }
    summaries = fairlora.collab(config, ["collab.iterations=3"])
    assert [s["strategy"] for s in summaries] == ["naive"]
    assert load_collab_results(tmp_path / "api")["strategies"][0]["strategy"] == "naive"
    assert yaml.safe_load((tmp_path / "api" / "collab.yaml").read_text())["collab"]["iterations"] == 3


def test_config_show_prints_the_resolved_config_with_every_section(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text(yaml.safe_dump({"method": "vera", "train": {"lr": 0.01}}))
    result = CliRunner().invoke(app, ["config", "show", str(file), "vera.r=32"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    expected = build_config({"method": "vera", "train": {"lr": 0.01}}, ["vera.r=32"])
    assert shown == expected.model_dump(mode="json") and shown["vera"]["r"] == 32
    assert set(shown) == set(config_class().model_fields) and set(registered_sections()) <= set(shown)
    only_overrides = CliRunner().invoke(app, ["config", "show", "train.select_best=val_loss"])
    defaults = yaml.safe_load(only_overrides.output)
    assert defaults == build_config({}, ["train.select_best=val_loss"]).model_dump(mode="json")
    bad = CliRunner().invoke(app, ["config", "show", "lora.rank=4"])
    assert bad.exit_code != 0 and "lora.rank: unknown key" in bad.output


def test_api_functions_survive_importing_their_submodules() -> None:
    import fairlora.collab.command
    import fairlora.export  # noqa: F401

    assert fairlora.collab.__module__ == "fairlora" and fairlora.export.__module__ == "fairlora"


def test_train_help_says_where_every_key_is() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert "fairlora config show" in text and "Config reference" in text
