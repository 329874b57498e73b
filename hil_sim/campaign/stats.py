"""Exact binomial bounds for campaign hazard counts (Clopper–Pearson), in pure Python.

`upper(k, n)` is the one-sided 95 % Clopper–Pearson upper bound on a failure probability
after k failures in n independent runs: the p at which P(X <= k | n, p) = 0.05. With k = 0 it
is 1 - 0.05**(1/n) (about 3/n, the rule of three, CONTEXT §11). It equals the beta quantile
``scipy.stats.beta.ppf(0.95, k + 1, n - k)`` (tests/test_campaign.py checks it against scipy);
this module has no dependency so a campaign result needs none to be read.
"""
from __future__ import annotations

import math


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (stable for large n)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    lg = math.lgamma
    terms = [lg(n + 1) - lg(i + 1) - lg(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def upper(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper–Pearson upper bound on p after k events in n trials."""
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError("need 0 <= k <= n")
    if k == n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    lo, hi = k / n, 1.0
    for _ in range(200):                 # bisection: the CDF falls monotonically in p
        mid = (lo + hi) / 2
        if binom_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return hi
