"""Statistics of a study: per-arm summaries and paired, seed-by-seed differences against the baseline.

Why this shape. The variance between seeds of one recipe is often as large as the effect of a trick, so a
single run per arm proves nothing (Bouthillier et al., "Accounting for Variance in Machine Learning
Benchmarks", MLSys 2021). Every arm runs on the same seeds, so the comparison is *paired*: the difference
``treatment[seed] - baseline[seed]`` cancels what the seed does to both (same data split, same init draw).

- Interval of a mean: Student's t, ``mean ± t_{0.975, n-1} · s / √n`` (s with ddof = 1), and a percentile
  bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13) with 10,000 resamples and a
  fixed seed, so the same numbers always give the same interval. The bootstrap makes no normality assumption;
  for small n it is *narrower* than t (it cannot see beyond the sample), so the verdict uses the t interval.
- Tests of a paired difference: the paired t-test (``scipy.stats.ttest_rel``) and the Wilcoxon signed-rank
  test (``scipy.stats.wilcoxon``, Wilcoxon 1945), which does not assume normal differences.
- Several arms against one baseline are several tests: p-values are adjusted with Holm's step-down method
  (Holm, "A Simple Sequentially Rejective Multiple Test Procedure", Scand. J. Statist. 1979), which controls
  the family-wise error rate like Bonferroni but rejects more.

Missing values. A failed or diverged trial has no value; it arrives as ``None`` or NaN (±inf is treated the
same: a loss of inf is a divergence, not a number to average). Such values are dropped and counted
(``missing``) — never imputed. Undefined statistics are ``None``: a standard deviation or interval needs
n >= 2, and nothing is defined for n = 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from tricklab.errors import InputError
from tricklab.tricks.monitor import Monitor

CONFIDENCE = 0.95          # two-sided level of every interval
ALPHA = 0.05               # significance level of every test (after Holm across arms) = 1 - CONFIDENCE
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MIN_WILCOXON = 6           # non-zero differences the signed-rank test needs before it can reject at 5% (2/2⁶)

VERDICTS = ("higher", "lower", "no detectable effect", "not enough data")


def _finite(values: Iterable[float | None]) -> tuple[np.ndarray, int]:
    """The finite values as float64, and how many were missing (None, NaN or ±inf)."""
    raw = [None if v is None else float(v) for v in values]
    kept = np.array([v for v in raw if v is not None and math.isfinite(v)], dtype=np.float64)
    return kept, len(raw) - len(kept)


def _opt(x: float | np.floating | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def t_interval(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float] | tuple[None, None]:
    """Student-t interval of the mean: ``mean ± t_{(1+c)/2, n-1} · s/√n``; (None, None) for n < 2."""
    n = len(x)
    if n < 2:
        return None, None
    mean = float(np.mean(x))
    from scipy import stats as sps  # here, not at import: scipy.stats costs ~0.6 s of every process start

    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * float(np.std(x, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def bootstrap_interval(x: np.ndarray, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani 1993): resample the n values with
    replacement ``resamples`` times and take the (1-c)/2 and (1+c)/2 quantiles of the resampled means.
    Deterministic (fixed ``seed``); (None, None) for n < 2."""
    n = len(x)
    if n < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 1_000_000 // n)  # bounds memory to ~8 MB of indices for any n
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start:start + k] = x[rng.integers(0, n, size=(k, n))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class ArmSummary:
    """One arm's metric over its seeds: n finite values (``missing`` dropped), mean, spread and 95% intervals."""

    n: int
    mean: float | None
    std: float | None          # sample standard deviation (ddof = 1); None for n < 2
    ci_low: float | None       # Student-t 95% interval of the mean; None for n < 2
    ci_high: float | None
    boot_low: float | None     # percentile-bootstrap 95% interval of the mean; None for n < 2
    boot_high: float | None
    min: float | None
    max: float | None
    missing: int = 0           # failed/diverged trials (None, NaN or inf) left out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Iterable[float | None]) -> ArmSummary:
    """Mean, standard deviation, t and bootstrap 95% intervals of one arm's values (missing ones dropped)."""
    x, missing = _finite(values)
    n = len(x)
    if n == 0:
        return ArmSummary(0, None, None, None, None, None, None, None, None, missing)
    ci_low, ci_high = t_interval(x)
    boot_low, boot_high = bootstrap_interval(x)
    std = float(np.std(x, ddof=1)) if n >= 2 else None
    return ArmSummary(n, float(np.mean(x)), std, ci_low, ci_high, boot_low, boot_high, float(np.min(x)),
                      float(np.max(x)), missing)


@dataclass(frozen=True)
class PairedResult:
    """Treatment minus baseline, paired by seed: mean difference, 95% intervals, p-values and a verdict.

    ``p_wilcoxon`` is the signed-rank test's p wherever it is defined (at least one non-zero difference: zero
    differences carry no sign and are dropped, Wilcoxon's own convention, so all-zero differences leave nothing
    to test). ``p_wilcoxon_floor`` is the smallest two-sided p it could give with these many non-zero
    differences, 2/2ⁿ (all signs alike): with fewer than 6 it is above 5% (n = 5: 0.0625), so the test could
    never reject and its p is no evidence of "no effect" — the report prints the floor beside it. ``p_t`` is None when n < 2 or every difference is zero (0/0),
    and 0.0 when every difference is the same non-zero number (zero spread: no doubt about the sign).
    ``p_holm`` is filled by ``compare_arms`` (Holm across the arms compared with one baseline); the verdict
    then uses it, else ``p_t``.
    """

    n: int
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    boot_low: float | None
    boot_high: float | None
    p_t: float | None
    p_wilcoxon: float | None
    p_holm: float | None = None
    p_wilcoxon_floor: float | None = None
    verdict: str = "not enough data"
    missing: int = 0               # seeds present in only one arm, or missing (NaN) in either

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "words": effect_words(self)}


