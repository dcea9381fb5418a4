"""The command line: listings, and one clear message plus exit code per kind of bad input."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from fairlora.cli import app

runner = CliRunner()


def _write(tmp_path, config) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _run(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    "command", [[], ["train"], ["eval"], ["audit"], ["report"], ["sweep"], ["demo"], ["list"]]
)
def test_help_works_everywhere(command):
    result = _run(*command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize(
    ("command", "shown"), [("audit", "[name=]FILE"), ("sweep", "pip install fairlora[ray]")]
)
def test_help_keeps_square_brackets(command, shown, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option, so the text is not wrapped
    result = _run(command, "--help")
    assert result.exit_code == 0 and shown in result.output  # not eaten as rich markup


@pytest.mark.parametrize(
    ("what", "expected"), [("methods", "pissa"), ("models", "smollm2-135m"), ("datasets", "identity")]
)
def test_list(what, expected):
    result = _run("list", what)
    assert result.exit_code == 0 and expected in result.output


def test_train_prints_the_group_table_and_eval_reprints_it(tmp_path):
    config = _write(tmp_path, tiny_config(tmp_path))
    result = _run("train", config, "eval.splits=[test]")
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "accuracy" in result.output
    again = _run("eval", str(tmp_path / "runs" / "tiny"))
    assert again.exit_code == 0 and "overall" in again.output


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        (["lora.r=0"], 2, "lora.r: Input should be greater than or equal to 1"),
        (["train.lr=-1"], 2, "train.lr: Input should be greater than 0"),
        (["lora.rnk=4"], 2, "lora.rnk: unknown key"),
        (["train.epochs=many"], 2, "train.epochs: Input should be a valid number"),
        (["method=magic"], 2, "unknown method 'magic'"),
        (
            ["lora.target_modules=[nonexistent_proj]"],
            2,
            "lora.target_modules: ['nonexistent_proj'] not found",
        ),
        (["model.name=no-such-model-xyz"], 2, "no-such-model-xyz"),
        (["data.name=no-such-dataset-xyz"], 2, "no-such-dataset-xyz"),
    ],
)
def test_bad_input_fails_with_a_clear_message(tmp_path, overrides, code, message):
    config = _write(tmp_path, tiny_config(tmp_path))
    result = _run("train", config, *overrides)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert not (tmp_path / "runs" / "tiny").exists()


def _csv(tmp_path, rows: int = 40) -> str:
    frame = pd.DataFrame(
        {
            "text": [f"example {i}" for i in range(rows)],
            "label": [i % 2 for i in range(rows)],
            "grp": [i % 4 == 0 for i in range(rows)],
            "none": [False] * rows,
        }
    )
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_missing_column_names_the_field_and_the_file(tmp_path):
    config = _write(tmp_path, tiny_config(tmp_path, data={"name": _csv(tmp_path), "text_column": "sentence"}))
    result = _run("train", config)
    assert result.exit_code == 2
    assert "data.text_column" in result.output and "sentence" in result.output
    assert not (tmp_path / "runs" / "tiny").exists()  # nothing written: fix the config and run again
    assert _run("train", config, "data.text_column=text").exit_code == 0


def test_empty_group_names_the_group(tmp_path):
    config = _write(
        tmp_path, tiny_config(tmp_path, data={"name": _csv(tmp_path), "group_columns": ["grp", "none"]})
    )
    result = _run("train", config)
    assert result.exit_code == 2
    assert "none" in result.output and "data.group_columns" in result.output


def test_existing_run_dir_exit_code(tmp_path):
    config = _write(tmp_path, tiny_config(tmp_path))
    assert _run("train", config).exit_code == 0
    result = _run("train", config)
    assert result.exit_code == 3 and "--overwrite" in result.output


def test_eval_of_a_folder_that_is_not_a_run(tmp_path):
    result = _run("eval", str(tmp_path))
    assert result.exit_code == 3 and "not a fairlora run folder" in result.output


def test_demo_compares_methods_side_by_side(tmp_path):
    result = _run(
        "demo",
        "--output-dir",
        str(tmp_path / "demo"),
        "--methods",
        "none,lora",
        "model.name=tiny-bert",
        "train.max_steps=2",
        "train.progress_bar=false",
        "data.identity.examples_per_group=6",
        "eval.splits=[test]",
    )
    assert result.exit_code == 0, result.output
    assert "demo-none" in result.output and "demo-lora" in result.output
    assert "religion_muslim" in result.output and "fpr per group" in result.output
    assert "calibration/test" in result.output and (tmp_path / "demo" / "audit" / "report.html").is_file()
    assert (tmp_path / "demo" / "demo-lora" / "results.json").is_file()
