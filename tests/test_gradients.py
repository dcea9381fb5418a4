"""Gradients checked numerically: the fused causal-LM BA-LoRA pass (float64 gradcheck, exact and
randomized SVD), the terms reaching every method's trainable tensors, and gradient accumulation."""

from __future__ import annotations

import pytest
import torch

from fairlora.regularizers.balora import RANDOMIZED_SVD_ABOVE, TermSettings, routed_response_terms


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
    teacher = base + 0.1 * torch.randn(base.shape, generator=torch.Generator().manual_seed(2), dtype=base.dtype)
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
