"""The findings that open the report: worst groups, largest gaps, flagged problems and their figure."""

from __future__ import annotations

import re

from fairlora.auditing.results import AuditResult, RunAudit
from fairlora.metrics.table import Estimate, MetricTable
from fairlora.report.findings import audit_findings, run_findings, section_sentences
from fairlora.report.forest import evaluation_set, findings_figure, panels
from fairlora.report.html import render_html
from fairlora.report.markdown import render_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONSTANT = "constant predictor: predicts class 0 for every example"


def _rates(accuracy: Estimate, fpr: Estimate, tpr: Estimate, positive: Estimate) -> dict[str, Estimate]:
    return {"accuracy": accuracy, "fpr": fpr, "tpr": tpr, "positive_rate": positive}


def utility(shift: float = 0.0, ratios: bool = True) -> MetricTable:
    """A binary utility section: religion_muslim is the worst kept group, 'tiny' is below the minimum."""
    by_group = {
        "religion_muslim": _rates(
            Estimate(0.812 + shift, 0.74, 0.87, 96),
            Estimate(0.35, 0.22, 0.49, 48),
            Estimate(0.9, 0.8, 0.96, 48),
            Estimate(0.62, 0.52, 0.71, 96),
        ),
        "religion_christian": _rates(
            Estimate(0.95, 0.9, 0.98, 100),
            Estimate(0.04, 0.01, 0.13, 50),
            Estimate(0.94, 0.84, 0.98, 50),
            Estimate(0.49, 0.39, 0.59, 100),
        ),
        "tiny": _rates(
            Estimate(0.2, 0.04, 0.62, 5),
            Estimate(1.0, 0.34, 1.0, 3),
            Estimate(0.0, 0.0, 0.84, 2),
            Estimate(0.8, 0.38, 0.96, 5),
        ),
    }
    overall = _rates(
        Estimate(0.88, 0.84, 0.91, 300),
        Estimate(0.19, 0.13, 0.26, 150),
        Estimate(0.92, 0.87, 0.95, 150),
        Estimate(0.55, 0.49, 0.6, 300),
    )
    summary = {
        "worst_group_accuracy": Estimate(0.812 + shift, 0.74, 0.87, 196),
        "best_worst_gap": Estimate(0.138 - shift, 0.07, 0.21, 196),
        "eo_difference": Estimate(0.31, 0.18, 0.42, 196),
        "dp_difference": Estimate(0.13, 0.0, 0.27, 196),
    }
    labels = {"worst_group": "religion_muslim"}
    notes = []
    if ratios:
        summary |= {"dp_ratio": Estimate(0.79, 0.63, 0.98, 196), "eo_ratio": Estimate(0.11, 0.03, 0.3, 196)}
        labels["four_fifths"] = "violated"
        notes.append("four-fifths rule: demographic-parity ratio below 0.8")
    sizes = {"religion_muslim": 96, "religion_christian": 100, "tiny": 5}
    return MetricTable("utility", overall, by_group, sizes, ["tiny"], summary, labels, notes=notes)


def auc() -> MetricTable:
    """Subgroup AUCs without a worst-group label: the lowest kept group is found from the figures."""
    by_group = {
        "religion_muslim": {"auc": Estimate(0.9, 0.85, 0.94, 96)},
        "religion_christian": {"auc": Estimate(0.71, 0.6, 0.8, 100)},
        "tiny": {"auc": Estimate(0.5, None, None, 5)},
    }
    sizes = {"religion_muslim": 96, "religion_christian": 100, "tiny": 5}
    summary = {"auc_gap": Estimate(0.19, 0.08, 0.3, 196)}
    return MetricTable("auc", {"auc": Estimate(0.84, 0.8, 0.88, 300)}, by_group, sizes, ["tiny"], summary)


