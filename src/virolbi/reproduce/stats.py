"""Confidence intervals and seed spread of accuracies."""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["wilson_interval", "pooled"]


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    r"""Wilson score interval of a binomial proportion (95 % by default).

    .. math:: \frac{\hat p + z^2/2n \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n}

    Examples
    --------
    >>> lo, hi = wilson_interval(900, 1000)
    >>> round(lo, 4), round(hi, 4)
    (0.8798, 0.9171)
    >>> wilson_interval(0, 10)[0]
    0.0
    """
    if n <= 0:
        return (math.nan, math.nan)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # the interval holds p exactly; rounding must not put p outside it (e.g. 2e-19 > 0 at k = 0)
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def pooled(counts: Sequence[tuple[int, int]]) -> dict[str, object]:
    """Pool ``(correct, n)`` counts (several seeds or severities): accuracy, Wilson CI, and each
    part's accuracy (the seed spread).

    Examples
    --------
    >>> r = pooled([(90, 100), (80, 100)])
    >>> r["accuracy"], r["parts"]
    (0.85, [0.9, 0.8])
    """
    correct = sum(c for c, _ in counts)
    n = sum(k for _, k in counts)
    lo, hi = wilson_interval(correct, n)
    return {"accuracy": correct / n if n else math.nan, "ci95": [lo, hi], "correct": correct,
            "n": n, "parts": [c / k for c, k in counts if k]}
