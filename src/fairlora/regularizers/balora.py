"""BA-LoRA's regularizers on output logits: consistency (CR), diversity (DR) and SVD (SVDR).

Pure tensor functions for classification logits (NLU, shape N x D) and causal-LM logits (NLG,
B x T x V, where only response tokens count: positions whose next-token label is not -100), and
the `LossTerm` factories that put them into `compose_loss` with a weight schedule. Every function
keeps its gradient (no no_grad SVD); the teacher's logits are treated as constants.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fairlora.errors import DataError
from fairlora.regularizers.schedules import Schedule
from fairlora.regularizers.terms import LossTerm, TermInputs, label_positions

RANDOMIZED_SVD_ABOVE = 4096  # NLG SVDR: vocabularies wider than this use a randomized SVD
RANDOMIZED_SVD_SEED = 0  # a fixed test matrix: the term is deterministic and draws nothing from torch's RNG
EPS = 1e-12
# causal_lm CR / DR: the vocabulary-wide logits are processed a few MiB of rows at a time, in buffers
# made once per pass, so the work stays in cache (64 rows of 49,152 with fresh temporaries: 2x slower)
CHUNK_BYTES = 3 << 20


def chunk_rows(vocab: int) -> int:
    """Rows of fp32 logits per chunk of the causal-LM terms' pass (at least 1)."""
    return max(1, CHUNK_BYTES // (4 * vocab))


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


def full_precision(tensor: torch.Tensor) -> torch.autocast:
    """Autocast off on `tensor`'s device: the SVDs run in fp32 whatever train.precision is."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def svd_nlu(logits: torch.Tensor, k: int) -> torch.Tensor:
    """SVDR: -(sum of the top-k singular values) / (sum of all), gradients through the SVD (in fp32)."""
    with full_precision(logits):
        sigma = torch.linalg.svdvals(logits.float())
    return -(sigma[:k].sum() / sigma.sum().clamp_min(EPS))


# ---------------------------------------------------------------- NLG: logits B x T x V


def response_rows(labels: torch.Tensor) -> torch.Tensor:
    """Row indices, into the logits viewed as (B*T, V), of the positions that predict response tokens.

    Row-major, the order of `hidden[label_positions(labels)]`. A batch without any is a DataError.
    """
    mask = label_positions(labels)
    if not bool(mask.any()):
        raise DataError(
            "a causal_lm batch has no response tokens (every label is -100): BA-LoRA's terms count "
            "response tokens only. Fix: check data.text_column / data.prompt_column, or raise "
            "model.max_length so the response is not cut off"
        )
    return mask.flatten().nonzero().squeeze(1)


def _wide(tensor: torch.Tensor) -> torch.Tensor:
    """At least fp32 (half-precision logits are upcast; float64 stays float64, e.g. under gradcheck)."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def _flat(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(-1, logits.shape[-1])  # a view of the model's contiguous logits: no copy


def _teacher_chunk(
    teacher: torch.Tensor, teacher_rows: torch.Tensor | None, start: int, n: int
) -> torch.Tensor:
    """The teacher's logits of response rows start..start+n: a view when it holds the response rows only."""
    return teacher[start : start + n] if teacher_rows is None else teacher[teacher_rows[start : start + n]]


@dataclass(frozen=True)
class TermSettings:
    """Which terms to compute and their settings (CR temperature and mode, DR top-K, SVDR k)."""

    cr: bool = True
    dr: bool = True
    svdr: bool = True
    temperature: float = 2.0
    top_k: int = 20
    svd_k: int = 10
    cr_mode: str = "kl"


def top_singular(
    response: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U_k, sigma_k, V_k, ||Z||_F) of the fp32 response rows Z (M, V) (randomized for wide V)."""
    with torch.no_grad(), full_precision(response):
        if response.shape[-1] > RANDOMIZED_SVD_ABOVE:
            u, sigma, v = randomized_svd(response, k)
        else:
            u, sigma, vh = torch.linalg.svd(response, full_matrices=False)
            v = vh.mT
        frobenius = torch.linalg.vector_norm(response).clamp_min(EPS)
    return u[:, :k], sigma[:k], v[:, :k], frobenius


class _ResponseTerms(torch.autograd.Function):
    """([CR, DR, SVDR], the logits passed through) of the response rows in one pass (no M x V
    intermediates kept). The backward adds the terms' gradient, by chunks, into the gradient that
    reaches the passed-through logits (the task loss's): one logits-sized buffer for everything.

    CR = T^2 * mean KL(softmax(t/T) || softmax(s/T)); DR = mean over rows of sum p log p over the
    top-K softmax (minus the entropy); SVDR = -(sum of the top-k singular values) / ||Z||_F. The
    gradients are the formulas' own: d CR/ds = T (softmax(s/T) - softmax(t/T)) / M,
    d DR/dz_top = p (log p + H) / M, and d sigma_i / dZ = u_i v_i^T (so d SVDR/dZ =
    -U_k V_k^T / F + S Z / F^3): the singular vectors are found without a graph, the gradient is exact.
    """

    @staticmethod
    def forward(
        ctx: Any,
        student: torch.Tensor,
        teacher: Any,
        rows: torch.Tensor,
        teacher_rows: Any,
        settings: TermSettings,
    ) -> torch.Tensor:
        m, t, step = len(rows), settings.temperature, chunk_rows(student.shape[-1])
        scratch = _Scratch(student, step)
        values = torch.zeros(3, dtype=scratch.dtype, device=student.device)
        tops = []
        # SVDR needs the (M, V) response rows at once: gather them once, and the chunks are views of them
        response = _wide(student[rows]) if settings.svdr else None
        for start in range(0, m, step):
            chunk = rows[start : start + step]
            n = len(chunk)
            z = response[start : start + n] if response is not None else scratch.gather(student, chunk)
            if settings.cr:  # KL = sum p_t (log p_t - log p_s) = -sum (log p_s - log p_t) p_t
                log_s = scratch.softmax(z, t, scratch.one, log=True)
                log_t = scratch.softmax(
                    _teacher_chunk(teacher, teacher_rows, start, n), t, scratch.two, log=True
                )
                difference = log_s.sub_(log_t)
                values[0] -= difference.mul_(log_t.exp_()).sum()
            if settings.dr:
                top = z.topk(min(settings.top_k, z.shape[-1]), dim=-1)
                log_p = F.log_softmax(top.values, dim=-1)
                values[1] += (log_p.exp() * log_p).sum()
                tops.append(top.indices)
        values[0] *= t * t / m
        values[1] /= m
        u = sigma = v = frobenius = torch.zeros(0, device=student.device)
        if settings.svdr:
            u, sigma, v, frobenius = top_singular(response, settings.svd_k)
            del response  # transient: the backward gathers its chunks again
            values[2] = -sigma.sum() / frobenius
        top_indices = torch.cat(tops) if tops else torch.zeros(0, dtype=torch.long)
        ctx.save_for_backward(student, teacher, rows, teacher_rows, top_indices, u, sigma, v, frobenius)
        ctx.settings = settings
        return values, student

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, grad_logits: torch.Tensor) -> Any:
        student, teacher, rows, teacher_rows, top_indices, u, sigma, v, frobenius = ctx.saved_tensors
        settings, m = ctx.settings, len(rows)
        g_cr, g_dr, g_svdr = (float(x) for x in grad)  # a 0 weight (a gated term) costs nothing here
        g_cr, g_dr, g_svdr = g_cr * settings.cr, g_dr * settings.dr, g_svdr * settings.svdr
        grad_student = grad_logits if grad_logits.is_contiguous() else grad_logits.contiguous()
        if not (g_cr or g_dr or g_svdr):
            return grad_student, None, None, None, None  # the task loss's gradient, bit for bit
        t, step = settings.temperature, chunk_rows(student.shape[-1])
        scratch = _Scratch(student, step)
        for start in range(0, m, step):
            chunk = rows[start : start + step]
            n = len(chunk)
            z = scratch.gather(student, chunk)
            if g_cr:  # d CR / ds = T (softmax(s/T) - softmax(t/T)) / M, built in the scratch rows
                g = scratch.softmax(z, t, scratch.one).mul_(g_cr * t / m)
                t_chunk = _teacher_chunk(teacher, teacher_rows, start, n)
                g.sub_(scratch.softmax(t_chunk, t, scratch.two), alpha=g_cr * t / m)
            else:
                g = scratch.one[:n].zero_()
            if g_dr:
                index = top_indices[start : start + n]
                log_p = F.log_softmax(z.gather(1, index), dim=-1)
                entropy = -(log_p.exp() * log_p).sum(-1, keepdim=True)
                g.scatter_add_(1, index, (g_dr / m) * log_p.exp() * (log_p + entropy))
            if g_svdr:
                g.add_(z, alpha=g_svdr * float(sigma.sum() / frobenius**3))
                g.addmm_(u[start : start + n], v.mT, alpha=-g_svdr / float(frobenius))
            grad_student.index_add_(0, chunk, g.to(grad_student.dtype))  # in place: no second buffer
        return grad_student, None, None, None, None


class _Scratch:
    """Chunk-sized fp32 (or wider) buffers, made once per pass and rewritten for every chunk: fresh
    vocabulary-wide temporaries per chunk cost page faults, about half the pass's time on CPU."""

    def __init__(self, like: torch.Tensor, rows: int) -> None:
        self.dtype = _wide(like[:0]).dtype
        self.rows, self.scaled, self.one, self.two = (
            torch.empty(rows, like.shape[-1], dtype=self.dtype, device=like.device) for _ in range(4)
        )

    def gather(self, source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """source[index], in the `rows` buffer."""
        out = self.rows[: len(index)]
        if source.dtype == out.dtype:
            return torch.index_select(source, 0, index, out=out)
        return out.copy_(source[index])

    def softmax(self, x: torch.Tensor, t: float, out: torch.Tensor, log: bool = False) -> torch.Tensor:
        """softmax(x / t) over the vocabulary (or its log), in `out` (the `one` or `two` buffer)."""
        scaled = torch.div(x, t, out=self.scaled[: len(x)])
        return (torch.log_softmax if log else torch.softmax)(scaled, dim=-1, out=out[: len(x)])


def response_terms(
    student: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None = None,
    settings: TermSettings = TermSettings(),
) -> torch.Tensor:
    """[CR, DR, SVDR] of causal-LM logits (B, T, V) at response tokens; a term switched off is 0.

    `teacher` holds the original model's logits: (B, T, V), or (M, V) at the response positions only
    (row-major, as `logits_to_keep=label_positions(labels)` gives them).
    """
    return routed_response_terms(student, labels, teacher, settings)[0]


def routed_response_terms(
    student: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | None = None,
    settings: TermSettings = TermSettings(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(`response_terms`, the logits passed through): a loss on the returned logits shares the terms'
    gradient buffer (their gradient is added into its gradient in place)."""
    rows = response_rows(labels)
    flat = _flat(student)
    if settings.cr:
        if teacher is None:
            raise ValueError("the causal_lm consistency term needs the teacher's logits")
        teacher = teacher.detach()
        response_only = teacher.dim() == 2
        teacher_flat = teacher if response_only else _flat(teacher)
        teacher_rows = None if response_only else rows
    else:
        teacher_flat, teacher_rows = flat.new_zeros(0), None
    values, passed = _ResponseTerms.apply(flat, teacher_flat, rows, teacher_rows, settings)
    return values, passed.view_as(student)


def consistency_nlg(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """CR: per-token KL(teacher || student) at temperature T over the vocabulary, token mean, x T^2."""
    settings = TermSettings(dr=False, svdr=False, temperature=temperature)
    return response_terms(student, labels, teacher, settings)[0]


def diversity_nlg(logits: torch.Tensor, labels: torch.Tensor, top_k: int = 20) -> torch.Tensor:
    """DR: minus the mean entropy of the softmax over each response token's top-K logits."""
    return response_terms(logits, labels, settings=TermSettings(cr=False, svdr=False, top_k=top_k))[1]


def svd_nlg(logits: torch.Tensor, labels: torch.Tensor, k: int = 10) -> torch.Tensor:
    """SVDR: -(sum of the top-k singular values of the response logits) / their Frobenius norm (fp32)."""
    return response_terms(logits, labels, settings=TermSettings(cr=False, dr=False, svd_k=k))[2]


# The range finder's products with the wide (M, V) matrix A, each written as thin^T-times-something so
# that A is read along its rows: (Q^T A)^T for A^T Q and (Q^T A^T)^T for A Q, the same products,
# about twice as fast on CPU (measured on 512 x 49,152).
def _thin_times(thin: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """matrix^T @ thin for a thin (M, q) `thin`."""
    return (thin.mT @ matrix).mT


def _times_thin(matrix: torch.Tensor, thin: torch.Tensor) -> torch.Tensor:
    """matrix @ thin for a thin (V, q) `thin`."""
    return (thin.mT @ matrix.mT).mT


def randomized_svd(
    matrix: torch.Tensor, k: int, oversample: int = 5, niter: int = 2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, sigma, V) of the top singular triplets by a randomized range finder (Halko et al.; fp32).

    As `torch.svd_lowrank` (q = k + oversample columns, `niter` power steps), but the Gaussian test
    matrix comes from a private, fixed-seed generator: deterministic, and torch's global RNG
    (dropout, shuffling) is untouched.
    """
    matrix = _wide(matrix)
    q = min(k + oversample, *matrix.shape)
    generator = torch.Generator(device=matrix.device).manual_seed(RANDOMIZED_SVD_SEED)
    omega = torch.randn(matrix.shape[1], q, generator=generator, device=matrix.device, dtype=matrix.dtype)
    basis = torch.linalg.qr(_times_thin(matrix, omega)).Q
    for _ in range(niter):
        basis = torch.linalg.qr(_times_thin(matrix, torch.linalg.qr(_thin_times(basis, matrix)).Q)).Q
    # B = Q^T A (q, V) through the SVD of its tall transpose B^T = V S U_B^T (about 9x faster than B's)
    v, sigma, u_small_t = torch.linalg.svd(_thin_times(basis, matrix), full_matrices=False)
    return basis @ u_small_t.mT, sigma, v


# ---------------------------------------------------------------- loss terms

TERM_NAMES = ("balora_cr", "balora_dr", "balora_svdr")
SHARED_KEY = "balora_nlg"  # TermInputs.shared: the causal-LM terms' one fused pass per batch


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


def _nlu_value(index: int, settings: TermSettings) -> Callable[[TermInputs], torch.Tensor]:
    def value(seen: TermInputs) -> torch.Tensor:
        logits = _logits(seen.outputs)
        if index == 0:
            return consistency_nlu(logits, _logits(seen.teacher), settings.temperature, settings.cr_mode)
        if index == 1:
            return diversity_nlu(logits)
        if logits.shape[0] <= settings.svd_k:
            warnings.warn(
                f"balora SVDR: a batch of {logits.shape[0]} rows has at most {logits.shape[0]} singular "
                f"values, so the top-{settings.svd_k} share is 1 and the term does nothing on it; raise "
                f"train.batch_size above balora.svd_k",
                stacklevel=2,
            )
        return svd_nlu(logits, settings.svd_k)

    return value


def _nlg_value(index: int, settings: TermSettings) -> Callable[[TermInputs], torch.Tensor]:
    """Term `index` of the one fused pass over the batch's response tokens (made by the first term asking)."""

    def value(seen: TermInputs) -> torch.Tensor:
        if SHARED_KEY not in seen.shared:
            teacher = _logits(seen.teacher) if settings.cr else None
            with torch.enable_grad():  # a gated term asking first must not strip the others' graph
                values, logits = routed_response_terms(
                    _logits(seen.outputs), seen.inputs["labels"], teacher, settings
                )
            seen.shared[SHARED_KEY] = values
            seen.outputs.logits = logits  # the task loss reads these: one gradient buffer (routes_logits)
        return seen.shared[SHARED_KEY][index]

    return value


def balora_loss_terms(
    settings: TermSettings, weights: tuple[Schedule, Schedule, Schedule], nlg: bool
) -> list[LossTerm]:
    """The switched-on terms `balora_cr` (reads the teacher), `balora_dr`, `balora_svdr`, with weights."""
    if nlg and settings.cr and settings.cr_mode != "kl":
        raise ValueError("causal_lm consistency is a per-token KL: set balora.cr_loss: kl")
    value = _nlg_value if nlg else _nlu_value
    switches = (settings.cr, settings.dr, settings.svdr)
    return [
        LossTerm(name, _gated(value(index, settings), weight), weight, index == 0, routes_logits=nlg)
        for index, (name, on, weight) in enumerate(zip(TERM_NAMES, switches, weights, strict=True))
        if on
    ]
