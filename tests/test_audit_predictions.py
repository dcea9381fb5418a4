"""`fairlora audit --predictions`: any model's scores, categorical and crossed groups, checked against
scikit-learn and fairlearn on the same rows, plus bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score
from typer.testing import CliRunner

import fairlora
from fairlora.cli import app

runner = CliRunner()
N = 700


def make_scores(seed: int = 0, n: int = N) -> pd.DataFrame:
    """Binary scores with a categorical gender (some missing), a race column and membership."""
    rng = np.random.default_rng(seed)
    gender = rng.choice(["female", "male", "nonbinary"], n, p=[0.45, 0.4, 0.15]).astype(object)
    gender[rng.random(n) < 0.05] = None
    race = rng.choice(["asian", "black", "white"], n)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 + 0.4 * y + 0.1 * (gender == "nonbinary") + rng.normal(0, 0.2, n), 0, 1)
    member = rng.random(n) < 0.5
    loss = -np.log(np.where(y == 1, p, 1 - p).clip(1e-6)) - 0.1 * member
    return pd.DataFrame(
        {"row": [f"r{i}" for i in range(n)], "y": y, "p_hateful": p, "gender": gender, "race": race}
    ).assign(member=member, nll=loss)


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> tuple[pd.DataFrame, dict]:
    """The CLI audit of one scores CSV with gender, race and their intersection."""
    root = tmp_path_factory.mktemp("pred-audit")
    scores = make_scores()
    scores.to_csv(root / "scores.csv", index=False)
    out = root / "audit"
    args = ["audit", "--predictions", str(root / "scores.csv"), "--label", "y", "--prob", "p_hateful"]
    args += ["--group", "gender", "--group", "race", "--intersect", "gender,race", "-o", str(out)]
    result = runner.invoke(app, [*args, "audit.n_boot=50", "eval.min_group_size=5"])
    assert result.exit_code == 0, result.output
    assert "lira, generation, probe and benchmarks skipped" in result.output
    return scores, json.loads((out / "results.json").read_text())["runs"][0]


def _members(scores: pd.DataFrame, group: str) -> pd.Series:
    inside = pd.Series(True, index=scores.index)
    for part in group.split("&"):
        column, value = part.split("=")
        inside &= scores[column] == value
    return inside


def _value(section: dict, group: str, metric: str) -> float:
    return section["by_group"][group][metric]["value"]


def test_every_per_group_figure_equals_sklearn(audited):
    scores, run = audited
    pred = (scores["p_hateful"] >= 0.5).astype(int)
    utility, auc, calibration = (run["sections"][k] for k in ("utility/test", "auc/test", "calibration/test"))
    groups = list(utility["by_group"])
    assert {"gender=female", "gender=nonbinary", "race=black", "gender=female&race=black"} <= set(groups)
    for group in groups:
        inside = _members(scores, group)
        y, p, d = scores["y"][inside], scores["p_hateful"][inside], pred[inside]
        assert _value(utility, group, "accuracy") == pytest.approx(accuracy_score(y, d), abs=1e-9)
        assert _value(utility, group, "tpr") == pytest.approx(recall_score(y, d), abs=1e-9)
        assert _value(utility, group, "fpr") == pytest.approx(false_positive_rate(y, d), abs=1e-9)
        assert _value(calibration, group, "brier") == pytest.approx(2 * ((p - y) ** 2).mean(), abs=1e-9)
        confidence = np.maximum(p, 1 - p)
        bins = np.clip(np.floor(confidence * 10), 0, 9)
        gaps = ((d == y).astype(float) - confidence).groupby(bins).sum().abs().sum() / len(y)
        assert _value(calibration, group, "ece") == pytest.approx(gaps, abs=1e-9)
        assert _value(auc, group, "auc") == pytest.approx(roc_auc_score(y, p), abs=1e-9)
        everyone_y, everyone_p = scores["y"], scores["p_hateful"]
        bpsn = (inside & (everyone_y == 0)) | (~inside & (everyone_y == 1))
        bnsp = (inside & (everyone_y == 1)) | (~inside & (everyone_y == 0))
        expected_bpsn = roc_auc_score(everyone_y[bpsn], everyone_p[bpsn])
        assert _value(auc, group, "bpsn_auc") == pytest.approx(expected_bpsn, abs=1e-9)
        expected_bnsp = roc_auc_score(everyone_y[bnsp], everyone_p[bnsp])
        assert _value(auc, group, "bnsp_auc") == pytest.approx(expected_bnsp, abs=1e-9)
    assert auc["overall"]["auc"]["value"] == pytest.approx(roc_auc_score(scores["y"], scores["p_hateful"]))


def test_categorical_and_crossed_groups_equal_fairlearn_metricframe(audited):
    scores, run = audited
    known = scores[scores["gender"].notna()]
    pred = (known["p_hateful"] >= 0.5).astype(int)
    metrics = {"accuracy": accuracy_score, "tpr": recall_score, "fpr": false_positive_rate}
    metrics["positive_rate"] = selection_rate
    crossed = MetricFrame(
        metrics=metrics, y_true=known["y"], y_pred=pred, sensitive_features=known[["gender", "race"]]
    )
    single = MetricFrame(metrics=metrics, y_true=known["y"], y_pred=pred, sensitive_features=known["gender"])
    utility = run["sections"]["utility/test"]
    for (gender, race), row in crossed.by_group.iterrows():
        for metric, expected in row.items():
            assert _value(utility, f"gender={gender}&race={race}", metric) == pytest.approx(
                expected, abs=1e-9
            )
    for gender, row in single.by_group.iterrows():
        for metric, expected in row.items():
            assert _value(utility, f"gender={gender}", metric) == pytest.approx(expected, abs=1e-9)
    missing = int(scores["gender"].isna().sum())
    assert any(f"{missing} of {N} rows have no 'gender' value" in note for note in run["notes"])


def test_small_groups_are_shown_and_flagged(tmp_path):
    scores = make_scores(n=300)
    scores.loc[:3, "gender"] = "agender"  # 4 rows: below the minimum size
    result = fairlora.audit(
        scores,
        tmp_path / "a",
        ["audit.n_boot=20", "audit.min_group_size=10"],
        label="y",
        prob="p_hateful",
        groups=["gender"],
    )
    utility = result.runs[0].sections["utility/test"]
    assert utility.group_sizes["gender=agender"] == 4
    assert "gender=agender" in utility.flagged and "gender=female" not in utility.flagged


def test_membership_attack_and_python_call_match_the_cli(tmp_path):
    scores = make_scores(1)
    options = {"label": "y", "prob": "p_hateful", "groups": ["gender"], "member": "member", "loss": "nll"}
    result = fairlora.audit({"mine": scores}, tmp_path / "py", ["audit.n_boot=20"], **options)
    run = result.runs[0]
    attack = run.sections["membership/loss"].overall["auc"].value
    assert attack == pytest.approx(roc_auc_score(scores["member"], -scores["nll"]), abs=1e-9)
    test_rows = scores[~scores["member"]]
    accuracy = run.sections["utility/test"].overall["accuracy"].value
    assert accuracy == pytest.approx(((test_rows["p_hateful"] >= 0.5) == test_rows["y"]).mean())
    scores.to_parquet(tmp_path / "s.parquet")
    args = [
        "audit",
        "-p",
        f"mine={tmp_path / 's.parquet'}",
        "--label",
        "y",
        "--prob",
        "p_hateful",
        "-g",
        "gender",
    ]
    args += ["--member", "member", "--loss", "nll", "-o", str(tmp_path / "cli"), "audit.n_boot=20"]
    assert runner.invoke(app, args).exit_code == 0
    on_disk = json.loads((tmp_path / "cli" / "results.json").read_text())["runs"][0]
    assert on_disk["sections"]["membership/loss"]["overall"]["auc"]["value"] == pytest.approx(attack)


def test_multiclass_tables_compare_with_paired_differences(tmp_path):
    rng = np.random.default_rng(2)
    n = 400
    logits = rng.normal(size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array(["sports", "world", "tech"])[rng.integers(0, 3, n)]
    table = pd.DataFrame({f"prob_{c}": probs[:, i] for i, c in enumerate(["sports", "world", "tech"])})
    table = table.assign(topic=labels, id=np.arange(n), source=rng.choice(["a", "b"], n))
    other = table.sample(frac=1.0, random_state=0)  # the same rows in another order, other scores
    other[[f"prob_{c}" for c in ["sports", "world", "tech"]]] = np.roll(probs, 1, axis=1)[other.index]
    result = fairlora.audit(
        {"first": table, "second": other},
        tmp_path / "mc",
        ["audit.n_boot=30"],
        label="topic",
        prob_prefix="prob_",
        groups=["source"],
        id="id",
    )
    predicted = np.array(["sports", "world", "tech"])[probs.argmax(1)]
    first = result.runs[0].sections["utility/test"].overall["accuracy"].value
    assert first == pytest.approx(accuracy_score(labels, predicted))
    assert "auc/test" not in result.runs[0].sections  # three classes: no binary AUCs
    delta = result.comparison["utility/test"]["overall"]["accuracy"]["second"]
    assert delta.pairing == "paired"


def _bad_tables() -> list[tuple[str, pd.DataFrame, list[str], str]]:
    base = make_scores(n=80)
    outside = base.assign(p_hateful=base["p_hateful"] * 2)
    three = pd.DataFrame(
        {"y": ["a", "b", "c", "a"], "prob_a": [0.5, 0.2, 0.2, 0.9], "prob_b": [0.5, 0.2, 0.2, 0.05]}
    )
    three["prob_c"] = [0.3, 0.6, 0.6, 0.05]  # the first row sums to 1.3
    unknown = three.assign(y=["a", "b", "d", "a"], prob_c=[0.0, 0.6, 0.6, 0.05])
    empty_group = base.assign(gender=None)
    usual = ["--label", "y", "--prob", "p_hateful"]
    return [
        ("outside", outside, [*usual], "'p_hateful'"),
        ("sum", three, ["--label", "y", "--prob-prefix", "prob_"], "sum to 1.3000"),
        ("labels", unknown, ["--label", "y", "--prob-prefix", "prob_"], "['d']"),
        ("empty", empty_group, [*usual, "--group", "gender"], "'gender'"),
        (
            "intersect",
            base,
            [*usual, "--group", "gender", "--intersect", "gender,religion"],
            "--intersect religion",
        ),
        ("member", base, [*usual, "--member", "member"], "--loss"),
    ]


@pytest.mark.parametrize("case", _bad_tables(), ids=lambda case: case[0])
def test_bad_predictions_fail_with_one_message_and_write_nothing(case, tmp_path):
    _, table, options, needle = case
    path = tmp_path / "scores.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "audit"
    result = runner.invoke(app, ["audit", "--predictions", str(path), *options, "-o", str(out)])
    assert result.exit_code != 0
    assert needle in result.output and "fix" in result.output.lower()
    assert not out.exists()


def test_model_sections_are_refused_for_a_predictions_table(tmp_path):
    path = tmp_path / "s.csv"
    make_scores(n=60).to_csv(path, index=False)
    args = ["audit", "-p", str(path), "--label", "y", "--prob", "p_hateful", "-o", str(tmp_path / "a")]
    result = runner.invoke(app, [*args, "audit.sections=[utility,benchmarks]"])
    assert result.exit_code != 0 and "need the model" in result.output
    assert not Path(tmp_path / "a").exists()
