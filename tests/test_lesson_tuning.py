"""Issue 16 item 1: each arm at its own best learning rate, chosen on the validation split of tuning seeds that are
not the evaluation seeds; the claim at one shared LR kept as the secondary check ``shared_lr``."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from tricklab.lessons import TrialView, get_lesson, lesson_spec
from tricklab.lessons.run import SHARED_LR, judge
from tricklab.lessons.tuning import (
    MULTIPLIERS,
    QUICK_MULTIPLIERS,
    TUNING_SEED0,
    choose,
    grid_label,
    grid_text,
    tuned_study,
    tuning_study,
)


def _result(val=None, test=None, status="completed"):
    return {"val_accuracy": val, "test_accuracy": test, "data": {"num_classes": 10, "test": 359}} \
        if status != "failed" else None


def test_the_grid_study_is_every_arm_times_a_log_spaced_grid_of_its_own_lr_on_tuning_seeds(tmp_path):
    lesson = get_lesson("optimizers")
    shared = lesson_spec(lesson, False, tmp_path)
    grid = tuning_study(lesson, shared, quick=False)
    assert grid.seed_list() == [TUNING_SEED0, TUNING_SEED0 + 1]
    assert not set(grid.seed_list()) & set(shared.seed_list())          # never an evaluation seed
    assert grid.split_per_seed and grid.metrics() == ["val_accuracy"]
    assert len(grid.arm_names()) == len(shared.arm_names()) * len(MULTIPLIERS)
    adam = {m: grid.trial_recipe(grid_label("adam", m), TUNING_SEED0) for m in MULTIPLIERS}
    assert [adam[m].optimizer.lr for m in MULTIPLIERS] == pytest.approx([1e-3 * m for m in MULTIPLIERS])
    assert all(r.optimizer.name == "adam" for r in adam.values())
    steps = [math.log10(b / a) for a, b in zip(MULTIPLIERS, MULTIPLIERS[1:])]
    assert steps == pytest.approx([0.5] * len(steps)) and 1.0 in MULTIPLIERS   # half a decade apart, own LR in it
    assert math.log10(MULTIPLIERS[-1] / MULTIPLIERS[0]) == pytest.approx(2.0)  # a decade each way
    sgd = grid.trial_recipe(grid_label("sgd", 1.0), TUNING_SEED0 + 1)
    assert sgd.optimizer.lr == pytest.approx(0.01) and sgd.data.split_seed == TUNING_SEED0 + 1
    quick = tuning_study(lesson, lesson_spec(lesson, True, tmp_path), quick=True)
    assert quick.seed_list() == [TUNING_SEED0]
    assert len(quick.arm_names()) == len(shared.arm_names()) * 3 == len(shared.arm_names()) * len(QUICK_MULTIPLIERS)
    assert QUICK_MULTIPLIERS == pytest.approx((10 ** -0.5, 1.0, 10 ** 0.5))     # --quick: the three middle rates


def test_choose_reads_the_grid_of_its_variant(tmp_path):
    """A quick run's choice lists its three rates only (the JSON's ``lr_grid``), never empty slots for the others."""
    lesson = get_lesson("optimizers")
    shared = lesson_spec(lesson, True, tmp_path)
    trials = [TrialView(grid_label(arm, m), TUNING_SEED0, "completed", _result(val=0.5 + m / 100))
              for arm in shared.arm_names() for m in QUICK_MULTIPLIERS]
    tuned = choose(shared, trials, quick=True)
    assert all(len(t.scores) == 3 and all(s is not None for _, s in t.scores) for t in tuned)
    assert all(t.lr == pytest.approx(t.shared_lr * 10 ** 0.5) for t in tuned)   # the best of the three: the top
    assert grid_text(MULTIPLIERS) == "10^(−1), 10^(−1/2), 1, 10^(1/2), 10"
    assert grid_text(QUICK_MULTIPLIERS) == "10^(−1/2), 1, 10^(1/2)"


def test_each_arm_gets_the_lr_with_the_best_mean_validation_accuracy(tmp_path):
    lesson = get_lesson("scaling")
    shared = lesson_spec(lesson, False, tmp_path)
    low, own, high = MULTIPLIERS[1:4]
    scores = {"raw": {low: (0.5, 0.6), own: (0.7, 0.7), high: (0.9, 0.8)},        # high wins
              "minmax01": {low: (0.9, 0.9), own: (0.9, 0.9), high: (0.8, 0.9)},   # tie low/own: own LR kept
              "minmax11": {low: (0.9, 0.9), own: (0.2, None), high: (0.8, 0.8)}}   # own: one diverged below
    trials = []
    for arm, grid in scores.items():
        for m, vals in grid.items():
            for seed, v in zip((TUNING_SEED0, TUNING_SEED0 + 1), vals, strict=True):
                status = "diverged" if v is None else "completed"
                trials.append(TrialView(grid_label(arm, m), seed, status, _result(val=v)))
    # "standard": every trial failed → no score → its own LR
    trials.append(TrialView(grid_label("standard", high), TUNING_SEED0, "failed", None))
    tuned = {t.arm: t for t in choose(shared, trials)}
    base = 3e-3
    assert tuned["raw"].lr == pytest.approx(base * high) and tuned["raw"].changed
    assert tuned["minmax01"].lr == base and not tuned["minmax01"].changed
    assert tuned["minmax11"].lr == pytest.approx(base * low)
    own_score = [s for lr, s in tuned["minmax11"].scores if lr == base][0]
    assert own_score == pytest.approx((0.2 + 0.1) / 2)        # the diverged run at chance, 1/10
    assert tuned["standard"].lr == base and all(s is None for _, s in tuned["standard"].scores)

    evaluation = tuned_study(shared, list(tuned.values()))
    assert set(evaluation.arm_names()) == {"raw", "minmax11"}            # only the arms whose LR changed
    assert evaluation.seed_list() == shared.seed_list() and evaluation.split_per_seed
    recipe = evaluation.trial_recipe("raw", 3)
    assert recipe.optimizer.lr == pytest.approx(base * high) and recipe.data.scale == "none"
    assert recipe.data.split_seed == 3
    unchanged = [dataclasses.replace(t, lr=t.shared_lr) for t in tuned.values()]
    assert tuned_study(shared, unchanged) is None


def test_the_claim_is_judged_at_the_tuned_lrs_and_once_more_at_one_shared_lr(tmp_path):
    """At the shared LR raw inputs look far worse; at each arm's best LR the arms are level: both stories show."""
    lesson = get_lesson("scaling")
    spec = lesson_spec(lesson, False, tmp_path)
    rng = np.random.default_rng(1)
    shared, tuned_trials = [], []
    for seed in range(8):
        for arm in spec.arm_names():
            noise = 0.002 * rng.standard_normal()
            shared.append(TrialView(arm, seed, "completed", _result(test=(0.6 if arm == "raw" else 0.9) + noise)))
            tuned_trials.append(TrialView(arm, seed, "completed", _result(test=0.9 + noise)))
    low, own, high = MULTIPLIERS[1:4]
    grid = [TrialView(grid_label(arm, m), TUNING_SEED0, "completed",
                      _result(val=0.9 if (arm == "raw") == (m == high) else 0.5 if arm == "raw" else 0.4))
            for arm in spec.arm_names() for m in MULTIPLIERS]
    tuned = choose(spec, grid)
    r = judge(lesson, False, spec, tuned_trials, shared=shared, tuned=tuned)
    assert [c.check.name for c in r.checks][:2] == ["lesson_ranges", SHARED_LR]
    assert r.primary.verdict == "no_meaningful_difference" and r.check(SHARED_LR).verdict == "supported"
    assert r.check(SHARED_LR).oriented.p_holm is not None                 # in the Holm family of the secondaries
    payload = r.to_json()
    lrs = {a["name"]: a for a in payload["arms"]}
    assert lrs["raw"]["lr"] == pytest.approx(3e-3 * high) and lrs["raw"]["shared_lr"] == 3e-3
    assert lrs["minmax01"]["lr"] == 3e-3 and len(lrs["raw"]["lr_grid"]) == len(MULTIPLIERS) and lrs["raw"]["tuned"]
    assert payload["tuning"]["tuning_seeds"] == [TUNING_SEED0]
    text = " ".join(r.explanation)
    assert "own best learning rate" in text and "depends on the learning rate" in text


def test_a_lesson_that_does_not_tune_says_why(tmp_path):
    from tricklab.lessons.lesson import Lesson

    clipping = get_lesson("clipping")
    assert not clipping.tune and "high learning rate" in clipping.untuned
    spec = lesson_spec(clipping, True, tmp_path)
    trials = [TrialView(arm, seed, "completed", _result(test=0.9)) for seed in range(3) for arm in spec.arm_names()]
    r = judge(clipping, True, spec, trials)
    payload = r.to_json()
    assert all(a["lr"] == 0.2 and not a["tuned"] for a in payload["arms"])
    assert payload["tuning"] == {"untuned": clipping.untuned}
    assert SHARED_LR not in [c["check"] for c in payload["checks"]]
    with pytest.raises(ValueError, match="untuned"):
        Lesson(**{**{f.name: getattr(clipping, f.name) for f in dataclasses.fields(Lesson)}, "untuned": ""})
