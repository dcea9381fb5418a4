"""Image datasets: UTKFace folders, class folders, CSV of paths, generated images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from fairlora.config import DataConfig
from fairlora.data.columns import require_columns
from fairlora.data.files import prepare_table, read_table
from fairlora.data.image_files import apply_bad_files, data_folder, image_files, unreadable
from fairlora.data.image_synthetic import SYNTHETIC_NAME, load_synthetic_images
from fairlora.data.image_utkface import UTKFACE_NAME, load_utkface
from fairlora.data.types import ID, LABEL, TEXT, DatasetInfo, Prepared
from fairlora.errors import DataError
from fairlora.tasks import Task
from fairlora.tasks.image_classification import IMAGE

FOLDER_NAME = "image-folder"
CSV_NAME = "image-csv"
ImageLoader = Callable[[DataConfig, Any], Prepared]  # (data config, task) -> the loader's frame


def _require_image_task(task: Task, dataset: str) -> None:
    if getattr(task, "modality", "text") != "image":
        raise DataError(
            f"data.name={dataset!r} holds images; it needs task=image_classification (task is {task.name})"
        )


def load_image_folder(cfg: DataConfig, task: Task) -> Prepared:
    """data.path/<class>/<image>: the subfolder names are the classes (no group columns)."""
    _require_image_task(task, FOLDER_NAME)
    folder = data_folder(cfg, FOLDER_NAME)
    if cfg.group_columns:
        raise DataError(
            f"data.group_columns: a class-folder dataset has no group columns; use data.name={CSV_NAME} "
            "with a CSV of (path, label, group columns) to audit per group"
        )
    files = [p for p in image_files(folder, recursive=True) if p.parent != folder]
    source = f"image folder {folder}"
    if not files:
        raise DataError(f"data.path: {source} has no class subfolders with images (<class>/<image>.jpg)")
    skipped = apply_bad_files(cfg, unreadable(files), source)
    files = [p for p in files if p not in skipped]
    names = sorted({p.relative_to(folder).parts[0] for p in files})
    ids = {name: index for index, name in enumerate(names)}
    frame = pd.DataFrame(
        {
            ID: [str(p.relative_to(folder)) for p in files],
            IMAGE: [str(p.resolve()) for p in files],
            LABEL: [ids[p.relative_to(folder).parts[0]] for p in files],
        }
    )
    return Prepared(FOLDER_NAME, frame, [], names, source)


def load_image_csv(cfg: DataConfig, task: Task) -> Prepared:
    """data.path is a CSV (or other table) of data.image_column paths (relative to it), labels, groups."""
    _require_image_task(task, CSV_NAME)
    if not cfg.path:
        raise DataError(f"data.path: set it to the table of image paths, labels and groups ({CSV_NAME})")
    table = Path(cfg.path).expanduser()
    raw = read_table(table, "data.path")
    source = f"image table {table}"
    require_columns(raw, {cfg.image_column: "data.image_column"}, source)
    raw = raw.drop(columns=[TEXT], errors="ignore")
    paths = raw[cfg.image_column].map(lambda p: _resolve(table.parent, p))
    missing = [(Path(str(p)), "file not found") for p in paths if p is not None and not p.is_file()]
    problems = missing + unreadable(p for p in paths if p is not None and p.is_file())
    problems += [(Path(f"row {i}"), "no path") for i, p in enumerate(paths) if p is None]
    skipped = apply_bad_files(cfg, problems, source)
    keep = paths.map(lambda p: p is not None and p not in skipped)
    raw, paths = raw[keep].assign(**{TEXT: paths[keep].map(str)}), paths[keep]
    if raw.empty:
        raise DataError(f"{source}: no usable images left; check data.image_column and data.bad_files")
    adjusted = cfg.model_copy(update={"text_column": TEXT})
    prepared = prepare_table(raw, adjusted, task, table.stem, source)
    prepared.frame = prepared.frame.rename(columns={TEXT: IMAGE})
    return prepared


def _resolve(root: Path, value: Any) -> Path | None:
    """An image path from the table, relative to the table's folder; None when empty."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        return None
    path = Path(str(value)).expanduser()
    return (path if path.is_absolute() else root / path).resolve()


def _guarded(
    loader: Callable[[DataConfig, Task], Prepared], name: str
) -> Callable[[DataConfig, Any], Prepared]:
    def load(cfg: DataConfig, task: Any) -> Prepared:
        _require_image_task(task, name)
        return loader(cfg, task)

    return load


def image_datasets() -> list[tuple[DatasetInfo, ImageLoader]]:
    """(DatasetInfo, loader) of every registered image dataset."""
    return [
        (
            DatasetInfo(
                UTKFACE_NAME,
                "UTKFace faces (age_gender_race_date.jpg): data.label_column gender / race / age (bucket); "
                "groups per race, gender, age bucket and gender x race; image_classification",
                "https://susanqq.github.io/UTKFace/ (download it yourself); a local folder in data.path",
            ),
            _guarded(load_utkface, UTKFACE_NAME),
        ),
        (
            DatasetInfo(
                FOLDER_NAME,
                "class folders (data.path/<class>/<image>): the subfolder names are the labels; "
                "image_classification, no groups",
                "a local folder in data.path",
            ),
            load_image_folder,
        ),
        (
            DatasetInfo(
                CSV_NAME,
                "a table of image paths (data.image_column, relative to the table), labels "
                "(data.label_column) and boolean group columns; image_classification",
                "a local .csv / .jsonl / .parquet file in data.path",
            ),
            load_image_csv,
        ),
        (
            DatasetInfo(
                SYNTHETIC_NAME,
                "GENERATED bar images: orientation = label, colour = group (red, green, blue; 25% of blue "
                "labels flipped, so blue accuracy is lower by design); image_classification offline default",
                "generated by fairlora",
            ),
            _guarded(load_synthetic_images, SYNTHETIC_NAME),
        ),
    ]
