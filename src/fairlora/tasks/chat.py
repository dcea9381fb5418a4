"""data.prompt_template: chat: each prompt is a user turn in the tokenizer's own chat template."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
from transformers import PreTrainedTokenizerBase

from fairlora.data import TaskData
from fairlora.data.types import PROMPT
from fairlora.errors import ConfigError


def check_chat_template(tokenizer: PreTrainedTokenizerBase, model_name: str) -> None:
    """ConfigError when the tokenizer has no chat template to format prompts with."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"data.prompt_template: chat formats prompts with the tokenizer's chat template, but "
            f"{model_name!r} has none; use an instruction-tuned model (e.g. smollm2-135m), "
            f"data.prompt_template: alpaca, or add a chat_template to the tokenizer's folder"
        )


def chat_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """`prompt` as a user turn followed by the assistant's generation prompt; the response follows it.

    A BOS token the template writes is dropped when the tokenizer adds its own, so it is not doubled.
    """
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("").input_ids[:1] == [tokenizer.bos_token_id]
    return text[len(bos) :] if adds_bos and text.startswith(bos) else text


def chat_frame(frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase) -> pd.DataFrame:
    """`frame` with each prompt formatted by the chat template."""
    return frame.assign(**{PROMPT: [chat_prompt(tokenizer, str(p)) for p in frame[PROMPT]]})


def with_chat_prompts(data: TaskData, tokenizer: PreTrainedTokenizerBase, model_name: str) -> TaskData:
    """Every split's prompts formatted by the tokenizer's chat template (ConfigError if it has none)."""
    check_chat_template(tokenizer, model_name)
    val = chat_frame(data.val, tokenizer) if data.val is not None and not data.val.empty else data.val
    return replace(
        data, train=chat_frame(data.train, tokenizer), test=chat_frame(data.test, tokenizer), val=val
    )
