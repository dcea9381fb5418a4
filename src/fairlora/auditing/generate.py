"""Batched greedy decoding for generation audits: left padding, only the new text comes back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from fairlora.errors import ModelError


@contextmanager
def _left_padding(tokenizer: PreTrainedTokenizerBase) -> Iterator[None]:
    """Pad on the left while inside (a pad token = eos is set when missing); the side is restored after."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError("generate_greedy: the tokenizer has neither a pad nor an eos token; give it one")
        tokenizer.pad_token = tokenizer.eos_token
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side


def _greedy_config(tokenizer: PreTrainedTokenizerBase, max_new_tokens: int) -> GenerationConfig:
    """Plain greedy search that stops at EOS (no sampling settings inherited from the model)."""
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def _generate_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], config: GenerationConfig
) -> list[str]:
    """Greedy continuations of one left-padded batch, decoded without the prompt and special tokens."""
    device = next(model.parameters()).device
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    output = model.generate(**batch, generation_config=config)
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int = 100,
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """Greedy continuation of every prompt (in order), batched with left padding; stops at EOS."""
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("generate_greedy: max_new_tokens and batch_size must be at least 1")
    if not prompts:
        return []
    # Similar lengths share a batch (less padding); results go back to the prompts' order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, str] = {}
    was_training = model.training
    model.eval()
    try:
        with _left_padding(tokenizer), torch.inference_mode():
            config = _greedy_config(tokenizer, max_new_tokens)
            starts = range(0, len(order), batch_size)
            for start in tqdm(starts, desc="generate", disable=not progress, leave=False):
                chunk = order[start : start + batch_size]
                texts = _generate_batch(model, tokenizer, [prompts[i] for i in chunk], config)
                results.update(zip(chunk, texts, strict=True))
    finally:
        model.train(was_training)
    return [results[i] for i in range(len(prompts))]
