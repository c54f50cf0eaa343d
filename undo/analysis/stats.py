"""Statistics over seeds and trends across a sweep, from scipy.stats."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from typing import Literal

from scipy import stats


def mean_ci(values: Sequence[float | None], confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Mean and the half-width of its Student-t interval over the values that exist (seeds); the half-width is
    None with a single value (no interval from one seed)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, None
    if len(xs) == 1:
        return xs[0], None
    quantile = stats.t.ppf(0.5 + confidence / 2, df=len(xs) - 1)
    return statistics.fmean(xs), float(quantile * statistics.stdev(xs) / math.sqrt(len(xs)))


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-b (ties handled) between two series; None when it is undefined (fewer than two points, or a
    series that is constant: no ordering to agree with)."""
    if len(xs) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant input; we return None for it
        tau = stats.kendalltau(xs, ys).statistic
    return None if math.isnan(tau) else float(tau)


# A claim's verdict. "not measured": the numbers it needs are missing (the claim says why).
Verdict = Literal["held", "did not hold", "inconclusive", "not measured"]


def verdict_from_interval(mean: float | None, half_width: float | None, direction: Literal[1, -1] = 1) -> Verdict:
    """Decide a claim from the interval `mean ± half_width` of a quantity that the claim says is above 0
    (`direction` 1) or below 0 (-1): "held" when the whole interval lies on the claimed side of 0, "did not hold"
    when it lies on the other side, "inconclusive" when it contains 0 or there is no interval (one seed:
    `half_width` None), "not measured" without a mean."""
    if mean is None:
        return "not measured"
    if half_width is None:
        return "inconclusive"
    low, high = direction * mean - half_width, direction * mean + half_width  # in the claimed direction
    if low > 0:
        return "held"
    if high < 0:
        return "did not hold"
    return "inconclusive"
