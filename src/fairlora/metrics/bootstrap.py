"""Vectorised bootstrap: resample counts per example, so every count-based metric gets a CI at once.

A resample is a row of counts (how often each example is drawn). Sums of per-example indicators
under all resamples are one matrix product, so accuracy, rates, ECE or Brier for every group and
every resample come from the same draws: group and summary CIs (worst group, gaps) are consistent,
and the same seed and n give the same resamples in every section and every run: two runs audited on
the same rows (same ids in the same order, see `rows_key`) are resampled in pairs.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Iterator

import numpy as np

CHUNK_CELLS = 2**24  # at most ~64 MB of float32 counts at a time


def iter_weights(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """(rows, n) float32 counts in chunks: row b says how often each example is in resample b.

    The draws depend only on (n, n_boot, seed), so every section and run of that size shares them.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_CELLS // max(n, 1))
    for start in range(0, n_boot, rows):
        count = min(rows, n_boot - start)
        draws = rng.integers(0, max(n, 1), size=(count, n))
        offsets = draws + (np.arange(count) * n)[:, None]
        yield np.bincount(offsets.ravel(), minlength=count * n).reshape(count, n).astype(np.float32)


def resampled_sums(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Column sums of `values` (n, k) under each resample: (n_boot, k) float64."""
    values = np.asarray(values, dtype=np.float32).reshape(len(values), -1)
    parts = [w @ values for w in iter_weights(len(values), n_boot, seed)]
    return np.concatenate(parts, axis=0).astype(np.float64) if parts else np.zeros((0, values.shape[1]))


def percentile_ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along axis 0, ignoring NaN resamples (all-NaN -> NaN)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.shape[0] == 0:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan
    tail = (1.0 - level) / 2.0 * 100.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
        low = np.nanpercentile(samples, tail, axis=0)
        high = np.nanpercentile(samples, 100.0 - tail, axis=0)
    return low, high


def safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with NaN where the denominator is 0."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def rows_key(*columns: Iterable[object]) -> str:
    """A short fingerprint of the resampled rows (e.g. their split and id), in order."""
    digest = hashlib.sha256()
    for column in columns:
        for value in column:
            digest.update(str(value).encode())
            digest.update(b"\0")
        digest.update(b"\1")
    return digest.hexdigest()[:16]
