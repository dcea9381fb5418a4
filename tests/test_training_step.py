"""The visible training step: loss composition, schedules, gradient accumulation, NaN stop on every rank."""

from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_config
from fairlora.config import build_config
from fairlora.errors import TrainingError
from fairlora.methods import apply_method
from fairlora.models import load_model
from fairlora.regularizers.schedules import (
    constant,
    cosine_decay,
    cosine_weight,
    two_phase,
    two_phase_weight,
)
from fairlora.tasks import get_task
from fairlora.training import LossTerm, compose_loss
from fairlora.training.step import StepState, make_optimizer, stop_if_not_finite, train_step
from fairlora.training.trainer import warn_keep_freed_memory


def test_schedules_are_pure_functions_of_the_step():
    assert constant(0.3)(0, 100) == constant(0.3)(99, 100) == 0.3
    decay = cosine_decay(2.0, floor=0.1)
    assert decay(0, 100) == pytest.approx(2.0) and decay(100, 100) == pytest.approx(0.2)
    assert decay(50, 100) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert cosine_weight(200, 100, 1.0, 0.5) == pytest.approx(0.5)  # clamped after the end
    ramp = two_phase(1.0, start=0.2, ramp=0.3)
    assert [ramp(s, 100) for s in (0, 19, 20, 35, 50, 99)] == pytest.approx([0, 0, 0, 0.5, 1, 1])
    assert two_phase_weight(10, 100, 4.0, 0.1, 0.0) == 4.0
    with pytest.raises(ValueError, match="start \\+ ramp <= 1"):
        two_phase(1.0, start=0.8, ramp=0.5)
    with pytest.raises(ValueError, match="floor"):
        cosine_decay(1.0, floor=1.5)


def _setup(tmp_path, **sections):
    cfg = build_config(tiny_config(tmp_path, **sections))
    loaded = load_model(cfg.model, cfg.task)
    for module in loaded.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.manual_seed(0)  # the adapter's random init
    setup = apply_method(cfg, loaded)
    task = get_task(cfg.task)
    texts = [f"sentence number {i} about people" for i in range(8)]
    import pandas as pd

    frame = pd.DataFrame({"text": texts, "label": [i % 2 for i in range(8)]})
    examples = task.encode(frame, loaded.tokenizer, 32)
    collate = task.collator(loaded.tokenizer)
    return cfg, setup, examples, collate


def test_terms_share_one_teacher_forward_and_are_weighted_by_step(tmp_path):
    cfg, setup, examples, collate = _setup(tmp_path)
    batch = collate(examples)
    teacher_calls = []

    def teacher():
        teacher_calls.append(1)
        return setup.teacher_context()

    def distill(seen):
        return (seen.outputs.logits - seen.teacher.logits).pow(2).mean()

    def size(seen):
        return seen.teacher.logits.abs().mean()

    terms = [
        LossTerm("distill", distill, cosine_decay(1.0, 0.1), needs_teacher=True),
        LossTerm("size", size, two_phase(2.0, start=0.5), needs_teacher=True),
    ]
    loss, parts, _ = compose_loss(setup.model, batch, terms, 0, 10, teacher)
    assert len(teacher_calls) == 1
    assert loss.item() == pytest.approx((parts["task_loss"] + parts["distill"]).item())
    loss, parts, _ = compose_loss(setup.model, batch, terms, 10, 10, teacher)
    expected = parts["task_loss"] + 0.1 * parts["distill"] + 2.0 * parts["size"]
    assert loss.item() == pytest.approx(expected.item())


class _Recorder(torch.optim.SGD):
    """SGD that keeps a copy of the gradients it stepped with."""

    def step(self, closure=None):
        self.grads = [p.grad.clone() for g in self.param_groups for p in g["params"] if p.grad is not None]
        return super().step(closure)


def _grads(tmp_path, micro: int) -> list[torch.Tensor]:
    cfg, setup, examples, collate = _setup(tmp_path)
    params = [p for p in setup.model.parameters() if p.requires_grad]
    optimizer = _Recorder(params, lr=0.0)
    state = StepState(setup, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), 1, 0.0)
    size = len(examples) // micro
    train_step(state, [collate(examples[i * size : (i + 1) * size]) for i in range(micro)])
    return optimizer.grads


def test_batch_8_and_4_x_2_gradient_accumulation_give_the_same_gradients(tmp_path):
    whole, accumulated = _grads(tmp_path, 1), _grads(tmp_path, 2)
    assert len(whole) == len(accumulated) > 0
    for a, b in zip(whole, accumulated, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_hf_trainer_accumulation_matches_one_large_batch(tmp_path, monkeypatch):
    import fairlora
    from fairlora import pipeline
    from fairlora.training import trainer as trainer_module

    def without_dropout(cfg, loaded):
        for module in loaded.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return apply_method(cfg, loaded)

    monkeypatch.setattr(pipeline, "apply_method", without_dropout)

    seen: dict[int, list[torch.Tensor]] = {}

    def recording(setup, train, total):
        params = [p for g in setup.param_groups(train.lr, train.head_lr, 0.0) for p in g["params"]]
        optimizer = _Recorder(params, lr=0.0)
        seen[train.grad_accum] = optimizer
        return optimizer, None

    monkeypatch.setattr(trainer_module, "make_optimizer", recording)
    for accum, batch in ((1, 8), (2, 4)):
        train = {"max_steps": 1, "batch_size": batch, "grad_accum": accum, "max_grad_norm": 0.0}
        fairlora.train(tiny_config(tmp_path, name=f"ga{accum}", train=train, eval={"splits": ["test"]}))
    assert len(seen[1].grads) == len(seen[2].grads) > 0
    for a, b in zip(seen[1].grads, seen[2].grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)


def _rank_main(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    loss = torch.tensor(float("nan") if rank == 1 else 1.0)
    try:
        stop_if_not_finite(loss, {"task_loss": loss}, 4, "hint")
        results[rank] = "continued"
    except TrainingError as error:
        results[rank] = str(error)
    finally:
        torch.distributed.destroy_process_group()


def test_a_nan_loss_on_one_rank_stops_every_rank():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(port, results), nprocs=2, join=True)
        outcome = dict(results)
    assert all("not finite at step 5 on at least one process" in outcome[r] for r in (0, 1)), outcome


def test_keep_freed_memory_is_deprecated_and_leaves_glibc_alone(monkeypatch):
    import ctypes

    loaded = []
    monkeypatch.setattr(ctypes, "CDLL", lambda name: loaded.append(name))  # mallopt would need libc
    assert build_config({}).train.keep_freed_memory is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_keep_freed_memory(False)
    with pytest.warns(FutureWarning, match="MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=10"):
        warn_keep_freed_memory(True)
    assert loaded == []  # glibc's dynamic mmap threshold stays on: no mallopt call


def test_make_optimizer_warms_up_and_uses_head_lr(tmp_path):
    cfg, setup, _, _ = _setup(tmp_path)
    train = cfg.train.model_copy(
        update={"head_lr": 4e-3, "warmup_ratio": 0.5, "scheduler": "constant_with_warmup"}
    )
    optimizer, scheduler = make_optimizer(setup, train, 10)
    assert {g["lr"] for g in optimizer.param_groups} == {0.0}  # warm-up starts at 0
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([cfg.train.lr, 4e-3])
    assert not math.isnan(optimizer.param_groups[0]["lr"])
