"""The lessons' inference for 0/1 and censored measures: the sign-flip permutation test (against scipy's exact
permutation test) and its inverted interval; which measure uses which method."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from tricklab.lessons.inference import infer, permutation_interval, sign_flip_p
from tricklab.lessons.measures import DIVERGED, FINAL_TRAIN_LOSS, GAP, GRADIENT_DECADES, TEST_ACCURACY, steps_to
from tricklab.study.stats import ALPHA


def scipy_p(d: np.ndarray) -> float:
    """scipy's exact sign-flip test of a one-sample mean (permutation_type="samples" flips signs)."""
    return float(sps.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                      n_resamples=np.inf, vectorized=True).pvalue)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [6, 8, 11])
def test_the_sign_flip_p_value_is_scipys_exact_permutation_test(n, seed):
    d = np.random.default_rng(seed).normal(0.3, 1.0, n)
    assert sign_flip_p(d) == pytest.approx(scipy_p(d), abs=1e-12)


def test_above_sixteen_seeds_a_seeded_random_set_of_patterns_approximates_the_exact_p():
    d = np.random.default_rng(7).normal(0.4, 1.0, 17)
    p = sign_flip_p(d)
    assert p == sign_flip_p(d)                        # seeded: the same numbers, the same p
    assert p == pytest.approx(scipy_p(d), abs=0.01)   # 20,000 patterns: standard error < 0.004


@pytest.mark.parametrize("seed", range(3))
def test_the_interval_is_the_set_of_shifts_the_test_does_not_reject(seed):
    d = np.random.default_rng(seed).normal(0.5, 1.0, 9)
    low, high = permutation_interval(d)
    assert low < d.mean() < high
    step = 1e-6 * (high - low)
    assert sign_flip_p(d, low) > ALPHA and sign_flip_p(d, low - step) <= ALPHA
    assert sign_flip_p(d, high) > ALPHA and sign_flip_p(d, high + step) <= ALPHA
    # 0 outside the interval exactly when the test rejects "no difference"
    assert (low > 0 or high < 0) == (sign_flip_p(d) <= ALPHA)


def test_with_five_seeds_or_fewer_the_test_cannot_reject_and_the_interval_is_unbounded():
    d = np.array([3.0, 2.0, 4.0, 5.0, 2.5])          # every difference positive: p = 2/32 = 0.0625
    assert sign_flip_p(d) == pytest.approx(2 / 32)
    assert permutation_interval(d) == (-math.inf, math.inf)


def test_all_equal_differences_give_a_degenerate_interval():
    assert permutation_interval(np.full(7, -1.0)) == (-1.0, -1.0)


def test_infer_uses_the_measures_method_on_paired_seeds_only():
    t = {s: float(s % 2) for s in range(8)}           # 0/1 outcomes
    b = {s: 1.0 for s in range(9)}                    # seed 8 has no partner
    r = infer(t, b, "permutation")
    d = np.array([t[s] - b[s] for s in range(8)])
    assert (r.method, r.n, r.mean_diff) == ("permutation", 8, pytest.approx(d.mean()))
    assert r.p == pytest.approx(scipy_p(d))
    same = infer({s: 1.0 for s in range(6)}, {s: 1.0 for s in range(6)}, "permutation")
    assert same.p is None and (same.ci_low, same.ci_high) == (0.0, 0.0)
    with pytest.raises(ValueError):
        infer(t, b, "anova")


def test_censored_and_binary_measures_are_never_judged_with_a_t_interval():
    assert steps_to("val_accuracy", 0.9).method == "permutation" and DIVERGED.method == "permutation"
    for m in (TEST_ACCURACY, GAP, FINAL_TRAIN_LOSS, GRADIENT_DECADES):
        assert m.method == "t"
    speed = steps_to("val_accuracy", 0.9)
    assert speed.relative_margin and speed.margin_for(200.0) == pytest.approx(20.0)   # 10% of the baseline
    assert TEST_ACCURACY.margin_for(0.9) == 0.01                                      # 1 accuracy point


def test_seconds_to_a_target_sum_the_epochs_up_to_it_and_are_censored_at_the_budget():
    from tricklab.lessons import TrialView
    from tricklab.lessons.measures import seconds_to

    history = [{"epoch": 1, "step": 20, "val_accuracy": 0.5, "epoch_seconds": 1.5},
               {"epoch": 2, "step": 40, "val_accuracy": 0.92, "epoch_seconds": 2.0},
               {"epoch": 3, "step": 60, "val_accuracy": 0.95, "epoch_seconds": 2.5}]
    result = {"history": history, "recipe": {"epochs": 4}, "data": {"num_classes": 10}}
    measure = seconds_to("val_accuracy", 0.9)
    assert measure(TrialView("a", 0, "completed", result)) == pytest.approx(3.5)
    assert seconds_to("val_accuracy", 0.99)(TrialView("a", 0, "completed", result)) == pytest.approx(2.0 * 4)
    assert measure(TrialView("a", 0, "diverged", result)) == pytest.approx(2.0 * 4)   # never reached: the budget
    assert measure(TrialView("a", 0, "failed", None)) is None
    assert measure.method == "permutation" and measure.margin_for(10.0) == pytest.approx(1.0)
