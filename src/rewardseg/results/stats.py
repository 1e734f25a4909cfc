"""Paired statistics: Δ with its CI and the paired t-test, the exact minimum detectable
effect, Holm's adjustment, and what a comparison may claim (``verdict``)."""
from __future__ import annotations

import functools
import math
from typing import Any, Dict, List, Sequence

import numpy as np
import pandas as pd

# every comparison: two-sided paired t-test at this level, Holm-adjusted within its
# experiment (the variants one figure ``exp_<experiment>`` shows); the minimum detectable
# effect is for this power
ALPHA = 0.05
POWER = 0.8


def paired_comparison(diff: Sequence[float], alpha: float = ALPHA,
                      power: float = POWER) -> Dict[str, Any]:
    """A variant against its control, paired by seed (``diff``: one Δ per seed).

    Returns the mean Δ, its standard deviation over seeds, the 95 % CI (Student t,
    unadjusted), the two-sided p-value of the paired t-test, and the minimum detectable
    effect at level ``alpha`` (``minimum_detectable_effect``: exact, from the noncentral t).
    Deltas that are the same on every seed (no spread: the runs did not move, or differ by
    a rounding step) are marked ``constant`` and get no CI, p-value or MDE: they cannot be
    tested."""
    from scipy import stats

    diff = np.asarray(list(diff), dtype=float)
    n = len(diff)
    nan = float("nan")
    out = dict(pairs=n, delta=float(diff.mean()) if n else nan, sd_delta=nan, ci_low=nan,
               ci_high=nan, p=nan, mde=nan, constant=False)
    if n < 2:
        return out
    sd = float(diff.std(ddof=1))
    out["sd_delta"] = sd
    if sd <= 1e-9 * max(1.0, abs(out["delta"])):
        out["constant"] = True
        return out
    se = sd / math.sqrt(n)
    t_half = float(stats.t.ppf(1 - alpha / 2, n - 1))
    out.update(ci_low=out["delta"] - t_half * se, ci_high=out["delta"] + t_half * se,
               p=float(2 * stats.t.sf(abs(out["delta"]) / se, n - 1)),
               mde=minimum_detectable_effect(sd, n, alpha, power))
    return out


def minimum_detectable_effect(sd: float, n: int, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """The smallest true paired Δ that a two-sided paired t-test with ``n`` pairs (Δ
    spread ``sd``) at level ``alpha`` detects with probability ``power``: exact. With T
    noncentral t (df = n - 1, noncentrality δ = Δ·√n/sd) the test's power is
    P(T > t_crit) + P(T < -t_crit); δ is its root at ``power`` (scipy's ``brentq``, to
    ~1e-12), and Δ = δ·sd/√n. The usual ``(t_{1-a/2} + t_power)·sd/√n`` understates it
    for few seeds (n = 3, alpha 0.05/6: 6.90 sd instead of 8.02 sd)."""
    if n < 2 or not sd > 0 or not 0 < alpha < power < 1:
        return float("nan")
    return _noncentrality_at_power(int(n), float(alpha), float(power)) * sd / math.sqrt(n)


@functools.lru_cache(maxsize=None)
def _noncentrality_at_power(n: int, alpha: float, power: float) -> float:
    """The noncentrality δ at which the two-sided paired t-test (``n`` pairs, level
    ``alpha``) has power ``power`` (it depends on nothing else: the MDE is δ·sd/√n)."""
    from scipy import optimize, stats

    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def gap(nc: float) -> float:
        # P(T > crit) + P(T < -crit); the lower tail as P(T' > crit) for the mirrored
        # noncentrality (the same number: scipy's nct.cdf is NaN far in that tail)
        value = float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc)) - power
        if value != value:
            raise ArithmeticError(f"noncentral t power is NaN at nc={nc}, df={df}")
        return value

    high = crit + float(stats.t.ppf(power, df))  # the central approximation: a first bracket
    for _ in range(200):
        if gap(high) > 0:
            break
        high *= 1.5
    else:
        raise ArithmeticError(f"no noncentrality reaches power {power} (n={n}, alpha={alpha})")
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-12, rtol=4 * np.finfo(float).eps,
                                 maxiter=1000))


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjustment of a family of p-values (NaN: a comparison that could
    not be tested; it still counts in the family, which keeps the adjustment conservative)."""
    p = np.asarray(list(pvalues), dtype=float)
    m = len(p)
    adjusted = np.full(m, np.nan)
    order = [i for i in np.argsort(np.where(np.isnan(p), np.inf, p)) if not np.isnan(p[i])]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def verdict(row, alpha: float = ALPHA) -> str:
    """What a row of ``final_table`` (or ``variant_table``) may claim. It follows the
    Holm-adjusted p alone: better / worse where ``p_holm < alpha``; otherwise "no
    difference detected", with the words "after Holm adjustment" where the unadjusted 95 %
    CI excludes 0 (the CI and the verdict then answer different questions, and say so)."""
    if row.get("control") in (None, row["variant"]):
        return "control"
    if pd.isna(row.get("delta")):
        return "not tested (no seed in common with its control)"
    if row.get("constant"):
        return f"same Δ on every seed ({row['delta']:+.2f}): not testable"
    p_holm = row.get("p_holm")
    if pd.notna(p_holm) and p_holm < alpha:
        return "better than its control" if row["delta"] > 0 else "worse than its control"
    mde = row.get("mde_holm", row.get("mde"))
    if pd.isna(mde) or pd.isna(p_holm):
        return "not tested (fewer than 2 seeds)"
    if row["ci_low"] > 0 or row["ci_high"] < 0:
        return (f"no difference detected after Holm adjustment (p_Holm {p_holm:.3f}; the "
                f"unadjusted 95 % CI excludes 0; MDE {mde:.2f})")
    return f"no difference detected (p_Holm {p_holm:.3f}; MDE {mde:.2f})"
