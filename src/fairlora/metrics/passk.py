"""pass@k of generated code: the unbiased estimator of Chen et al. (2021), computed stably."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STANDARD_K = (1, 10, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn from n, c of them correct, passes) = 1 - C(n-c, k) / C(n, k).

    The ratio of binomials is the product over i in (n-c, n] of (1 - k / i), so no huge numbers appear.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def reported_k(num_samples: int) -> list[int]:
    """The k of pass@k reported for `num_samples` samples per problem: 1, 10, 100 up to n (and n itself)."""
    ks = [k for k in STANDARD_K if k <= num_samples]
    return ks if num_samples in ks or num_samples == 1 else [*ks, num_samples]


def pass_at_k_columns(passed: Sequence[int], num_samples: int) -> dict[str, np.ndarray]:
    """Per problem pass_at_<k> for the reported k, from the count of passing samples of each."""
    return {
        f"pass_at_{k}": np.array([pass_at_k(num_samples, int(c), k) for c in passed], dtype=np.float64)
        for k in reported_k(num_samples)
    }
