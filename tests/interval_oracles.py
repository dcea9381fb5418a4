"""Independent oracles of the audit's intervals: scipy's Wilson interval and BC by its formula."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, norm


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """scipy's Wilson score interval of successes out of n."""
    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)


def bias_corrected(point: float, samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Efron's bias-corrected percentile interval, written out; asserts the correction is defined."""
    samples = np.asarray(samples, float)
    samples = samples[~np.isnan(samples)]
    tied = np.isclose(samples, point, rtol=1e-9, atol=1e-12)  # equal up to rounding
    share = (np.sum((samples < point) & ~tied) + 0.5 * np.sum(tied)) / len(samples)
    z0, z = norm.ppf(share), norm.ppf(1 - (1 - level) / 2)
    assert abs(z0) < z, "the oracle covers the defined case only"
    return float(np.quantile(samples, norm.cdf(2 * z0 - z))), float(
        np.quantile(samples, norm.cdf(2 * z0 + z))
    )
