"""Scoring text with a causal LM: the summed log-probability of a text given a context.

Context and text are tokenized separately (no special tokens) and their ids concatenated, so the
boundary between them is exact. A start token is put in front of every sequence: the tokenizer's
BOS token, or its EOS token where it has no BOS (as GPT-2 style models mark a document start), so
that the first text token is scored too, even with an empty context. Context tokens, the start
token and padding are never scored. Batches are right-padded; results do not depend on batch size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase


def start_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token put before every sequence: BOS, else EOS, else none (first text token unscored)."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return [int(token_id)]
    return []


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], contexts: list[str] | None = None
) -> list[tuple[list[int], int]]:
    """Per item: (start + context + text ids, number of leading ids that are not scored)."""
    if contexts is not None and len(contexts) != len(texts):
        raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
    prefix = start_ids(tokenizer)
    pairs = []
    for i, text in enumerate(texts):
        context = contexts[i] if contexts is not None else ""
        context_ids = tokenizer(context, add_special_tokens=False)["input_ids"] if context else []
        text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        head = prefix + list(context_ids)
        pairs.append((head + list(text_ids), len(head)))
    return pairs


def _pad(
    pairs: list[tuple[list[int], int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and the mask of scored target positions (shifted by one)."""
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(pairs), width), dtype=torch.long)
    scored = torch.zeros((len(pairs), width), dtype=torch.bool)
    for row, (tokens, head) in enumerate(pairs):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention[row, : len(tokens)] = 1
        scored[row, max(head, 1) : len(tokens)] = True  # position 0 has no prediction
    return ids.to(device), attention.to(device), scored[:, 1:].to(device)


def _score_batch(model: nn.Module, pairs: list[tuple[list[int], int]], pad_id: int) -> np.ndarray:
    """Summed log-probability of the scored tokens of each sequence in one forward pass."""
    device = next(model.parameters()).device
    ids, attention, scored = _pad(pairs, pad_id, device)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    rows = scored.nonzero(as_tuple=True)[0]
    token_nll = F.cross_entropy(logits[scored].float(), ids[:, 1:][scored], reduction="none")
    totals = torch.zeros(len(pairs), dtype=torch.float64, device=device)
    totals.index_add_(0, rows, -token_nll.double())
    return totals.cpu().numpy()


@torch.inference_mode()
def sequence_logprobs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    contexts: list[str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(sum of token log-probabilities of each text given its context, number of scored tokens)."""
    pairs = encode_pairs(tokenizer, texts, contexts)
    counts = np.array([len(ids) - max(head, 1) for ids, head in pairs], dtype=np.int64)
    sums = np.zeros(len(pairs), dtype=np.float64)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = np.argsort([-len(ids) for ids, _ in pairs], kind="stable")  # similar lengths together
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="score", disable=not progress, leave=False):
            chunk = order[start : start + batch_size]
            sums[chunk] = _score_batch(model, [pairs[i] for i in chunk], pad_id)
    finally:
        model.train(was_training)
    return sums, counts
