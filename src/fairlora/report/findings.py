"""What a reader needs first: per run, the worst groups, the largest disparities and the flagged problems.

Each finding is one plain sentence built from an audit's tables (the figures with their CIs and n);
renderers pass `name` to mark up group and section names (e.g. code spans in Markdown) and `free` to
escape free text taken from the tables' notes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fairlora.auditing.results import AuditResult, RunAudit
from fairlora.metrics.table import Estimate, MetricTable
from fairlora.report.formatting import fmt_estimate, fmt_value, md_escape

FOUR_FIFTHS = 0.8
FOUR_FIFTHS_NOTE = "four-fifths rule"  # the utility table's note starts so (metrics.utility)
SKIPPED_SPLITS = ("train",)  # figures on the training rows describe the fit, not the groups' outcomes
CONSTANT_MARKS = ("constant predictor", "constant score")
GROUP_NOTE = re.compile(r"^group (.+?): (.+)$", re.S)  # a note about one group of a section
SUPPORT_WORDS = {"fpr": "negatives", "tnr": "negatives", "tpr": "positives", "fnr": "positives"}
METRIC_NAMES = {"fpr": "FPR", "tpr": "TPR", "auc": "AUC", "ece": "ECE", "positive_rate": "positive-rate"}


@dataclass(frozen=True)
class Look:
    """Where to look in a section kind: the per-group metric, its wording, and which end is worst."""

    metric: str
    phrase: str  # e.g. "Worst group by accuracy"
    gap: str | None  # summary figure holding the max - min gap with its CI
    gap_phrase: str
    highest_is_worst: bool


LOOKS = {
    "utility": (
        Look("accuracy", "Worst group by accuracy", "best_worst_gap", "Largest accuracy gap", False),
        Look("loss", "Worst group by loss", "loss_gap", "Largest loss gap", True),
    ),
    "auc": (Look("auc", "Worst group by subgroup AUC", "auc_gap", "Largest subgroup AUC gap", False),),
    "calibration": (Look("ece", "Worst-calibrated group by ECE", "ece_gap", "Largest ECE gap", True),),
    "membership": (
        Look("auc", "Most exposed group by attack AUC", "auc_gap", "Largest attack AUC gap", True),
    ),
}


@dataclass(frozen=True)
class Finding:
    """One sentence about a run; `section` is the section key ("" for the whole run)."""

    kind: str  # worst-group | gap | parity | odds | constant-predictor | small-groups | four-fifths | note
    section: str
    text: str


@dataclass
class RunFindings:
    """The findings of one run: sentences on its groups, then its flagged problems."""

    run: str
    sentences: list[Finding] = field(default_factory=list)
    flags: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class Markup:
    """How names (groups, sections, runs) and free text from the tables are written."""

    name: Callable[[str], str] = str
    free: Callable[[str], str] = str


def min_group_size(options: dict[str, Any]) -> Any:
    """The audit's min_group_size from its recorded options (top level or nested), or None."""
    if "min_group_size" in options:
        return options["min_group_size"]
    nested = (v.get("min_group_size") for v in options.values() if isinstance(v, dict))
    return next((v for v in nested if v is not None), None)


def _finite(estimate: Estimate | None) -> bool:
    return estimate is not None and estimate.value is not None and math.isfinite(estimate.value)


def _ranked(table: MetricTable, metric: str) -> list[tuple[str, Estimate]]:
    """The groups not flagged as small with a finite `metric`, highest value first."""
    found = [
        (g, row[metric]) for g, row in table.by_group.items() if g not in table.flagged and metric in row
    ]
    return sorted(((g, e) for g, e in found if _finite(e)), key=lambda item: -item[1].value)


def _n(estimate: Estimate, metric: str) -> str:
    word = SUPPORT_WORDS.get(metric)
    return f"n={estimate.n}" + (f" {word}" if word else "")


def _worst(table: MetricTable, look: Look, ranked: list[tuple[str, Estimate]]) -> tuple[str, Estimate]:
    """The audit's labelled worst group where it holds the metric, else the extreme of `ranked`."""
    label = table.labels.get("worst_group")
    estimate = table.by_group.get(label or "", {}).get(look.metric)
    if label and label not in table.flagged and _finite(estimate):
        return label, estimate
    return ranked[0] if look.highest_is_worst else ranked[-1]


def _worst_sentence(key: str, table: MetricTable, look: Look, markup: Markup) -> list[Finding]:
    ranked = _ranked(table, look.metric)
    if not ranked:
        return []
    group, estimate = _worst(table, look, ranked)
    overall = table.overall.get(look.metric)
    context = f" (overall {fmt_value(overall.value)})" if _finite(overall) else ""
    text = (
        f"{look.phrase}: {markup.name(group)} {fmt_estimate(estimate)}, {_n(estimate, look.metric)}{context}."
    )
    return [Finding("worst-group", key, text)]


