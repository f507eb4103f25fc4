"""The statistics of a comparison, by hand: Wilson score intervals, McNemar's exact test, mean and spread.

    >>> [round(x, 4) for x in wilson_interval(8, 10)]      # 8 of 10 right: 80%, but anywhere from 49% to 94%
    [0.4902, 0.9433]
    >>> mcnemar_exact([1, 1, 1, 0], [0, 0, 0, 0])          # 3 discordant pairs, all one way: p = 2 / 2**3
    0.25

Each accuracy is a proportion of evaluation images, so it carries sampling noise however the model was
trained: `wilson_interval` gives its 95% interval (better than the normal approximation near 0 and 1 and
on few images). Two models scored on the same images are compared image by image: `mcnemar_exact` looks
only at the images where exactly one of the two is right and asks whether the split of those is more
lopsided than a fair coin would give (a two-sided exact binomial test at p = 1/2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["Z95", "binomial_cdf", "mcnemar_exact", "mean_std", "wilson_interval"]

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927) of a proportion `correct / total`; (0, 1) for no data."""
    if total <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= total:
        raise ValueError(f"correct must lie in [0, {total}], got {correct}")
    p = correct / total
    z2 = z * z
    denominator = 1.0 + z2 / total
    centre = (p + z2 / (2 * total)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / total + z2 / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_cdf(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k) for X ~ Binomial(n, p): exact integer arithmetic at p = 1/2 (McNemar's case), else summed
    in log space (no overflow for large n)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    if p == 0.5:
        return sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # big integers, one correctly rounded division
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def mcnemar_exact(first: Sequence[int | bool], second: Sequence[int | bool]) -> float:
    """Two-sided p-value of McNemar's exact test on paired correct (1) / wrong (0) outcomes.

    Only discordant images count: b where `first` alone is right, c where `second` alone is; under
    "equally accurate" each is a fair coin flip, so p = min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2).
    1.0 when the two never disagree.
    """
    if len(first) != len(second):
        raise ValueError(f"paired outcomes of different lengths: {len(first)} and {len(second)}")
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    if b + c == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf(min(b, c), b + c, 0.5))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0.0 for a single value)."""
    if not values:
        raise ValueError("no values")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
