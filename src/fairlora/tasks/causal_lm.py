"""Causal language modelling: the model learns the text (after an optional masked prompt) + EOS."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from peft import TaskType
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from fairlora.errors import DataError
from fairlora.tasks.base import IGNORE_INDEX, Task, register_task


class CausalLMTask(Task):
    """Next-token prediction on a decoder; prompt tokens and padding never count in the loss."""

    name = "causal_lm"
    description = "next-token prediction on a decoder; an optional prompt column is masked in the loss"
    auto_class = AutoModelForCausalLM
    peft_task_type = TaskType.CAUSAL_LM
    classifies = False
    needs_decoder = True

    def encode(
        self, frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> list[dict[str, Any]]:
        """prompt + text + EOS as one token sequence; labels mask the prompt (see `encode_pair`)."""
        texts = frame["text"].astype(str).tolist()
        prompts = frame["prompt"].astype(str).tolist() if "prompt" in frame else [""] * len(texts)
        examples = [encode_pair(p, t, tokenizer, max_length) for p, t in zip(prompts, texts, strict=True)]
        empty = sum(all(label == IGNORE_INDEX for label in e["labels"]) for e in examples)
        if empty:
            raise DataError(
                f"{empty} of {len(examples)} examples keep no target tokens within "
                f"model.max_length={max_length} (the prompt fills it); raise model.max_length"
            )
        return examples

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        """Pads a batch; labels are padded with -100 so padding never counts in the loss."""
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)

    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token NLL per sequence over its label tokens (prompt and padding ignored)."""
        shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
        token_nll = F.cross_entropy(
            shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none"
        )
        counts = (shift_labels != IGNORE_INDEX).sum(-1).clamp(min=1)
        return token_nll.sum(-1) / counts


def encode_pair(
    prompt: str, text: str, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, Any]:
    """Tokenize prompt + text in one piece, so the boundary is split as in running text.

    Whitespace at the end of the prompt belongs to the target: "English: " + "He" is tokenized as
    "English:" + " He", the split the model sees in ordinary text, not "English: " + "He". With a
    fast tokenizer the prompt/target boundary comes from character offsets; a slow tokenizer falls
    back to tokenizing the two parts separately.
    """
    if prompt and not tokenizer.is_fast:
        return _encode_parts(prompt, text, tokenizer, max_length)
    boundary = len(prompt.rstrip())
    encoded = tokenizer(prompt + text, add_special_tokens=True, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    offsets = encoded["offset_mapping"]
    first = _first_target(offsets, boundary) if prompt else 0  # special tokens before it: prompt
    is_target = [i >= first for i in range(len(ids))]
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
        is_target.append(True)
    ids = ids[:max_length]
    labels = [token if target else IGNORE_INDEX for token, target in zip(ids, is_target, strict=False)]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def _first_target(offsets: list[tuple[int, int]], boundary: int) -> int:
    return next(
        (i for i, (start, end) in enumerate(offsets) if end > start and start >= boundary), len(offsets)
    )


def _encode_parts(
    prompt: str, text: str, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, Any]:
    stripped = prompt.rstrip()
    prompt_ids = tokenizer(stripped, add_special_tokens=True)["input_ids"]
    text_ids = tokenizer(prompt[len(stripped) :] + text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        text_ids = text_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + text_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + text_ids)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


CAUSAL_LM = register_task(CausalLMTask())