def _verdict(n: int, mean_diff: float | None, p: float | None) -> str:
    if n < 2 or mean_diff is None:
        return "not enough data"
    if p is None or p >= ALPHA:
        return "no detectable effect"
    return "higher" if mean_diff > 0 else "lower"


def paired_difference(treatment: Mapping[int, float | None], baseline: Mapping[int, float | None]) -> PairedResult:
    """Compare two arms seed by seed; only seeds with a finite value in both arms are paired."""
    seeds = sorted(set(treatment) | set(baseline))
    pairs = [(treatment.get(s), baseline.get(s)) for s in seeds]
    good = [(float(a), float(b)) for a, b in pairs
            if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))]
    missing = len(pairs) - len(good)
    n = len(good)
    if n == 0:
        return PairedResult(0, None, None, None, None, None, None, None, missing=missing)
    t_vals = np.array([a for a, _ in good], dtype=np.float64)
    b_vals = np.array([b for _, b in good], dtype=np.float64)
    from scipy import stats as sps

    d = t_vals - b_vals
    mean_diff = float(np.mean(d))
    ci_low, ci_high = t_interval(d)
    boot_low, boot_high = bootstrap_interval(d)
    p_t: float | None
    if n < 2 or not np.any(d):
        p_t = None
    elif np.all(d == d[0]):
        p_t = 0.0
    else:
        p_t = _opt(sps.ttest_rel(t_vals, b_vals).pvalue)
    nonzero = int(np.count_nonzero(d))
    p_w = _opt(sps.wilcoxon(d).pvalue) if nonzero else None
    return PairedResult(n, mean_diff, ci_low, ci_high, boot_low, boot_high, p_t, p_w,
                        verdict=_verdict(n, mean_diff, p_t), missing=missing,
                        p_wilcoxon_floor=min(1.0, 2.0 ** (1 - nonzero)) if nonzero else None)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the input's order.

    With the m defined p-values sorted, p₍₁₎ <= ... <= p₍ₘ₎: ``p̃₍ᵢ₎ = max_{j<=i} min(1, (m - j + 1) · p₍ⱼ₎)``
    — monotone in the sorted order, never below the raw p, capped at 1. ``None`` (or NaN) entries are not
    tests: they stay None and do not count in m.
    """
    defined = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    for i in defined:
        if not 0.0 <= float(p_values[i]) <= 1.0:  # type: ignore[arg-type]
            raise ValueError(f"p-value out of [0, 1]: {p_values[i]}")
    m = len(defined)
    order = sorted(defined, key=lambda i: float(p_values[i]))  # type: ignore[arg-type]
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


def _num(x: float) -> str:
    return f"{x:.3g}"


def effect_words(result: PairedResult) -> str:
    """The paired difference in words: "no detectable effect" when the 95% t interval contains 0, else
    "higher by X (95% CI a to b)" / "lower by X (95% CI a to b)" — for "lower" the interval is given as sizes
    of the decrease. If Holm's correction across arms leaves the difference above 5%, the words say so."""
    if result.n < 2 or result.mean_diff is None or result.ci_low is None or result.ci_high is None:
        return f"not enough paired seeds to compare (n={result.n})"
    if result.ci_low <= 0.0 <= result.ci_high:
        return "no detectable effect"
    if result.mean_diff > 0:
        words = f"higher by {_num(result.mean_diff)} (95% CI {_num(result.ci_low)} to {_num(result.ci_high)})"
    else:
        words = f"lower by {_num(-result.mean_diff)} (95% CI {_num(-result.ci_high)} to {_num(-result.ci_low)})"
    if result.p_holm is not None and result.p_holm >= ALPHA:
        words += f"; not significant after Holm correction across arms (p = {result.p_holm:.2g})"
    return words


