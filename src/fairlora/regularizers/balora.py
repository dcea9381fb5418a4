"""BA-LoRA's regularizers on output logits: consistency (CR), diversity (DR) and SVD (SVDR).

Pure tensor functions for classification logits (NLU, shape N x D) and causal-LM logits (NLG,
B x T x V, where only response tokens count: positions whose next-token label is not -100), and
the `LossTerm` factories that put them into `compose_loss` with a weight schedule. Every function
keeps its gradient (no no_grad SVD); the teacher's logits are treated as constants.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fairlora.errors import DataError
from fairlora.regularizers.schedules import Schedule
from fairlora.training.losses import LossTerm, TermInputs

IGNORE_INDEX = -100
RANDOMIZED_SVD_ABOVE = 4096  # NLG SVDR: vocabularies wider than this use a randomized SVD
RANDOMIZED_SVD_SEED = 0  # a fixed test matrix: the term is deterministic and draws nothing from torch's RNG
EPS = 1e-12
CHUNK_ROWS = 64  # causal_lm CR / DR: rows of the vocabulary-wide logits processed at once

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


def response_rows(labels: torch.Tensor) -> torch.Tensor:
    """Row indices, into the logits viewed as (B*T, V), of the positions that predict response tokens.

    Position t predicts token t + 1, so the rows are those whose next label is not -100: prompt and
    padding drop out. A batch without any is a DataError.
    """
    valid = labels[:, 1:] != IGNORE_INDEX
    if not bool(valid.any()):
        raise DataError(
            "a causal_lm batch has no response tokens (every label is -100): BA-LoRA's terms count "
            "response tokens only. Fix: check data.text_column / data.prompt_column, or raise "
            "model.max_length so the response is not cut off"
        )
    batch, position = valid.nonzero(as_tuple=True)
    return batch * labels.shape[1] + position


def _flat(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(-1, logits.shape[-1])  # a view of the model's contiguous logits: no copy


def response_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The (M, V) logits that predict response tokens (a copy; the terms below avoid making one)."""
    return _flat(logits)[response_rows(labels)]


class _TokenKL(torch.autograd.Function):
    """T^2 * mean over rows of KL(softmax(t/T) || softmax(s/T)), in chunks of rows, nothing M x V kept.

    The student's and the teacher's logits are read in place (the model keeps them anyway); the
    backward recomputes the softmaxes chunk by chunk: d/ds = T * (softmax(s/T) - softmax(t/T)) / M.
    """

    @staticmethod
    def forward(ctx: Any, student: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor, t: float) -> Any:
        total = torch.zeros((), dtype=torch.float32, device=student.device)
        for chunk in rows.split(CHUNK_ROWS):
            log_s = F.log_softmax(student[chunk].float() / t, dim=-1)
            log_t = F.log_softmax(teacher[chunk].float() / t, dim=-1)
            total += (log_t.exp() * (log_t - log_s)).sum()
        ctx.save_for_backward(student, teacher, rows)
        ctx.temperature = t
        return total * t * t / len(rows)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        student, teacher, rows = ctx.saved_tensors
        t = ctx.temperature
        grad_student = torch.zeros_like(student)
        scale = grad.float() * t / len(rows)
        for chunk in rows.split(CHUNK_ROWS):
            p_s = F.softmax(student[chunk].float() / t, dim=-1)
            p_t = F.softmax(teacher[chunk].float() / t, dim=-1)
            grad_student[chunk] = (scale * (p_s - p_t)).to(student.dtype)
        return grad_student, None, None, None


def consistency_nlg(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """CR: per-token KL(teacher || student) at temperature T over the vocabulary, token mean, x T^2."""
    rows = response_rows(labels)
    return _TokenKL.apply(_flat(student), _flat(teacher.detach()), rows, temperature)


def diversity_nlg(logits: torch.Tensor, labels: torch.Tensor, top_k: int = 20) -> torch.Tensor:
    """DR: minus the mean entropy of the softmax over each response token's top-K logits."""
    flat, rows = _flat(logits), response_rows(labels)
    with torch.no_grad():  # which K logits: no gradient; their values carry it
        top = torch.cat(
            [flat[c].topk(min(top_k, flat.shape[-1]), dim=-1).indices for c in rows.split(CHUNK_ROWS)]
        )
    log_p = F.log_softmax(flat[rows.unsqueeze(1), top].float(), dim=-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return -entropy.mean()


def svd_nlg(logits: torch.Tensor, labels: torch.Tensor, k: int = 10) -> torch.Tensor:
    """SVDR: -(sum of the top-k singular values of the response logits) / their Frobenius norm (fp32)."""
    flat, rows = _flat(logits).float(), response_rows(labels)
    if flat.shape[-1] > RANDOMIZED_SVD_ABOVE:
        sigma = randomized_singular_values(flat, k, rows=rows)
    else:
        sigma = torch.linalg.svdvals(flat[rows])
    frobenius = torch.linalg.vector_norm(flat, dim=-1)[rows].pow(2).sum().sqrt()
    return -(sigma[:k].sum() / frobenius.clamp_min(EPS))


def randomized_singular_values(
    matrix: torch.Tensor, k: int, oversample: int = 5, niter: int = 2, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Top singular values by a randomized range finder (Halko et al.; q = k + oversample, niter power steps).

    As `torch.svd_lowrank`, but the Gaussian test matrix comes from a private, fixed-seed generator:
    the term is deterministic and leaves torch's global RNG (dropout, shuffling) untouched. With
    `rows`, the matrix is `matrix[rows]`, used without copying it (only n x q products are made).
    """
    height = matrix.shape[0] if rows is None else len(rows)
    q = min(k + oversample, height, matrix.shape[1])
    generator = torch.Generator(device=matrix.device).manual_seed(RANDOMIZED_SVD_SEED)
    omega = torch.randn(matrix.shape[1], q, generator=generator, device=matrix.device, dtype=matrix.dtype)

    def times(right: torch.Tensor) -> torch.Tensor:  # Z @ right
        product = matrix @ right
        return product if rows is None else product[rows]

    def full(left: torch.Tensor) -> torch.Tensor:  # an (M, q) basis as (rows of matrix, q), zeros elsewhere
        if rows is None:
            return left
        return left.new_zeros(matrix.shape[0], left.shape[1]).index_copy(0, rows, left)

    basis = torch.linalg.qr(times(omega)).Q
    for _ in range(niter):
        basis = torch.linalg.qr(times(torch.linalg.qr(matrix.mT @ full(basis)).Q)).Q
    return torch.linalg.svdvals(full(basis).mT @ matrix)


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
