"""GENERATED images with known group structure: bar orientation is the label, bar colour the group.

Every image is a noisy grey background with one bar across it, horizontal or vertical (the label),
drawn in red, green or blue (the group). In the blue group a fixed share of the labels is flipped
(a group with noisy annotations), so a model that learns the orientation scores about 1.0 on red and
green and about 1 - BLUE_LABEL_NOISE on blue: the per-group accuracy gap is known in advance.
`write_utkface_folder` writes the same images as UTKFace-style files (`age_gender_race_date.jpg`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fairlora.config import DataConfig
from fairlora.data.columns import choose_groups
from fairlora.data.types import ID, LABEL, Prepared
from fairlora.tasks import Task

SYNTHETIC_NAME = "synthetic-images"
ORIENTATIONS = ("horizontal", "vertical")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 230)}
BLUE_LABEL_NOISE = 0.25
PER_COLOUR = 200
IMAGE_SIZE = 32
_SEED = 20240527


def render_bar(
    vertical: bool, colour: tuple[int, int, int], rng: np.random.Generator, size: int
) -> np.ndarray:
    """A size x size RGB image: grey noise with one bar (a quarter of the side wide) across it."""
    image = rng.integers(90, 150, size=(size, size, 3), dtype=np.uint8)
    width = max(2, size // 4)
    start = int(rng.integers(0, size - width + 1))
    rows, cols = (
        (slice(None), slice(start, start + width)) if vertical else (slice(start, start + width), slice(None))
    )
    image[rows, cols] = colour
    return image


def synthetic_frame(per_colour: int = PER_COLOUR, size: int = IMAGE_SIZE, seed: int = _SEED) -> pd.DataFrame:
    """id, image (uint8 array), label (0 horizontal / 1 vertical; noisy in blue), a bool column per colour."""
    rng = np.random.default_rng(seed)
    rows = []
    for colour, rgb in COLOURS.items():
        vertical = np.arange(per_colour) % 2 == 1
        flips = np.zeros(per_colour, dtype=bool)
        if colour == "blue":
            flips[rng.permutation(per_colour)[: round(BLUE_LABEL_NOISE * per_colour)]] = True
        for i in range(per_colour):
            image = render_bar(bool(vertical[i]), rgb, rng, size)
            label = int(vertical[i] != flips[i])
            rows.append({ID: f"{colour}-{i}", "image": image, LABEL: label, "colour": colour})
    frame = pd.DataFrame(rows)
    colour_of = frame.pop("colour")
    for colour in COLOURS:
        frame[colour] = colour_of == colour
    return frame


def load_synthetic_images(cfg: DataConfig, task: Task) -> Prepared:
    """The generated bar images (offline default of image_classification)."""
    frame = synthetic_frame()
    groups = choose_groups(list(COLOURS), cfg.group_columns, f"the {SYNTHETIC_NAME} dataset")
    frame = frame[[ID, "image", LABEL, *groups]]
    return Prepared(SYNTHETIC_NAME, frame, groups, list(ORIENTATIONS), f"the {SYNTHETIC_NAME} dataset")


def write_utkface_folder(folder: str | Path, count: int = 120, size: int = IMAGE_SIZE, seed: int = 0) -> Path:
    """Write `count` GENERATED UTKFace-style JPEGs (`age_gender_race_date.jpg`) for tests and demos.

    The bar orientation encodes the gender (vertical = female), its colour one of three races.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = list(COLOURS.values())
    for i in range(count):
        gender, race, age = i % 2, (i // 2) % 3, int(rng.integers(1, 90))
        image = render_bar(bool(gender), colours[race], rng, size)
        Image.fromarray(image).save(folder / f"{age}_{gender}_{race}_2017011{i:09d}.jpg.chip.jpg", quality=95)
    return folder
