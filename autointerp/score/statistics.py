"""Statistics the summaries report: one bootstrap of a mean, and its percentile interval."""

from __future__ import annotations

import numpy as np

# Resamples are drawn in blocks of at most this many indices, so memory stays bounded for every
# neuron of a large model (2,000 × 307,200 indices would be 4.9 GB at once).
_BLOCK_INDICES = 4_000_000


def bootstrap_mean_interval(
    values: np.ndarray, *, n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` from `n_boot` seeded resamples;
    NaN for no values. The same values and seed always give the same interval."""
    return percentile_interval(bootstrap_means(values, n_boot=n_boot, seed=seed), level)


def bootstrap_means(values: np.ndarray, *, n_boot: int, seed: int) -> np.ndarray:
    """The means of `n_boot` seeded resamples of `values` (empty for no values)."""
    n = len(values)
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK_INDICES // n)
    return np.concatenate(
        [
            values[rng.integers(0, n, size=(min(rows, n_boot - start), n))].mean(axis=1)
            for start in range(0, n_boot, rows)
        ]
    )


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` interval of bootstrap `samples`; NaN for none."""
    if len(samples) == 0:
        return float("nan"), float("nan")
    tail = round((1 - level) / 2, 12)  # 0.025, not 0.025000000000000022, for level 0.95
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)
