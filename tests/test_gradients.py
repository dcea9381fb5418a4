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
