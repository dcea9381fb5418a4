"""`fairlora eval RUN --data ... --as ...`: a finished run on another dataset, stored and audited per set."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import accuracy_score, roc_auc_score
from typer.testing import CliRunner

import fairlora
from conftest import tiny_config
from fairlora.auditing.results import load_audit
from fairlora.cli import app
from fairlora.config import DataConfig
from fairlora.data import load_task_data
from fairlora.data.hate import hatecheck_file
from fairlora.errors import ConfigError, DataError, RunDirError
from fairlora.runs import EVAL_SET_FILE, PREDICTIONS_FILE, RESULTS_FILE, load_results, read_predictions

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished tiny LoRA run on the identity set (classes non-hateful, hateful)."""
    config = tiny_config(tmp_path_factory.mktemp("evalsets"))
    return fairlora.train(config).run_dir


def _digest(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir() if f.is_file()}


def _own_test_rows(run: Path, file: Path, labels: dict[int, object] | None = None) -> pd.DataFrame:
    """The run's own test split written as a user table (label names as text), with two of its groups."""
    cfg = fairlora.load_config(run / "config.yaml")
    data = load_task_data(cfg.data, cfg.task, cfg.seed)
    names = labels or dict(enumerate(data.label_names))
    sizes = data.test[data.group_columns].sum().sort_values(ascending=False)
    assert sizes.iloc[1] >= 2  # the two largest groups of the split stand for a user's groups
    table = pd.DataFrame(
        {
            "id": data.test["id"],
            "sentence": data.test["text"],
            "y": data.test["label"].map(names),
            "women": data.test[sizes.index[0]],
            "muslims": data.test[sizes.index[1]],
        }
    )
    table.to_csv(file, index=False)
    return table


def test_an_eval_set_reproduces_the_runs_own_predictions_and_is_audited_per_set(run, tmp_path):
    table = _own_test_rows(run, tmp_path / "own.csv")
    before = _digest(run)
    result = fairlora.evaluate(
        run, str(tmp_path / "own.csv"), ["data.text_column=sentence", "data.label_column=y"], name="own"
    )
    assert _digest(run) == before  # the run's own predictions, results and config are untouched
    folder = run / "evals" / "own"
    assert {PREDICTIONS_FILE, RESULTS_FILE, EVAL_SET_FILE} <= {f.name for f in folder.iterdir()}
    assert result.label_names == ["non-hateful", "hateful"] == load_results(run).label_names
    record = yaml.safe_load((folder / EVAL_SET_FILE).read_text())
    assert record["data"]["label_column"] == "y" and record["labels"] == {
        "hateful": "hateful",
        "non-hateful": "non-hateful",
    }
    # same model, same rows: the set's probabilities equal the run's own test predictions
    own = read_predictions(run).query("split == 'test'").set_index("id")
    evaluated = read_predictions(folder).set_index("id")
    assert set(evaluated["split"]) == {"own"} and len(evaluated) == len(table)
    np.testing.assert_allclose(evaluated["prob_1"], own.loc[evaluated.index, "prob_1"], atol=1e-5)
    assert (evaluated["label"] == own.loc[evaluated.index, "label"]).all()
    assert set(result.splits["own"].by_group) == {"women", "muslims"}

    out = tmp_path / "audit"
    fairlora.audit(run, out)
    audited = load_audit(out)  # as stored in results.json
    sections = audited.runs[0].sections
    assert {"utility/test", "utility/own", "auc/own", "calibration/own"} <= set(sections)
    assert "membership/own" not in sections and "membership/loss" in sections
    women = evaluated[evaluated["women"]]
    utility = sections["utility/own"]
    assert set(utility.by_group) == {"women", "muslims"}
    assert utility.by_group["women"]["accuracy"].value == pytest.approx(
        accuracy_score(women["label"], women["pred"]), abs=1e-9
    )
    assert sections["auc/own"].overall["auc"].value == pytest.approx(
        roc_auc_score(evaluated["label"], evaluated["prob_1"]), abs=1e-9
    )
    assert any(note.startswith("evaluation set own:") for note in audited.runs[0].notes)
    assert "utility/own" in (out / "report.html").read_text()


def test_labels_that_do_not_map_fail_first_and_label_map_fixes_them(run, tmp_path):
    file = tmp_path / "numeric.csv"
    table = _own_test_rows(run, file, labels={0: 0, 1: 1})
    overrides = ["data.text_column=sentence", "data.label_column=y"]
    with pytest.raises(DataError) as error:
        fairlora.evaluate(run, str(file), overrides, name="numeric")
    message = str(error.value)
    assert "(0, 1)" in message and "0=non-hateful, 1=hateful" in message and "--label-map 0=0,1=1" in message
    assert not (run / "evals" / "numeric").exists()
    with pytest.raises(DataError, match=r"--label-map: '2' is not a label of .*its labels: 0, 1"):
        fairlora.evaluate(run, str(file), overrides, name="numeric", label_map="2=1")
    with pytest.raises(ConfigError, match=r"'toxic' is not a class of the run; its classes: 0=non-hateful"):
        fairlora.evaluate(run, str(file), overrides, name="numeric", label_map="1=toxic,0=0")
    # swapped on purpose: every label flips, so accuracy becomes 1 - the unswapped accuracy
    swapped = fairlora.evaluate(run, str(file), overrides, name="numeric", label_map="1=non-hateful,0=1")
    stored = read_predictions(run / "evals" / "numeric").set_index("id")
    assert (stored.loc[table["id"], "label"].to_numpy() == 1 - table["y"].to_numpy()).all()
    plain = fairlora.evaluate(run, str(file), overrides, name="plain", label_map={"1": "hateful", "0": 0})
    assert swapped.splits["numeric"].overall["accuracy"].value == pytest.approx(
        1 - plain.splits["plain"].overall["accuracy"].value
    )


