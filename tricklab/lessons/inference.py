"""How a check turns paired per-seed differences into an interval and a p-value — by a method made for the measure.

- ``t``: the Student-t 95% interval of the mean difference and the paired t-test (``study.stats``). Right for
  measures that vary continuously from seed to seed (an accuracy, a loss, decades of gradient change).
- ``permutation``: the exact sign-flip permutation test of the mean difference (Fisher 1935; Good, "Permutation,
  Parametric and Bootstrap Tests of Hypotheses", 2005, §3) and the 95% interval obtained by inverting it. Made for
  measures where a t interval is wrong: 0/1 outcomes (diverged or not) and censored ones (steps to a target, where a
  run that never reached it counts as its budget — a floor, not a value). Under "no effect" each seed's difference
  is as likely to have either sign, so the p-value is the share of the 2ⁿ sign patterns whose mean difference is at
  least as far from 0 as the observed one. Nothing is assumed about the differences' distribution beyond symmetry,
  and the test is exact: with n seeds the smallest two-sided p-value is 2/2ⁿ, so below 6 seeds (2/32 = 0.0625) it
  cannot reject at 5% and the interval is unbounded — it says honestly that the data cannot decide. The interval
  is the set of shifts δ that the test does not reject for the differences minus δ (found by bisection on each
  side of the mean); it contains every shift the data cannot exclude.

Up to ``EXACT_MAX`` seeds every sign pattern is enumerated; above, a fixed set of ``RANDOM_PATTERNS`` random ones
(seeded: the same numbers always give the same interval), with the usual (1 + count) / (1 + patterns) p-value.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tricklab.study.stats import ALPHA, paired_difference

Method = Literal["t", "permutation"]
METHODS: tuple[str, ...] = ("t", "permutation")
EXACT_MAX = 16
RANDOM_PATTERNS = 20_000
PATTERN_SEED = 0
_BISECTIONS = 60


@dataclass(frozen=True)
class Inference:
    """The paired difference treatment − baseline over ``n`` seeds: its mean, the 95% interval and the two-sided
    p-value of "no difference" by ``method``. Undefined numbers are None; an unbounded interval end is ±inf."""

    method: str
    n: int
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None


def _signs(n: int) -> tuple[np.ndarray, bool]:
    """The sign patterns (rows of ±1): all 2ⁿ for n <= EXACT_MAX (exact), else a seeded random set."""
    if n <= EXACT_MAX:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n)), dtype=np.float64), True
    rng = np.random.default_rng(PATTERN_SEED)
    return rng.choice((1.0, -1.0), size=(RANDOM_PATTERNS, n)), False


def sign_flip_p(d: np.ndarray, delta: float = 0.0, signs: tuple[np.ndarray, bool] | None = None) -> float:
    """Two-sided p-value of the sign-flip permutation test that the differences ``d`` are centred on ``delta``."""
    x = np.asarray(d, dtype=np.float64) - delta
    patterns, exact = signs if signs is not None else _signs(len(x))
    observed = abs(float(np.sum(x)))
    tolerance = 1e-12 * max(1.0, float(np.sum(np.abs(x))))   # equal sums computed in another order are equal
    hits = int(np.count_nonzero(np.abs(patterns @ x) >= observed - tolerance))
    return hits / len(patterns) if exact else (1 + hits) / (1 + len(patterns))


def permutation_interval(d: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """The shifts δ the sign-flip test does not reject at ``alpha`` (see the module docstring): (low, high), an end
    ±inf when no shift on that side is rejected (too few seeds)."""
    d = np.asarray(d, dtype=np.float64)
    signs = _signs(len(d))
    mean = float(np.mean(d))
    smallest_p = 2.0 / len(signs[0]) if signs[1] else 1.0 / (1 + len(signs[0]))

    def bound(edge: float) -> float:
        """Bisection between ``edge`` (a rejected shift) and the mean (never rejected: p = 1)."""
        if sign_flip_p(d, edge, signs) > alpha:    # the data's own extreme is not rejected
            if smallest_p > alpha:                 # beyond it every difference has one sign: still not rejected
                return math.copysign(math.inf, edge - mean)
            return edge                            # beyond it p = smallest_p <= alpha: rejected
        rejected, accepted = edge, mean
        for _ in range(_BISECTIONS):
            middle = (rejected + accepted) / 2
            if sign_flip_p(d, middle, signs) > alpha:
                accepted = middle
            else:
                rejected = middle
        return accepted

    return bound(float(np.min(d))), bound(float(np.max(d)))


def infer(treatment: dict[int, float], baseline: dict[int, float], method: str) -> Inference:
    """The paired difference of two sides (seed → value), seeds present in both, by ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {METHODS}")
    diff = paired_difference(treatment, baseline)
    if method == "t" or diff.n < 2:
        return Inference(method, diff.n, diff.mean_diff, diff.ci_low, diff.ci_high, diff.p_t if diff.n >= 2 else None)
    seeds = sorted(s for s in set(treatment) & set(baseline)
                   if math.isfinite(treatment[s]) and math.isfinite(baseline[s]))
    d = np.array([treatment[s] - baseline[s] for s in seeds], dtype=np.float64)
    low, high = permutation_interval(d)
    p = sign_flip_p(d) if np.any(d) else None      # all differences 0: nothing to test
    return Inference(method, len(d), float(np.mean(d)), low, high, p)
