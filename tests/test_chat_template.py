"""data.prompt_template: chat: the tokenizer's own chat template in training and in generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import tiny_config
from fairlora import pipeline
from fairlora.config import ModelConfig
from fairlora.errors import ConfigError
from fairlora.models import load_model
from fairlora.tasks import get_task
from fairlora.tasks.base import IGNORE_INDEX
from fairlora.tasks.chat import chat_prompt

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def math_config(tmp_path: Path, model: str) -> dict[str, Any]:
    """A tiny causal-LM run on a question/answer file with prompt_template: chat and exact match."""
    rows = [{"question": f"Add {a} and 3.", "answer": f"The answer is: {a + 3}"} for a in range(12)]
    file = tmp_path / "math.jsonl"
    pd.DataFrame(rows).to_json(file, orient="records", lines=True)
    return tiny_config(
        tmp_path,
        task="causal_lm",
        model={"name": model, "max_length": 64},
        data={
            "name": str(file),
            "prompt_column": "question",
            "text_column": "answer",
            "prompt_template": "chat",
            "test_size": 0.25,
        },
        lora={"target_modules": ["q_proj", "v_proj"]},
        train={"max_steps": 2},
        eval={"splits": ["test"], "exact_match": True, "max_new_tokens": 4, "n_boot": 0},
    )


@pytest.fixture
def chat_model(tmp_path: Path) -> Path:
    """tiny-llama saved with a chat template on its tokenizer."""
    loaded = load_model(ModelConfig(name="tiny-llama"), "causal_lm")
    loaded.tokenizer.chat_template = TEMPLATE
    folder = tmp_path / "tiny-chat"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


def test_chat_prompts_are_masked_and_generation_uses_them(tmp_path, chat_model, monkeypatch) -> None:
    generate = pipeline.generate_answers
    seen: list[str] = []

    def recording(model: Any, tokenizer: Any, prompts: list[str], *args: Any) -> list[str]:
        seen.extend(prompts)
        return generate(model, tokenizer, prompts, *args)

    monkeypatch.setattr(pipeline, "generate_answers", recording)
    config = math_config(tmp_path, str(chat_model))
    result = pipeline.train(config)
    tokenizer = load_model(ModelConfig(name=str(chat_model)), "causal_lm").tokenizer
    questions = [f"Add {a} and 3." for a in range(12)]
    expected = {chat_prompt(tokenizer, q) for q in questions}
    assert seen and set(seen) <= expected
    assert all(p.startswith("<|user|>Add ") and p.endswith("\n<|assistant|>") for p in seen)
    assert "exact_match" in result.splits["test"].overall

    # training encodes the same prompt: masked, and the target is the response + EOS
    row = pd.DataFrame([{"prompt": chat_prompt(tokenizer, questions[0]), "text": "The answer is: 3"}])
    encoded = get_task("causal_lm").encode(row, tokenizer, 64)[0]
    target = [
        t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE_INDEX
    ]
    assert (
        tokenizer.decode(target[:-1]).strip() == "The answer is: 3" and target[-1] == tokenizer.eos_token_id
    )
    prompt_ids = tokenizer(row["prompt"][0].rstrip())["input_ids"]
    assert encoded["input_ids"][: len(prompt_ids)] == prompt_ids
    assert all(label == IGNORE_INDEX for label in encoded["labels"][: len(prompt_ids)])


def test_a_model_without_a_chat_template_fails_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(ConfigError, match="'tiny-llama' has none"):
        pipeline.train(math_config(tmp_path, "tiny-llama"))
    assert not (tmp_path / "runs").exists()


def test_smollm2_instruct_has_its_own_template() -> None:
    tokenizer = load_model(ModelConfig(name="smollm2-135m"), "causal_lm").tokenizer
    prompt = chat_prompt(tokenizer, "Add 2 and 3.")
    assert prompt.endswith("<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"  # the target ends the assistant turn
