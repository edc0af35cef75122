"""The verdict rule: does the 95% interval of the paired difference that tests a claim lie above or below 0?

A claim is tested by one paired difference, treatment − baseline over the same seeds (``study.stats``). It is
*oriented* first, so that a positive number always means "the claim holds": a claim that predicts the
treatment's value to be lower (a loss, steps to a target, "N(0,1) is not a good idea" for an accuracy) has its
difference and interval negated (and the interval's ends swapped). Then, with [low, high] the oriented 95%
Student-t interval of the mean difference:

- ``supported``      when low > 0  (the whole interval says: the claim holds),
- ``not_supported``  when high < 0 (the whole interval says: the opposite holds),
- ``inconclusive``   otherwise — the interval contains 0, or there are fewer than 2 paired seeds (no interval).

The rule reads nothing else (no p-value, no threshold on the size of the effect), so anyone can check a verdict
against the numbers printed beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tricklab.study.stats import PairedResult

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not_supported", "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)

Expectation = Literal["higher", "lower"]


def verdict(ci_low: float | None, ci_high: float | None) -> str:
    """The verdict of an oriented 95% interval (see the module docstring); no interval is ``inconclusive``."""
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return INCONCLUSIVE
    if ci_low > ci_high:
        raise ValueError(f"an interval needs low <= high, got [{ci_low}, {ci_high}]")
    if ci_low > 0.0:
        return SUPPORTED
    if ci_high < 0.0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def orientation(expects: Expectation) -> int:
    """+1 when the claim predicts treatment > baseline, −1 when it predicts treatment < baseline."""
    if expects == "higher":
        return 1
    if expects == "lower":
        return -1
    raise ValueError(f"expects must be 'higher' or 'lower', got {expects!r}")


@dataclass(frozen=True)
class OrientedEffect:
    """A paired difference turned so that positive means "the claim holds", with its verdict.

    ``effect`` = sign · mean(treatment − baseline); ``ci_low``/``ci_high`` the oriented 95% t interval;
    ``n`` the paired seeds; ``sign`` +1 or −1. Undefined numbers (n < 2, no data) are None.
    """

    n: int
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    sign: int
    verdict: str


def orient(diff: PairedResult, expects: Expectation) -> OrientedEffect:
    """Orient ``diff`` (treatment − baseline) by what the claim ``expects`` of the treatment, then judge it."""
    sign = orientation(expects)

    def turned(x: float | None) -> float | None:
        return None if x is None else sign * x + 0.0  # + 0.0: no "-0" when a difference is exactly 0

    low, high = turned(diff.ci_low), turned(diff.ci_high)
    if low is not None and high is not None and low > high:
        low, high = high, low
    return OrientedEffect(diff.n, turned(diff.mean_diff), low, high, sign, verdict(low, high))
