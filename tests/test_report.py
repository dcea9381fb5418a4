"""The HTML and Markdown reports: self-contained, escaped, every figure a valid PNG data URI."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from fairlora.auditing.results import AuditResult, RunAudit, load_audit
from fairlora.metrics.calibration import BRIER_DEFINITION
from fairlora.metrics.table import Estimate, MetricTable
from fairlora.metrics.utility import utility_table
from fairlora.report import plots
from fairlora.report.html import render_html, write_report
from fairlora.report.markdown import main_rows, render_markdown
from fairlora.report.tables import comparison_table, run_table
from fairlora.runs import RunResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GROUPS = ("women", "men", "tiny")
PLOT_KINDS = {"group-bars", "reliability", "roc", "ratios", "shares"}


def est(value: float | None, spread: float = 0.05, n: int = 40) -> Estimate:
    """An estimate with a symmetric CI (none when value is None)."""
    if value is None:
        return Estimate(None, n=n)
    return Estimate(value, value - spread, value + spread, n)


def grouped(kind: str, metrics: dict[str, float], shift: float, **extra: object) -> MetricTable:
    """A section whose group g has each metric's value plus shift * index; 'tiny' is flagged."""
    by_group = {g: {m: est(v + shift * i) for m, v in metrics.items()} for i, g in enumerate(GROUPS)}
    sizes = {"women": 40, "men": 38, "tiny": 3}
    overall = {m: est(v, n=81) for m, v in metrics.items()}
    return MetricTable(kind, overall, by_group, sizes, flagged=["tiny"], **extra)  # type: ignore[arg-type]


def reliability(offset: float) -> dict[str, list[float | None]]:
    """A reliability curve with an empty bin."""
    xs = [0.05 + 0.1 * i for i in range(10)]
    return {
        "x": [x if i != 3 else None for i, x in enumerate(xs)],
        "y": [min(1.0, x + offset) if i != 3 else None for i, x in enumerate(xs)],
        "count": [5] * 10,
        "edges": [i / 10 for i in range(11)],
    }


def sections(shift: float) -> dict[str, MetricTable]:
    """One section of every kind, values moved by `shift` so runs differ."""
    utility = grouped(
        "utility",
        {"accuracy": 0.8 + shift, "f1": 0.7 + shift, "fpr": 0.1},
        0.05,
        summary={
            "worst_group_accuracy": est(0.78 + shift),
            "best_worst_gap": est(0.05),
            "dp_difference": est(None),
        },
        labels={"worst_group": "women"},
    )
    calibration = grouped(
        "calibration",
        {"ece": 0.1 - shift, "brier": 0.2},
        0.02,
        summary={"worst_group_ece": est(0.12), "ece_gap": est(0.02)},
        curves={f"reliability/{g}": reliability(shift) for g in ("overall", *GROUPS)},
    )
    fpr = [0.0, 0.001, 0.01, 0.1, 0.5, 1.0]
    membership = grouped(
        "membership",
        {"auc": 0.55 + shift, "tpr_at_1pct_fpr": 0.02},
        0.01,
        summary={"worst_group_auc": est(0.56), "auc_gap": est(0.02)},
        curves={
            "roc/overall": {"x": fpr, "y": [0.0, 0.01, 0.03, 0.2, 0.6, 1.0]},
            "roc/women": {"x": fpr, "y": fpr},
        },
    )
    ratios = {"x": [0, 1, 2, 3], "y": [0.5 + shift, 0.2, 0.2, 0.1 - shift]}
    generation = grouped(
        "generation",
        {"pro": 0.5, "anti": 0.2, "neutral": 0.2, "unknown": 0.1, "pro_minus_anti": 0.3 + shift},
        0.0,
        curves={"ratios/overall": ratios, "ratios/women": ratios},
    )
    shares = {
        "x": [0, 1, 2],
        "y": [0.4, 0.4 + shift, 0.2 - shift],
        "low": [0.3, None, 0.1],
        "high": [0.5] * 3,
    }
    probe = MetricTable(
        "probe",
        {"flip_rate": est(0.3 + shift)},
        {
            t: {"share_man": est(0.4), "share_woman": est(0.4), "flip_rate": est(0.3)}
            for t in ("yes_no", "letters")
        },
        curves={"shares/yes_no": shares, "shares/letters": shares},
        labels={"shares/yes_no": "man,woman,unknown"},
    )
    benchmark = MetricTable(
        "benchmark",
        {"stereotype_score": est(0.6 + shift)},
        {"gender": {"stereotype_score": est(0.62)}, "race": {"stereotype_score": est(0.58)}},
    )
    return {
        "utility/test": utility,
        "calibration/test": calibration,
        "membership/loss": membership,
        "generation/occupations": generation,
        "probe/answer_order": probe,
        "benchmark/crows_pairs": benchmark,
    }


