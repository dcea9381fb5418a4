"""Image data: UTKFace names -> labels and groups, class folders, CSV tables, bad files, generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairlora.config import DataConfig
from fairlora.data import list_datasets, load_task_data
from fairlora.data.image_synthetic import BLUE_LABEL_NOISE, COLOURS, synthetic_frame, write_utkface_folder
from fairlora.data.image_utkface import age_bucket, parse_name, utkface_groups
from fairlora.errors import DataError

TASK = "image_classification"


def _utk(tmp_path: Path, count: int = 24) -> Path:
    return write_utkface_folder(tmp_path / "utk", count=count, size=16)


def _data(**kwargs: object) -> DataConfig:
    return DataConfig(**kwargs)


def test_image_datasets_are_registered() -> None:
    names = {info.name for info in list_datasets()}
    assert {"utkface", "image-folder", "image-csv", "synthetic-images"} <= names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("25_1_2_20170116174525125.jpg.chip.jpg", {"age_years": 25, "gender": "female", "race": "asian"}),
        ("70_0_4_20170117.jpg", {"age_years": 70, "gender": "male", "race": "others"}),
        ("1_0_0_x.png", {"age_years": 1, "gender": "male", "race": "white"}),
    ],
)
def test_utkface_names_parse(name: str, expected: dict[str, object]) -> None:
    parsed = parse_name(name)
    assert parsed is not None and {k: parsed[k] for k in expected} == expected


@pytest.mark.parametrize(
    "name", ["25_2_1_2017.jpg", "25_1_7_2017.jpg", "x_1_1_2017.jpg", "25_1.jpg", "face.jpg"]
)
def test_utkface_bad_names_do_not_parse(name: str) -> None:
    assert parse_name(name) is None


def test_age_buckets_cover_every_age() -> None:
    assert [age_bucket(a) for a in (0, 19, 20, 39, 40, 60, 116)] == [
        "age_0_19", "age_0_19", "age_20_39", "age_20_39", "age_40_59", "age_60_plus", "age_60_plus",
    ]  # fmt: skip


def test_utkface_folder_labels_and_groups(tmp_path: Path) -> None:
    folder = _utk(tmp_path)
    data = load_task_data(_data(name="utkface", path=str(folder), label_column="gender"), TASK, 0)
    frame = pd.concat([data.train, data.test])
    assert data.label_names == ["female", "male"] and len(frame) == 24
    assert set(data.group_columns) <= set(utkface_groups())
    assert {"race_white", "gender_female", "female_black", "male_asian"} <= set(data.group_columns)
    for _, row in frame.iterrows():  # every group column agrees with the file name
        parsed = parse_name(Path(row["image"]).name)
        assert row[f"race_{parsed['race']}"] and row[f"gender_{parsed['gender']}"]
        assert row[f"{parsed['gender']}_{parsed['race']}"]
        assert data.label_names[row["label"]] == parsed["gender"]
    assert "race_indian" not in data.group_columns  # default groups without members are dropped


def test_utkface_label_column_race_and_group_selection(tmp_path: Path) -> None:
    cfg = _data(
        name="utkface", path=str(_utk(tmp_path)), label_column="race", group_columns=["gender_female"]
    )
    data = load_task_data(cfg, TASK, 0)
    assert data.label_names == ["asian", "black", "white"] and data.group_columns == ["gender_female"]


def test_utkface_unknown_label_column_names_the_choices(tmp_path: Path) -> None:
    cfg = _data(name="utkface", path=str(_utk(tmp_path)), label_column="emotion")
    with pytest.raises(DataError, match=r"data.label_column.*'emotion'.*gender, race, age"):
        load_task_data(cfg, TASK, 0)


def test_utkface_bad_names_and_unreadable_files_fail_in_one_message_or_skip(tmp_path: Path) -> None:
    folder = _utk(tmp_path)
    (folder / "holiday.jpg").write_bytes(sorted(folder.iterdir())[0].read_bytes())
    (folder / "30_1_0_2017.jpg").write_text("not an image")
    cfg = _data(name="utkface", path=str(folder), label_column="gender")
    with pytest.raises(
        DataError, match=r"2 file\(s\).*30_1_0_2017.jpg \(UnidentifiedImageError\).*holiday.jpg"
    ):
        load_task_data(cfg, TASK, 0)
    with pytest.warns(UserWarning, match=r"skipped 2 file\(s\)"):
        data = load_task_data(cfg.model_copy(update={"bad_files": "skip"}), TASK, 0)
    assert len(data.train) + len(data.test) == 24


def test_empty_or_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_task_data(_data(name="utkface", path=str(tmp_path / "empty"), label_column="gender"), TASK, 0)
    with pytest.raises(DataError, match="not a folder"):
        load_task_data(_data(name="utkface", path=str(tmp_path / "nope"), label_column="gender"), TASK, 0)
    with pytest.raises(DataError, match="set data.path"):
        load_task_data(_data(name="utkface", label_column="gender"), TASK, 0)


def test_image_dataset_with_a_text_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="task=image_classification"):
        load_task_data(_data(name="synthetic-images"), "classification", 0)


def _write(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), colour, dtype=np.uint8)).save(path)


def test_class_folders_give_labels_from_subfolder_names(tmp_path: Path) -> None:
    for i in range(6):
        _write(tmp_path / "cats" / f"{i}.png", (200, 0, 0))
        _write(tmp_path / "dogs" / "more" / f"{i}.jpg", (0, 0, 200))
    _write(tmp_path / "stray.png", (0, 0, 0))  # not in a class folder: ignored
    data = load_task_data(_data(name="image-folder", path=str(tmp_path)), TASK, 0)
    frame = pd.concat([data.train, data.test])
    assert data.label_names == ["cats", "dogs"] and len(frame) == 12 and data.group_columns == []
    assert all(Path(p).parts[-2 if label == 0 else -3] == data.label_names[label]
               for p, label in zip(frame["image"], frame["label"], strict=True))  # fmt: skip


def test_csv_of_paths_labels_and_groups(tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        _write(tmp_path / "img" / f"{i}.png", (i * 20, 0, 0))
        rows.append({"file": f"img/{i}.png", "smiling": ["no", "yes"][i % 2], "young": i < 6})
    rows.append({"file": "img/missing.png", "smiling": "no", "young": True})
    table = tmp_path / "faces.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    cfg = _data(name="image-csv", path=str(table), image_column="file", label_column="smiling")
    with pytest.raises(DataError, match=r"1 file\(s\).*missing.png \(file not found\)"):
        load_task_data(cfg, TASK, 0)
    with pytest.warns(UserWarning, match="skipped 1"):
        data = load_task_data(cfg.model_copy(update={"bad_files": "skip"}), TASK, 0)
    frame = pd.concat([data.train, data.test])
    assert data.label_names == ["no", "yes"] and data.group_columns == ["young"] and len(frame) == 12
    assert all(Path(p).is_file() for p in frame["image"])
    with pytest.raises(DataError, match="data.image_column.*'path'"):
        load_task_data(cfg.model_copy(update={"image_column": "path"}), TASK, 0)


def test_generated_images_tie_colour_to_group_and_orientation_to_label() -> None:
    frame = synthetic_frame(per_colour=40, size=16)
    assert frame[list(COLOURS)].sum(axis=1).eq(1).all() and frame.groupby("red").size().tolist() == [80, 40]
    for _, row in frame[frame["red"]].iterrows():  # clean group: the bar's direction is the label
        bar = np.all(row["image"] == COLOURS["red"], axis=-1)
        assert bar.all(axis=0).any() == bool(row["label"]) and bar.all(axis=1).any() != bool(row["label"])
    blue = frame[frame["blue"]]
    flipped = [np.all(img == COLOURS["blue"], axis=-1).all(axis=0).any() != bool(label)
               for img, label in zip(blue["image"], blue["label"], strict=True)]  # fmt: skip
    assert sum(flipped) == round(BLUE_LABEL_NOISE * 40)
