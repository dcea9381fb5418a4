"""Image classification: AutoModelForImageClassification + AutoImageProcessor (`image_classification`).

The task frame holds an `image` column of file paths (or in-memory arrays for generated sets);
`encode` only pairs each reference with its label, and the collator decodes a batch's images and
runs them through the model's image processor, so no image is held decoded between batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from peft import TaskType
from PIL import Image, UnidentifiedImageError
from transformers import AutoImageProcessor, AutoModelForImageClassification

from fairlora.errors import DataError
from fairlora.tasks.base import Task, register_task

IMAGE = "image"  # the task frame's column of image references


def open_image(ref: Any) -> Image.Image:
    """An RGB PIL image from a file path, a PIL image or an (H, W, 3) uint8 array."""
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, np.ndarray):
        return Image.fromarray(ref).convert("RGB")
    try:
        with Image.open(Path(ref)) as image:
            return image.convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError) as exc:
        raise DataError(
            f"image {ref}: could not be decoded ({type(exc).__name__}: {exc}); remove or replace the file "
            "(data.bad_files=skip only skips files whose header cannot be read)"
        ) from None


class ImageCollator:
    """Decodes a batch's images and turns them into `pixel_values` with the image processor."""

    def __init__(self, processor: Any) -> None:
        if not callable(processor) or not hasattr(processor, "preprocess"):
            raise DataError(
                f"task=image_classification needs an image processor, got {type(processor).__name__}; "
                "set model.name to an image classifier (tiny-vit, tiny-swin, a ViT / Swin hub id or folder)"
            )
        self.processor = processor

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """{"pixel_values": (n, 3, H, W), "labels": (n,)} for a list of encoded examples."""
        images = [open_image(example[IMAGE]) for example in examples]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        labels = torch.tensor([int(example["labels"]) for example in examples], dtype=torch.long)
        return {"pixel_values": pixels, "labels": labels}


class ImageClassificationTask(Task):
    """An image -> one of k labels, through the image model's classification head (`classifier`)."""

    name = "image_classification"
    description = "image -> label, a ViT / Swin (any AutoModelForImageClassification) with a new head"
    auto_class = AutoModelForImageClassification
    processor_class = AutoImageProcessor  # models.load_model loads this instead of a tokenizer
    modality = "image"
    # PEFT: the head trains and is saved with the adapter (modules_to_save). Methods that read
    # `peft_modules_to_save` use PEFT's generic wrapper, which passes the batch to the model as it is
    # (the sequence-classification wrapper adds attention_mask=None, which Swin refuses).
    peft_task_type = TaskType.SEQ_CLS
    peft_modules_to_save = ("classifier",)
    classifies = True

    def check_frame(self, frame: pd.DataFrame) -> None:
        """Raise DataError when the task frame has no image column (a text dataset)."""
        if IMAGE not in frame.columns:
            raise DataError(
                f"task=image_classification: the data has no {IMAGE!r} column (columns: "
                f"{', '.join(map(str, frame.columns))}); use an image dataset (utkface, image-folder, "
                "image-csv, synthetic-images)"
            )

    def encode(self, frame: pd.DataFrame, tokenizer: Any, max_length: int) -> list[dict[str, Any]]:
        """One {image reference, label id} per row; images are decoded later, batch by batch."""
        self.check_frame(frame)
        rows = zip(frame[IMAGE], frame["label"], strict=True)
        return [{IMAGE: image, "labels": int(label)} for image, label in rows]

    def collator(self, tokenizer: Any) -> ImageCollator:
        """Decodes and processes each batch's images with the model's image processor."""
        return ImageCollator(tokenizer)

    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each example."""
        return F.cross_entropy(logits.float(), labels, reduction="none")


IMAGE_CLASSIFICATION = register_task(ImageClassificationTask())
