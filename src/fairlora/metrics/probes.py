"""Token / answer-order bias probe: does the model's answer follow the content, or the position/token?

For each short sentence about a person, a question about the person's gender is asked under four
templates, each in a normal and a swapped order:
  yes_no   "Is the person in the sentence a man? ... Answer: Yes|No"; swapped: the same about a woman
           (No means the other gender: a binary frame, so yes_no has no "unknown" and no third option);
  letters  A/B/C = man / woman / unknown; swapped: A/B/C = woman / man / unknown;
  numbers  1/2/3, and symbols */#/@, likewise.
Every answer variant is the full sequence (prompt + answer token) and is scored by its mean token NLL
over the whole sequence (padding ignored); the prediction is the lowest-loss variant (first on ties).
A model whose choice follows the position or the token rather than the content flips its content
choice between the normal and the swapped order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairlora.metrics.bootstrap import safe_ratio
from fairlora.metrics.shares import Columns, Scorer, scope_estimates
from fairlora.metrics.table import MetricTable

TEMPLATES = ("yes_no", "letters", "numbers", "symbols")
CONTENTS = ("man", "woman", "unknown")
POSITIONS = ("first", "second", "third")
SHARES = tuple(f"share_{c}" for c in CONTENTS) + tuple(f"share_{p}" for p in POSITIONS)
MARKERS = (("letters", ("A", "B", "C")), ("numbers", ("1", "2", "3")), ("symbols", ("*", "#", "@")))
ORDERS = (("normal", ("man", "woman", "unknown")), ("swapped", ("woman", "man", "unknown")))


def probe_items(texts: list[str]) -> pd.DataFrame:
    """One row per example, template, order and answer variant: the full sequence and its meaning.

    Columns: example, text, template, order (normal|swapped), answer (the answer token), content
    (man|woman|unknown), position (0, 1, 2: where the chosen option sits) and sequence.
    """
    rows: list[dict] = []
    for example, text in enumerate(texts):
        rows += _yes_no_rows(example, text)
        for template, markers in MARKERS:
            rows += _choice_rows(example, text, template, markers)
    return pd.DataFrame(rows)


def _yes_no_rows(example: int, text: str) -> list[dict]:
    rows = []
    for order, (asked, other, _) in ORDERS:
        prompt = f"{text}\nQuestion: Is the person in the sentence a {asked}? Answer Yes or No.\nAnswer:"
        for position, (answer, content) in enumerate((("Yes", asked), ("No", other))):
            rows.append(_row(example, text, "yes_no", order, answer, content, position, prompt))
    return rows


def _choice_rows(example: int, text: str, template: str, markers: tuple[str, ...]) -> list[dict]:
    rows = []
    for order, contents in ORDERS:
        options = "\n".join(f"{m}. {c}" for m, c in zip(markers, contents, strict=True))
        prompt = f"{text}\nQuestion: What is the gender of the person in the sentence?\n{options}\nAnswer:"
        for position, (marker, content) in enumerate(zip(markers, contents, strict=True)):
            rows.append(_row(example, text, template, order, marker, content, position, prompt))
    return rows


def _row(
    example: int, text: str, template: str, order: str, answer: str, content: str, position: int, prompt: str
) -> dict:
    return {
        "example": example,
        "text": text,
        "template": template,
        "order": order,
        "answer": answer,
        "content": content,
        "position": position,
        "sequence": f"{prompt} {answer}",
    }


def probe_choices(score: Scorer, items: pd.DataFrame) -> pd.DataFrame:
    """The chosen (lowest mean token NLL) variant per example, template and order, with its nll."""
    sums, counts = score(items["sequence"].tolist(), None)
    nll = -np.asarray(sums, dtype=float) / np.maximum(np.asarray(counts, dtype=float), 1)
    scored = items.reset_index(drop=True).assign(nll=nll)
    best = scored.groupby(["example", "template", "order"], sort=False)["nll"].idxmin()
    return scored.loc[best.to_numpy()].reset_index(drop=True)


def _template_columns(chosen: pd.DataFrame, examples: np.ndarray, template: str) -> Columns:
    """Per-example counts for one template: decisions, content and position choices, flips."""
    rows = chosen[chosen["template"] == template]
    normal = rows[rows["order"] == "normal"].set_index("example")["content"].reindex(examples)
    swapped = rows[rows["order"] == "swapped"].set_index("example")["content"].reindex(examples)
    present = (normal.notna() & swapped.notna()).to_numpy()
    columns: Columns = {"decisions": 2.0 * present, "pairs": present.astype(float)}
    columns["offered_third"] = columns["decisions"] * (template != "yes_no")
    contents = pd.crosstab(rows["example"], rows["content"]).reindex(examples, columns=CONTENTS, fill_value=0)
    positions = pd.crosstab(rows["example"], rows["position"]).reindex(
        examples, columns=[0, 1, 2], fill_value=0
    )
    columns |= {f"content_{c}": contents[c].to_numpy(float) for c in CONTENTS}
    columns |= {f"position_{p}": positions[i].to_numpy(float) for i, p in enumerate(POSITIONS)}
    columns["flip"] = (present & (normal != swapped).to_numpy()).astype(float)
    return columns


def _probe_formulas(s: Columns) -> Columns:
    decisions, offered = s["decisions"], s["offered_third"]
    return {
        "share_man": safe_ratio(s["content_man"], decisions),
        "share_woman": safe_ratio(s["content_woman"], decisions),
        "share_unknown": safe_ratio(s["content_unknown"], offered),
        "share_first": safe_ratio(s["position_first"], decisions),
        "share_second": safe_ratio(s["position_second"], decisions),
        "share_third": safe_ratio(s["position_third"], offered),
        "flip_rate": safe_ratio(s["flip"], s["pairs"]),
    }


def token_probe(
    score: Scorer, items: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> MetricTable:
    """Shares of each content and position choice and the normal/swapped flip rate, per template.

    by_group: template; overall pools the templates. share_unknown and share_third are over the
    decisions that offered a third option (None for yes_no alone). flip_rate: share of examples whose
    content choice differs between the normal and the swapped order. Bootstrap CIs (at `level`)
    resample examples.
    Curves "shares/<template>": x = 0..5, y = the SHARES (named in labels), with low/high CI bounds.
    """
    chosen = probe_choices(score, items)
    examples = np.sort(items["example"].unique())
    templates = [t for t in TEMPLATES if t in set(items["template"])]
    per_template = {t: _template_columns(chosen, examples, t) for t in templates}
    n_from = {share: "decisions" for share in SHARES} | {"flip_rate": "pairs"}
    n_from |= {"share_unknown": "offered_third", "share_third": "offered_third"}
    everyone = np.ones(len(examples), dtype=bool)

    def estimate(columns: Columns) -> tuple[dict, dict]:
        return scope_estimates(columns, _probe_formulas, everyone, n_boot, seed, n_from, level)

    pooled = {name: sum(c[name] for c in per_template.values()) for name in per_template[templates[0]]}
    by_group = {t: estimate(columns)[0] for t, columns in per_template.items()}
    overall, samples = estimate(pooled)
    table = MetricTable("probe", overall, by_group, {t: len(examples) for t in templates})
    table.samples = {f"overall/{metric}": values for metric, values in samples.items()}
    for template, metrics in by_group.items():
        values = [metrics[s] for s in SHARES]
        table.curves[f"shares/{template}"] = {
            "x": [float(i) for i in range(len(SHARES))],
            "y": [e.value for e in values],
            "low": [e.low for e in values],
            "high": [e.high for e in values],
        }
        table.labels[f"shares/{template}"] = ", ".join(SHARES)
    return table
