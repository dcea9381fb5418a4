"""Real hate-speech datasets: D-Lab Measuring Hate Speech and HateCheck."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairlora.config import DataConfig
from fairlora.data.columns import (
    assemble,
    choose_groups,
    drop_or_reject_empty,
    require_columns,
    snake_case,
    stable_ids,
    to_bool,
)
from fairlora.data.files import default_data_dirs, load_hf_split, read_table
from fairlora.data.types import Prepared
from fairlora.errors import DataError
from fairlora.tasks import Task

LABEL_NAMES = ["non-hateful", "hateful"]
DLAB_ID = "ucberkeley-dlab/measuring-hate-speech"
DLAB_GROUPS: dict[str, tuple[str, ...]] = {
    "race": (
        "asian", "black", "latinx", "native_american", "middle_eastern", "pacific_islander", "white", "other",
    ),
    "religion": ("atheist", "buddhist", "christian", "hindu", "jewish", "mormon", "muslim", "other"),
    "age": ("children", "teenagers", "young_adults", "middle_aged", "seniors", "other"),
    "gender": (
        "men", "non_binary", "transgender_men", "transgender_unspecified", "transgender_women", "women",
        "other",
    ),
    "sexuality": ("bisexual", "gay", "lesbian", "straight", "other"),
}  # fmt: skip
HATE_THRESHOLD = 0.5
HATECHECK_FILE = "test_suite_cases.csv"
HATECHECK_URL = "github.com/paul-rottger/hatecheck-data"


def dlab_group_name(name: str) -> str:
    """Accept `target_race_asian` or `race_asian`; D-Lab groups are named `race_asian`."""
    return name.removeprefix("target_")


def load_dlab(cfg: DataConfig, task: Task, registered: list[str]) -> Prepared:
    """D-Lab hate speech, prepared as the fairness-audit spec says (threshold, dedup, target filter)."""
    if cfg.path:
        raw, source = read_table(cfg.path, "data.path"), str(cfg.path)
    else:
        hint = f", or set data.path to a local copy (.csv/.jsonl/.parquet) of {DLAB_ID}"
        raw = load_hf_split(DLAB_ID, cfg.hf_split, registered, hint).to_pandas()
        source = f"HF dataset {DLAB_ID!r} (split {cfg.hf_split!r})"
    attributes = list(DLAB_GROUPS) if cfg.target_attribute == "all" else [cfg.target_attribute]
    field = "data.path" if cfg.path else "data.name"
    needed = {"text": field, "hate_speech_score": field}
    if cfg.target_attribute != "all":
        needed[f"target_{cfg.target_attribute}"] = "data.target_attribute"
    require_columns(raw, needed, source)
    raw = raw[raw["text"].notna() & raw["hate_speech_score"].notna()]
    # Spec order: drop duplicate texts (first annotator row kept), then filter to the target.
    table = raw.drop_duplicates(subset="text", keep="first")
    if cfg.target_attribute != "all":
        target = f"target_{cfg.target_attribute}"
        table = table[to_bool(table[target], target, source, "data.target_attribute")]
    if table.empty:
        raise DataError(
            f"data.target_attribute: no rows of {source} have target_{cfg.target_attribute} == True; "
            f"fix: choose another data.target_attribute or check the file."
        )
    available = [
        f"{a}_{g}" for a in DLAB_GROUPS for g in DLAB_GROUPS[a] if f"target_{a}_{g}" in table.columns
    ]
    defaults = [g for g in available if g.split("_", 1)[0] in attributes]
    explicit = bool(cfg.group_columns)
    groups = choose_groups(available, cfg.group_columns, source, dlab_group_name) if explicit else defaults
    members = pd.DataFrame(
        {g: to_bool(table[f"target_{g}"], f"target_{g}", source) for g in groups}, index=table.index
    )
    groups = drop_or_reject_empty(members, groups, explicit, source)
    if not groups and not explicit:
        raise DataError(
            f"data.target_attribute: {source} has no target_<attribute>_<group> columns for "
            f"{', '.join(attributes)}; fix: use the D-Lab schema (e.g. target_race_asian)."
        )
    labels = (table["hate_speech_score"].astype(float) > HATE_THRESHOLD).astype(int)
    ids = stable_ids(table, "comment_id")
    frame = assemble(ids, table["text"], labels, None, {g: members[g] for g in groups})
    return Prepared("dlab-hatespeech", frame, groups, list(LABEL_NAMES), source)


def hatecheck_file(cfg: DataConfig) -> Path:
    """Locate test_suite_cases.csv: data.path, then $FAIRLORA_DATA_DIR/hatecheck, then ../shared/data."""
    candidates: list[Path] = []
    if cfg.path:
        base = Path(cfg.path).expanduser()
        candidates += [base] if base.suffix else [base / HATECHECK_FILE, base / "hatecheck" / HATECHECK_FILE]
    else:
        candidates += [folder / HATECHECK_FILE for folder in default_data_dirs("hatecheck")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c.resolve()) for c in candidates)
    raise DataError(
        f"data.name: hatecheck: {HATECHECK_FILE} not found (looked in: {looked}). Fix: download "
        f"{HATECHECK_URL} and set data.path to its folder (or to {HATECHECK_FILE}), or set "
        f"FAIRLORA_DATA_DIR to a folder that holds hatecheck/{HATECHECK_FILE}."
    )


def load_hatecheck(cfg: DataConfig, task: Task) -> Prepared:
    """HateCheck test cases; label = label_gold == 'hateful'; one group per target_ident value."""
    file = hatecheck_file(cfg)
    raw = read_table(file, "data.path")
    require_columns(raw, {c: "data.path" for c in ("test_case", "label_gold", "target_ident")}, str(file))
    table = raw[raw["test_case"].notna() & raw["label_gold"].notna()]
    targets = table["target_ident"].map(lambda v: snake_case(v) if isinstance(v, str) else "")
    available = sorted(t for t in targets.unique() if t)
    explicit = bool(cfg.group_columns)
    groups = choose_groups(available, cfg.group_columns, str(file), snake_case)
    members = pd.DataFrame({g: targets == g for g in groups}, index=table.index)
    groups = drop_or_reject_empty(members, groups, explicit, str(file))
    labels = (table["label_gold"].astype(str).str.strip().str.lower() == "hateful").astype(int)
    texts = table["test_case"].astype(str).str.strip()
    frame = assemble(stable_ids(table, "case_id"), texts, labels, None, {g: members[g] for g in groups})
    return Prepared("hatecheck", frame, groups, list(LABEL_NAMES), str(file))
