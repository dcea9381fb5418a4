"""One prediction pass: per-example probabilities, prediction and loss, next to label and groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from fairlora.tasks.base import Task, get_task


@torch.inference_mode()
def predict_frame(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    frame: pd.DataFrame,
    task: Task | str,
    max_length: int,
    batch_size: int = 32,
    split: str = "test",
    group_columns: list[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict every row of `frame`; returns id, split, label, groups, loss (+ pred, prob_k)."""
    task = get_task(task)
    examples = task.encode(frame, tokenizer, max_length)
    collate = task.collator(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    losses, probs = [], []
    batches = range(0, len(examples), batch_size)
    for start in tqdm(batches, desc=f"predict {split}", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size]).items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        losses.append(task.example_losses(logits, labels).cpu())
        if (batch_probs := task.probabilities(logits)) is not None:
            probs.append(batch_probs.cpu())
    model.train(was_training)
    return prediction_table(frame, split, group_columns or [], losses, probs)


def prediction_table(
    frame: pd.DataFrame,
    split: str,
    group_columns: list[str],
    losses: list[torch.Tensor],
    probs: list[torch.Tensor],
) -> pd.DataFrame:
    """The predictions table of `frame`: id, split, label, loss (+ pred, prob_k) and the group columns."""
    table = pd.DataFrame({"id": frame["id"].astype(str).to_numpy(), "split": split})
    if "label" in frame:
        table["label"] = frame["label"].to_numpy()
    table["loss"] = torch.cat(losses).numpy() if losses else np.zeros(0)
    if probs:
        stacked = torch.cat(probs).numpy()
        table["pred"] = stacked.argmax(-1)
        for k in range(stacked.shape[1]):
            table[f"prob_{k}"] = stacked[:, k]
    for column in group_columns:
        table[column] = frame[column].astype(bool).to_numpy()
    return table


@torch.inference_mode()
def generate_answers(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """Greedy continuation of each prompt (as in training, the prompt's trailing whitespace is generated)."""
    device = next(model.parameters()).device
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    answers: list[str] = []
    try:
        for start in tqdm(
            range(0, len(prompts), batch_size), desc="generate", disable=not progress, leave=False
        ):
            texts = [p.rstrip() for p in prompts[start : start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def add_exact_match(table: pd.DataFrame, frame: pd.DataFrame, generated: list[str]) -> pd.DataFrame:
    """Columns of a generation pass: the text, its answer as read, exact_match (math-verify, else numbers)."""
    from fairlora.metrics.math import answer_text, exact_match

    table = table.copy()
    table["generated"] = generated
    table["answer"] = [answer_text(g) for g in generated]
    table["exact_match"] = exact_match(generated, frame["text"].astype(str).tolist())
    return table
