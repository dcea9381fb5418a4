"""Code completions: sampling several per prompt, HumanEval's stop sequences, pass@k per problem."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from fairlora.config import EvalConfig, RunConfig
from fairlora.data.generation import CODE_COLUMNS
from fairlora.errors import ConfigError
from fairlora.metrics.passk import pass_at_k_columns
from fairlora.sandbox import Limits, Sandbox

# Codex / HumanEval convention: a completion ends where the next top-level statement would start.
STOP_SEQUENCES = ("\ndef", "\nclass", "\nif __name__", "\nprint", "\n#")


def truncate_completion(text: str, stops: tuple[str, ...] = STOP_SEQUENCES) -> str:
    """`text` cut at the first stop sequence (after its first character, which may be a newline)."""
    cut = min((i for stop in stops if (i := text.find(stop, 1)) >= 0), default=len(text))
    return text[:cut]


@torch.inference_mode()
def generate_completions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 0.8,
    top_p: float = 0.95,
    batch_size: int = 8,
    progress: bool = True,
) -> list[list[str]]:
    """`num_samples` completions per prompt (greedy when 1, else sampled), each cut at the stop sequences.

    As in training, each prompt's trailing whitespace is left to the model (the prompt is right-stripped).
    """
    device = next(model.parameters()).device
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    sampling = {"do_sample": num_samples > 1}
    if num_samples > 1:
        sampling |= {"temperature": temperature, "top_p": top_p}
    out: list[list[str]] = []
    try:
        for start in tqdm(
            range(0, len(prompts), batch_size), desc="generate", disable=not progress, leave=False
        ):
            texts = [p.rstrip() for p in prompts[start : start + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                stop_strings=list(STOP_SEQUENCES),
                tokenizer=tokenizer,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            decoded = tokenizer.batch_decode(
                generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            cut = [truncate_completion(t) for t in decoded]
            out += [cut[i : i + num_samples] for i in range(0, len(cut), num_samples)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def execute_completions(
    frame: pd.DataFrame,
    completions: list[list[str]],
    limits: Limits | None = None,
    workers: int = 2,
    progress: bool = True,
) -> list[list[bool]]:
    """Run every completion of every row (prompt + completion, then the row's tests) in the sandbox."""
    prompts = frame["prompt"].astype(str).str.rstrip().tolist()
    programs = [
        (prompt + completion, test, entry)
        for prompt, samples, test, entry in zip(
            prompts, completions, frame["test"], frame["entry_point"], strict=True
        )
        for completion in samples
    ]
    outcomes = Sandbox(limits or Limits(), workers).run(programs, progress)
    passed, position = [], 0
    for samples in completions:
        passed.append([o.passed for o in outcomes[position : position + len(samples)]])
        position += len(samples)
    return passed


def add_pass_at_k(
    table: pd.DataFrame, completions: list[list[str]], passed: list[list[bool]]
) -> pd.DataFrame:
    """Columns of a code-execution pass: generated (first sample), completions (JSON), counts, pass@k."""
    num_samples = len(completions[0]) if completions else 1
    table = table.copy()
    table["generated"] = [samples[0] if samples else "" for samples in completions]
    table["completions"] = [json.dumps(samples) for samples in completions]
    table["samples"] = num_samples
    table["samples_passed"] = np.array([sum(p) for p in passed], dtype=np.int64)
    for name, values in pass_at_k_columns(table["samples_passed"].tolist(), num_samples).items():
        table[name] = values
    return table


def check_generation_options(
    evaluation: EvalConfig, task: str, prompt_template: str, columns: pd.Index
) -> None:
    """eval.exact_match / eval.code_execution against the task and the data they score (before any work).

    code_execution needs causal_lm code data (prompt, test, entry_point) without a prompt template.
    """
    if evaluation.exact_match:
        if task != "causal_lm":
            raise ConfigError("eval.exact_match: scores generated answers; it needs task: causal_lm")
        if "prompt" not in columns:
            raise ConfigError(
                "eval.exact_match: the model answers each prompt, but the data has no prompt column; "
                "set data.prompt_column to the question column (or use data.name: asdiv)"
            )
    if evaluation.num_samples > 1 and not evaluation.code_execution:
        raise ConfigError(
            "eval.num_samples: sampled completions are scored by eval.code_execution; set it true"
        )
    if not evaluation.code_execution:
        return
    if evaluation.exact_match:
        raise ConfigError(
            "eval.code_execution and eval.exact_match are both true: choose one way to score generations "
            "(e.g. eval.exact_match=false when a run trained with exact match is evaluated on code)"
        )
    if task != "causal_lm":
        raise ConfigError("eval.code_execution: runs generated code; it needs task: causal_lm")
    missing = [c for c in ("prompt", *CODE_COLUMNS) if c not in columns]
    if missing:
        raise ConfigError(
            f"eval.code_execution: the data lacks the columns {missing} (prompt, test, entry_point); "
            f"use data.name: humaneval, or a HumanEval-format file in data.path"
        )
    if prompt_template != "none":
        raise ConfigError(
            "eval.code_execution: the program is the prompt + the completion, so the prompt must be the "
            "code itself; set data.prompt_template: none"
        )


def with_executed_code(
    cfg: RunConfig,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    frame: pd.DataFrame,
    table: pd.DataFrame,
) -> pd.DataFrame:
    """eval.code_execution: completions of the split's prompts, run against their tests, pass@k per row."""
    evaluation = cfg.eval
    completions = generate_completions(
        model,
        tokenizer,
        frame["prompt"].astype(str).tolist(),
        evaluation.max_new_tokens,
        evaluation.num_samples,
        evaluation.temperature,
        evaluation.top_p,
        evaluation.batch_size,
        cfg.train.progress_bar,
    )
    limits = Limits(timeout_s=evaluation.execution_timeout)
    passed = execute_completions(
        frame, completions, limits, evaluation.execution_workers, cfg.train.progress_bar
    )
    return add_pass_at_k(table, completions, passed)
