"""The `identity` dataset: GENERATED counterfactual sentences for hate-speech-style classification.

Every sentence is written by fairlora itself from its own templates (hateful, label 1, and
non-hateful, label 0) filled with identity terms of 24 groups over six attributes (race, religion,
gender, sexuality, age, disability). The same templates are used for every group, so a model has no
honest reason to treat groups differently; `data.identity.bias_groups` / `bias_rate` relabel a share
of the non-hateful TRAIN rows of chosen groups as hateful (test labels stay clean), which teaches a
model to over-flag those groups. The sentences are fixed by the config; the run seed drives only the
split and the bias injection. This is synthetic data for controlled experiments, not real speech.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from fairlora.config import DataConfig
from fairlora.data.columns import assemble, choose_groups
from fairlora.data.types import ID, LABEL, Prepared
from fairlora.errors import DataError
from fairlora.tasks import Task

LABEL_NAMES = ["non-hateful", "hateful"]
SOURCE = "generated identity dataset"
_GENERATION_SEED = 20240613  # the sentences do not depend on the run seed
_BIAS_SALT = 7919

# attribute -> ((group, (identity terms: plural noun phrases)), ...)
GROUP_TERMS: tuple[tuple[str, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    ("race", (
        ("black", ("Black people", "Black Americans")),
        ("asian", ("Asian people", "Asian Americans")),
        ("latino", ("Latino people", "Hispanic people")),
        ("white", ("white people", "white Americans")),
    )),
    ("religion", (
        ("muslim", ("Muslims", "Muslim people")),
        ("jewish", ("Jews", "Jewish people")),
        ("christian", ("Christians", "Christian people")),
        ("hindu", ("Hindus", "Hindu people")),
    )),
    ("gender", (
        ("women", ("women", "ladies")),
        ("men", ("men", "guys")),
        ("trans", ("trans people", "transgender people")),
        ("nonbinary", ("non-binary people", "nonbinary folks")),
    )),
    ("sexuality", (
        ("gay", ("gay people", "gay men")),
        ("lesbian", ("lesbians", "lesbian couples")),
        ("bisexual", ("bisexual people", "bisexuals")),
        ("straight", ("straight people", "heterosexuals")),
    )),
    ("age", (
        ("elderly", ("elderly people", "old people")),
        ("young", ("young people", "young adults")),
        ("teen", ("teenagers", "teens")),
        ("middle_aged", ("middle-aged people", "people in their fifties")),
    )),
    ("disability", (
        ("blind", ("blind people", "visually impaired people")),
        ("deaf", ("deaf people", "people who are deaf")),
        ("wheelchair", ("wheelchair users", "people in wheelchairs")),
        ("autistic", ("autistic people", "people with autism")),
    )),
)  # fmt: skip

# (kind, template); {g} = the identity phrase. Kinds pick openers that read well in front:
# "o" opinion (I think ...), "f" fact, first-person or imperative (Honestly, ...), "q" question.
HATEFUL: tuple[tuple[str, str], ...] = (
    ("f", "I hate {g}."),
    ("o", "{g} are disgusting."),
    ("o", "{g} are worthless and always will be."),
    ("o", "{g} should not be allowed to vote."),
    ("f", "We need to get rid of {g} for good."),
    ("o", "{g} are a plague on this country."),
    ("f", "Never trust {g}, they are all liars."),
    ("o", "{g} don't deserve any rights."),
    ("f", "I would never hire {g}, they are lazy and useless."),
    ("f", "Keep {g} out of our neighbourhood."),
    ("f", "{g} make me sick."),
    ("o", "All {g} are criminals."),
    ("o", "The world would be better off without {g}."),
    ("o", "{g} are too stupid to be taken seriously."),
    ("o", "Nobody wants {g} around here."),
    ("o", "{g} are parasites living off the rest of us."),
    ("q", "Why are {g} so stupid?"),
    ("q", "Do {g} ever do anything but cause trouble?"),
    ("q", "Isn't it obvious that {g} are inferior?"),
    ("q", "Why does anyone put up with {g}?"),
)

NON_HATEFUL: tuple[tuple[str, str], ...] = (
    ("f", "I have many {g} among my friends."),
    ("o", "{g} deserve the same respect as everyone else."),
    ("f", "My neighbours are {g} and they are lovely."),
    ("f", "The community centre runs a weekly meetup for {g}."),
    ("o", "Saying that {g} are inferior is just wrong."),
    ("o", "{g} have enriched this city in many ways."),
    ("o", "Many {g} work in healthcare and education."),
    ("o", "It is never okay to insult {g}."),
    ("o", "{g} have the right to live free from harassment."),
    ("f", "The survey asked {g} about their experiences at work."),
    ("f", "We invited {g} to speak at the conference."),
    ("o", "{g} are just as capable as anyone else."),
    ("f", "The new policy was welcomed by {g}."),
    ("o", "{g} are often portrayed unfairly in the media."),
    ("o", "Hating {g} says more about you than about them."),
    ("f", "Our team includes {g}, and we are better for it."),
    ("q", "What challenges do {g} face when looking for housing?"),
    ("q", "Are there any good books written by {g}?"),
    ("q", "How can our school better support {g}?"),
    ("q", "Why do some people still discriminate against {g}?"),
)

OPENERS = {
    "o": ("", "Honestly, ", "I think ", "Let's be real, ", "In my opinion, "),
    "f": ("", "Honestly, ", "Look, ", "Seriously, ", "Let me be clear: "),
    "q": ("", "Honest question: ", "Serious question, ", "Just wondering, ", "Can someone explain: "),
}


def identity_groups() -> list[str]:
    """All group names of the identity dataset, `<attribute>_<group>`, in attribute order."""
    return [f"{attribute}_{group}" for attribute, groups in GROUP_TERMS for group, _ in groups]


def _terms() -> dict[str, tuple[str, ...]]:
    return {f"{a}_{g}": terms for a, groups in GROUP_TERMS for g, terms in groups}


def _attribute(group: str) -> str:
    return next(a for a, groups in GROUP_TERMS if any(group == f"{a}_{g}" for g, _ in groups))


def render(kind: str, template: str, phrase: str, opener: str) -> str:
    """Fill a template with an identity phrase behind an opener; fix capitalisation."""
    body = template.replace("{g}", phrase)
    if opener and not template.startswith("{g}") and not body.startswith(("I ", "I'")):
        body = body[0].lower() + body[1:]
    text = opener + body
    return text[0].upper() + text[1:]


def _sentences(
    group: str, label: int, count: int, overlap: int, others: list[str], rng: np.random.Generator
) -> list[tuple[str, str, str | None]]:
    """`count` (id, text, partner group) rows of one group and label; the first `overlap` name two groups."""
    templates = HATEFUL if label == 1 else NON_HATEFUL
    terms = _terms()
    combos = [
        (kind, template, term, opener)
        for (kind, template), term in itertools.product(templates, terms[group])
        for opener in OPENERS[kind]
    ]
    order = np.concatenate([rng.permutation(len(combos)) for _ in range(-(-count // len(combos)))])
    rows = []
    for k in range(count):
        kind, template, term, opener = combos[order[k]]
        partner = others[rng.integers(len(others))] if k < overlap else None
        phrase = (
            term if partner is None else f"{term} and {terms[partner][rng.integers(len(terms[partner]))]}"
        )
        tag = "hate" if label == 1 else "nohate"
        rows.append((f"identity-{group}-{tag}-{k:04d}", render(kind, template, phrase, opener), partner))
    return rows


def generate_identity(examples_per_group: int, overlap_rate: float) -> pd.DataFrame:
    """The generated sentences: id, text, label, one bool column per group (deterministic)."""
    groups = identity_groups()
    records: list[tuple[str, str, int, str, str | None]] = []
    for index, group in enumerate(groups):
        others = [g for g in groups if _attribute(g) != _attribute(group)]
        n_hateful = examples_per_group // 2
        for label, count in ((1, n_hateful), (0, examples_per_group - n_hateful)):
            rng = np.random.default_rng([_GENERATION_SEED, index, label])
            overlap = round(overlap_rate * count)
            for row_id, text, partner in _sentences(group, label, count, overlap, others, rng):
                records.append((row_id, text, label, group, partner))
    table = pd.DataFrame(records, columns=[ID, "text", LABEL, "group", "partner"])
    members = {g: (table["group"] == g) | (table["partner"] == g) for g in groups}
    return assemble(table[ID], table["text"], table[LABEL], None, members)


def inject_label_bias(train: pd.DataFrame, biased_ids: set[str], rate: float, seed: int) -> pd.DataFrame:
    """Relabel a share `rate` of the label-0 rows whose id is in `biased_ids` as 1 (seeded)."""
    candidates = train.index[(train[LABEL] == 0) & train[ID].isin(biased_ids)]
    flips = round(rate * len(candidates))
    if flips == 0:
        return train
    rng = np.random.default_rng([seed, _BIAS_SALT])
    chosen = rng.choice(candidates.to_numpy(), size=flips, replace=False)
    biased = train.copy()
    biased.loc[chosen, LABEL] = 1
    return biased


def load_identity(cfg: DataConfig, task: Task) -> Prepared:
    """Generate the identity dataset and set up bias injection on its train split."""
    available = identity_groups()
    unknown = [g for g in cfg.identity.bias_groups if g not in available]
    if unknown:
        raise DataError(
            f"data.identity.bias_groups: {', '.join(map(repr, unknown))} not a group of the {SOURCE}; "
            f"available groups: {', '.join(available)}. Fix: use those names."
        )
    full = generate_identity(cfg.identity.examples_per_group, cfg.identity.overlap_rate)
    groups = choose_groups(available, cfg.group_columns, SOURCE)
    biased_ids = (
        set(full.loc[full[cfg.identity.bias_groups].any(axis=1), ID]) if cfg.identity.bias_groups else set()
    )
    rate = cfg.identity.bias_rate

    def adjust_train(train: pd.DataFrame, seed: int) -> pd.DataFrame:
        return inject_label_bias(train, biased_ids, rate, seed) if task.classifies else train

    frame = full[[ID, "text", LABEL, *groups]]
    return Prepared("identity", frame, groups, list(LABEL_NAMES), SOURCE, adjust_train)
