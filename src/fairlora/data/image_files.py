"""Image files on disk: finding them, checking they open, and the data.bad_files policy."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from fairlora.config import DataConfig
from fairlora.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SHOWN = 10


def data_folder(cfg: DataConfig, dataset: str) -> Path:
    """The existing folder named by data.path, or a DataError saying how to point at one."""
    if not cfg.path:
        raise DataError(
            f"data.path: the {dataset} dataset is read from a local folder; set data.path=<folder>"
        )
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"data.path: {folder} is not a folder (relative paths start at {Path.cwd()}); "
            f"point data.path at the {dataset} image folder"
        )
    return folder


def image_files(folder: Path, recursive: bool) -> list[Path]:
    """Image files (by extension) under `folder`, sorted; hidden files are ignored."""
    pattern = "**/*" if recursive else "*"
    found = (p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))
    files = sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"data.path: no images ({', '.join(IMAGE_SUFFIXES)}) found in {folder}"
            f"{' or its subfolders' if recursive else ''}; check data.path"
        )
    return files


def unreadable(paths: Iterable[Path], progress: bool = True) -> list[tuple[Path, str]]:
    """(path, reason) of every file whose image header cannot be read (the pixels are decoded later)."""
    bad = []
    paths = list(paths)
    for path in tqdm(paths, desc="check images", disable=not progress or len(paths) < 2000, leave=False):
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - reading the header is the check
        except (OSError, ValueError, UnidentifiedImageError) as exc:
            bad.append((path, type(exc).__name__))
    return bad


def apply_bad_files(cfg: DataConfig, problems: list[tuple[Path, str]], source: str) -> set[Path]:
    """data.bad_files=fail: one DataError listing the problems; skip: warn with a count, return them."""
    if not problems:
        return set()
    listing = "; ".join(f"{path.name} ({why})" for path, why in problems[:_SHOWN])
    more = f" and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    if cfg.bad_files == "fail":
        raise DataError(
            f"{source}: {len(problems)} file(s) cannot be used: {listing}{more}. Fix: remove or rename "
            "them, or set data.bad_files=skip to leave them out"
        )
    warnings.warn(
        f"{source}: skipped {len(problems)} file(s) (data.bad_files=skip): {listing}{more}", stacklevel=3
    )
    return {path for path, _ in problems}