def make_audit() -> AuditResult:
    """Two runs (the second's name needs escaping); the second lacks the benchmark section."""
    base = RunAudit("base", "none", "tiny-bert", "identity", "classification", "runs/base", sections(0.0))
    tuned = sections(0.04)
    tuned.pop("benchmark/crows_pairs")
    lora = RunAudit("<b>lora</b> & co", "lora", "tiny-bert", "identity", "classification", "runs/lora", tuned)
    lora.notes.append("benchmarks skipped: <no model>")
    return AuditResult([base, lora], options={"min_group_size": 20, "ci_level": 0.95})


class _Images(HTMLParser):
    """Collects <img> sources and every src/href attribute value."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.references: list[str] = []
        self.plot_kinds: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "figure":
            self.plot_kinds.append(values.get("data-plot") or "")
        self.references += [v or "" for k, v in attrs if k in ("src", "href")]


@pytest.fixture(scope="module")
def page() -> str:
    """The rendered HTML of the two-run audit."""
    return render_html(make_audit())


def _parsed(page: str) -> _Images:
    parser = _Images()
    parser.feed(page)
    return parser


def test_main_table_has_both_runs_and_a_delta_column(page: str) -> None:
    table = re.search(r'<table id="main-table">.*?</table>', page, re.S)
    assert table is not None
    header = re.search(r"<thead>(.*?)</thead>", table.group(0), re.S).group(1)
    assert ">base<" in header and "&lt;b&gt;lora&lt;/b&gt; &amp; co" in header
    assert "Δ vs base" in header
    row = re.search(
        r'<tr data-section="utility/test" data-metric="accuracy">(.*?)</tr>', table.group(0), re.S
    )
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert cells[2].startswith('0.800 <span class="ci">[0.750, 0.850]</span>')
    assert "n=81" in cells[2]
    assert cells[-1] == "+0.040"


def test_every_image_is_an_inline_png(page: str) -> None:
    parsed = _parsed(page)
    assert parsed.images
    for src in parsed.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :], validate=True).startswith(PNG_SIGNATURE)
    assert set(parsed.plot_kinds) >= PLOT_KINDS
    assert len(parsed.images) == len(parsed.plot_kinds)


def test_no_external_resources(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert all(ref.startswith("data:") for ref in _parsed(page).references)
    assert "<script" not in page and "<link" not in page


def test_text_is_escaped(page: str) -> None:
    assert "<b>lora</b>" not in page
    assert "&lt;b&gt;lora&lt;/b&gt; &amp; co" in page
    assert "benchmarks skipped: &lt;no model&gt;" in page


def test_missing_values_render_as_dash(page: str) -> None:
    row = re.search(
        r'<tr class="summary" data-section="utility/test" data-metric="dp_difference">(.*?)</tr>', page
    )
    assert row is not None and row.group(1).count("–") >= 3  # both runs and the Δ
    benchmark = re.search(r'data-metric="stereotype_score">(.*?)</tr>', page).group(1)
    assert re.findall(r"<td[^>]*>(.*?)</td>", benchmark)[-1] == "–"


def test_flagged_groups_and_notes(page: str) -> None:
    assert 'class="group flagged" data-group="tiny"' in page
    assert "min_group_size = 20" in page
    assert "no section benchmark/crows_pairs" in page
    assert page.count('class="audit-section"') == 6
    assert 'id="section-utility-test"' in page


def test_markdown_has_pipe_table_with_runs() -> None:
    text = render_markdown(make_audit())
    header = next(line for line in text.splitlines() if line.startswith("| Section"))
    assert "| base |" in header and "\\<b\\>lora\\</b\\> & co" in header and "Δ" in header
    assert header.count("|") == 6
    rows = [line for line in text.splitlines() if line.startswith("| `utility/test` | `accuracy`")]
    assert rows == [
        "| `utility/test` | `accuracy` | 0.800 [0.750, 0.850] (n=81) | 0.840 [0.790, 0.890] (n=81) | +0.040 |"
    ]
    assert "### `calibration/test`" in text and "ece 0.100 [0.050, 0.150]" in text


def test_main_rows_pick_key_and_summary_metrics() -> None:
    rows = main_rows(make_audit())
    utility = [(r.metric, r.summary) for r in rows if r.section == "utility/test"]
    assert utility == [
        ("accuracy", False),
        ("f1", False),
        ("worst_group_accuracy", True),
        ("best_worst_gap", True),
        ("dp_difference", True),
    ]
    benchmark = next(r for r in rows if r.section == "benchmark/crows_pairs")
    assert benchmark.metric == "stereotype_score" and benchmark.deltas == {"<b>lora</b> & co": None}


def test_plots_are_pngs_and_shares_use_labels() -> None:
    tables = {"a": sections(0.0)["probe/answer_order"], "b": sections(0.1)["probe/answer_order"]}
    assert plots.share_categories(tables, "shares/yes_no", 3) == ["man", "woman", "unknown"]
    assert plots.share_categories(tables, "shares/letters", 3) == ["0", "1", "2"]
    roc = {"overall": {"a": {"x": [0.0, 0.5, 1.0], "y": [0.0, 0.7, 1.0]}}}
    assert plots.roc_curves(roc, log_fpr=False).startswith(PNG_SIGNATURE)
    kinds = [p.kind for p in plots.section_plots(tables)]
    assert kinds == ["group-bars", "shares"]
    assert plots.primary_metric(tables) == "flip_rate"
    calibration = sections(0.0)["calibration/test"]
    assert plots.primary_metric({"a": calibration}) == "ece"


def test_section_without_groups_or_curves_has_no_figures() -> None:
    table = MetricTable("benchmark", {"score": est(0.5)})
    run = RunAudit("only", "lora", "m", "d", "classification", "r", {"benchmark/x": table})
    page = render_html(AuditResult([run]))
    assert "<img" not in page and 'id="main-table"' in page and "Δ" not in page


def test_empty_audit_renders() -> None:
    assert 'id="empty"' in render_html(AuditResult([]))
    assert "No runs" in render_markdown(AuditResult([]))


def test_write_report_writes_three_files(tmp_path: Path, page: str) -> None:
    paths = write_report(make_audit(), tmp_path / "out")
    assert {p.name for p in paths.values()} == {"results.json", "report.html", "report.md"}
    assert all(p.is_file() for p in paths.values())
    assert paths["html"].read_text() == page
    assert load_audit(tmp_path / "out").runs[1].name == "<b>lora</b> & co"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def _constant_run() -> RunResult:
    """A run whose classifier gives every example P(positive) ~ 0.22 and predicts class 0."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"id": [str(i) for i in range(80)], "split": "test", "label": rng.integers(0, 2, 80)}
    )
    frame["prob_1"] = 0.22 + rng.normal(0, 1e-3, 80)
    frame["prob_0"], frame["pred"], frame["loss"] = 1 - frame["prob_1"], 0, 0.6
    frame["women"], frame["men"] = np.arange(80) < 40, np.arange(80) >= 40
    table = utility_table(frame, ["women", "men"], min_group_size=20, n_boot=20)
    return RunResult("flat", "lora", "tiny-bert", "identity", "classification", {"test": table})


