"""AG News topic classification (Zhang, Zhao & LeCun 2015), test split, read from a local folder.

Folder layout as distributed: `test.csv` (no header: class index 1-4, title, description) and
`classes.txt` (one label name a line). Found at data.path, $FAIRLORA_DATA_DIR/ag_news or
../shared/data/ag_news. Text = title + " " + description (the "\\" newline escapes become spaces).
Groups: one per topic (topic_world, ...), so per-group accuracy is per-class recall.
With data.class_ratio (e.g. {World: 0.1}) a topic becomes a minority of the TRAIN split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairlora.config import DataConfig
from fairlora.data.columns import assemble, choose_groups, drop_or_reject_empty, snake_case, stable_ids
from fairlora.data.files import default_data_dirs
from fairlora.data.types import Prepared
from fairlora.errors import DataError
from fairlora.tasks import Task

AGNEWS_NAME = "ag_news"
AGNEWS_SOURCE = "AG News (Zhang, Zhao & LeCun 2015) test split; research / non-commercial use"
TEST_FILE, CLASSES_FILE = "test.csv", "classes.txt"


def agnews_folder(cfg: DataConfig) -> Path:
    """Folder of test.csv + classes.txt: data.path, $FAIRLORA_DATA_DIR/ag_news or ../shared/data/ag_news."""
    candidates: list[Path] = []
    if cfg.path:
        base = Path(cfg.path).expanduser()
        candidates += [base.parent] if base.suffix else [base, base / AGNEWS_NAME]
    else:
        candidates += default_data_dirs(AGNEWS_NAME)
    for candidate in candidates:
        if (candidate / TEST_FILE).is_file() and (candidate / CLASSES_FILE).is_file():
            return candidate
    looked = ", ".join(str(c.resolve()) for c in candidates)
    raise DataError(
        f"data.name: ag_news: {TEST_FILE} and {CLASSES_FILE} not found (looked in: {looked}). Fix: set "
        f"data.path to the folder of AG News' {TEST_FILE} and {CLASSES_FILE}, or set FAIRLORA_DATA_DIR "
        f"to a folder that holds {AGNEWS_NAME}/."
    )


def load_agnews(cfg: DataConfig, task: Task) -> Prepared:
    """AG News rows: label = class index - 1, names from classes.txt, one group per topic."""
    if not task.classifies:
        raise DataError("data.name: ag_news is a classification dataset; set task: classification")
    folder = agnews_folder(cfg)
    file = folder / TEST_FILE
    names = [line.strip() for line in (folder / CLASSES_FILE).read_text().splitlines() if line.strip()]
    try:
        raw = pd.read_csv(file, header=None, names=["class", "title", "description"], dtype=str)
        labels = raw["class"].astype(int) - 1
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(
            f"data.path: could not read {file} as AG News (class, title, description): {exc}"
        ) from None
    if labels.min() < 0 or labels.max() >= len(names):
        raise DataError(f"{file}: class indices must lie in 1..{len(names)} ({folder / CLASSES_FILE})")
    texts = (raw["title"].fillna("") + " " + raw["description"].fillna("")).str.replace(
        "\\", " ", regex=False
    )
    topics = {f"topic_{snake_case(n)}": labels == i for i, n in enumerate(names)}
    explicit = bool(cfg.group_columns)
    groups = choose_groups(list(topics), cfg.group_columns, str(file))
    members = pd.DataFrame({g: topics[g] for g in groups}, index=raw.index)
    groups = drop_or_reject_empty(members, groups, explicit, str(file))
    frame = assemble(
        stable_ids(raw, None, "agnews-"), texts.str.strip(), labels, None, {g: members[g] for g in groups}
    )
    return Prepared(AGNEWS_NAME, frame, groups, names, str(file))
