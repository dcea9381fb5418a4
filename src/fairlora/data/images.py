"""Image datasets: UTKFace folders, class folders, CSV of paths, generated images."""

from __future__ import annotations

from typing import Any


def image_datasets() -> list[tuple[Any, Any]]:
    """(DatasetInfo, loader) of every registered image dataset."""
    return []
