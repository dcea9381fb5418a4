"""WinoMT back-translation from Turkish: en_pro/en_anti joined with their Turkish translations.

Turkish has one pronoun for he and she ("o"), so a model translating back to English must choose a
gender. Rows hold the Turkish prompt, the English sentence as target, the gold gender of the
referent and its stereotyped gender (pro rows: the gold gender; anti rows: the other one).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fairlora.config import DataConfig
from fairlora.data.columns import choose_groups, drop_or_reject_empty
from fairlora.data.files import default_data_dirs
from fairlora.data.types import ID, PROMPT, SPLIT_GROUP, TEXT, Prepared
from fairlora.errors import DataError
from fairlora.tasks import Task, get_task

WINOMT_NAME = "winomt-tr"
WINOMT_FOLDER = "mt_gender_lora_fairness"
WINOMT_SOURCE = (
    "github.com/kenziyuliu/lora-fairness (data/mt_gender), WinoMT sentences with Turkish translations"
)
SOURCES = ("pro", "anti")
GROUPS = ["pro", "anti", "male_stereotyped", "female_stereotyped"]
_OTHER = {"male": "female", "female": "male"}
_GENDERED = re.compile(r"\b(he|she|him|her|his|hers|himself|herself)\b")


def winomt_files(source: str) -> tuple[str, str]:
    """The English and English|||Turkish file names for "pro" or "anti"."""
    return f"en_{source}.txt", f"en_tr_{source}.txt"


def translation_prompt(turkish: str) -> str:
    """The training and generation prompt for one Turkish sentence (the English follows it)."""
    return f"Turkish: {turkish.strip()} English: "


def sentence_key(sentence: str) -> str:
    """The sentence lower-cased with he/she/him/her/his/hers/himself/herself masked (pro = anti key)."""
    return " ".join(_GENDERED.sub("_", sentence.lower()).split())


def _holds_files(folder: Path) -> bool:
    return all((folder / name).is_file() for source in SOURCES for name in winomt_files(source))


def winomt_folder(cfg: DataConfig) -> Path:
    """Locate the data: data.path, then $FAIRLORA_DATA_DIR/mt_gender_lora_fairness, then ../shared/data."""
    candidates: list[Path] = []
    if cfg.path:
        base = Path(cfg.path).expanduser()
        base = base.parent if base.is_file() else base
        candidates += [base, base / WINOMT_FOLDER]
    else:
        candidates += default_data_dirs(WINOMT_FOLDER)
    for candidate in candidates:
        if _holds_files(candidate):
            return candidate
    looked = ", ".join(str(c.resolve()) for c in candidates)
    needed = ", ".join(name for source in SOURCES for name in winomt_files(source))
    raise DataError(
        f"data.name: {WINOMT_NAME}: folder {WINOMT_FOLDER}/ with {needed} not found (looked in: "
        f"{looked}). Fix: copy data/mt_gender of {WINOMT_SOURCE.split(' ')[0]} there and set data.path "
        f"to that folder, or set FAIRLORA_DATA_DIR to a folder that holds {WINOMT_FOLDER}/."
    )


def _lines(file: Path) -> list[str]:
    return [line.rstrip("\r\n") for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_english(file: Path) -> pd.DataFrame:
    """gender <tab> entity index <tab> sentence <tab> entity, one row per line."""
    rows = []
    for number, line in enumerate(_lines(file), start=1):
        fields = line.split("\t")
        if len(fields) != 4 or fields[0].strip().lower() not in _OTHER:
            raise DataError(
                f"data.path: {file} line {number} is not 'gender<TAB>index<TAB>sentence<TAB>entity' "
                f"with gender male/female; fix: use the WinoMT en_*.txt files unchanged."
            )
        rows.append((fields[0].strip().lower(), fields[2].strip(), fields[3].strip().lower()))
    return pd.DataFrame(rows, columns=["gold_gender", TEXT, "occupation"])


def _read_translations(file: Path) -> pd.DataFrame:
    """English ||| Turkish, one pair per line."""
    rows = []
    for number, line in enumerate(_lines(file), start=1):
        parts = line.split(" ||| ")
        if len(parts) != 2:
            raise DataError(
                f"data.path: {file} line {number} is not 'English ||| Turkish'; fix: use the "
                f"en_tr_*.txt files unchanged."
            )
        rows.append((parts[0].strip(), parts[1].strip()))
    return pd.DataFrame(rows, columns=[TEXT, "turkish"])


def _join(english: pd.DataFrame, turkish: pd.DataFrame, file: Path) -> pd.DataFrame:
    """Join on the English sentence; the k-th copy of a duplicated sentence meets its k-th translation."""
    english = english.assign(_copy=english.groupby(TEXT).cumcount(), _line=np.arange(len(english)))
    turkish = turkish.assign(_copy=turkish.groupby(TEXT).cumcount())
    joined = english.merge(turkish, on=[TEXT, "_copy"], how="left", validate="one_to_one")
    missing = joined["turkish"].isna()
    if missing.any():
        raise DataError(
            f"data.path: {int(missing.sum())} English sentence(s) of the en_*.txt file have no "
            f"translation in {file} (e.g. {joined.loc[missing, TEXT].iloc[0]!r}); fix: use matching files."
        )
    return joined.sort_values("_line").drop(columns="_copy")


def _read_source(folder: Path, source: str) -> pd.DataFrame:
    english_file, turkish_file = (folder / name for name in winomt_files(source))
    joined = _join(_read_english(english_file), _read_translations(turkish_file), turkish_file)
    stereotype = joined["gold_gender"] if source == "pro" else joined["gold_gender"].map(_OTHER)
    return joined.assign(source=source, stereotype_gender=stereotype)


def _split_groups(rows: pd.DataFrame) -> pd.Series:
    """One key per set of linked rows (named by its first row's masked sentence)."""
    # Rows are linked by their pronoun-masked sentence, and by their line in the parallel en_pro /
    # en_anti files, which also pairs the ~17 variants whose wording differs by a typo.
    keys = rows[TEXT].map(sentence_key)
    key_codes = pd.factorize(keys)[0]
    same_length = rows.groupby("source").size().nunique() == 1
    line_codes = rows["_line"].to_numpy() if same_length else np.arange(len(rows)) + len(rows)
    line_codes = pd.factorize(line_codes)[0] + key_codes.max() + 1
    n_nodes = len(rows) + line_codes.max() + 1
    row_ids = np.arange(len(rows))
    edges = np.concatenate([key_codes, line_codes]) + len(rows)
    starts = np.concatenate([row_ids, row_ids])
    graph = coo_matrix((np.ones(len(edges)), (starts, edges)), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    first = pd.Series(row_ids).groupby(component[: len(rows)]).transform("min").to_numpy()
    return pd.Series(keys.to_numpy()[first], index=rows.index)


def load_winomt(cfg: DataConfig, task: Task | str) -> Prepared:
    """WinoMT pro + anti rows for Turkish -> English translation (causal_lm only), grouped for splitting."""
    task = get_task(task)
    if task.classifies:
        raise DataError(
            f"task: {WINOMT_NAME} is a translation (generation) dataset and needs task=causal_lm, "
            f"not {task.name}; fix: set task: causal_lm, or choose a classification dataset."
        )
    folder = winomt_folder(cfg)
    rows = pd.concat([_read_source(folder, source) for source in SOURCES], ignore_index=True)
    rows[SPLIT_GROUP] = _split_groups(rows)
    rows[ID] = rows["source"] + "-" + rows["_line"].astype(str)
    rows[PROMPT] = rows["turkish"].map(translation_prompt)
    members = pd.DataFrame(
        {
            "pro": rows["source"] == "pro",
            "anti": rows["source"] == "anti",
            "male_stereotyped": rows["stereotype_gender"] == "male",
            "female_stereotyped": rows["stereotype_gender"] == "female",
        }
    )
    groups = choose_groups(GROUPS, cfg.group_columns, str(folder))
    groups = drop_or_reject_empty(members, groups, bool(cfg.group_columns), str(folder))
    info = ["gold_gender", "stereotype_gender", "occupation", "source", "turkish", SPLIT_GROUP]
    frame = pd.concat([rows[[ID, TEXT, PROMPT, *info]], members[groups]], axis=1)
    return Prepared(WINOMT_NAME, frame.reset_index(drop=True), groups, [], str(folder))