def findings_audit() -> AuditResult:
    """Two runs: 'lora' with a four-fifths violation and a cross-dataset set; 'flat' a constant predictor."""
    lora_sections = {"utility/train": utility(0.1), "utility/test": utility(), "auc/test": auc()}
    lora_sections["utility/hatecheck"] = utility(0.05, ratios=False)
    lora = RunAudit("lora", "lora", "minilm", "identity", "classification", "runs/lora", lora_sections)
    flat_utility = utility(0.02, ratios=False)
    flat_utility.notes.append(CONSTANT)
    flat = RunAudit(
        "flat", "none", "minilm", "identity", "classification", "runs/flat", {"utility/test": flat_utility}
    )
    flat.notes.append("bias benchmarks skipped: the audit has predictions only")
    return AuditResult([lora, flat], options={"min_group_size": 20, "ci_level": 0.95})


def test_sentences_name_the_worst_kept_group_and_the_largest_gaps_with_cis_and_n() -> None:
    texts = [f.text for f in section_sentences("utility/test", utility())]
    assert texts == [
        "Worst group by accuracy: religion_muslim 0.812 [0.740, 0.870], n=96 (overall 0.880).",
        "Largest accuracy gap 0.138 [0.070, 0.210] between religion_christian (0.950, n=100) "
        "and religion_muslim (0.812, n=96).",
        "Largest FPR gap 0.310 [0.180, 0.420] between religion_muslim (0.350, n=48 negatives) and "
        "religion_christian (0.040, n=50 negatives) (equalized-odds difference; equalized-odds ratio "
        "0.110 [0.030, 0.300], below 0.8).",
        "Positive-rate gap 0.130 [0.000, 0.270] between religion_muslim (0.620, n=96) and "
        "religion_christian (0.490, n=100) (demographic-parity difference; demographic-parity ratio "
        "0.790 [0.630, 0.980], below 0.8).",
    ]
    assert [f.text for f in section_sentences("auc/test", auc())] == [
        "Worst group by subgroup AUC: religion_christian 0.710 [0.600, 0.800], n=100 (overall 0.840).",
        "Largest subgroup AUC gap 0.190 [0.080, 0.300] between religion_muslim (0.900, n=96) and "
        "religion_christian (0.710, n=100).",
    ]


def test_sentences_without_ratio_figures_have_no_ratio_and_no_violation() -> None:
    table = utility(ratios=False)
    texts = [f.text for f in section_sentences("utility/test", table)]
    assert not any("ratio" in t for t in texts)
    assert texts[3].endswith("(demographic-parity difference).")
    run = RunAudit("r", "lora", "m", "d", "classification", "r", {"utility/test": table})
    assert [f.kind for f in run_findings(run, 20).flags] == ["small-groups"]


def test_a_gap_the_audit_did_not_store_is_a_point_gap_without_ci() -> None:
    table = utility(ratios=False)
    del table.summary["eo_difference"]
    odds = next(f for f in section_sentences("utility/test", table) if f.kind == "odds")
    assert odds.text.startswith("Largest FPR gap 0.310 (no CI) between religion_muslim")


def test_flags_list_constant_predictor_four_fifths_small_groups_and_notes() -> None:
    lora, flat = audit_findings(findings_audit())
    violation = [f for f in lora.flags if f.kind == "four-fifths"]
    assert [f.section for f in violation] == ["utility/test"]  # none on the training rows
    assert violation[0].text == (
        "utility/test: four-fifths rule violated: demographic-parity ratio 0.790 [0.630, 0.980] (below 0.8), "
        "positive rate between religion_muslim (0.620, n=96) and religion_christian (0.490, n=100)."
    )
    assert not [f for f in lora.flags if "four-fifths rule:" in f.text]  # the notes are not repeated
    small = [f for f in lora.flags if f.kind == "small-groups"]
    assert [f.text for f in small] == [
        "Below min_group_size = 20: tiny (n=5) in utility/train, utility/test, auc/test, utility/hatecheck; "
        "shown in the tables but left out of the worst-group, gap and difference figures."
    ]
    assert [(f.kind, f.text) for f in flat.flags] == [
        ("constant-predictor", f"utility/test: {CONSTANT}"),
        (
            "small-groups",
            "Below min_group_size = 20: tiny (n=5) in utility/test; shown in the tables but left out of the "
            "worst-group, gap and difference figures.",
        ),
        ("info", "bias benchmarks skipped: the audit has predictions only"),
    ]