class TargetReached(NamedTuple):
    """When a run first reached a target: the optimizer step and the training seconds until then."""

    step: int
    seconds: float


def steps_to_target(history: list[dict[str, Any]], metric: str, value: float,
                    higher_is_better: bool | None = None) -> TargetReached | None:
    """The first epoch whose ``metric`` is at or past ``value`` (``Monitor.reached``; which way is "past": from the
    metric's name unless ``higher_is_better`` says): (step at the end of that epoch, summed ``epoch_seconds`` up
    to and including it); None if never reached. The resolution is one epoch — the metric is only evaluated at
    epoch ends. Non-finite metric values (a diverged epoch) never count."""
    monitor = Monitor(metric, higher_is_better)
    elapsed = 0.0
    for epoch in history:
        seconds = epoch.get("epoch_seconds")
        if seconds is not None and math.isfinite(float(seconds)):
            elapsed += float(seconds)
        v = epoch.get(metric)
        if v is not None and monitor.reached(float(v), value):
            return TargetReached(int(epoch["step"]), elapsed)
    return None


@dataclass(frozen=True)
class StudyStats:
    """Every arm's summary and every non-baseline arm's paired difference from the baseline (Holm-adjusted)."""

    baseline: str
    summaries: dict[str, ArmSummary]
    differences: dict[str, PairedResult] = field(default_factory=dict)
    metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (undefined statistics are null)."""
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "confidence": CONFIDENCE,
            "summaries": {arm: s.to_dict() for arm, s in self.summaries.items()},
            "differences": {arm: d.to_dict() for arm, d in self.differences.items()},
        }


def compare_arms(trial_values: Mapping[str, Mapping[int, float | None]], baseline: str, *,
                 metric: str | None = None) -> StudyStats:
    """Summaries of all arms and paired differences ``arm - baseline`` with Holm correction across arms.

    ``trial_values[arm][seed]`` is one trial's metric value (None/NaN for a failed trial). The Holm family is
    the set of arms compared with the baseline on this metric, tested with the paired t-test.
    """
    if baseline not in trial_values:
        raise InputError("baseline", f"{baseline!r} has no results", allowed=list(trial_values))
    summaries = {arm: summarize(list(values.values())) for arm, values in trial_values.items()}
    raw = {arm: paired_difference(values, trial_values[baseline])
           for arm, values in trial_values.items() if arm != baseline}
    adjusted = holm([r.p_t for r in raw.values()])
    differences = {arm: replace(r, p_holm=p, verdict=_verdict(r.n, r.mean_diff, p))
                   for (arm, r), p in zip(raw.items(), adjusted)}
    return StudyStats(baseline, summaries, differences, metric)
