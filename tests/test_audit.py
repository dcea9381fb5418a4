"""`fairlora audit` end to end on tiny runs: sections, caching, comparison, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import fairlora
from conftest import tiny_config
from fairlora.auditing.results import load_audit
from fairlora.cli import app
from fairlora.errors import AuditError, ConfigError, RunDirError

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A LoRA and a base (head-only) run of the tiny BERT on the identity set."""
    root = tmp_path_factory.mktemp("audit-runs")
    out = {}
    for method in ("lora", "none"):
        config = tiny_config(root, method=method, name=f"tiny-{method}", train={"max_steps": 6})
        out[method] = fairlora.train(config).run_dir
    return out


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    """A causal LM run (tiny Llama) on the identity sentences."""
    root = tmp_path_factory.mktemp("lm-run")
    config = tiny_config(
        root,
        name="tiny-lm",
        task="causal_lm",
        model={"name": "tiny-llama", "max_length": 40},
        lora={"target_modules": ["q_proj", "v_proj"]},
        train={"max_steps": 2},
        data={"max_examples": 120},
    )
    return fairlora.train(config).run_dir


def test_audit_of_two_runs_writes_every_section_and_the_comparison(runs, tmp_path):
    out = tmp_path / "audit"
    result = fairlora.audit([runs["lora"], runs["none"]], out, ["audit.n_boot=100"])
    for name in ("results.json", "report.html", "report.md"):
        assert (out / name).is_file(), name
    lora = result.runs[0]
    assert set(lora.sections) == {
        "utility/test",
        "utility/train",
        "auc/test",
        "calibration/test",
        "membership/loss",
    }
    accuracy = lora.sections["utility/test"].overall["accuracy"]
    assert accuracy.low <= accuracy.value <= accuracy.high and accuracy.n > 0
    stored = pd.read_parquet(runs["lora"] / "predictions.parquet").query("split == 'test'")
    assert accuracy.value == pytest.approx((stored["pred"] == stored["label"]).mean())
    on_disk = load_audit(out)
    assert [r.name for r in on_disk.runs] == ["tiny-lora", "tiny-none"]
    comparison = json.loads((out / "results.json").read_text())["comparison"]
    delta = comparison["utility/test"]["overall"]["accuracy"]
    none_accuracy = result.runs[1].sections["utility/test"].overall["accuracy"].value
    assert delta["tiny-none"]["value"] == pytest.approx(none_accuracy - accuracy.value)
    assert delta["tiny-none"]["pairing"] == "paired"  # same data and seed: the same test rows
    assert "tiny-lora" not in delta  # the reference