def test_every_evaluation_set_but_train_gets_sentences() -> None:
    lora, flat = audit_findings(findings_audit())
    assert list(dict.fromkeys(f.section for f in lora.sentences)) == [
        "utility/test",
        "auc/test",
        "utility/hatecheck",
    ]
    hatecheck = next(f for f in lora.sentences if f.section == "utility/hatecheck")
    assert hatecheck.text.startswith("Worst group by accuracy: religion_muslim 0.862 [0.740, 0.870], n=96")
    assert len(flat.sentences) == 4 and not any("ratio" in f.text for f in flat.sentences)


def test_figure_shows_accuracy_fpr_and_subgroup_auc_of_the_test_set() -> None:
    audit = findings_audit()
    assert evaluation_set(audit) == "test"
    chosen = panels(audit, "test")
    assert [(p.title, list(p.tables)) for p in chosen] == [
        ("accuracy", ["lora", "flat"]),
        ("FPR", ["lora", "flat"]),
        ("subgroup AUC", ["lora"]),
    ]
    plot = findings_figure(audit)
    assert plot is not None and plot.png.startswith(PNG_SIGNATURE) and plot.kind == "findings"
    assert plot.caption.startswith("Per group on test: accuracy, FPR, subgroup AUC, with 95% CIs")
    benchmark_only = AuditResult(
        [
            RunAudit(
                "b", "none", "m", "d", "classification", "r", {"benchmark/x": MetricTable("benchmark", {})}
            )
        ]
    )
    assert findings_figure(benchmark_only) is None


def test_reports_open_with_the_findings() -> None:
    audit = findings_audit()
    page = render_html(audit)
    order = [
        page.index(marker)
        for marker in ('id="findings"', 'id="runs"', 'id="main-table"', 'class="audit-section"')
    ]
    assert order == sorted(order)
    findings = re.search(r'<section id="findings">(.*?)</section>', page, re.S).group(1)
    assert 'data-plot="findings"' in findings
    assert (
        'data-kind="constant-predictor" data-section="utility/test">'
        f'<span class="name">utility/test</span>: {CONSTANT}' in findings
    )
    assert (
        'Worst group by accuracy: <span class="name">religion_muslim</span> 0.812 [0.740, 0.870], n=96'
        in findings
    )
    text = render_markdown(audit)
    assert text.index("## Findings") < text.index("## Runs") < text.index("## Comparison")
    assert f"- **Flagged:** `utility/test`: {CONSTANT}" in text
    assert (
        "- `utility/test`: Worst group by accuracy: `religion_muslim` 0.812 [0.740, 0.870], n=96 "
        "(overall 0.880)." in text
    )


def test_per_group_constant_predictor_notes_and_repeated_notes_become_one_flag_each() -> None:
    test, train = utility(ratios=False), utility(ratios=False)
    test.notes = [f"group {g}: {CONSTANT}" for g in ("religion_muslim", "religion_christian")]
    train.notes = [CONSTANT]
    tables = {"utility/test": test, "utility/train": train, "utility/val": utility(ratios=False)}
    tables["utility/val"].notes = [CONSTANT]
    run = RunAudit("r", "lora", "m", "d", "classification", "r", tables)
    constant = [f.text for f in run_findings(run, 20).flags if f.kind == "constant-predictor"]
    assert constant == [
        "utility/test: constant predictor in 2 groups (religion_muslim, religion_christian): "
        "predicts class 0 for every example",
        f"utility/train, utility/val: {CONSTANT}",
    ]
