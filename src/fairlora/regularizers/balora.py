"""BA-LoRA's regularizers on output logits: consistency (CR), diversity (DR) and SVD (SVDR).

Pure tensor functions for classification logits (NLU, shape N x D) and causal-LM logits (NLG,
B x T x V, where only response tokens count: positions whose next-token label is not -100), and
the `LossTerm` factories that put them into `compose_loss` with a weight schedule. Every function
keeps its gradient (no no_grad SVD); the teacher's logits are treated as constants.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from fairlora.errors import DataError
from fairlora.regularizers.schedules import Schedule
from fairlora.training.losses import LossTerm, TermInputs

IGNORE_INDEX = -100
RANDOMIZED_SVD_ABOVE = 4096  # NLG SVDR: vocabularies wider than this use a randomized SVD
RANDOMIZED_SVD_SEED = 0  # a fixed test matrix: the term is deterministic and draws nothing from torch's RNG
EPS = 1e-12

# ---------------------------------------------------------------- NLU: logits N x D


def consistency_nlu(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0, mode: str = "kl"
) -> torch.Tensor:
    """CR: T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over rows; or `mse` of L2-normed rows."""
    student, teacher = student.float(), teacher.detach().float()
    if mode == "mse":
        return F.mse_loss(F.normalize(student, dim=-1), F.normalize(teacher, dim=-1))
    if mode != "kl":
        raise ValueError(f"consistency mode must be 'kl' or 'mse', got {mode!r}")
    log_student = F.log_softmax(student / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher / temperature, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    return temperature**2 * kl.mean()


def diversity_nlu(logits: torch.Tensor) -> torch.Tensor:
    """DR: sum of the squared off-diagonal entries of the logits' batch covariance, divided by D."""
    logits = logits.float()
    n, d = logits.shape
    if n < 2:
        return logits.sum() * 0.0  # no covariance from one row; keeps the graph
    centred = logits - logits.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / (n - 1)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


def svd_nlu(logits: torch.Tensor, k: int) -> torch.Tensor:
    """SVDR: -(sum of the top-k singular values) / (sum of all), gradients through the SVD."""
    sigma = torch.linalg.svdvals(logits.float())
    return -(sigma[:k].sum() / sigma.sum().clamp_min(EPS))


# ---------------------------------------------------------------- NLG: logits B x T x V


def response_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The (M, V) logits that predict response tokens (next label != -100); prompt and padding drop out."""
    valid = labels[:, 1:] != IGNORE_INDEX
    if not bool(valid.any()):
        raise DataError(
            "a causal_lm batch has no response tokens (every label is -100): BA-LoRA's terms count "
            "response tokens only. Fix: check data.text_column / data.prompt_column, or raise "
            "model.max_length so the response is not cut off"
        )
    return logits[:, :-1][valid]


def consistency_nlg(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """CR: per-token KL(teacher || student) at temperature T over the vocabulary, token mean, x T^2."""
    return consistency_nlu(response_logits(student, labels), response_logits(teacher, labels), temperature)


def diversity_nlg(logits: torch.Tensor, labels: torch.Tensor, top_k: int = 20) -> torch.Tensor:
    """DR: minus the mean entropy of the softmax over each response token's top-K logits."""
    tokens = response_logits(logits, labels).float()
    top = tokens.topk(min(top_k, tokens.shape[-1]), dim=-1).values
    log_p = F.log_softmax(top, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return -entropy.mean()


def svd_nlg(logits: torch.Tensor, labels: torch.Tensor, k: int = 10) -> torch.Tensor:
    """SVDR: -(sum of the top-k singular values of the response logits) / their Frobenius norm (fp32)."""
    tokens = response_logits(logits, labels).float()
    if tokens.shape[-1] > RANDOMIZED_SVD_ABOVE:
        sigma = randomized_singular_values(tokens, k)
    else:
        sigma = torch.linalg.svdvals(tokens)
    return -(sigma[:k].sum() / torch.linalg.matrix_norm(tokens).clamp_min(EPS))


def randomized_singular_values(
    matrix: torch.Tensor, k: int, oversample: int = 5, niter: int = 2
) -> torch.Tensor:
    """Top singular values by a randomized range finder (Halko et al.; q = k + oversample, niter power steps).

    As `torch.svd_lowrank`, but the Gaussian test matrix comes from a private, fixed-seed generator:
    the term is deterministic and leaves torch's global RNG (dropout, shuffling) untouched.
    """
    q = min(k + oversample, *matrix.shape)
    generator = torch.Generator(device=matrix.device).manual_seed(RANDOMIZED_SVD_SEED)
    omega = torch.randn(matrix.shape[1], q, generator=generator, device=matrix.device, dtype=matrix.dtype)
    basis = torch.linalg.qr(matrix @ omega).Q
    for _ in range(niter):
        basis = torch.linalg.qr(matrix @ torch.linalg.qr(matrix.mT @ basis).Q).Q
    return torch.linalg.svdvals(basis.mT @ matrix)


# ---------------------------------------------------------------- loss terms


def _logits(outputs: object) -> torch.Tensor:
    return outputs.logits  # type: ignore[attr-defined]


def _gated(
    fn: Callable[[TermInputs], torch.Tensor], weight: Schedule
) -> Callable[[TermInputs], torch.Tensor]:
    """While the weight is 0 the term is still computed (and logged), without a gradient."""

    def term(seen: TermInputs) -> torch.Tensor:
        if weight(seen.step, seen.total_steps) == 0.0:
            with torch.no_grad():
                return fn(seen).detach()
        return fn(seen)

    return term


def consistency_term(weight: Schedule, nlg: bool, temperature: float = 2.0, mode: str = "kl") -> LossTerm:
    """`balora_cr`: consistency with the teacher (the original model) on the same batch."""

    def fn(seen: TermInputs) -> torch.Tensor:
        student, teacher = _logits(seen.outputs), _logits(seen.teacher)
        if nlg:
            if mode != "kl":
                raise ValueError("causal_lm consistency is a per-token KL: set balora.cr_loss: kl")
            return consistency_nlg(student, teacher, seen.inputs["labels"], temperature)
        return consistency_nlu(student, teacher, temperature, mode)

    return LossTerm("balora_cr", _gated(fn, weight), weight, needs_teacher=True)


def diversity_term(weight: Schedule, nlg: bool, top_k: int = 20) -> LossTerm:
    """`balora_dr`: diversity of the student's logits."""

    def fn(seen: TermInputs) -> torch.Tensor:
        logits = _logits(seen.outputs)
        return diversity_nlg(logits, seen.inputs["labels"], top_k) if nlg else diversity_nlu(logits)

    return LossTerm("balora_dr", _gated(fn, weight), weight)


def svd_term(weight: Schedule, nlg: bool, k: int) -> LossTerm:
    """`balora_svdr`: share of the top-k singular values of the student's logits."""

    def fn(seen: TermInputs) -> torch.Tensor:
        logits = _logits(seen.outputs)
        if nlg:
            return svd_nlg(logits, seen.inputs["labels"], k)
        if logits.shape[0] <= k:
            warnings.warn(
                f"balora SVDR: a batch of {logits.shape[0]} rows has at most {logits.shape[0]} singular "
                f"values, so the top-{k} share is 1 and the term does nothing on it; raise "
                f"train.batch_size above balora.svd_k",
                stacklevel=2,
            )
        return svd_nlu(logits, k)

    return LossTerm("balora_svdr", _gated(fn, weight), weight)
