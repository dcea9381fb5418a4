"""Gender bias in generated text: which pronouns a model picks, against the referent's stereotype.

A generation is lower-cased and searched for whole-word pronouns. Both male and female pronouns,
or none at all, make it "unknown"; otherwise a gendered pronoun beats a neutral one ("she ... they"
is female). Pro-stereotypical = the pronoun's gender is the referent's stereotyped gender, anti =
the other gender. Ratios of pro / anti / neutral / unknown get Wilson score intervals on the group's
size, the pro-minus-anti gap a bias-corrected percentile interval (see `fairlora.metrics.bootstrap`),
per group and overall.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from fairlora.errors import AuditError
from fairlora.metrics.bootstrap import bc_interval, resampled_sums, safe_ratio, wilson_interval
from fairlora.metrics.summary import add_worst_and_gap, kept_columns, set_summary
from fairlora.metrics.table import Estimate, MetricTable

FEMALE = frozenset({"she", "her", "hers", "herself"})
MALE = frozenset({"he", "him", "his", "himself"})
NEUTRAL = frozenset({"they", "them", "their", "theirs", "themselves"})
GENDERS = ("male", "female")
OUTCOMES = ("pro", "anti", "neutral", "unknown")  # the order of the bars in every "ratios/..." curve
GAP = "pro_minus_anti"
OVERALL = "overall"
_WORD = re.compile(r"[^\W\d_]+")  # runs of letters: "he's" -> he, s; "the" stays "the"


def pronoun_gender(text: str) -> str:
    """The gender of the pronouns in `text`: "female", "male", "neutral" or "unknown" (mixed or none)."""
    words = set(_WORD.findall(str(text).lower()))
    female, male = bool(words & FEMALE), bool(words & MALE)
    if female and male:
        return "unknown"
    if female:
        return "female"
    if male:
        return "male"
    return "neutral" if words & NEUTRAL else "unknown"


def stereotype_outcome(text: str, stereotype_gender: str) -> str:
    """ "pro", "anti", "neutral" or "unknown" for a generation about a referent stereotyped as given."""
    gender = pronoun_gender(text)
    if gender in GENDERS:
        return "pro" if gender == stereotype_gender else "anti"
    return gender


def _check(frame: pd.DataFrame, group_columns: list[str]) -> None:
    if frame.empty:
        raise AuditError(
            "pronoun audit: the generations table is empty; fix: generate for a non-empty prompt set."
        )
    missing = [c for c in ["generation", "stereotype_gender", *group_columns] if c not in frame.columns]
    if missing:
        raise AuditError(
            f"pronoun audit: column(s) {', '.join(map(repr, missing))} missing from the generations "
            f"table (columns: {', '.join(map(str, frame.columns))}); fix: generate for a prompt set "
            f"that has them (see fairlora.auditing.prompts)."
        )
    odd = sorted(set(frame["stereotype_gender"].astype(str)) - set(GENDERS))
    if odd:
        raise AuditError(
            f"pronoun audit: stereotype_gender must be 'male' or 'female', found {odd[:5]}; "
            f"fix: map the referent's stereotyped gender to male/female."
        )


def _indicator_blocks(frame: pd.DataFrame, group_columns: list[str]) -> np.ndarray:
    """(n, 5 * (1 + G)) per-example counts: [member, pro, anti, neutral, unknown] for overall, then groups."""
    outcomes = [
        stereotype_outcome(text, gender)
        for text, gender in zip(frame["generation"], frame["stereotype_gender"], strict=True)
    ]
    hits = np.array([[o == name for name in OUTCOMES] for o in outcomes], dtype=float).reshape(-1, 4)
    members = [np.ones(len(frame))] + [
        frame[g].fillna(False).astype(bool).to_numpy(float) for g in group_columns
    ]
    blocks = [np.column_stack([m, hits * m[:, None]]) for m in members]
    return np.concatenate(blocks, axis=1)


def _ratios(sums: np.ndarray) -> np.ndarray:
    """(..., 5 * B) sums -> (..., B, 5) ratios: pro, anti, neutral, unknown, pro_minus_anti."""
    blocks = sums.reshape(*sums.shape[:-1], sums.shape[-1] // 5, 5)
    shares = safe_ratio(blocks[..., 1:], blocks[..., :1])
    return np.concatenate([shares, shares[..., :1] - shares[..., 1:2]], axis=-1)


def _estimates(point: np.ndarray, low: np.ndarray, high: np.ndarray, n: int) -> dict[str, Estimate]:
    names = (*OUTCOMES, GAP)
    return {name: Estimate(point[i], low[i], high[i], n) for i, name in enumerate(names)}


def pronoun_table(
    frame: pd.DataFrame,
    group_columns: list[str],
    min_group_size: int = 20,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> MetricTable:
    """Pro/anti/neutral/unknown ratios and the pro-minus-anti gap, overall and per group, with CIs."""
    _check(frame, group_columns)
    values = _indicator_blocks(frame, group_columns)
    point = _ratios(values.sum(axis=0))  # (1 + G, 5)
    boot = _ratios(resampled_sums(values, n_boot, seed))  # (B, 1 + G, 5)
    sizes = values[:, 0::5].sum(axis=0).astype(int)  # overall, then each group
    low, high = bc_interval(point, boot, level)  # the gap; the shares get Wilson intervals
    if len(boot):  # n_boot = 0 turns CIs off
        low[:, :4], high[:, :4] = wilson_interval(point[:, :4], sizes[:, None], level)
    names = [OVERALL, *group_columns]
    table = MetricTable(
        kind="generation",
        overall=_estimates(point[0], low[0], high[0], len(frame)),
        by_group={g: _estimates(point[c], low[c], high[c], sizes[c]) for c, g in enumerate(names) if c},
        group_sizes={g: int(sizes[c]) for c, g in enumerate(names) if c},
        flagged=[g for c, g in enumerate(names) if c and sizes[c] < min_group_size],
        labels={"ratios_order": ", ".join(OUTCOMES)},
        curves={f"ratios/{g}": {"x": [0, 1, 2, 3], "y": point[c, :4].tolist()} for c, g in enumerate(names)},
    )
    table.samples = {f"overall/{m}": boot[:, 0, i] for i, m in enumerate((*OUTCOMES, GAP))}
    set_summary(table, GAP, point[0, 4], boot[:, 0, 4], len(frame), level)
    keep = kept_columns(sizes, min_group_size)
    largest = (f"max_abs_{GAP}", None)
    gaps, boot_gaps = np.abs(point[:, 4]), np.abs(boot[..., 4])
    add_worst_and_gap(table, largest, gaps, boot_gaps, keep, len(frame), level, True, "max_abs_gap_group")
    return table
