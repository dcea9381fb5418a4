"""Sequence classification: a text -> one of k labels, through a classification head."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from peft import TaskType
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from fairlora.tasks.base import Task, register_task


class ClassificationTask(Task):
    """Text classification with a new head (`classifier` / `score`) on an encoder or decoder."""

    name = "classification"
    description = "text -> label, a classification head on an encoder or decoder"
    auto_class = AutoModelForSequenceClassification
    peft_task_type = TaskType.SEQ_CLS
    classifies = True

    def encode(
        self, frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> list[dict[str, Any]]:
        """Token ids and attention mask of each text, truncated to max_length, with its label id."""
        encoded = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=max_length)
        rows = zip(encoded["input_ids"], encoded["attention_mask"], frame["label"], strict=True)
        return [{"input_ids": ids, "attention_mask": mask, "labels": int(label)} for ids, mask, label in rows]

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        """Pads input ids and attention masks to the longest example of the batch."""
        return DataCollatorWithPadding(tokenizer)

    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each example."""
        return F.cross_entropy(logits.float(), labels, reduction="none")


CLASSIFICATION = register_task(ClassificationTask())
