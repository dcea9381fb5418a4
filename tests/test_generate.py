"""fairlora.auditing.generate: batched greedy decoding with left padding on the tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from fairlora.auditing.generate import generate_greedy
from fairlora.config import ModelConfig
from fairlora.models import LoadedModel, load_model

PROMPTS = [
    "Turkish: o bir doktor. English: ",
    "x",
    "The nurse said that",
    "a b c d e f g h i j k l",
    "After the meeting, the developer said that the plan was",
]


@pytest.fixture(scope="module")
def tiny_llama() -> LoadedModel:
    return load_model(ModelConfig(name="tiny-llama"), "causal_lm")


@torch.inference_mode()
def reference(loaded: LoadedModel, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy token ids one step at a time (no cache, no padding), stopping at EOS (not kept)."""
    ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(loaded.model(input_ids=ids).logits[0, -1].argmax())
        if token == loaded.tokenizer.eos_token_id:
            break
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return new


def test_batched_greedy_equals_step_by_step_greedy_and_stops_at_eos(tiny_llama: LoadedModel) -> None:
    tokenizer = tiny_llama.tokenizer
    texts = generate_greedy(
        tiny_llama.model, tokenizer, PROMPTS, max_new_tokens=12, batch_size=4, progress=False
    )
    expected = [reference(tiny_llama, p, 12) for p in PROMPTS]
    assert texts == [tokenizer.decode(ids, skip_special_tokens=True) for ids in expected]
    assert all(len(ids) <= 12 for ids in expected)
    assert any(len(ids) < 12 for ids in expected)  # at least one prompt ended at EOS
    assert any(len(ids) == 12 for ids in expected)  # and at least one ran to the limit


def test_batching_and_left_padding_do_not_change_the_output(tiny_llama: LoadedModel) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    lengths = {len(tokenizer(p)["input_ids"]) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS)  # every batch needs padding
    batched = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=16, progress=False)
    single = [generate_greedy(model, tokenizer, [p], max_new_tokens=8, progress=False)[0] for p in PROMPTS]
    assert batched == single
    again = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=2, progress=True)
    assert again == batched  # deterministic, whatever the batch size


def test_max_new_tokens_is_respected(tiny_llama: LoadedModel) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    for limit in (1, 3):
        texts = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=limit, progress=False)
        expected = [
            tokenizer.decode(reference(tiny_llama, p, limit), skip_special_tokens=True) for p in PROMPTS
        ]
        assert texts == expected
    one = generate_greedy(model, tokenizer, ["The nurse said that"], max_new_tokens=1, progress=False)[0]
    longer = generate_greedy(model, tokenizer, ["The nurse said that"], max_new_tokens=12, progress=False)[0]
    assert one and longer.startswith(one) and len(longer) > len(one)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=0)


def test_tokenizer_and_model_state_are_restored(tiny_llama: LoadedModel) -> None:
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    expected = generate_greedy(model, tokenizer, PROMPTS[:3], max_new_tokens=4, progress=False)
    assert tokenizer.padding_side == "right"
    model.train()
    try:
        pad = tokenizer.pad_token
        tokenizer.pad_token = None  # a decoder tokenizer without pad token gets pad = eos
        texts = generate_greedy(model, tokenizer, PROMPTS[:3], max_new_tokens=4, progress=False)
        assert tokenizer.pad_token == tokenizer.eos_token and texts == expected
        assert model.training and tokenizer.padding_side == "right"
    finally:
        tokenizer.pad_token = pad
        model.eval()
    assert generate_greedy(model, tokenizer, [], progress=False) == []
