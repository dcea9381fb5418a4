"""Sequence log-likelihoods on the tiny random Llama: exact scoring, batching, start token."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fairlora.auditing.likelihood import encode_pairs, sequence_logprobs, start_ids
from fairlora.config import ModelConfig
from fairlora.models import LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    """The tiny random Llama decoder with its byte-level tokenizer (one token per byte)."""
    return load_model(ModelConfig(name="tiny-llama"), "causal_lm")


def _manual(tiny: LoadedModel, context: str, text: str) -> float:
    """log p(text | BOS + context), one forward pass, summed over the text's tokens."""
    tok = tiny.tokenizer
    head = [tok.bos_token_id] + tok(context, add_special_tokens=False)["input_ids"]
    body = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + body])
    with torch.no_grad():
        logprobs = tiny.model(input_ids=ids).logits[0].float().log_softmax(-1)
    return float(sum(logprobs[len(head) + i - 1, token] for i, token in enumerate(body)))


def test_scores_only_the_text_tokens_after_the_context(tiny: LoadedModel) -> None:
    sums, counts = sequence_logprobs(tiny.model, tiny.tokenizer, ["is here"], ["The cat"], progress=False)
    assert counts.tolist() == [len("is here")]  # byte-level: one token per byte, context not counted
    assert sums[0] == pytest.approx(_manual(tiny, "The cat", "is here"), abs=1e-4)
    assert sums[0] < 0


def test_first_text_token_is_scored_after_bos_without_context(tiny: LoadedModel) -> None:
    sums, counts = sequence_logprobs(tiny.model, tiny.tokenizer, ["a"], None, progress=False)
    assert counts.tolist() == [1]
    assert sums[0] == pytest.approx(_manual(tiny, "", "a"), abs=1e-5)


def test_batch_equals_one_at_a_time(tiny: LoadedModel) -> None:
    texts = ["hello there", "a", "a much longer sentence than all of the others", "", " mid"]
    contexts = ["ctx", "", "some context here", "x", "a long context before a short text"]
    sums, counts = sequence_logprobs(
        tiny.model, tiny.tokenizer, texts, contexts, batch_size=3, progress=False
    )
    singles = [
        sequence_logprobs(tiny.model, tiny.tokenizer, [t], [c], batch_size=1, progress=False)
        for t, c in zip(texts, contexts, strict=True)
    ]
    np.testing.assert_allclose(sums, [s[0][0] for s in singles], rtol=1e-5, atol=1e-4)
    assert counts.tolist() == [len(t) for t in texts]
    assert sums[3] == 0.0  # empty text: nothing scored


def test_eos_is_the_start_token_when_there_is_no_bos(tiny: LoadedModel) -> None:
    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.bos_token = None
    assert start_ids(tiny.tokenizer) == [tiny.tokenizer.bos_token_id]
    assert start_ids(tokenizer) == [tokenizer.eos_token_id]
    (ids, head), *_ = encode_pairs(tokenizer, ["hi"], ["yo"])
    assert ids[:head] == [tokenizer.eos_token_id] + tokenizer("yo", add_special_tokens=False)["input_ids"]
    sums, counts = sequence_logprobs(tiny.model, tokenizer, ["hi"], None, progress=False)
    assert counts.tolist() == [2] and np.isfinite(sums[0])


def test_restores_training_mode_and_checks_lengths(tiny: LoadedModel) -> None:
    tiny.model.train()
    sequence_logprobs(tiny.model, tiny.tokenizer, ["x"], progress=False)
    assert tiny.model.training
    tiny.model.eval()
    with pytest.raises(ValueError, match="contexts"):
        sequence_logprobs(tiny.model, tiny.tokenizer, ["x", "y"], ["only one"], progress=False)
