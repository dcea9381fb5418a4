"""BA-LoRA's classification teacher cache: the same losses and weights as a teacher forward every batch,
no teacher forward once every example has been seen, with train_step, the HF Trainer and a resume."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, set_seed

import fairlora
from conftest import tiny_config
from fairlora import pipeline
from fairlora.config import build_config
from fairlora.methods import apply_method
from fairlora.models import load_model
from fairlora.regularizers.teacher_cache import TeacherCache, example_keys
from fairlora.training import losses
from fairlora.training.step import StepState, make_optimizer, train_step

EXAMPLES, MICRO, ACCUMULATE = 12, 3, 2  # 2 steps per epoch, each of 2 micro-batches of 3


def _examples() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(5)
    lengths = torch.randint(4, 14, (EXAMPLES,), generator=gen)
    return [
        {"ids": torch.randint(4, 200, (int(n),), generator=gen), "label": torch.tensor(i % 2)}
        for i, n in enumerate(lengths)
    ]


def _batch(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-padded to the longest example: a reshuffle changes every example's padding."""
    width = max(len(e["ids"]) for e in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, example in enumerate(examples):
        ids[row, : len(example["ids"])] = example["ids"]
        mask[row, : len(example["ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([e["label"] for e in examples])}


def _counting(setup: Any, calls: list[int]) -> None:
    """Count the teacher's forwards (each enters the teacher context once)."""
    teacher = setup.teacher

    @contextlib.contextmanager
    def counted() -> Iterator[None]:
        calls.append(1)
        with teacher():
            yield

    setup.teacher = counted


def _two_epochs(tmp_path: Path, cache: bool) -> tuple[list[dict[str, float]], dict, list[int]]:
    cfg = build_config(
        tiny_config(tmp_path, method="ba-lora", balora={"cache_teacher": cache}, train={"lr": 0.02})
    )
    set_seed(cfg.seed)
    loaded = load_model(cfg.model, cfg.task, 2)
    setup = apply_method(cfg, loaded)
    assert (setup.teacher_cache is not None) == cache
    calls: list[int] = []
    _counting(setup, calls)
    examples, steps = _examples(), 2 * EXAMPLES // (MICRO * ACCUMULATE)
    optimizer, scheduler = make_optimizer(setup, cfg.train, steps)
    state = StepState(setup, optimizer, scheduler, steps)
    parts, per_epoch = [], []
    for epoch in range(2):
        order = torch.randperm(EXAMPLES, generator=torch.Generator().manual_seed(epoch)).tolist()
        micro = [_batch([examples[i] for i in order[s : s + MICRO]]) for s in range(0, EXAMPLES, MICRO)]
        before = len(calls)
        for step in range(0, len(micro), ACCUMULATE):
            parts.append(train_step(state, micro[step : step + ACCUMULATE]))
        per_epoch.append(len(calls) - before)
    return parts, setup.trainable_state(), per_epoch


def test_cached_teacher_gives_the_same_training_and_no_forward_in_epoch_2(tmp_path: Path) -> None:
    cached_parts, cached, cached_calls = _two_epochs(tmp_path / "a", cache=True)
    direct_parts, direct, direct_calls = _two_epochs(tmp_path / "b", cache=False)
    micro_batches = EXAMPLES // MICRO
    assert direct_calls == [micro_batches, micro_batches]
    assert cached_calls == [micro_batches, 0]  # every example was seen in epoch 1
    assert [p.keys() for p in cached_parts] == [p.keys() for p in direct_parts]
    for mine, theirs in zip(cached_parts, direct_parts, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-6)
    assert cached_parts[-1]["balora_cr"] > 1e-4  # the student moved: CR (read from the cache) is not 0
    assert cached.keys() == direct.keys()
    assert all(torch.allclose(cached[k], direct[k], atol=1e-6, rtol=1e-5) for k in cached)


def test_keys_ignore_padding_and_labels_and_tell_examples_apart() -> None:
    examples = _examples()
    short = example_keys(_batch(examples[:3]))
    padded = example_keys(_batch(examples[:3] + [{"ids": torch.arange(4, 30), "label": torch.tensor(1)}]))
    assert short == padded[:3] and len(set(padded)) == 4
    relabelled = _batch(examples[:3]) | {"labels": torch.tensor([1, 1, 1])}
    assert example_keys(relabelled) == short
    changed = _batch(examples[:3])
    changed["input_ids"][0, 0] += 1
    assert example_keys(changed)[1:] == short[1:] and example_keys(changed)[0] != short[0]


def test_a_batch_with_an_unseen_example_runs_the_teacher_on_the_whole_batch() -> None:
    cache, examples, calls = TeacherCache(), _examples(), []

    def run(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = batch["input_ids"].float().sum(-1, keepdim=True).repeat(1, 2)  # a stand-in teacher

        def forward() -> Any:
            calls.append(len(logits))
            return type("Outputs", (), {"logits": logits})()

        return cache.outputs(batch, forward).logits

    first = run(_batch(examples[:4]))
    again = run(_batch(examples[3::-1]))  # the same examples, another order and padding
    assert calls == [4] and torch.equal(again, first.flip(0)) and len(cache) == 4
    run(_batch(examples[2:6]))  # two unseen: one forward over all four
    assert calls == [4, 4] and len(cache) == 6


class _KillAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise KeyboardInterrupt


def _run(config: dict, monkeypatch: pytest.MonkeyPatch, kill_at: int | None = None) -> int:
    """Train through the pipeline (HF Trainer); the number of teacher forwards."""
    calls = []
    forward = losses.teacher_forward
    monkeypatch.setattr(losses, "teacher_forward", lambda *a: calls.append(1) or forward(*a))
    if kill_at is not None:
        original = pipeline.apply_method

        def patched(cfg: Any, loaded: Any) -> Any:
            setup = original(cfg, loaded)
            setup.callbacks.append(_KillAt(kill_at))
            return setup

        monkeypatch.setattr(pipeline, "apply_method", patched)
        with pytest.raises(KeyboardInterrupt):
            fairlora.train(config)
    else:
        fairlora.train(config, resume=True)
    monkeypatch.undo()
    return len(calls)


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_trainer_path_and_resume_match_a_teacher_forward_every_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(name: str, cache: bool) -> dict:
        train = {"max_steps": None, "epochs": 2, "batch_size": 4, "grad_accum": 2, "lr": 0.02}
        train |= {"save_strategy": "steps", "save_steps": 1, "logging_steps": 1}
        sections = {"balora": {"cache_teacher": cache}, "train": train, "data": {"max_examples": 40}}
        return tiny_config(tmp_path, name=name, method="ba-lora", **sections)

    direct_calls = _run(config("direct", False), monkeypatch)
    cached_calls = _run(config("cached", True), monkeypatch)
    assert cached_calls > 2 and direct_calls == 2 * cached_calls  # no teacher forward in epoch 2
    log = json.loads((tmp_path / "runs" / "cached" / "train_log.json").read_text())
    direct_log = json.loads((tmp_path / "runs" / "direct" / "train_log.json").read_text())
    parts = ("loss", "balora_cr", "balora_dr", "balora_svdr")
    expected = {r["step"]: [r[p] for p in parts] for r in direct_log if "balora_cr" in r}
    rows = [r for r in log if "balora_cr" in r]
    assert len(rows) == len(expected) and max(r["balora_cr"] for r in rows) > 1e-5
    for row in rows:
        assert [row[p] for p in parts] == pytest.approx(expected[row["step"]], rel=1e-4, abs=1e-6)
    direct = _adapter(tmp_path / "runs" / "direct")
    assert all(
        torch.allclose(t, direct[k], atol=1e-6) for k, t in _adapter(tmp_path / "runs" / "cached").items()
    )

    steps_per_epoch = max(r["step"] for r in log) // 2
    _run(config("resumed", True), monkeypatch, kill_at=steps_per_epoch + 2)  # checkpoint: epoch 2's 1st step
    resumed_calls = _run(config("resumed", True), monkeypatch)
    assert (
        resumed_calls == cached_calls - 2
    )  # the cache refills lazily: epoch 2 less its first 2 micro-batches
    resumed = _adapter(tmp_path / "runs" / "resumed")
    assert all(torch.allclose(t, direct[k], atol=1e-6) for k, t in resumed.items())