def _between(ranked: list[tuple[str, Estimate]], metric: str, markup: Markup) -> str:
    (high, top), (low, bottom) = ranked[0], ranked[-1]
    if top.value == bottom.value:
        return f"(every group at {fmt_value(top.value)})"
    return (
        f"between {markup.name(high)} ({fmt_value(top.value)}, {_n(top, metric)}) "
        f"and {markup.name(low)} ({fmt_value(bottom.value)}, {_n(bottom, metric)})"
    )


def _gap_text(table: MetricTable, summary: str | None, ranked: list[tuple[str, Estimate]]) -> str:
    """The gap with the audit's CI where it holds the same figure, else the point gap."""
    stored = table.summary.get(summary or "")
    point = ranked[0][1].value - ranked[-1][1].value
    if _finite(stored) and math.isclose(stored.value, point, abs_tol=5e-4):
        return fmt_estimate(stored)
    return f"{fmt_value(point)} (no CI)"


def _gap_sentence(
    key: str, table: MetricTable, metric: str, phrase: str, summary: str | None, markup: Markup
) -> Finding | None:
    ranked = _ranked(table, metric)
    if len(ranked) < 2:
        return None
    text = f"{phrase} {_gap_text(table, summary, ranked)} {_between(ranked, metric, markup)}"
    return Finding("gap", key, text + ".")


def _ratio(table: MetricTable, name: str, wording: str) -> str:
    ratio = table.summary.get(name)
    if not _finite(ratio):
        return ""
    below = f", below {FOUR_FIFTHS}" if ratio.value < FOUR_FIFTHS else ""
    return f"; {wording} ratio {fmt_estimate(ratio)}{below}"


def _odds_sentence(key: str, table: MetricTable, markup: Markup) -> Finding | None:
    """The larger of the TPR and FPR gaps: the equalized-odds difference, with the ratio where given."""
    gaps = [(m, _ranked(table, m)) for m in ("fpr", "tpr")]
    gaps = [(m, r) for m, r in gaps if len(r) >= 2]
    if not gaps:
        return None
    metric, ranked = max(gaps, key=lambda item: item[1][0][1].value - item[1][-1][1].value)
    size = f"{_gap_text(table, 'eo_difference', ranked)} {_between(ranked, metric, markup)}"
    odds = _ratio(table, "eo_ratio", "equalized-odds")
    return Finding(
        "odds", key, f"Largest {METRIC_NAMES[metric]} gap {size} (equalized-odds difference{odds})."
    )


def _parity_sentence(key: str, table: MetricTable, markup: Markup) -> Finding | None:
    ranked = _ranked(table, "positive_rate")
    if len(ranked) < 2:
        return None
    size = f"{_gap_text(table, 'dp_difference', ranked)} {_between(ranked, 'positive_rate', markup)}"
    parity = _ratio(table, "dp_ratio", "demographic-parity")
    return Finding("parity", key, f"Positive-rate gap {size} (demographic-parity difference{parity}).")


def section_sentences(key: str, table: MetricTable, markup: Markup = Markup()) -> list[Finding]:
    """The worst group and the largest gaps of one section, one sentence each (none for other kinds)."""
    found: list[Finding | None] = []
    for look in LOOKS.get(table.kind, ()):
        if not _ranked(table, look.metric):
            continue
        found += _worst_sentence(key, table, look, markup)
        found.append(_gap_sentence(key, table, look.metric, look.gap_phrase, look.gap, markup))
        break
    if table.kind == "utility":
        found += [_odds_sentence(key, table, markup), _parity_sentence(key, table, markup)]
    return [f for f in found if f is not None]


def _four_fifths(key: str, table: MetricTable, markup: Markup) -> Finding | None:
    """A violation of the four-fifths rule: the audit's label, else a demographic-parity ratio below 0.8."""
    ratio = table.summary.get("dp_ratio")
    label = table.labels.get("four_fifths")
    violated = label == "violated" if label is not None else _finite(ratio) and ratio.value < FOUR_FIFTHS
    if not violated:
        return None
    figure = f": demographic-parity ratio {fmt_estimate(ratio)}" if _finite(ratio) else ""
    ranked = _ranked(table, "positive_rate")
    rates = f", positive rate {_between(ranked, 'positive_rate', markup)}" if len(ranked) >= 2 else ""
    return Finding(
        "four-fifths",
        key,
        f"{markup.name(key)}: four-fifths rule violated{figure} (below {FOUR_FIFTHS}){rates}.",
    )


def _note_kind(note: str) -> str:
    """constant-predictor, info (what was audited or skipped, not a problem) or note."""
    if any(mark in note for mark in CONSTANT_MARKS):
        return "constant-predictor"
    return "info" if " skipped" in note or note.startswith(("evaluation set ", "classes: ")) else "note"


