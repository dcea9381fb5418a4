"""Audit settings are built once, apply to every run alike, and are recorded; runs are synthetic folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import fairlora
from fairlora.auditing.results import load_audit
from fairlora.auditing.settings import audit_settings, run_config
from fairlora.config import build_config
from fairlora.errors import ConfigError


def predictions(n: int = 300, seed: int = 0, flip: float = 0.0) -> pd.DataFrame:
    """A binary classifier's stored predictions on train and test rows with two overlapping groups."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    prob = 1 / (1 + np.exp(-rng.normal(2.0 * label - 1.0, 1.0, n)))
    changed = np.random.default_rng(seed + 100).random(n) < flip
    prob = np.where(changed, 1 - prob, prob)
    frame = pd.DataFrame(
        {"id": [str(i) for i in range(n)], "split": np.where(np.arange(n) % 3, "test", "train")}
    )
    frame["label"], frame["prob_1"], frame["prob_0"] = label, prob, 1 - prob
    frame["pred"] = (prob > 0.5).astype(int)
    frame["loss"] = -np.log(np.where(label == 1, prob, 1 - prob))
    frame["women"], frame["men"] = rng.random(n) < 0.5, rng.random(n) < 0.5
    return frame


def run_folder(root: Path, name: str, frame: pd.DataFrame, **config: object) -> Path:
    """A run folder as `fairlora train` leaves it, minus the weights: config.yaml and predictions."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cfg = build_config({"name": name, "output_dir": str(root), **config})
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    frame.to_parquet(run_dir / "predictions.parquet")
    return run_dir


def test_runs_with_different_audit_sections_are_audited_with_identical_settings(tmp_path):
    frame = predictions()
    first = run_folder(tmp_path, "first", frame, audit={"limit": 100, "ci_level": 0.5, "n_boot": 7})
    second = run_folder(tmp_path, "second", frame, eval={"min_group_size": 2})
    settings = audit_settings(["audit.n_boot=60"])
    assert run_config(first, settings).audit == run_config(second, settings).audit == settings.audit
    assert run_config(first, settings).eval.min_group_size == 20
    result = fairlora.audit([first, second], tmp_path / "out", ["audit.n_boot=60"])
    a, b = result.runs
    assert set(a.sections) == set(b.sections) >= {"utility/test", "auc/test", "calibration/test"}
    for key in a.sections:
        assert a.sections[key].to_dict() == b.sections[key].to_dict(), key
    options = load_audit(tmp_path / "out").options
    assert (options["limit"], options["ci_level"], options["n_boot"], options["min_group_size"]) == (
        200,
        0.95,
        60,
        20,
    )
    assert options == settings.record()


def test_a_run_audit_section_is_never_read(tmp_path):
    run = run_folder(tmp_path, "old", predictions())
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["audit"] = {"a_key_of_an_older_version": 1, "n_boot": "many"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = fairlora.audit([run], tmp_path / "out", ["audit.n_boot=20"])
    assert result.runs[0].sections["utility/test"].overall["accuracy"].low is not None


def test_ci_level_of_the_audit_narrows_every_interval(tmp_path):
    run = run_folder(tmp_path, "run", predictions(600))
    default = fairlora.audit([run], tmp_path / "default", ["audit.n_boot=200"])
    half = fairlora.audit([run], tmp_path / "half", ["audit.n_boot=200", "audit.ci_level=0.5"])
    checked = 0
    for key, table in default.runs[0].sections.items():
        other = half.runs[0].sections[key]
        for part in ("overall", "summary"):
            for metric, wide in getattr(table, part).items():
                narrow = getattr(other, part)[metric]
                if wide.low is None or wide.high is None or wide.high == wide.low:
                    continue
                assert wide.low <= narrow.low <= narrow.high <= wide.high, (key, metric)
                assert narrow.high - narrow.low < wide.high - wide.low, (key, metric)
                checked += 1
    assert checked > 20
    assert "bootstrap 50% CIs" in (tmp_path / "half" / "report.md").read_text()
    assert "bootstrap 50% CIs" in (tmp_path / "half" / "report.html").read_text()


def test_settings_come_from_defaults_then_a_file_then_the_overrides(tmp_path):
    file = tmp_path / "audit.yaml"
    file.write_text(yaml.safe_dump({"audit": {"n_boot": 40, "ci_level": 0.8}, "eval": {"min_group_size": 5}}))
    settings = audit_settings(["audit.n_boot=30"], config_file=file)
    assert (settings.audit.n_boot, settings.audit.ci_level, settings.min_group_size) == (30, 0.8, 5)
    assert settings.table_options() == {"min_group_size": 5, "n_boot": 30, "seed": 0, "level": 0.8}
    run = run_folder(tmp_path, "run", predictions())
    result = fairlora.audit([run], tmp_path / "out", config_file=file)
    assert result.options["n_boot"] == 40 and result.options["min_group_size"] == 5
    with pytest.raises(ConfigError, match="not found"):
        audit_settings([], config_file=tmp_path / "missing.yaml")


def test_only_audit_overrides_are_accepted_and_nothing_is_written(tmp_path):
    run = run_folder(tmp_path, "run", predictions())
    with pytest.raises(ConfigError, match="only takes audit"):
        fairlora.audit([run], tmp_path / "out", ["lora.r=2"])
    with pytest.raises(ConfigError, match="ci_level"):
        fairlora.audit([run], tmp_path / "out", ["audit.ci_level=2"])
    assert not (tmp_path / "out").exists()
