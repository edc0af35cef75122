"""The verdict rule: where does the 95% interval of the paired difference that tests a claim lie — relative to 0, and
relative to the lesson's margin of practical relevance?

A claim is tested by one paired difference, treatment − baseline over the same seeds, with an interval and a
p-value by the method made for its measure (``lessons.inference``: Student's t for continuous measures, the sign-flip
permutation test for 0/1 and censored ones). It is *oriented* first, so that a positive number always means "the
claim holds": a claim that predicts the treatment's value to be lower (a loss, steps to a target, "N(0,1) is not a
good idea" for an accuracy) has its difference and interval negated (and the interval's ends swapped). Each check
declares a **margin** m >= 0 of practical relevance in the measure's units (1 accuracy point, 10% of the baseline's
steps, …): a difference smaller than m would not change what anyone does. With [low, high] the oriented interval:

- ``no_meaningful_difference`` when −m <= low and high <= m (the whole interval inside ±m: whatever the true
  difference is, it is too small to matter);
- ``supported``      when low > 0 (and the interval is not inside ±m): the claim holds, by more than noise;
- ``not_supported``  when high < 0 (and not inside ±m): the opposite holds;
- ``inconclusive``   otherwise — the interval contains 0 and reaches past the margin, or there is no usable interval.

Three guards come first, each answering ``inconclusive``: fewer than ``MIN_SEEDS`` = 5 paired seeds (an interval
from 2–4 seeds rests on a spread it cannot estimate), a degenerate interval [d, d] (zero spread is an artifact of a
discrete measure at few seeds, not certainty), and — for the secondary checks of a lesson — a Holm-adjusted
p-value (Holm 1979, across the lesson's secondary checks) at or above 5%: with ~5 secondary checks per lesson, one
would cross 0 by chance every few lessons otherwise.

The rule reads nothing else, so anyone can check a verdict against the numbers printed beside it. A quick run
(``--quick``) is not judged at all: its verdict is ``smoke`` — it checks the machinery, not the claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tricklab.lessons.inference import Inference
from tricklab.study.stats import ALPHA

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not_supported", "inconclusive"
NO_MEANINGFUL_DIFFERENCE = "no_meaningful_difference"
SMOKE = "smoke"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, NO_MEANINGFUL_DIFFERENCE, INCONCLUSIVE)
MIN_SEEDS = 5

Expectation = Literal["higher", "lower"]


def verdict(ci_low: float | None, ci_high: float | None, *, margin: float, n: int,
            p_adjusted: float | None = None) -> str:
    """The verdict of an oriented 95% interval over ``n`` paired seeds with the check's ``margin`` (see the module
    docstring). ``p_adjusted``: a secondary check's Holm-adjusted p-value (None for the primary check)."""
    if not (math.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"a margin must be a finite number >= 0, got {margin}")
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return INCONCLUSIVE
    if ci_low > ci_high:
        raise ValueError(f"an interval needs low <= high, got [{ci_low}, {ci_high}]")
    if n < MIN_SEEDS or ci_low == ci_high:
        return INCONCLUSIVE
    if -margin <= ci_low and ci_high <= margin:
        return NO_MEANINGFUL_DIFFERENCE
    if p_adjusted is not None and p_adjusted >= ALPHA:
        return INCONCLUSIVE
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

    ``effect`` = sign · mean(treatment − baseline); ``ci_low``/``ci_high`` the oriented 95% interval (by ``method``;
    an end may be ±inf when the method cannot bound it at this n); ``n`` the paired seeds; ``sign`` +1 or −1;
    ``margin`` the margin of practical relevance (measure units); ``p`` the two-sided p-value of "no difference"
    and ``p_holm`` its Holm-adjusted value (secondary checks only). Undefined numbers are None.
    """

    n: int
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    sign: int
    verdict: str
    margin: float = 0.0
    method: str = "t"
    p: float | None = None
    p_holm: float | None = None


def orient(diff: Inference, expects: Expectation, *, margin: float = 0.0,
           p_holm: float | None = None) -> OrientedEffect:
    """Orient ``diff`` (treatment − baseline, ``inference.infer``) by what the claim ``expects`` of the treatment,
    then judge it with ``margin`` (and a secondary check's Holm-adjusted ``p_holm``)."""
    sign = orientation(expects)

    def turned(x: float | None) -> float | None:
        return None if x is None else sign * x + 0.0  # + 0.0: no "-0" when a difference is exactly 0

    low, high = turned(diff.ci_low), turned(diff.ci_high)
    if low is not None and high is not None and low > high:
        low, high = high, low
    return OrientedEffect(diff.n, turned(diff.mean_diff), low, high, sign,
                          verdict(low, high, margin=margin, n=diff.n, p_adjusted=p_holm), margin, diff.method,
                          diff.p, p_holm)
