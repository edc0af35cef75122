"""The lessons of issue 16 item 8 — the claims of the German lesson that had none: the floating-point example,
parameters vs training examples, model averaging, dropout as implicit averaging, a large η early, the placement of
batch norm, layer norm and weight norm.

Each lesson's definition is checked (arms, checks, the quote verbatim in the paragraph the module copies from
seed/TrainingTricks.de.md), its explanation is built from synthetic trials in both directions (the claim holds →
the words say so; it fails → the opposite words), and — slow — two of them run end to end on the command line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import last_json, run_cli
from tricklab.lessons import LESSONS, NOT_SUPPORTED, SMOKE, SUPPORTED, VERDICTS, TrialView, get_lesson, lesson_spec
from tricklab.lessons.catalog import (
    averaging,
    bn_placement,
    capacity,
    dropout_averaging,
    floats,
    large_lr,
    layernorm,
    weightnorm,
)
from tricklab.lessons.catalog.common import FIRST_EPOCH_VAL, TEST_LOSS, spread_sentence
from tricklab.lessons.run import judge
from tricklab.lessons.words import verdict_sentence

NEW = {"floats": floats, "bn_placement": bn_placement, "layernorm": layernorm, "weightnorm": weightnorm,
       "dropout_averaging": dropout_averaging, "capacity": capacity, "averaging": averaging, "large_lr": large_lr}
STEPS_PER_EPOCH = 21


# -- the definitions ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NEW))
def test_each_new_lesson_is_registered_with_a_valid_study_and_its_quote_verbatim(name, tmp_path):
    lesson = get_lesson(name)
    module = NEW[name]
    assert lesson is module.LESSON and name in LESSONS
    source = getattr(module, "SOURCE_DE", None) or layernorm.SOURCE_DE
    assert lesson.quote_de in source, "the quote must be a verbatim part of the seed paragraph the module copies"
    assert lesson.title_de and lesson.claim and lesson.definition
    for quick in (True, False):
        spec = lesson_spec(lesson, quick, tmp_path)
        assert set(spec.arm_names()) == set(lesson.arm_names()) and len(spec.seed_list()) >= 3
    assert lesson.full.seeds >= 8 and lesson.quick.seeds == 3 and lesson.quick.epochs < lesson.full.epochs
    for check in lesson.checks:   # every arm a check names exists (Lesson validates it; here the claim's sides)
        assert set(check.treatment) | set(check.baseline) <= set(lesson.arm_names())
    assert lesson.tune or lesson.untuned


def test_the_lessons_stand_in_the_order_of_the_german_sections():
    names = list(LESSONS)
    after = {"floats": "scaling", "bn_placement": "batchnorm", "layernorm": "bn_placement",
             "weightnorm": "layernorm", "dropout_averaging": "dropout", "capacity": "overfitting",
             "averaging": "capacity"}
    for name, before in after.items():
        assert names.index(name) == names.index(before) + 1, name
    assert names.index("large_lr") == names.index("lr_decay") - 1   # the sentence before the decay's
    assert len(names) == 18


def test_the_layer_and_weight_norm_lessons_compare_their_norm_with_batch_norm_and_none(tmp_path):
    for name, kind in (("layernorm", "layer"), ("weightnorm", "weight")):
        spec = lesson_spec(get_lesson(name), False, tmp_path)
        assert {a: spec.trial_recipe(a, 0).model.norm for a in spec.arm_names()} == \
            {kind: kind, "batch": "batch", "none": "none"}
    placement = lesson_spec(get_lesson("bn_placement"), True, tmp_path)
    assert placement.trial_recipe("mlp,after", 0).model.norm == "batch_after_act"
    assert placement.trial_recipe("cnn,before", 0).model.norm == "batch"


def test_the_float_lesson_trains_on_the_offset_digits_in_both_precisions(tmp_path):
    spec = lesson_spec(get_lesson("floats"), True, tmp_path)
    offset = spec.trial_recipe("offset,bf16", 0)
    assert (offset.precision, offset.data.scale, offset.data.name) == ("bf16", "none", "npz")
    assert spec.trial_recipe("scaled,fp32", 0).data.scale == "standard"
    # the rounding the explanation reports, against float64 arithmetic: 100·g + 1000 in bfloat16 (8 significant
    # bits: a spacing of 8 in [1024, 2048) and 16 in [2048, 4096)) moves by at most 8 = 0.08 grey levels
    x = np.arange(17) * 100.0 + 1000.0
    step = np.where(x < 1024, 4.0, np.where(x < 2048, 8.0, 16.0))
    expected = np.abs(np.round(x / step) * step - x).max() / 100.0
    assert floats.input_rounding(torch.bfloat16) == pytest.approx(expected) and expected > 0
    assert floats.input_rounding(torch.float32) == 0.0


def test_the_large_lr_lesson_keeps_its_rates_and_says_why():
    lesson = get_lesson("large_lr")
    assert not lesson.tune and "η is the factor under test" in lesson.untuned
    rates = [levels["optimizer.lr"] for levels in lesson.factors["lr"].values()]
    assert rates == sorted(rates) and rates[1] == 10 * rates[0]


def test_capacity_states_the_parameter_counts_it_trains(tmp_path):
    from tricklab.models import build_model

    for width in capacity.WIDTHS:
        model = build_model("mlp", (64,), 10, depth=capacity.DEPTH, width=width, norm="none")
        assert capacity._params(width) == sum(p.numel() for p in model.parameters())
    recipe = lesson_spec(get_lesson("capacity"), False, tmp_path).trial_recipe("w512", 0)
    assert recipe.data.train_subset == capacity.TRAIN_EXAMPLES and recipe.optimizer.weight_decay == 0.0


# -- the new measures -----------------------------------------------------------------------------------------------
def test_test_loss_and_first_epoch_accuracy_read_the_result_and_count_a_diverged_run_honestly():
    done = TrialView("a", 0, "completed", {"test_loss": 0.25, "history": [{"val_accuracy": 0.4}],
                                            "data": {"num_classes": 10}})
    gone = TrialView("a", 0, "diverged", {"test_loss": None, "history": [{"val_accuracy": None}],
                                           "data": {"num_classes": 10}})
    assert TEST_LOSS(done) == 0.25 and TEST_LOSS(gone) is None
    assert FIRST_EPOCH_VAL(done) == 0.4 and FIRST_EPOCH_VAL(gone) == pytest.approx(0.1)
    assert TEST_LOSS(TrialView("a", 0, "failed", None)) is None
    assert FIRST_EPOCH_VAL(TrialView("a", 0, "completed", {"test_loss": math.nan, "history": []})) is None


# -- explanations from synthetic trials, both directions ------------------------------------------------------------
def _quality(lesson, holds: bool) -> dict[str, float]:
    """Per arm, how good its numbers are: the primary check's treatment arms better (holds) or worse (fails) in the
    direction the claim predicts for the primary measure; every other arm in the middle."""
    p = lesson.primary
    good_is_claim = p.measure.higher_is_better == (p.expects == "higher")
    sign = (1.0 if good_is_claim else -1.0) * (1.0 if holds else -1.0)
    return {arm: sign if arm in p.treatment else 0.0 for arm in lesson.arm_names()}


PATTERN = np.array([-1.5, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.25])
"""Per-seed deviations of a synthetic arm (rolled per arm, so paired differences vary from seed to seed while every
arm's spread over the seeds is the same multiple of PATTERN's): chosen, not drawn."""


def _result(q: float, seed: int, arm_index: int, epochs: int, spread: float) -> dict:
    """A finished trial's result whose every measure is better for larger ``q`` (−1, 0, 1): test accuracy up by 0.06
    per unit, test loss down, the validation accuracy reaching 0.9 at epoch 4 − 2q (+1 on every other seed and arm),
    so sooner and with a higher accuracy after one epoch, and a smaller train − test gap."""
    wiggle = spread * PATTERN[(seed + 3 * arm_index) % len(PATTERN)]
    acc = 0.85 + 0.06 * q + wiggle
    reach = round(4 - 2 * q) + (seed + arm_index) % 2          # the epoch the validation accuracy reaches 0.95
    history = [{"epoch": e, "step": e * STEPS_PER_EPOCH, "val_accuracy": min(0.99, 0.5 + 0.45 * e / reach),
                "train_accuracy": min(1.0, acc + 0.1 - 0.05 * q + wiggle / 2), "epoch_seconds": 0.5}
               for e in range(1, epochs + 1)]
    return {"test_accuracy": acc, "test_loss": 0.6 - 0.2 * q + wiggle, "val_accuracy": acc, "history": history,
            "recipe": {"epochs": epochs, "early_stopping": {"patience": 0}}, "data": {"num_classes": 10, "test": 359},
            "num_params": 1000, "train_seconds": 2.0}


def _judge(name: str, holds: bool, tmp_path, seeds: int = 8, spreads: dict[str, float] | None = None):
    lesson = get_lesson(name)
    spec = lesson_spec(lesson, False, tmp_path)
    quality = _quality(lesson, holds)
    trials = [TrialView(arm, seed, "completed", _result(quality[arm], seed, i, lesson.full.epochs,
                                                         (spreads or {}).get(arm, 0.004)))
              for seed in range(seeds) for i, arm in enumerate(spec.arm_names())]
    return judge(lesson, False, spec, trials)


@pytest.mark.parametrize("name", list(NEW))
def test_the_explanation_says_supported_when_the_numbers_hold_the_claim_and_the_opposite_when_not(name, tmp_path):
    holds, fails = _judge(name, True, tmp_path), _judge(name, False, tmp_path)
    assert holds.primary.verdict == SUPPORTED and fails.primary.verdict == NOT_SUPPORTED
    first, second = verdict_sentence(holds), verdict_sentence(fails)
    assert first in holds.explanation and second in fails.explanation
    assert first.endswith(": supported.") and second.endswith(": not supported.")
    assert holds.explanation != fails.explanation


def test_layer_norm_ranks_first_when_it_is_best_and_last_when_it_is_worst(tmp_path):
    holds, fails = _judge("layernorm", True, tmp_path), _judge("layernorm", False, tmp_path)
    rank = next(line for line in holds.explanation if line.startswith("Test accuracy (best first)"))
    assert rank.split(": ", 1)[1].startswith("layer ")
    rank = next(line for line in fails.explanation if line.startswith("Test accuracy (best first)"))
    assert rank.rstrip(".").endswith(f"layer {fails.mean('test_accuracy', 'layer'):.3g}")


def test_a_large_eta_reads_faster_when_it_reached_the_target_sooner_and_slower_otherwise(tmp_path):
    for holds in (True, False):
        r = _judge("large_lr", holds, tmp_path)
        medians = next(line for line in r.explanation if line.startswith("Median steps"))
        small, large = (float(medians.split(f"{arm} ")[1].split(",")[0].rstrip(".")) for arm in ("η=0.01", "η=0.1"))
        assert (large < small) == holds
        first = next(line for line in r.explanation if line.startswith("Validation accuracy after the first epoch"))
        assert first.split(": ", 1)[1].startswith("η=0.1 ") == holds


def test_the_averaging_spread_words_follow_the_numbers(tmp_path):
    tight = _judge("averaging", True, tmp_path, spreads={"single": 0.02, "ensemble": 0.005})
    loose = _judge("averaging", True, tmp_path, spreads={"single": 0.005, "ensemble": 0.02})
    line = next(s for s in tight.explanation if s.startswith("Standard deviation of the test accuracy"))
    assert "ensemble: 4× smaller than single" in line
    line = next(s for s in loose.explanation if s.startswith("Standard deviation of the test accuracy"))
    assert "ensemble: 4× larger than single" in line
    same = _judge("averaging", True, tmp_path, spreads={"single": 0.01, "ensemble": 0.01})
    assert "about equal to single" in spread_sentence(same, "test_accuracy", ("single", "ensemble"))
    assert any("The price: the ensemble trained 1× as long" in s for s in tight.explanation)


def test_capacity_reports_parameters_per_example_from_the_trials(tmp_path):
    r = _judge("capacity", True, tmp_path)
    line = next(s for s in r.explanation if s.startswith("Parameters:"))
    assert f"w8 1,000 ({1000 / capacity.TRAIN_EXAMPLES:g} per training example)" in line


def test_the_float_lesson_computes_the_lessons_sum_rather_than_stating_it(tmp_path):
    r = _judge("floats", True, tmp_path)
    first = r.explanation[0]
    assert "in float32, 1e-10 + 1e+10 = 1e+10: the 1e-10 is lost" in first
    assert "in float64, 1e-10 + 1e+10 = 1e+10: the 1e-10 is lost" in first   # 1e10's spacing in float64: ~2e-6
    assert "Lost in float32 and float64." in first
    assert np.float64(1e-10) + np.float64(1e10) == np.float64(1e10)          # the reference, outside torch
    assert "by up to 0.08 grey levels, in float32 by 0" in r.explanation[1]


def test_the_bn_placement_pool_needs_both_models_to_agree(tmp_path):
    r = _judge("bn_placement", True, tmp_path)
    assert r.primary.pool is not None and r.primary.pool.agree
    assert {c.check.name for c in r.checks} >= {"mlp", "cnn", "mlp_faster", "cnn_faster"}


# -- end to end (slow) -----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["large_lr", "bn_placement"])
def test_a_new_lesson_runs_quick_end_to_end(name, tmp_path):
    done = run_cli("lesson", name, "--quick", "--json", "--quiet", "--out", str(tmp_path / "lessons"), cwd=tmp_path,
                   timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = last_json(done.stdout)
    assert payload["lesson"] == name and payload["verdict"] == SMOKE
    assert payload["verdict_at_this_budget"] in VERDICTS and payload["trials_failed"] == 0
    assert [a["name"] for a in payload["arms"]] == get_lesson(name).arm_names()
    assert all(a["statuses"].get("completed", 0) + a["statuses"].get("diverged", 0) == 3 for a in payload["arms"])