def _small_groups(run: RunAudit, threshold: Any, markup: Markup) -> list[Finding]:
    """One sentence per set of small groups (n as in the first section flagging them), naming the sections."""
    by_set: dict[tuple[str, ...], list[str]] = {}
    sizes: dict[tuple[str, ...], dict[str, int]] = {}
    for key, table in run.sections.items():
        if table.flagged:
            by_set.setdefault(tuple(table.flagged), []).append(key)
            sizes.setdefault(tuple(table.flagged), table.group_sizes)
    size = f" = {threshold}" if threshold is not None else ""
    out = []
    for groups, keys in by_set.items():
        names = ", ".join(f"{markup.name(g)} (n={sizes[groups].get(g, '?')})" for g in groups)
        where = ", ".join(map(markup.name, keys))
        text = f"Below min_group_size{size}: {names} in {where}; shown in the tables but left out of the "
        out.append(Finding("small-groups", keys[0], text + "worst-group, gap and difference figures."))
    return out


def _merged_notes(notes: list[tuple[str, str]], markup: Markup) -> list[Finding]:
    """Table notes as flags: "group G: <note>" of one section gathered into one flag, and a note
    repeated in several sections (e.g. train and test) given once with every section named."""
    by_note: dict[str, dict[str, list[str]]] = {}  # note -> section -> groups ([] for the whole table)
    for key, note in notes:
        found = GROUP_NOTE.match(note)
        rest, group = (found.group(2), found.group(1)) if found else (note, None)
        groups = by_note.setdefault(rest, {}).setdefault(key, [])
        groups += [group] if group else []
    by_text: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for rest, sections in by_note.items():
        for key, groups in sections.items():
            by_text.setdefault((rest, tuple(groups)), []).append(key)
    flags = []
    for (rest, groups), keys in by_text.items():
        where = ", ".join(map(markup.name, keys))
        who = f" in {len(groups)} groups ({', '.join(map(markup.name, groups))})" if groups else ""
        head, _, tail = rest.partition(": ") if groups else (rest, "", "")
        text = f"{where}: {markup.free(head)}{who}" + (f": {markup.free(tail)}" if tail else "")
        flags.append(Finding(_note_kind(rest), keys[0], text))
    return flags


def run_flags(run: RunAudit, threshold: Any = None, markup: Markup = Markup()) -> list[Finding]:
    """The run's problems: constant predictors, four-fifths violations, small groups, then other notes."""
    flags: list[Finding] = []
    notes: list[tuple[str, str]] = []
    for key, table in run.sections.items():
        violation = _four_fifths(key, table, markup) if _in_findings(key) else None
        flags += [violation] if violation else []
        covered = violation is not None or not _in_findings(key)  # train: no fairness verdicts
        notes += [(key, n) for n in table.notes if not (covered and n.startswith(FOUR_FIFTHS_NOTE))]
    flags += _merged_notes(notes, markup) + _small_groups(run, threshold, markup)
    flags += [Finding(_note_kind(note), "", markup.free(note)) for note in run.notes]
    order = ("constant-predictor", "four-fifths", "small-groups", "note", "info")
    return sorted(flags, key=lambda f: order.index(f.kind))


def _in_findings(key: str) -> bool:
    return key.split("/", 1)[-1] not in SKIPPED_SPLITS


def run_findings(run: RunAudit, threshold: Any = None, markup: Markup = Markup()) -> RunFindings:
    """Sentences on the worst groups and largest gaps of every evaluation section, and the run's flags."""
    sentences = [
        finding
        for key, table in run.sections.items()
        if _in_findings(key)
        for finding in section_sentences(key, table, markup)
    ]
    return RunFindings(run.name, sentences, run_flags(run, threshold, markup))


def audit_findings(audit: AuditResult, markup: Markup = Markup()) -> list[RunFindings]:
    """The findings of every run of the audit, in the audit's run order."""
    threshold = min_group_size(audit.options)
    return [run_findings(run, threshold, markup) for run in audit.runs]


def _code(text: str) -> str:
    return "`" + " ".join(str(text).replace("`", "'").split()) + "`"


MARKDOWN_MARKUP = Markup(name=_code, free=md_escape)


def findings_markdown(audit: AuditResult, level: str = "95%") -> list[str]:
    """The findings as Markdown lines: per run its flagged problems, then one bullet per sentence."""
    lines = [
        "## Findings",
        "",
        "Per run: problems flagged, then for each evaluation set the worst group and the largest gaps "
        f"between groups (groups below min_group_size left out), with {level} CIs and the n each figure "
        "rests on.",
        "",
    ]
    for found in audit_findings(audit, MARKDOWN_MARKUP):
        lines += [f"### {md_escape(found.run)}", ""]
        problems = [f for f in found.flags if f.kind != "info"]
        lines += [f"- **Flagged:** {f.text}" for f in problems] or ["- No problems flagged."]
        lines += [f"- **Note:** {f.text}" for f in found.flags if f.kind == "info"]
        lines += [f"- {_code(f.section)}: {f.text}" for f in found.sentences]
        lines.append("")
    return lines
