"""`fairlora sweep`: grid parsing, resumable cells, mean +- std over seeds."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from fairlora.cli import app
from fairlora.errors import ConfigError
from fairlora.sweeps import cell_name, grid_cells, parse_grid, summarise, sweep


def test_grid_parsing_and_cells():
    grid = parse_grid(["method=lora,full", "seed=1,2,3"])
    assert grid == {"method": ["lora", "full"], "seed": ["1", "2", "3"]}
    cells = grid_cells(grid)
    assert len(cells) == 6 and cells[0] == {"method": "lora", "seed": "1"}
    assert cell_name("run", {"lora.r": "8", "train.lr": "1e-3"}) == "run_lora.r-8_train.lr-1e-3"


@pytest.mark.parametrize("bad", ["method", "method=", "=lora", "seed=1,2 seed=3"])
def test_bad_grid_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="--grid"):
        parse_grid(bad.split(" "))


def test_summary_is_mean_and_sample_std_over_seeds():
    import pandas as pd

    cells = pd.DataFrame(
        {
            "method": ["a", "a", "b", "b"],
            "seed": ["1", "2", "1", "2"],
            "run": list("wxyz"),
            "acc": [0.5, 0.7, 0.2, 0.2],
        }
    )
    summary = summarise(cells, ["method"]).set_index("method")
    assert summary.loc["a", "acc_mean"] == pytest.approx(0.6)
    assert summary.loc["a", "acc_std"] == pytest.approx(0.1414213, rel=1e-5)
    assert summary.loc["b", "acc_std"] == pytest.approx(0.0) and summary.loc["a", "n_runs"] == 2


def test_sweep_runs_the_grid_once_and_skips_finished_cells(tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, name="sw", eval={"splits": ["test", "train"]})))
    grid = ["method=lora,none", "seed=1,2"]
    result = sweep(config, grid, progress=False)
    assert len(result.cells) == 4 and len(result.summary) == 2
    assert {"accuracy_mean", "accuracy_std", "ece_mean", "mia_auc_mean"} <= set(result.summary.columns)
    stamps = {p: p.stat().st_mtime_ns for p in result.out_dir.glob("*/results.json")}
    assert len(stamps) == 4
    cli = CliRunner().invoke(app, ["sweep", str(config), "--grid", grid[0], "--grid", grid[1]])
    assert cli.exit_code == 0, cli.output
    assert "mean ± std" in cli.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished cells were not trained again
    saved = json.loads((result.out_dir / "sweep.json").read_text())
    assert saved["grid"] == {"method": ["lora", "none"], "seed": ["1", "2"]} and len(saved["cells"]) == 4
    assert "±" in (result.out_dir / "sweep.md").read_text()