def test_audit_is_deterministic_and_cli_prints_tables(runs, tmp_path):
    first = fairlora.audit([runs["lora"]], tmp_path / "a", ["audit.n_boot=50"])
    result = runner.invoke(app, ["audit", str(runs["lora"]), "audit.n_boot=50", "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "utility/test" in result.output and "membership/loss" in result.output
    second = load_audit(tmp_path / "b")
    assert (
        second.runs[0].sections["calibration/test"].to_dict()
        == first.runs[0].sections["calibration/test"].to_dict()
    )


def test_run_without_predictions_is_a_clear_error_and_nothing_is_written(runs, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(runs["lora"], broken)
    (broken / "predictions.parquet").unlink()
    with pytest.raises(RunDirError, match="predictions.parquet not found.*fairlora eval"):
        fairlora.audit([broken], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    result = runner.invoke(app, ["audit", str(broken), "-o", str(tmp_path / "out")])
    assert result.exit_code == 3 and "fairlora eval" in result.output


def test_a_group_with_no_members_is_reported_flagged_with_a_note(runs, tmp_path):
    run = tmp_path / "empty-group"
    shutil.copytree(runs["lora"], run)
    predictions = pd.read_parquet(run / "predictions.parquet")
    predictions["nobody"] = False
    predictions.to_parquet(run / "predictions.parquet")
    result = fairlora.audit([run], tmp_path / "out", ["audit.n_boot=20"])
    utility = result.runs[0].sections["utility/test"]
    assert utility.group_sizes["nobody"] == 0 and "nobody" in utility.flagged
    assert utility.by_group["nobody"]["accuracy"].value is None
    assert any("nobody" in note for note in result.runs[0].notes)


def test_calibration_of_a_model_without_a_classification_head_is_refused(lm_run, tmp_path):
    with pytest.raises(AuditError, match="calibration needs class probabilities"):
        fairlora.audit([lm_run], tmp_path / "out", ["audit.sections=[utility,calibration]"])
    auto = fairlora.audit([lm_run], tmp_path / "auto", ["audit.n_boot=20"])
    assert "calibration/test" not in auto.runs[0].sections
    assert any("calibration skipped" in note for note in auto.runs[0].notes)
    assert "loss" in auto.runs[0].sections["utility/test"].overall


def test_model_sections_need_a_causal_lm(runs, tmp_path):
    with pytest.raises(AuditError, match="need a causal language model"):
        fairlora.audit([runs["lora"]], tmp_path / "out", ["audit.sections=[probe]"])


def test_corrupt_or_foreign_results_are_never_overwritten(runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{not json")
    with pytest.raises(AuditError, match="not a fairlora audit"):
        fairlora.audit([runs["lora"]], out)
    assert (out / "results.json").read_text() == "{not json"
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 5 and "corrupt" in result.output
    with pytest.raises(AuditError, match="is a run folder"):
        fairlora.audit([runs["lora"]], runs["lora"])


def test_only_audit_overrides_are_accepted(runs, tmp_path):
    with pytest.raises(ConfigError, match="only takes audit"):
        fairlora.audit([runs["lora"]], tmp_path / "out", ["lora.r=2"])


def test_report_command_renders_again_from_results(runs, tmp_path):
    out = tmp_path / "out"
    fairlora.audit([runs["lora"]], out, ["audit.n_boot=20"])
    (out / "report.html").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0 and (out / "report.html").is_file()


def test_lira_trains_shadows_once_and_reports_per_group(runs, tmp_path):
    out = tmp_path / "out"
    overrides = [
        "audit.sections=[lira]",
        "audit.lira.shadows=2",
        "audit.n_boot=20",
        "audit.lira.member_fraction=0.5",
    ]
    result = fairlora.audit([runs["lora"]], out, overrides)
    lira = result.runs[0].sections["membership/lira"]
    assert 0.0 <= lira.overall["auc"].value <= 1.0 and lira.by_group
    shadow_results = sorted((out / "shadows" / "tiny-lora").glob("shadow-*/results.json"))
    assert len(shadow_results) == 2
    stamps = [p.stat().st_mtime_ns for p in shadow_results]
    again = fairlora.audit([runs["lora"]], out, overrides)
    assert [p.stat().st_mtime_ns for p in shadow_results] == stamps  # finished shadows are reused
    assert again.runs[0].sections["membership/lira"].to_dict() == lira.to_dict()


def test_generation_probe_and_benchmarks_on_a_causal_lm(lm_run, tmp_path):
    out = tmp_path / "out"
    overrides = [
        "audit.sections=[generation,probe,benchmarks]",
        "audit.prompt_sets=[occupations]",
        "audit.max_new_tokens=4",
        "audit.limit=6",
        "audit.n_boot=20",
    ]
    result = fairlora.audit([lm_run], out, overrides)
    sections = result.runs[0].sections
    assert "generation/occupations" in sections and "probe/answer_order" in sections
    assert {k for k in sections if k.startswith("benchmark/")} >= {
        "benchmark/crows_pairs",
        "benchmark/winobias",
    }
    ratios = sections["generation/occupations"].overall
    assert sum(ratios[k].value for k in ("pro", "anti", "neutral", "unknown")) == pytest.approx(1.0)
    cached = sorted(p.name for p in (out / "cache" / "tiny-lm").glob("*/*"))
    assert "scores.parquet" in cached and "generation-occupations.parquet" in cached
    again = fairlora.audit([lm_run], out, overrides)
    assert again.runs[0].sections["probe/answer_order"].to_dict() == sections["probe/answer_order"].to_dict()


WINOMT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_gender_lora_fairness"


@pytest.mark.skipif(not (WINOMT / "en_tr_pro.txt").is_file(), reason="WinoMT data not in ../shared/data")
def test_a_winomt_run_is_audited_on_its_own_held_out_sentences(tmp_path):
    config = tiny_config(
        tmp_path,
        name="tiny-mt",
        task="causal_lm",
        model={"name": "tiny-llama", "max_length": 320},  # byte-level tokens: Turkish prompt + English
        lora={"target_modules": ["q_proj", "v_proj"]},
        data={"name": "winomt-tr", "max_examples": 60},
        train={"max_steps": 1},
        eval={"splits": ["test"]},
    )
    run = fairlora.train(config)
    overrides = ["audit.sections=[generation]", "audit.prompt_sets=[winomt]", "audit.max_new_tokens=3"]
    table = fairlora.audit(run.run_dir, tmp_path / "out", [*overrides, "audit.n_boot=20"]).runs[0].sections
    winomt = table["generation/winomt"]
    test_rows = pd.read_parquet(run.run_dir / "predictions.parquet")
    assert winomt.overall["pro"].n == len(test_rows)  # every held-out sentence, none from training
    assert {"pro", "anti", "male_stereotyped", "female_stereotyped"} <= set(winomt.by_group)
