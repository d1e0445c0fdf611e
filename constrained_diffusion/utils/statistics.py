"""Means and their 95% intervals: one sample variance, two quantile rules.

* `mean_ci`: Student's t interval, ``t_{0.975, n-1} s / sqrt(n)`` (the tuning study's tables,
  where a method is scored on tens of digits);
* `mean_interval`: the normal interval, ``1.96 s / sqrt(n)`` (the evaluation harness's report).

``s`` is the sample standard deviation (``n - 1`` in the denominator, `mean_var`).

Examples:
    >>> values = [1.0, 2.0, 3.0]  # mean 2, s = 1
    >>> mean_ci(values)[1] > mean_interval(values)[1]  # t_{0.975, 2} = 4.303 > 1.96
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 15: 2.131,
       20: 2.086, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
"""Student's t quantile t_{0.975, df}; between the listed degrees of freedom the next smaller one is used (wider)."""


def mean_var(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample variance (``n - 1`` in the denominator; ``nan`` for fewer than two values).

    Examples:
        >>> mean_var([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else float("nan"))


def t95(df: int) -> float:
    """The two-sided 95% Student-t quantile for ``df`` degrees of freedom (1.96 beyond 120).

    Examples:
        >>> t95(9), t95(25), t95(1000)
        (2.262, 2.086, 1.96)
    """
    if df < 1:
        return float("nan")
    if df > 120:
        return 1.96
    return T95[max(k for k in T95 if k <= df)]


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (``nan`` with one value).

    Examples:
        >>> m, h = mean_ci([1.0, 2.0, 3.0])
        >>> m, round(h, 3)
        (2.0, 2.484)
    """
    n = len(values)
    mean, var = mean_var(values)
    if n < 2:
        return mean, float("nan")
    return mean, t95(n - 1) * math.sqrt(var) / math.sqrt(n)


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% interval, ``1.96 s / sqrt(n)`` (0 for one value).

    Examples:
        >>> mean, half = mean_interval([1.0, 2.0, 3.0])  # s = 1, n = 3
        >>> mean, round(half, 4)
        (2.0, 1.1316)
    """
    n = len(values)
    mean, var = mean_var(values)
    if n < 2:
        return mean, (0.0 if n == 1 else float("nan"))
    return mean, 1.96 * math.sqrt(var / n)
