"""Gradients checked numerically: the fused causal-LM BA-LoRA pass (float64 gradcheck, exact and
randomized SVD), the terms reaching every method's trainable tensors, and gradient accumulation."""

from __future__ import annotations

import pytest
import torch
from transformers import set_seed

from conftest import tiny_config
from fairlora.config import build_config
from fairlora.methods import apply_method
from fairlora.methods.base import is_head_parameter
from fairlora.models import load_model
from fairlora.regularizers.balora import RANDOMIZED_SVD_ABOVE, TermSettings, routed_response_terms
from fairlora.training.losses import compose_loss


def _response_logits(batch: int, length: int, vocab: int, rank: int, seed: int) -> torch.Tensor:
    """float64 logits of a few dominant directions plus small noise: the top singular values are well
    separated, as in a trained model, so the randomized range finder resolves them."""
    gen = torch.Generator().manual_seed(seed)
    left = torch.randn(batch * length, rank, generator=gen, dtype=torch.float64)
    right = torch.randn(rank, vocab, generator=gen, dtype=torch.float64)
    scale = torch.tensor([8.0, 4.0, 2.0, 1.0][:rank], dtype=torch.float64)
    noise = 1e-3 * torch.randn(batch * length, vocab, generator=gen, dtype=torch.float64)
    return ((left * scale) @ right + noise).reshape(batch, length, vocab)


@pytest.mark.parametrize(
    ("length", "vocab"),
    [(6, 11), (12, RANDOMIZED_SVD_ABOVE + 5)],  # exact SVD; randomized SVD with M = 20 rows > q = 7
    ids=["exact-svd", "randomized-svd"],
)
def test_fused_causal_terms_pass_a_float64_gradcheck(length: int, vocab: int) -> None:
    base = _response_logits(2, length, vocab, rank=3, seed=1)
    noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(2), dtype=base.dtype)
    teacher = base + 0.1 * noise
    labels = torch.full((2, length), -100)
    labels[0, 2:] = 5
    labels[1, 1 : length - 1] = 7
    assert int((labels[:, 1:] != -100).sum()) > 7  # more response rows than the range finder's q = k + 5
    settings = TermSettings(top_k=4, svd_k=2)
    # gradcheck over a few directions through the logits (a 20 x 4101 input would take 10^5 passes)
    gen = torch.Generator().manual_seed(3)
    directions = torch.randn(6, *base.shape, generator=gen, dtype=torch.float64)
    task_weights = torch.randn(base.shape, generator=gen, dtype=torch.float64)

    def fused(coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = base + torch.einsum("d,d...->...", coefficients, directions)
        values, passed = routed_response_terms(logits, labels, teacher, settings)
        return values, (passed * task_weights).sum()  # a task loss on the passed-through logits

    start = torch.full((6,), 0.01, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fused, (start,), eps=1e-6, atol=1e-6, rtol=1e-4)
    first, second = fused(start.detach())[0], fused(start.detach())[0]
    assert torch.equal(first, second)  # the randomized SVD's test matrix is fixed: repeated passes agree


def _adapter_gradients(tmp_path, method: str, weight: float | None) -> dict[str, torch.Tensor]:
    """Gradients of the method's trainable non-head tensors after one micro-batch with the BA-LoRA terms
    on (weight None = the defaults, from step 0) or at weight 0."""
    balora: dict = {"enabled": True, "warmup_start": 0.0, "warmup_ramp": 0.0, "cr": method != "full"}
    if weight is not None:
        balora |= {"cr_weight": weight, "dr_weight": weight, "svdr_weight": weight}
    cfg = build_config(tiny_config(tmp_path, method=method, balora=balora, aflora={"r": 2}))
    set_seed(cfg.seed)
    setup = apply_method(cfg, load_model(cfg.model, cfg.task, 2))
    ids = torch.randint(4, 200, (8, 12), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(8) % 2}
    loss, _, _ = compose_loss(setup.model, batch, setup.loss_terms, 0, 10, setup.teacher, setup.task_loss)
    loss.backward()
    return {
        name: param.grad.clone()
        for name, param in setup.model.named_parameters()
        if param.requires_grad and param.grad is not None and not is_head_parameter(name)
    }


@pytest.mark.parametrize("method", ["vera", "aflora", "full"])
def test_the_balora_terms_change_every_methods_adapter_gradients(tmp_path, method: str) -> None:
    on, off = _adapter_gradients(tmp_path, method, None), _adapter_gradients(tmp_path, method, 0.0)
    assert on.keys() == off.keys() and on
    # zero at init: AFLoRA's A, B, d; round-off only: attention key biases (softmax ignores them)
    reached = [name for name in on if max(on[name].abs().max(), off[name].abs().max()) > 1e-6]
    changed = [name for name in reached if not torch.allclose(on[name], off[name], rtol=1e-5, atol=1e-9)]
    assert reached and changed == reached, f"{method}: unchanged {sorted(set(reached) - set(changed))[:4]}"


def _lm_setup(tmp_path, terms: bool):
    balora = {"enabled": terms, "warmup_start": 0.0, "warmup_ramp": 0.0}
    model = {"name": "tiny-llama", "max_length": 16}
    lora = {"target_modules": ["q_proj", "v_proj"]}
    cfg = build_config(
        tiny_config(tmp_path, task="causal_lm", method="lora", model=model, lora=lora, balora=balora)
    )
    set_seed(cfg.seed)
    setup = apply_method(cfg, load_model(cfg.model, cfg.task, 2))
    with torch.no_grad():  # B away from 0: every adapter tensor gets a gradient
        for param in (p for p in setup.model.parameters() if p.requires_grad):
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(4)))
    return setup