def _printed(table: Any) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return " ".join(console.export_text().split())  # captions wrap at the table's width


def test_terminal_tables_name_a_constant_predictor() -> None:
    run = _constant_run()
    text = _printed(run_table(run))
    assert "constant predictor: predicts class 0 for every example" in text
    assert "women" in text and "0.000" in text  # positive rate
    compared = _printed(comparison_table([run, run], "test", "accuracy"))
    assert "flat: constant predictor: predicts class 0 for every example" in compared


def test_the_terminal_table_of_a_generation_run_shows_exact_match_and_pass_at_k() -> None:
    overall = {"loss": Estimate(0.55, n=12), "perplexity": Estimate(1.74, n=12)}
    overall |= {"exact_match": Estimate(0.25, n=12), "pass_at_1": Estimate(0.125, n=12)}
    table = MetricTable("utility", overall=overall)
    text = _printed(run_table(RunResult("asdiv", "ba-lora", "m", "asdiv", "causal_lm", {"test": table})))
    assert "exact_match" in text and "0.250" in text and "pass_at_1" in text and "0.125" in text


def test_reports_name_a_constant_predictor_and_the_brier_definition() -> None:
    run = _constant_run()
    table = run.splits["test"]
    audit = AuditResult([RunAudit("flat", "lora", "m", "d", "classification", "r", {"utility/test": table})])
    note = "constant predictor: predicts class 0 for every example"
    assert f"  - note: utility/test: {note}" in render_markdown(audit)  # under the run, at the top
    assert f'<p class="note table-note">{note}</p>' in render_html(audit)
    assert f"<strong>flat</strong>: utility/test: {note}</li>" in render_html(audit)
    calibration = sections(0.0)["calibration/test"]
    calibration.labels["brier"] = BRIER_DEFINITION
    audit.runs[0].sections["calibration/test"] = calibration
    assert "sum over classes of (p\\_k" in render_markdown(audit)
    assert "sum over classes of (p_k - 1[y = k])^2" in render_html(audit)


def pixels(png: bytes) -> np.ndarray:
    """The RGB pixels of a PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "RGB"  # opaque figures: no alpha channel
        return np.asarray(image)


def test_reused_canvases_draw_the_same_pixels_as_fresh_figures() -> None:
    """A report's shared canvases leave nothing of one figure in the next: each equals a fresh drawing."""
    first = {"a": sections(0.0)["calibration/test"], "b": sections(0.1)["calibration/test"]}
    second = {"c": sections(0.3)["utility/test"]}
    canvases = plots.Canvases()
    reused = [p.png for t in (first, second, first) for p in plots.section_plots(t, canvases=canvases)]
    fresh = [p.png for t in (first, second, first) for p in plots.section_plots(t)]
    assert len(reused) == len(fresh) == 5  # group bars and reliability, group bars, then both again
    for drawn, alone in zip(reused, fresh, strict=True):
        assert np.array_equal(pixels(drawn), pixels(alone))
    assert not np.array_equal(pixels(reused[0]), pixels(reused[2]))  # different bars, same canvas
