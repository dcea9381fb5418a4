"""Vectorised bootstrap and the intervals of every audit figure.

Resamples: a resample is a row of counts per example, so every count-based metric gets its
resampled values at once.

A resample is a row of counts (how often each example is drawn). Sums of per-example indicators
under all resamples are one matrix product, so accuracy, rates, ECE or Brier for every group and
every resample come from the same draws: group and summary CIs (worst group, gaps) are consistent,
and the same seed and n give the same resamples in every section and every run: two runs audited on
the same rows (same ids in the same order, see `rows_key`) are resampled in pairs.

Intervals (at `level`, two-sided):
- Proportions (a count over the `n` its Estimate carries: accuracy, TPR, FPR, positive rate ...):
  the Wilson score interval, `wilson_interval`. It needs no resamples, contains the estimate and
  stays a real interval at 0 and 1 (88 of 88 right: [0.958, 1]), where a percentile bootstrap
  collapses to [1, 1].
- Every other figure (loss, ECE, Brier, AUCs, worst group, gaps, differences, ratios):
  the bias-corrected percentile interval (BC, Efron 1981), `bc_interval`. With z0 the normal
  quantile of the share of resamples below the estimate (ties, up to float32 rounding, count half)
  and z = z_{1-(1-level)/2}, it reads the resampled values at the quantiles Phi(2 z0 - z) and
  Phi(2 z0 + z). This corrects the median bias of the bootstrap, which is large for a min or max
  over groups (worst group, gap, DP / EO difference and ratio): their percentile interval can miss
  the estimate altogether. The acceleration of BCa is left at 0: its jackknife would recompute
  every per-resample min, max, AUC and ROC n times.
  Fallback, where the bias correction is undefined (every resample on one side of the estimate) or
  too large to trust (|z0| >= 1.96: under 2.5% of the resamples on one side): the percentile
  interval shifted by the median bias (estimate - median of the resamples), clipped to the range
  of the estimate and its resamples. The choice does not depend on `level`, so a lower level gives
  a nested interval; at levels under 95% a BC interval that would stop short of the estimate
  (|z0| >= z) is stretched to reach it. Every interval from either function contains its estimate.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
from scipy.special import ndtr, ndtri

CHUNK_CELLS = 2**24  # at most ~64 MB of float32 counts at a time
STEP_CELLS = 2**19  # rank-based figures: ~2 MB of int32 counts per step
MIN_STEP_ROWS = 64
SWITCH_Z = float(ndtri(0.975))  # |z0| from which the median-shift fallback replaces BC
TIE_TOLERANCE = 1e-6  # resampled sums run in float32: values this close (relative) to the estimate tie


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


def iter_ordered_weights(order: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """`iter_weights` as int32 counts with columns in `order`, in steps of up to ~STEP_CELLS counts.

    For the rank-based figures (AUCs, ROC), whose per-step work is a few passes over these rows:
    small steps keep them in cache, and at least MIN_STEP_ROWS resamples a step keep Python's share low.
    """
    n = len(order)
    step = max(MIN_STEP_ROWS, STEP_CELLS // max(n, 1))
    for chunk in iter_weights(n, n_boot, seed):
        for start in range(0, len(chunk), step):
            yield chunk[start : start + step][:, order].astype(np.int32)


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


def wilson_interval(proportion: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion observed on n trials (NaN where n is 0 or p is NaN)."""
    p, trials = np.broadcast_arrays(np.asarray(proportion, np.float64), np.asarray(n, np.float64))
    z = float(ndtri(1.0 - (1.0 - level) / 2.0))
    defined = (trials > 0) & ~np.isnan(p)
    size = np.where(defined, trials, 1.0)
    share = np.where(defined, np.clip(p, 0.0, 1.0), 0.5)
    scale = 1.0 + z * z / size
    center = (share + z * z / (2.0 * size)) / scale
    half = z / scale * np.sqrt(share * (1.0 - share) / size + z * z / (4.0 * size * size))
    low = np.minimum(np.clip(center - half, 0.0, 1.0), share)
    high = np.maximum(np.clip(center + half, 0.0, 1.0), share)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


def _quantiles(ordered: np.ndarray, valid: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Linear-interpolated quantile q[c] of column c of `ordered` (sorted, NaN last, valid[c] values)."""
    position = np.clip(q, 0.0, 1.0) * np.maximum(valid - 1, 0)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, np.maximum(valid - 1, 0))
    low = np.take_along_axis(ordered, below[None, :], axis=0)[0]
    high = np.take_along_axis(ordered, above[None, :], axis=0)[0]
    return low + (high - low) * (position - below)


def bc_interval(point: np.ndarray, samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected percentile interval of each figure: samples (B, ...) around point (...); see above.

    NaN resamples are left out; NaN where the estimate is NaN or no resample is defined.
    """
    samples = np.asarray(samples, np.float64)
    shape = samples.shape[1:]
    columns = int(np.prod(shape, dtype=int))
    point = np.broadcast_to(np.asarray(point, np.float64), shape).reshape(columns)
    low, high = _bc_columns(point, samples.reshape(len(samples), columns), level)
    return low.reshape(shape), high.reshape(shape)


def _bc_columns(point: np.ndarray, samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """`bc_interval` of point (C,) and samples (B, C)."""
    valid = (~np.isnan(samples)).sum(axis=0)
    if samples.shape[0] == 0:
        return np.full(point.shape, np.nan), np.full(point.shape, np.nan)
    ordered = np.sort(samples, axis=0)
    count = np.maximum(valid, 1)
    tied = np.abs(samples - point) <= TIE_TOLERANCE * np.maximum(np.abs(point), 1.0)
    share = ((samples < point) & ~tied).sum(axis=0) + 0.5 * tied.sum(axis=0)
    share = share / count
    z = float(ndtri(1.0 - (1.0 - level) / 2.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        bias = ndtri(share)
    low = _quantiles(ordered, valid, ndtr(2.0 * bias - z))
    high = _quantiles(ordered, valid, ndtr(2.0 * bias + z))
    corrected = np.abs(bias) < SWITCH_Z  # one choice at every level, so intervals nest across levels
    low, high = np.minimum(low, point), np.maximum(high, point)
    tail = (1.0 - level) / 2.0
    shift = point - _quantiles(ordered, valid, np.full(point.shape, 0.5))
    floor = np.minimum(point, ordered[0])
    ceiling = np.maximum(point, _quantiles(ordered, valid, np.ones(point.shape)))
    shifted_low = _quantiles(ordered, valid, np.full(point.shape, tail)) + shift
    shifted_high = _quantiles(ordered, valid, np.full(point.shape, 1 - tail)) + shift
    shifted_low = np.minimum(np.clip(shifted_low, floor, ceiling), point)  # rounding never drops the point
    shifted_high = np.maximum(np.clip(shifted_high, floor, ceiling), point)
    defined = (valid > 0) & ~np.isnan(point)
    low = np.where(corrected, low, shifted_low)
    high = np.where(corrected, high, shifted_high)
    return np.where(defined, low, np.nan), np.where(defined, high, np.nan)


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
