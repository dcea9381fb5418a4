"""UTKFace: `age_gender_race_date.jpg` file names -> label columns and boolean group columns.

UTKFace codes gender 0 = male, 1 = female, and race 0-4 = white, black, asian, indian, others.
Label columns (pick one with data.label_column): gender, race, age (bucket). Group columns: one
per race, per gender, per age bucket, and every gender x race intersection (e.g. female_black).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fairlora.config import DataConfig
from fairlora.data.columns import choose_groups, drop_or_reject_empty, encode_labels
from fairlora.data.image_files import apply_bad_files, data_folder, image_files, unreadable
from fairlora.data.types import ID, LABEL, Prepared
from fairlora.errors import DataError
from fairlora.tasks import Task

UTKFACE_NAME = "utkface"
GENDERS = ("male", "female")
RACES = ("white", "black", "asian", "indian", "others")
AGE_BUCKETS = ((0, 19, "age_0_19"), (20, 39, "age_20_39"), (40, 59, "age_40_59"), (60, 200, "age_60_plus"))
LABEL_COLUMNS = ("gender", "race", "age")
_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_")


def age_bucket(age: int) -> str:
    """The age bucket group name of an age in years."""
    return next(name for low, high, name in AGE_BUCKETS if low <= age <= high)


def parse_name(name: str) -> dict[str, object] | None:
    """age / gender / race of a UTKFace file name, or None when it does not follow the pattern."""
    match = _NAME.match(name)
    if match is None:
        return None
    age = int(match.group(1))
    return {"age_years": age, "gender": GENDERS[int(match.group(2))], "race": RACES[int(match.group(3))],
            "age": age_bucket(age).removeprefix("age_")}  # fmt: skip


def utkface_groups() -> list[str]:
    """Every group column UTKFace provides, in a stable order."""
    races = [f"race_{r}" for r in RACES]
    genders = [f"gender_{g}" for g in GENDERS]
    return races + genders + [name for *_, name in AGE_BUCKETS] + [f"{g}_{r}" for g in GENDERS for r in RACES]


def _group_frame(parsed: pd.DataFrame) -> pd.DataFrame:
    columns = {f"race_{r}": parsed["race"] == r for r in RACES}
    columns |= {f"gender_{g}": parsed["gender"] == g for g in GENDERS}
    columns |= {name: parsed["age"] == name.removeprefix("age_") for *_, name in AGE_BUCKETS}
    columns |= {f"{g}_{r}": (parsed["gender"] == g) & (parsed["race"] == r) for g in GENDERS for r in RACES}
    return pd.DataFrame(columns, index=parsed.index)


def _parsed_files(cfg: DataConfig, folder: Path) -> pd.DataFrame:
    files = image_files(folder, recursive=False)
    source = f"UTKFace folder {folder}"
    bad = [(path, "name is not age_gender_race_date.jpg") for path in files if parse_name(path.name) is None]
    bad += unreadable(path for path in files if parse_name(path.name) is not None)
    skipped = apply_bad_files(cfg, sorted(bad), source)
    rows = [{ID: p.name, "image": str(p.resolve()), **parse_name(p.name)} for p in files if p not in skipped]
    if not rows:
        raise DataError(f"{source}: no usable images left; check data.path and data.bad_files")
    return pd.DataFrame(rows)


def load_utkface(cfg: DataConfig, task: Task) -> Prepared:
    """A local UTKFace folder (data.path) with data.label_column in gender / race / age."""
    if cfg.label_column not in LABEL_COLUMNS:
        raise DataError(
            f"data.label_column: {cfg.label_column!r} is not parsed from UTKFace file names; use one of "
            f"{', '.join(LABEL_COLUMNS)} (gender is the LoRA fairness study's target)"
        )
    folder = data_folder(cfg, UTKFACE_NAME)
    parsed = _parsed_files(cfg, folder)
    source = f"UTKFace folder {folder}"
    labels, names = encode_labels(parsed[cfg.label_column], cfg.label_column, source)
    members = _group_frame(parsed)
    groups = choose_groups(utkface_groups(), cfg.group_columns, source)
    groups = drop_or_reject_empty(members, groups, bool(cfg.group_columns), source)
    frame = pd.concat([parsed[[ID, "image"]], pd.DataFrame({LABEL: labels}), members[groups]], axis=1)
    return Prepared(UTKFACE_NAME, frame, groups, names, source)
