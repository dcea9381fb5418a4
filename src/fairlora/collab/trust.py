"""Trust matrices: pure functions from client facts (sizes, proportions, weights, losses, logits) to W.

Every W is row-stochastic (each row sums to 1) and row i is client i's personal mixture. A NaN or -inf
score gets weight 0; a row with +inf or no finite score falls back to `none` (the client keeps its own
weights) and is reported.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)
TOKEN_SCALE = 10.0  # W_i = softmax_j(-10 d_ij): the reference's scale on row-normalised distances


def softmax_rows(scores: np.ndarray, tau: float = 1.0) -> np.ndarray:
    """Row-wise softmax of scores / tau; NaN and -inf entries get weight 0 (a row with none left is NaN)."""
    scaled = np.where(np.isnan(scores), -np.inf, scores / tau)
    top = np.max(scaled, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        weights = np.exp(scaled - np.where(np.isfinite(top), top, 0.0))
        return weights / weights.sum(axis=1, keepdims=True)


def naive_trust(sizes: list[int] | np.ndarray) -> np.ndarray:
    """FedAvg: every row weights client j by its share of the data (1/N for equal sizes)."""
    share = np.asarray(sizes, dtype=float) / float(np.sum(sizes))
    return np.tile(share, (len(share), 1))


def static_trust(proportions: np.ndarray) -> np.ndarray:
    """Oracle trust from category proportions D (clients x categories): D D^T normalised per row."""
    overlap = proportions @ proportions.T
    return overlap / overlap.sum(axis=1, keepdims=True)


def weight_similarity(states: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """s_ij: mean over tensors of the mean row-wise cosine similarity of clients i's and j's tensors."""
    total = torch.zeros(len(states), len(states), dtype=torch.float64)
    for key in states[0]:
        stacked = torch.stack([s[key].detach().double() for s in states])
        rows = stacked.reshape(len(states), -1, stacked.shape[-1])
        unit = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        total += torch.einsum("ird,jrd->ijr", unit, unit).mean(-1)
    return (total / max(len(states[0]), 1)).numpy()


def token_distances(
    signatures: list[tuple[torch.Tensor, torch.Tensor] | None], chunk: int = 256
) -> np.ndarray:
    """d_ij: mean over positions of the L1 distance of clients' top-k logit vectors (others 0).

    `signatures[i]` = (values, indices), each (positions, k), from `top_logits` on the same reference
    batches; None (a client that sent none) gives NaN distances. Dense vectors are built only `chunk`
    positions at a time.
    """
    count = len(signatures)
    present = [i for i, s in enumerate(signatures) if s is not None]
    distance = torch.full((count, count), float("nan"), dtype=torch.float64)
    if not present:
        return distance.numpy()
    sent = [signatures[i] for i in present]
    positions = sent[0][0].shape[0]
    vocab = int(max(int(ind.max()) for _, ind in sent)) + 1
    known = torch.zeros(len(present), len(present), dtype=torch.float64)
    for start in range(0, positions, chunk):
        dense = []
        for values, indices in sent:
            block = torch.zeros(min(chunk, positions - start), vocab)
            block.scatter_(1, indices[start : start + chunk], values[start : start + chunk].float())
            dense.append(block)
        for i in range(len(present)):
            for j in range(i + 1, len(present)):
                gap = (dense[i] - dense[j]).abs().sum(-1).double().sum()
                known[i, j] += gap
                known[j, i] += gap
    rows = torch.tensor(present)
    distance[rows[:, None], rows[None, :]] = known / max(positions, 1)
    return distance.numpy()


def top_logits(logits: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest logits at every unmasked position of (batch, seq, vocab) logits."""
    kept = logits[mask.bool()] if logits.dim() == 3 else logits
    top = kept.float().topk(min(k, kept.shape[-1]), dim=-1)
    return top.values, top.indices


def dynamic_scores(similarity: np.ndarray) -> np.ndarray:
    """Scores of strategy `dynamic` (higher = more trust): the weight similarities themselves."""
    return similarity


def ref_scores(perplexity: np.ndarray) -> np.ndarray:
    """Scores of `dynamic-ref` from P_ij = perplexity of client j's model on client i's validation data."""
    return -perplexity


def token_scores(distance: np.ndarray) -> np.ndarray:
    """Scores of `dynamic-token`: -10 x the distances normalised to sum 1 per row (over its finite entries;
    a NaN distance stays NaN, so it gets weight 0)."""
    sums = np.where(np.isfinite(distance), distance, 0.0).sum(axis=1, keepdims=True)
    normalised = np.divide(distance, sums, out=np.where(np.isfinite(distance), 0.0, np.nan), where=sums > 0)
    return -TOKEN_SCALE * normalised


def restrict(weights: np.ndarray, variant: str, topk: int = 3, threshold: float = 0.2) -> np.ndarray:
    """Apply a -topk (k largest per row) or -thresh (top 2 plus any above threshold) variant; renormalise.

    Keeping the k largest softmax weights and renormalising equals a softmax over the k largest scores.
    The client itself is always kept.
    """
    if variant == "":
        return weights
    keep = np.zeros_like(weights, dtype=bool)
    order = np.argsort(-weights, axis=1, kind="stable")
    top = topk if variant == "-topk" else 2
    np.put_along_axis(keep, order[:, :top], True, axis=1)
    if variant == "-thresh":
        keep |= weights >= threshold
    np.fill_diagonal(keep, True)
    kept = np.where(keep, weights, 0.0)
    return kept / kept.sum(axis=1, keepdims=True)


def split_strategy(strategy: str) -> tuple[str, str]:
    """("dynamic-token", "-topk") from "dynamic-token-topk"."""
    for variant in ("-topk", "-thresh"):
        if strategy.endswith(variant):
            return strategy.removesuffix(variant), variant
    return strategy, ""


def finite_rows(weights: np.ndarray, scores: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """Rows with NaN/Inf weights or a +inf score become identity rows (local training); returns W and
    those rows."""
    bad = ~np.isfinite(weights).all(axis=1)
    if scores is not None:
        bad |= np.isposinf(scores).any(axis=1)
    fixed = weights.copy()
    rows = [int(i) for i in np.flatnonzero(bad)]
    for i in rows:
        fixed[i] = 0.0
        fixed[i, i] = 1.0
        logger.warning("trust row %d is not finite: client %d keeps its own weights this round", i, i)
    return fixed, rows


def trust_from_scores(
    scores: np.ndarray, tau: float, variant: str, topk: int, threshold: float
) -> tuple[np.ndarray, list[int]]:
    """W = restrict(softmax_rows(scores / tau)): NaN and -inf scores get weight 0; a row with +inf or no
    finite score is replaced by an identity row."""
    weights = softmax_rows(np.where(np.isposinf(scores), 0.0, scores), tau)
    with np.errstate(invalid="ignore"):
        weights = restrict(weights, variant, topk, threshold)
    return finite_rows(weights, scores)