def _lm_rows(responses: list[int]) -> dict[str, torch.Tensor]:
    """Rows of 12 tokens, no padding; row i's last responses[i] tokens are its response."""
    ids = torch.randint(4, 200, (len(responses), 12), generator=torch.Generator().manual_seed(len(responses)))
    labels = ids.clone()
    for row, count in enumerate(responses):
        labels[row, : 12 - count] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _grads(setup, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Gradients of one optimizer step over `micro_batches`, scaled as train_step and the HF Trainer do."""
    setup.model.zero_grad(set_to_none=True)
    for batch in micro_batches:
        loss, _, _ = compose_loss(setup.model, batch, setup.loss_terms, 0, 10, setup.teacher, setup.task_loss)
        (loss / len(micro_batches)).backward()
    return {n: p.grad.clone() for n, p in setup.model.named_parameters() if p.grad is not None}


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-7) for k in a)


@pytest.mark.parametrize("terms", [False, True], ids=["task-loss", "balora-terms"])
def test_causal_gradient_accumulation_weighs_every_micro_batch_equally(tmp_path, terms: bool) -> None:
    """The intended normalisation (docs: train.grad_accum): each micro-batch's loss is the mean over its
    own response tokens, and a step averages its micro-batches, every one weighing the same (the BA-LoRA
    terms, SVDR's singular values included, are computed per micro-batch). So with uneven response
    counts, accumulation is the mean of the micro-batches' gradients, not one large batch's token mean."""
    setup = _lm_setup(tmp_path, terms)
    short, long = _lm_rows([2, 2]), _lm_rows([8, 8, 8])
    accumulated = _grads(setup, [short, long])
    each = [_grads(setup, [short]), _grads(setup, [long])]
    assert _close(accumulated, {k: (each[0][k] + each[1][k]) / 2 for k in accumulated})
    together = {key: torch.cat([short[key], long[key]]) for key in short}
    assert not _close(accumulated, _grads(setup, [together]))  # uneven counts: not the token mean
    if not terms:  # equal response counts per micro-batch and rows: accumulation = one large batch
        even = _lm_rows([5, 5, 5, 5])
        halves = [{k: v[:2] for k, v in even.items()}, {k: v[2:] for k, v in even.items()}]
        assert _close(_grads(setup, halves), _grads(setup, [even]))