def test_a_set_name_is_never_reused_or_a_run_split_without_overwrite(run, tmp_path):
    file = tmp_path / "own.csv"
    _own_test_rows(run, file)
    args = [str(run), "--data", str(file), "data.text_column=sentence", "data.label_column=y"]
    first = runner.invoke(app, ["eval", *args, "--as", "again"])
    assert first.exit_code == 0, first.output
    assert "evaluation set:" in first.output and "overall" in first.output
    stored = _digest(run / "evals" / "again")
    refused = runner.invoke(app, ["eval", *args, "--as", "again"])
    assert refused.exit_code != 0 and "already holds an evaluation set named 'again'" in refused.output
    assert "--overwrite" in refused.output and _digest(run / "evals" / "again") == stored
    split = runner.invoke(app, ["eval", *args, "--as", "test"])
    assert split.exit_code != 0 and "the run's own test split" in split.output
    assert not (run / "evals" / "test").exists()
    replaced = runner.invoke(app, ["eval", *args, "--as", "again", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "missing.csv", "--as", "x"], "file missing.csv not found"),
        (["--data", "nowhere.yaml"], "--data file nowhere.yaml not found"),
        (["--data", "hatecheck", "lora.r=2"], "takes data.*, eval.* and model.max_length overrides only"),
        (["--as", "x"], "no dataset to evaluate on: pass --data NAME"),
        (["--data", "org/missing-dataset"], "'org/missing-dataset' is not a registered dataset"),
        (["--data", "hatecheck", "--label-map", "hateful"], "'hateful' is not label=class"),
    ],
)
def test_bad_eval_input_names_the_fix_and_writes_nothing(run, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["eval", str(run), *args])
    assert result.exit_code != 0 and message in " ".join(result.output.split()), result.output
    assert not (run / "evals" / "x").exists() and not (run / "evals" / "missing-dataset").exists()


def test_a_config_files_data_section_is_an_eval_set(run, tmp_path):
    _own_test_rows(run, tmp_path / "fromfile.csv")
    config = tmp_path / "other.yaml"
    config.write_text(
        yaml.safe_dump({"data": {"name": str(tmp_path / "fromfile.csv"), "text_column": "sentence"}})
    )
    result = fairlora.evaluate(run, str(config), ["data.label_column=y", "data.group_columns=[women]"])
    assert list(result.splits) == ["fromfile"] and list(result.splits["fromfile"].by_group) == ["women"]
    assert (run / "evals" / "fromfile" / PREDICTIONS_FILE).is_file()  # the name defaults to the file's stem
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump({"name": "hatecheck"}))
    with pytest.raises(ConfigError, match="the file has no data: section"):
        fairlora.evaluate(run, str(tmp_path / "bare.yaml"))


def _hatecheck_present() -> bool:
    try:
        hatecheck_file(DataConfig(name="hatecheck"))
    except DataError:
        return False
    return True


@pytest.mark.skipif(not _hatecheck_present(), reason="HateCheck not found ($FAIRLORA_DATA_DIR/hatecheck)")
def test_hatecheck_eval_set_is_audited_per_target_group(run, tmp_path):
    fairlora.evaluate(run, "hatecheck", ["data.max_examples=300"], name="hatecheck")
    predictions = read_predictions(run / "evals" / "hatecheck")
    targets = {
        "women",
        "trans_people",
        "gay_people",
        "black_people",
        "disabled_people",
        "muslims",
        "immigrants",
    }
    assert len(predictions) == 300 and set(predictions["label"]) == {0, 1}
    assert targets <= set(c for c in predictions.columns if predictions[c].dtype == bool)
    sections = fairlora.audit(run, tmp_path / "a").runs[0].sections
    assert targets <= set(sections["utility/hatecheck"].by_group) and "auc/hatecheck" in sections
    black = predictions[predictions["black_people"]]
    assert sections["utility/hatecheck"].by_group["black_people"]["accuracy"].value == pytest.approx(
        accuracy_score(black["label"], black["pred"]), abs=1e-9
    )


def test_a_run_written_before_label_names_takes_its_classes_from_its_data(run, tmp_path):
    from fairlora.pipeline import run_label_names
    from fairlora.runs import read_config

    old = tmp_path / "runs" / "old"
    old.mkdir(parents=True)
    (old / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    results = json.loads((run / RESULTS_FILE).read_text())
    assert results["run"].pop("label_names") == ["non-hateful", "hateful"]
    (old / RESULTS_FILE).write_text(json.dumps(results))
    assert load_results(old).label_names == []
    assert run_label_names(read_config(old)) == ["non-hateful", "hateful"]  # the identity set's classes


def test_a_damaged_eval_set_stops_the_audit_naming_the_fix(run, tmp_path):
    import shutil

    copy = tmp_path / "runs" / "tiny"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("evals"))
    (copy / "evals" / "broken").mkdir(parents=True)
    (copy / "evals" / "broken" / PREDICTIONS_FILE).write_text("not parquet")
    with pytest.raises(RunDirError, match=r"evaluation set broken: .*unreadable.*--as broken --overwrite"):
        fairlora.audit(copy, tmp_path / "audit")
    assert not (tmp_path / "audit" / "results.json").exists()
