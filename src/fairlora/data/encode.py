"""From task frames to model inputs: tokenization with labels, and padding collators."""

from __future__ import annotations

from typing import Any

import pandas as pd
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding, PreTrainedTokenizerBase

from fairlora.errors import DataError

IGNORE_INDEX = -100


def tokenize_frame(
    frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, task: str, max_length: int
) -> list[dict[str, Any]]:
    """Tokenize a task frame into model inputs with labels (causal_lm: prompt and padding masked)."""
    texts = frame["text"].astype(str).tolist()
    if task == "classification":
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        return [
            {"input_ids": ids, "attention_mask": mask, "labels": int(label)}
            for ids, mask, label in zip(
                encoded["input_ids"], encoded["attention_mask"], frame["label"], strict=True
            )
        ]
    prompts = frame["prompt"].astype(str).tolist() if "prompt" in frame else [""] * len(texts)
    examples = [_causal_example(p, t, tokenizer, max_length) for p, t in zip(prompts, texts, strict=True)]
    empty = sum(all(label == IGNORE_INDEX for label in e["labels"]) for e in examples)
    if empty:
        raise DataError(
            f"{empty} of {len(examples)} examples keep no target tokens within model.max_length={max_length} "
            f"(the prompt fills it); raise model.max_length"
        )
    return examples


def _causal_example(
    prompt: str, text: str, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, Any]:
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    text_ids = tokenizer(text, add_special_tokens=not prompt)["input_ids"]
    if tokenizer.eos_token_id is not None:
        text_ids = text_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + text_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + text_ids)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def make_collator(tokenizer: PreTrainedTokenizerBase, task: str) -> Any:
    """Pads a batch; causal_lm labels are padded with -100 so padding never counts in the loss."""
    if task == "classification":
        return DataCollatorWithPadding(tokenizer)
    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)
