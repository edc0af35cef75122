"""Study statistics against references: scipy's t interval, paired t-test and Wilcoxon test on the same numbers,
a float64 hand formula, scipy's percentile bootstrap, and Holm's procedure on hand-computed examples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from tricklab.errors import InputError
from tricklab.study import compare_arms, effect_words, holm, paired_difference, steps_to_target, summarize
from tricklab.study.stats import PairedResult

ACCURACIES = [0.81, 0.83, 0.80, 0.86, 0.84]


def test_t_interval_matches_a_hand_formula_and_scipy():
    s = summarize(ACCURACIES)
    n = 5
    mean = sum(ACCURACIES) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in ACCURACIES) / (n - 1))
    t975 = 2.7764451051977987  # t_{0.975, 4}, the table's 2.776
    assert s.n == n and s.missing == 0
    assert s.mean == pytest.approx(mean, abs=1e-15) and s.std == pytest.approx(sd, rel=1e-12)
    assert s.ci_low == pytest.approx(mean - t975 * sd / math.sqrt(n), rel=1e-12)
    assert s.ci_high == pytest.approx(mean + t975 * sd / math.sqrt(n), rel=1e-12)
    ref = sps.t.interval(0.95, df=n - 1, loc=np.mean(ACCURACIES), scale=sps.sem(ACCURACIES))
    assert (s.ci_low, s.ci_high) == pytest.approx(ref, rel=1e-12)
    assert (s.min, s.max) == (0.80, 0.86)


def test_bootstrap_is_deterministic_contains_the_mean_and_agrees_with_scipy_and_t_for_normal_data():
    x = np.random.default_rng(1).normal(0.9, 0.02, size=30)
    s = summarize(x.tolist())
    assert s == summarize(x.tolist())  # fixed seed: the same numbers give the same interval
    assert s.boot_low < s.mean < s.boot_high
    width = s.ci_high - s.ci_low
    assert abs(s.boot_low - s.ci_low) < 0.1 * width and abs(s.boot_high - s.ci_high) < 0.1 * width
    ref = sps.bootstrap((x,), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(7))
    assert s.boot_low == pytest.approx(ref.confidence_interval.low, abs=0.03 * width)
    assert s.boot_high == pytest.approx(ref.confidence_interval.high, abs=0.03 * width)


def test_missing_values_are_dropped_and_counted():
    s = summarize([0.5, float("nan"), 0.7, None, float("inf")])
    assert (s.n, s.missing, s.mean) == (2, 3, pytest.approx(0.6))
    one = summarize([0.4, float("nan")])
    assert (one.n, one.mean, one.std, one.ci_low, one.boot_high) == (1, 0.4, None, None, None)
    none = summarize([float("nan")])
    assert (none.n, none.mean, none.missing) == (0, None, 1)


def test_paired_difference_matches_scipy_on_the_same_numbers():
    baseline = {0: 0.80, 1: 0.82, 2: 0.79, 3: 0.85, 4: 0.81, 5: 0.83, 6: 0.84}
    treatment = {0: 0.83, 1: 0.85, 2: 0.80, 3: 0.87, 4: 0.85, 5: 0.84, 6: 0.88}
    r = paired_difference(treatment, baseline)
    t, b = np.array(list(treatment.values())), np.array(list(baseline.values()))
    d = t - b
    assert r.n == 7 and r.mean_diff == pytest.approx(d.mean(), rel=1e-12)
    assert r.p_t == pytest.approx(sps.ttest_rel(t, b).pvalue, rel=1e-12)
    assert r.p_wilcoxon == pytest.approx(sps.wilcoxon(d).pvalue, rel=1e-12)
    assert (r.ci_low, r.ci_high) == pytest.approx(sps.t.interval(0.95, 6, loc=d.mean(), scale=sps.sem(d)), rel=1e-9)
    assert r.boot_low < r.mean_diff < r.boot_high
    assert r.verdict == "higher" and r.p_t < 0.05 and r.ci_low > 0
    assert effect_words(r).startswith(f"higher by {r.mean_diff:.3g} (95% CI {r.ci_low:.3g} to {r.ci_high:.3g})")


def test_pairs_only_seeds_present_in_both_arms():
    r = paired_difference({0: 1.0, 1: 2.0, 2: 3.5, 3: float("nan")}, {1: 1.0, 2: 3.0, 3: 1.0, 4: 9.0})
    assert (r.n, r.missing) == (2, 3)  # seeds 1 and 2 pair; 0 and 4 are unpaired, 3 is NaN in one arm
    assert r.mean_diff == pytest.approx(0.75)
    assert r.p_wilcoxon == pytest.approx(sps.wilcoxon([1.0, 0.5]).pvalue, rel=1e-12) == 0.5
    assert r.p_wilcoxon_floor == 0.5  # n = 2: never below 2/2² — the report says so beside the p


def test_degenerate_differences():
    zero = paired_difference({s: 0.5 for s in range(8)}, {s: 0.5 for s in range(8)})
    assert zero.mean_diff == 0 and zero.p_t is None and zero.p_wilcoxon is None
    assert zero.verdict == "no detectable effect" and effect_words(zero) == "no detectable effect"
    same = paired_difference({s: 3.0 for s in range(3)}, {s: 1.0 for s in range(3)})
    assert same.p_t == 0.0 and same.verdict == "higher" and (same.ci_low, same.ci_high) == (2.0, 2.0)
    single = paired_difference({0: 1.0}, {0: 0.0})
    assert single.n == 1 and single.verdict == "not enough data" and "n=1" in effect_words(single)
    empty = paired_difference({}, {0: 1.0})
    assert empty.n == 0 and empty.mean_diff is None


def test_wilcoxon_is_shown_wherever_defined_with_its_floor():
    """Every p the signed-rank test can give is reported; below 6 non-zero differences its floor 2/2ⁿ is above
    5% (it could never reject), which the report prints beside it."""
    from tricklab.report.study_data import fmt_wilcoxon

    base = {s: 0.0 for s in range(6)}
    five = paired_difference({0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 5: 5.0}, base)   # one zero: 5 non-zero
    six = paired_difference({s: float(s + 1) for s in range(6)}, base)
    assert five.p_wilcoxon == pytest.approx(sps.wilcoxon([1, 2, 3, 4, 5]).pvalue) == 0.0625
    assert five.p_wilcoxon_floor == 0.0625 and fmt_wilcoxon(five.p_wilcoxon, five.p_wilcoxon_floor) == \
        "0.0625 (at least 0.0625)"
    assert six.p_wilcoxon == pytest.approx(sps.wilcoxon([1, 2, 3, 4, 5, 6]).pvalue) and six.p_wilcoxon == 0.03125
    assert six.p_wilcoxon_floor == 0.03125 and fmt_wilcoxon(six.p_wilcoxon, six.p_wilcoxon_floor) == "0.0312"
    three = paired_difference({0: 0.9, 1: 0.7, 2: 0.8}, {0: 0.8, 1: 0.75, 2: 0.6})
    assert three.p_wilcoxon == pytest.approx(sps.wilcoxon([0.1, -0.05, 0.2]).pvalue, rel=1e-12)
    assert three.p_wilcoxon_floor == 0.25


def test_no_detectable_effect_when_the_interval_straddles_zero():
    r = paired_difference({0: 0.81, 1: 0.79, 2: 0.84, 3: 0.80}, {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.81})
    assert r.ci_low < 0 < r.ci_high
    assert effect_words(r) == "no detectable effect" and r.verdict == "no detectable effect"


def test_lower_effect_words_give_the_size_of_the_decrease():
    r = PairedResult(n=5, mean_diff=-0.02, ci_low=-0.03, ci_high=-0.01, boot_low=-0.03, boot_high=-0.01,
                     p_t=0.01, p_wilcoxon=None)
    assert effect_words(r) == "lower by 0.02 (95% CI 0.01 to 0.03)"
    caveat = effect_words(PairedResult(**{**r.__dict__, "p_holm": 0.12}))
    assert caveat.startswith("lower by 0.02") and "not significant after Holm" in caveat and "0.12" in caveat


def test_holm_on_hand_computed_examples():
    # m = 4, sorted 0.005, 0.01, 0.03, 0.04 → 4·0.005, 3·0.01, 2·0.03, 1·0.04 = 0.02, 0.03, 0.06, 0.04 → running
    # max 0.02, 0.03, 0.06, 0.06; statsmodels' multipletests(method="holm") gives [0.03, 0.06, 0.06, 0.02].
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.3, 0.02]) == pytest.approx([0.6, 0.6, 0.06])   # 3·0.02, max(2·0.3, 0.5)
    assert holm([0.6, 0.7]) == [1.0, 1.0]                                 # capped at 1
    assert holm([None, 0.01, float("nan"), 0.04]) == [None, pytest.approx(0.02), None, pytest.approx(0.04)]
    assert holm([]) == [] and holm([0.2]) == [0.2]
    with pytest.raises(ValueError):
        holm([1.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=2, max_size=25))
def test_property_t_interval_contains_the_mean(values):
    s = summarize(values)
    assert s.ci_low <= s.mean <= s.ci_high
    assert s.min <= s.mean + 1e-9 * max(1.0, abs(s.mean)) and s.mean <= s.max + 1e-9 * max(1.0, abs(s.mean))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)), max_size=12))
def test_property_holm_is_at_least_raw_at_most_one_and_monotone(ps):
    adjusted = holm(ps)
    assert len(adjusted) == len(ps)
    pairs = [(p, a) for p, a in zip(ps, adjusted) if p is not None]
    assert all(a is None for p, a in zip(ps, adjusted) if p is None)
    assert all(p <= a <= 1.0 for p, a in pairs)
    ordered = [a for _, a in sorted(pairs, key=lambda pa: pa[0])]
    assert ordered == sorted(ordered)


def test_steps_to_target():
    history = [
        {"epoch": 1, "step": 10, "epoch_seconds": 1.5, "val_accuracy": 0.6, "val_loss": 1.0},
        {"epoch": 2, "step": 20, "epoch_seconds": 1.0, "val_accuracy": float("nan"), "val_loss": 0.7},
        {"epoch": 3, "step": 30, "epoch_seconds": 2.0, "val_accuracy": 0.95, "val_loss": 0.4},
    ]
    hit = steps_to_target(history, "val_accuracy", 0.95)
    assert hit == (30, 4.5) and hit.step == 30 and hit.seconds == 4.5
    assert steps_to_target(history, "val_loss", 0.7, higher_is_better=False) == (20, 2.5)
    assert steps_to_target(history, "val_accuracy", 0.99) is None
    assert steps_to_target([], "val_accuracy", 0.5) is None


def test_compare_arms_bundles_summaries_differences_and_holm():
    rng = np.random.default_rng(3)
    seeds = range(8)
    noise = {s: float(rng.normal(0, 0.01)) for s in seeds}  # what the seed does to every arm alike
    values = {
        "base": {s: 0.80 + noise[s] for s in seeds},
        "better": {s: 0.83 + noise[s] + float(rng.normal(0, 0.002)) for s in seeds},
        "same": {s: 0.80 + noise[s] + float(rng.normal(0, 0.002)) for s in seeds},
        "broken": {s: float("nan") for s in seeds},
    }
    result = compare_arms(values, "base", metric="test_accuracy")
    assert set(result.summaries) == set(values) and set(result.differences) == {"better", "same", "broken"}
    raw = [result.differences[a].p_t for a in ("better", "same", "broken")]
    assert [result.differences[a].p_holm for a in ("better", "same", "broken")] == holm(raw)
    assert result.differences["better"].verdict == "higher"
    assert result.differences["better"].p_holm >= result.differences["better"].p_t
    assert result.differences["broken"].verdict == "not enough data" and result.summaries["broken"].missing == 8
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["baseline"] == "base" and data["metric"] == "test_accuracy"
    assert data["differences"]["better"]["words"].startswith("higher by 0.03")
    with pytest.raises(InputError) as info:
        compare_arms(values, "nope")
    assert info.value.field == "baseline"
