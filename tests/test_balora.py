"""BA-LoRA: regularizers against hand-computed values, gradients, the teacher, the method and its errors."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import set_seed

from conftest import tiny_config
from fairlora.config import build_config
from fairlora.errors import ConfigError, DataError
from fairlora.methods import apply_method
from fairlora.methods.balora import balora_schedules, balora_terms, svd_k
from fairlora.models import load_model
from fairlora.pipeline import train
from fairlora.regularizers import balora
from fairlora.regularizers.balora import (
    TermSettings,
    balora_loss_terms,
    consistency_nlg,
    consistency_nlu,
    diversity_nlg,
    diversity_nlu,
    randomized_svd,
    response_terms,
    svd_nlg,
    svd_nlu,
)
from fairlora.regularizers.schedules import constant
from fairlora.training.losses import compose_loss, label_positions, teacher_inputs
from fairlora.training.step import StepState, make_optimizer, train_step

# ---------------------------------------------------------------- hand-computed values (NLU)


def test_consistency_kl_matches_hand_value() -> None:
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])  # /T=2 -> softmax [0.75, 0.25]
    student = torch.zeros(1, 2)  # uniform
    expected = 4 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert consistency_nlu(student, teacher, 2.0, "kl").item() == pytest.approx(expected, rel=1e-6)
    assert consistency_nlu(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_consistency_mse_uses_l2_normalised_rows() -> None:
    student, teacher = torch.tensor([[3.0, 4.0]]), torch.tensor([[5.0, 0.0]])
    # [0.6, 0.8] vs [1, 0]: ((-0.4)^2 + 0.8^2) / 2
    assert consistency_nlu(student, teacher, mode="mse").item() == pytest.approx(0.4)


def test_diversity_is_squared_off_diagonal_covariance_over_d() -> None:
    logits = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0]])
    # centred columns [-1, 1, 0] and [0, -2, 2]: cov_xy = -2 / 2 = -1; two entries of 1, / D = 2
    assert diversity_nlu(logits).item() == pytest.approx(1.0)
    assert diversity_nlu(torch.tensor([[1.0, 5.0]])).item() == 0.0  # one row: no covariance


def test_svd_share_of_top_singular_values() -> None:
    logits = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert svd_nlu(logits, 1).item() == pytest.approx(-0.75)
    assert svd_nlu(logits, 2).item() == pytest.approx(-1.0)


# ---------------------------------------------------------------- NLG: response tokens only


def _lm_batch(seed: int = 0, vocab: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 6, vocab, generator=gen)
    teacher = torch.randn(2, 6, vocab, generator=gen)
    labels = torch.tensor([[-100, -100, -100, 4, 5, 1], [-100, -100, 2, 3, -100, -100]])
    return logits, teacher, labels


def test_nlg_terms_count_response_tokens_only() -> None:
    logits, teacher, labels = _lm_batch()
    # logits at position t predict labels[t + 1]: 3 + 2 response tokens
    picked = [(0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]
    rows = torch.stack([logits[b, t] for b, t in picked])
    rows_teacher = torch.stack([teacher[b, t] for b, t in picked])
    assert consistency_nlg(logits, teacher, labels).item() == pytest.approx(
        consistency_nlu(rows, rows_teacher).item(), rel=1e-6
    )
    assert svd_nlg(logits, labels, 2).item() == pytest.approx(
        -(torch.linalg.svdvals(rows)[:2].sum() / rows.norm()).item(), rel=1e-5
    )
    prompt = torch.ones_like(logits, dtype=torch.bool)
    for b, t in picked:
        prompt[b, t] = False
    changed, changed_teacher = logits.clone(), teacher.clone()
    changed[prompt] = 50.0  # prompt, padding and the last position: never counted
    changed_teacher[prompt] = -50.0
    for fn in (
        lambda z, t: consistency_nlg(z, t, labels),
        lambda z, t: diversity_nlg(z, labels, 3),
        lambda z, t: svd_nlg(z, labels, 2),
    ):
        assert fn(changed, changed_teacher).item() == pytest.approx(fn(logits, teacher).item(), rel=1e-6)


def test_nlg_diversity_is_minus_entropy_of_top_k() -> None:
    logits = torch.tensor([[[0.0, 0.0, -10.0], [0.0, 0.0, -10.0]]])
    labels = torch.tensor([[-100, 1]])
    assert diversity_nlg(logits, labels, top_k=2).item() == pytest.approx(-math.log(2.0), rel=1e-6)


def test_nlg_svd_hand_value_and_no_response_tokens_is_an_error() -> None:
    logits = torch.tensor([[[3.0, 0.0], [0.0, 4.0], [9.0, 9.0]]])
    labels = torch.tensor([[-100, 1, 1]])
    assert svd_nlg(logits, labels, 1).item() == pytest.approx(-0.8)  # sigma 4, 3; ||Z||_F = 5
    with pytest.raises(DataError, match="no response tokens"):
        svd_nlg(logits, torch.full_like(labels, -100), 1)


def test_randomized_svd_is_close_deterministic_and_leaves_the_rng_alone() -> None:
    gen = torch.Generator().manual_seed(1)
    matrix = torch.randn(40, 6, generator=gen) @ torch.randn(6, 5000, generator=gen)  # rank 6, V > 4096
    state = torch.get_rng_state()
    approx = randomized_svd(matrix, 4)[1]
    assert torch.equal(state, torch.get_rng_state())
    exact = torch.linalg.svdvals(matrix)[:4]
    assert torch.allclose(approx[:4], exact, rtol=1e-4)
    assert torch.equal(approx, randomized_svd(matrix, 4)[1])


@pytest.mark.parametrize("vocab", [7, 5000])  # exact SVD, and the randomized one above 4096
def test_gradients_flow_through_svdr(vocab: int) -> None:
    logits, _, labels = _lm_batch(vocab=vocab)
    logits.requires_grad_(True)
    svd_nlg(logits, labels, 2).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    rows = torch.randn(8, 4, requires_grad=True)
    svd_nlu(rows, 2).backward()
    assert rows.grad is not None and rows.grad.abs().sum() > 0


# ---------------------------------------------------------------- the teacher, the terms, the method


def _setup(tmp_path: Path, method: str, task: str = "classification", **sections: Any) -> tuple[Any, Any]:
    extra: dict[str, Any] = {"method": method, "task": task, **sections}
    if task == "causal_lm":
        extra |= {"model": {"name": "tiny-llama"}, "lora": {"target_modules": ["q_proj", "v_proj"]}}
    cfg = build_config(tiny_config(tmp_path, **extra))
    set_seed(cfg.seed)
    loaded = load_model(cfg.model, cfg.task, 2)
    return cfg, loaded


def _batch(vocab: int = 200, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    ids = torch.randint(4, vocab, (4, 10), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch["labels"] = labels if labels is not None else torch.tensor([0, 1, 0, 1])
    return batch


@pytest.mark.parametrize(
    ("method", "task"),
    [
        ("ba-lora", "classification"),
        ("lora", "classification"),
        ("vera", "classification"),
        ("ba-lora", "causal_lm"),
    ],
)
def test_teacher_logits_equal_the_base_model_before_the_first_step(
    tmp_path: Path, method: str, task: str
) -> None:
    cfg, loaded = _setup(tmp_path, method, task, balora={"enabled": True})
    batch = _batch(labels=None if task == "classification" else torch.randint(4, 200, (4, 10)))
    loaded.model.eval()
    with torch.no_grad():
        base = loaded.model(**batch).logits
    setup = apply_method(cfg, loaded)
    with setup.teacher_context():
        teacher = setup.model(**batch).logits
    assert torch.allclose(teacher, base, atol=1e-5)
    if method == "ba-lora":  # PiSSA moved the principal part into the adapter: disabling it is NOT the base
        with setup.model.disable_adapter(), torch.no_grad():
            residual = setup.model(**batch).logits
        assert not torch.allclose(residual, base, atol=1e-3)
    assert {t.name for t in setup.loss_terms} == {"balora_cr", "balora_dr", "balora_svdr"}


def _lm_labels(step: int) -> torch.Tensor:
    labels = torch.randint(4, 200, (4, 10), generator=torch.Generator().manual_seed(step))
    labels[:, : 3 + step % 3] = -100  # a prompt of 3-5 tokens
    return labels


def _train(cfg: Any, loaded: Any, steps: int = 3) -> dict[str, torch.Tensor]:
    setup = apply_method(cfg, loaded)
    optimizer, scheduler = make_optimizer(setup, cfg.train, steps)
    state = StepState(setup, optimizer, scheduler, steps)
    for step in range(steps):
        classes = torch.tensor([0, 1, 1, step % 2])
        parts = train_step(
            state, [_batch(labels=classes if cfg.task == "classification" else _lm_labels(step))]
        )
    assert set(parts) == {"task_loss"} | {t.name for t in setup.loss_terms}
    return setup.trainable_state()


@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_all_weights_zero_reproduces_pissa_bit_for_bit(tmp_path: Path, task: str) -> None:
    zero = {"cr_weight": 0.0, "dr_weight": 0.0, "svdr_weight": 0.0}
    plain = _train(*_setup(tmp_path, "pissa", task))
    silent = _train(*_setup(tmp_path, "ba-lora", task, balora=zero))
    assert plain.keys() == silent.keys()
    assert all(torch.equal(plain[k], silent[k]) for k in plain)
    active = _train(*_setup(tmp_path, "ba-lora", task, balora={"warmup_start": 0.0, "warmup_ramp": 0.0}))
    assert not all(torch.equal(plain[k], active[k]) for k in plain)


def test_causal_terms_and_task_loss_share_one_gradient_buffer(tmp_path: Path) -> None:
    cfg, loaded = _setup(tmp_path, "pissa", "causal_lm")
    setup = apply_method(cfg, loaded)
    terms = balora_loss_terms(
        TermSettings(top_k=4, svd_k=2), (constant(0.7), constant(0.5), constant(1.3)), True
    )
    assert all(term.routes_logits for term in terms)
    with torch.no_grad():  # the student away from the teacher: CR and its gradient are not 0
        for param in (p for p in setup.model.parameters() if p.requires_grad):
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
    batch = _batch(labels=_lm_labels(1))
    torch.manual_seed(0)  # the same dropout masks in both passes
    loss, parts, _ = compose_loss(setup.model, batch, terms, 0, 10, setup.teacher_context)
    loss.backward()
    routed = {n: p.grad.clone() for n, p in setup.model.named_parameters() if p.grad is not None}
    setup.model.zero_grad(set_to_none=True)
    with setup.teacher_context():  # the same loss by the plain formulas, autograd all the way
        teacher = setup.model(**teacher_inputs(setup.model, batch)).logits
    torch.manual_seed(0)
    out = setup.model(**batch)
    picked = out.logits.reshape(-1, out.logits.shape[-1])[label_positions(batch["labels"]).flatten()]
    log_p = torch.log_softmax(picked.topk(4, dim=-1).values, -1)
    plain = torch.stack(
        [
            consistency_nlu(picked, teacher),
            (log_p.exp() * log_p).sum(-1).mean(),
            -(torch.linalg.svdvals(picked)[:2].sum() / picked.norm()),
        ]
    )
    (out.loss + (plain * torch.tensor([0.7, 0.5, 1.3])).sum()).backward()
    assert torch.allclose(parts["task_loss"], out.loss) and float(plain[0]) > 0
    assert torch.allclose(torch.stack([parts[t.name] for t in terms]), plain, atol=1e-6)
    apart = {n: p.grad for n, p in setup.model.named_parameters() if p.grad is not None}
    assert routed.keys() == apart.keys() and routed
    assert all(torch.allclose(routed[n], apart[n], atol=1e-6, rtol=1e-4) for n in routed)


def test_the_teacher_stays_the_step_0_model_while_the_student_trains(tmp_path: Path) -> None:
    cfg, loaded = _setup(tmp_path, "ba-lora", train={"lr": 0.05})
    setup = apply_method(cfg, loaded)
    batch = _batch()
    with setup.teacher_context():
        before = setup.model(**batch).logits
    optimizer, scheduler = make_optimizer(setup, cfg.train, 3)
    state = StepState(setup, optimizer, scheduler, 3)
    for _ in range(3):
        train_step(state, [batch])
    with setup.teacher_context():
        after = setup.model(**batch).logits
    setup.model.eval()
    with torch.no_grad():
        student = setup.model(**batch).logits
    assert torch.allclose(before, after, atol=1e-6) and not torch.allclose(student, before, atol=1e-3)
    assert all(
        p.requires_grad == ("-init" not in n) for n, p in setup.model.named_parameters() if "lora_" in n
    )


def test_one_teacher_forward_serves_every_term(tmp_path: Path) -> None:
    cfg, loaded = _setup(tmp_path, "ba-lora")
    setup = apply_method(cfg, loaded)
    calls = []
    setup.model.register_forward_hook(lambda *args: calls.append(1))
    compose_loss(setup.model, _batch(), setup.loss_terms, 0, 10, setup.teacher_context)
    assert len(calls) == 2  # one student and one teacher forward for CR, DR and SVDR together


def test_switches_and_schedules(tmp_path: Path) -> None:
    cfg = build_config(tiny_config(tmp_path, method="ba-lora", balora={"dr": False, "svdr_weight": 0.5}))
    terms = {t.name: t for t in balora_terms(cfg, 4)}
    assert set(terms) == {"balora_cr", "balora_svdr"}
    cr, svdr = terms["balora_cr"].weight, terms["balora_svdr"].weight
    assert [cr(s, 100) for s in (0, 50, 100)] == pytest.approx([0.15] * 3)  # the paper's NLU: constant
    assert [svdr(s, 100) for s in (0, 19, 100)] == [0.5] * 3
    scheduled = build_config(
        tiny_config(
            tmp_path, method="ba-lora", balora={"cr_schedule": "cosine", "svdr_schedule": "two_phase"}
        )
    )
    cr, dr, svdr = balora_schedules(scheduled)
    assert cr(0, 100) == pytest.approx(0.15) and cr(100, 100) == pytest.approx(0.015)
    assert svdr(19, 100) == 0.0 and svdr(22, 100) == pytest.approx(0.4 * 0.03) and svdr(60, 100) == 0.03
    assert dr(0, 100) == pytest.approx(0.03)  # unset: still the task's constant


def test_defaults_follow_the_task_and_an_explicit_value_wins(tmp_path: Path) -> None:
    def weights(task: str, **balora: Any) -> list[float]:
        """CR, DR, SVDR weights at steps 0, 10, 22, 50, 100 of 100, one flat list."""
        extra = {"model": {"name": "tiny-llama"}} if task == "causal_lm" else {}
        cfg = build_config(tiny_config(tmp_path, method="ba-lora", task=task, balora=balora, **extra))
        return [schedule(step, 100) for schedule in balora_schedules(cfg) for step in (0, 10, 22, 50, 100)]

    assert weights("classification") == pytest.approx([0.15] * 5 + [0.03] * 5 + [0.03] * 5)
    cosine = [0.025 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 100))) for s in (0, 10, 22, 50, 100)]
    ramp = [0.0, 0.0, 0.005 * 0.4, 0.005, 0.005]  # 0 for 20% of the steps, a ramp over 5%, then constant
    assert weights("causal_lm") == pytest.approx(cosine + ramp + ramp)
    mixed = weights("causal_lm", cr_schedule="constant", dr_weight=0.01, svdr_schedule="constant")
    assert mixed == pytest.approx([0.025] * 5 + [2 * r for r in ramp] + [0.005] * 5)
    nlu = weights("classification", cr_weight=0.1, cr_schedule="cosine", dr_schedule="two_phase")
    assert nlu[4] == pytest.approx(0.01) and nlu[5:7] == [0.0, 0.0] and nlu[10:] == pytest.approx([0.03] * 5)


def test_default_k_adapts_to_the_classes_and_says_so(tmp_path: Path) -> None:
    cfg = build_config(tiny_config(tmp_path, method="ba-lora"))
    with pytest.warns(UserWarning, match=r"k = min\(5, classes - 1\) = 1"):
        assert svd_k(cfg, 2) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert svd_k(cfg, 10) == 5


# ---------------------------------------------------------------- runs and input errors


@pytest.mark.parametrize("method", ["lora", "vera", "aflora"])
def test_balora_block_works_on_other_adapter_methods(tmp_path: Path, method: str) -> None:
    result = train(tiny_config(tmp_path, method=method, balora={"enabled": True}))
    log = json.loads((result.run_dir / "train_log.json").read_text())
    logged = [row for row in log if "task_loss" in row]
    assert logged and all(
        {"balora_cr", "balora_dr", "balora_svdr", "balora_cr_weight"} <= set(r) for r in logged
    )


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"method": "ba-lora", "balora": {"svd_k": 2}}, r"balora.svd_k=2: with 2 classes"),
        ({"method": "full", "balora": {"enabled": True}}, r"balora.cr: method 'full'"),
        ({"method": "ba-lora", "balora": {"dr_weight": -0.1}}, r"balora.dr_weight: Input should be greater"),
        (
            {
                "method": "ba-lora",
                "task": "causal_lm",
                "model": {"name": "tiny-llama"},
                "lora": {"target_modules": ["q_proj", "v_proj"]},
                "balora": {"cr_loss": "mse"},
            },
            r"balora.cr_loss: mse",
        ),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path: Path, sections: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train(tiny_config(tmp_path, **sections))
    assert not (tmp_path / "runs").exists()


def test_full_fine_tuning_runs_dr_and_svdr_without_a_teacher(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, method="full", balora={"enabled": True, "cr": False}))
    log = json.loads((result.run_dir / "train_log.json").read_text())
    assert any("balora_svdr" in row and "balora_cr" not in row for row in log)


@pytest.mark.parametrize("rows_per_chunk", [None, 2])  # one chunk; chunks of 2, 2 and 1 of the 5 rows
@pytest.mark.parametrize("vocab", [9, 5000])  # exact SVD, and the randomized one (full rank here: exact)
def test_chunked_nlg_gradients_match_the_plain_formulas(
    vocab: int, rows_per_chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rows_per_chunk:
        monkeypatch.setattr(balora, "CHUNK_BYTES", rows_per_chunk * 4 * vocab)
    logits, teacher, labels = _lm_batch(vocab=vocab)
    rows = [(0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]
    for term in ("cr", "dr", "svdr"):
        fast = logits.clone().requires_grad_(True)
        plain = logits.clone().requires_grad_(True)
        picked = torch.stack([plain[b, t] for b, t in rows])
        if term == "cr":
            consistency_nlg(fast, teacher, labels).backward()
            consistency_nlu(picked, torch.stack([teacher[b, t] for b, t in rows])).backward()
        elif term == "dr":
            diversity_nlg(fast, labels, 4).backward()
            log_p = torch.log_softmax(picked.topk(4, dim=-1).values, -1)
            (log_p.exp() * log_p).sum(-1).mean().backward()
        else:
            svd_nlg(fast, labels, 2).backward()
            (-(torch.linalg.svdvals(picked)[:2].sum() / picked.norm())).backward()
        assert torch.allclose(fast.grad, plain.grad, atol=1e-6), term


@pytest.mark.parametrize("rows_per_chunk", [None, 2])
def test_one_fused_pass_equals_the_terms_apart_and_takes_response_only_teacher_logits(
    rows_per_chunk: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rows_per_chunk:
        monkeypatch.setattr(balora, "CHUNK_BYTES", rows_per_chunk * 4 * 11)
        assert balora.chunk_rows(11) == rows_per_chunk
    logits, teacher, labels = _lm_batch(vocab=11)
    weights = torch.tensor([0.7, 0.0, 1.3])  # DR gated off: it adds no gradient
    fused = logits.clone().requires_grad_(True)
    response_only = teacher.reshape(-1, 11)[label_positions(labels).flatten()]  # (M, V), as the teacher gives
    values = response_terms(fused, labels, response_only, TermSettings(top_k=4, svd_k=2))
    (values * weights).sum().backward()
    apart = logits.clone().requires_grad_(True)
    expected = torch.stack(
        [consistency_nlg(apart, teacher, labels), diversity_nlg(apart, labels, 4), svd_nlg(apart, labels, 2)]
    )
    (expected * weights).sum().backward()
    assert torch.allclose(values.detach(), expected.detach(), atol=1e-6)
    assert torch.allclose(fused.grad, apart.grad, atol=1e-6)


def test_the_causal_teacher_computes_logits_at_response_positions_only(tmp_path: Path) -> None:
    cfg, loaded = _setup(tmp_path, "ba-lora", "causal_lm")
    setup = apply_method(cfg, loaded)
    labels = torch.randint(4, 200, (4, 10), generator=torch.Generator().manual_seed(1))
    labels[:, :6] = -100
    batch = _batch(labels=labels)
    seen: list[torch.Tensor] = []
    setup.model.register_forward_hook(lambda module, args, out: seen.append(out.logits))
    compose_loss(setup.model, batch, setup.loss_terms, 0, 10, setup.teacher_context)
    teacher, student = seen
    assert teacher.shape == (4 * 4, student.shape[-1])  # positions 5..8 predict the response tokens 6..9
    assert "logits_to_keep" in teacher_inputs(setup.model, batch)
    with setup.teacher_context():
        full = setup.model(**batch).logits
    assert torch.allclose(teacher, full[:, 5:9].reshape(16, -1), atol=1e-5)
