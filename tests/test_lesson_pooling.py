"""Issue 16 item 4: models are judged on their own; a pooled verdict stands only where the lesson pre-registers the
pool and the per-model effects agree in sign; the heterogeneity is shown."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as sps

from tricklab.lessons import TrialView, get_lesson, lesson_spec
from tricklab.lessons.run import judge


def _batchnorm(tmp_path, mlp_effect: float, cnn_effect: float, seeds: int = 8):
    lesson = get_lesson("batchnorm")
    spec = lesson_spec(lesson, False, tmp_path)
    rng = np.random.default_rng(3)
    effects = {"mlp": mlp_effect, "cnn": cnn_effect}
    trials = []
    for seed in range(seeds):
        for arm in spec.arm_names():
            model, norm = arm.split(",")
            acc = 0.8 + (effects[model] if norm == "batch" else 0.0) + 0.004 * rng.standard_normal()
            history = [{"epoch": 1, "step": 21, "val_accuracy": acc}]
            trials.append(TrialView(arm, seed, "completed", {
                "test_accuracy": acc, "history": history, "recipe": {"epochs": 15},
                "data": {"num_classes": 10, "test": 359}}))
    return judge(lesson, False, spec, trials)


def test_opposite_effects_of_two_models_are_not_pooled_into_a_verdict(tmp_path):
    # the MLP gains 8 points, the CNN loses 2: the pooled mean (+3) alone would read "supported"
    r = _batchnorm(tmp_path, 0.08, -0.02)
    pooled = r.primary
    assert pooled.oriented.ci_low > 0.01                     # the pooled interval alone would say supported
    assert pooled.verdict == "inconclusive" and not pooled.pool.agree
    assert r.check("mlp").verdict == "supported" and r.check("cnn").verdict == "not_supported"
    payload = r.to_json()
    assert payload["verdict"] == "inconclusive"
    assert [p["check"] for p in payload["checks"][0]["pool"]["parts"]] == ["mlp", "cnn"]
    assert "do not agree in sign" in r.explanation[0] and "heterogeneity mlp − cnn" in r.explanation[0]


def test_effects_of_the_same_sign_keep_the_pooled_verdict_and_show_their_heterogeneity(tmp_path):
    r = _batchnorm(tmp_path, 0.08, 0.03)
    pooled = r.primary
    assert pooled.pool.agree and pooled.verdict == "supported"
    # heterogeneity: per seed, (mlp,batch − mlp,none) − (cnn,batch − cnn,none), Student-t interval (float64)
    v = r.values["test_accuracy"]
    d = np.array([(v["mlp,batch"][s] - v["mlp,none"][s]) - (v["cnn,batch"][s] - v["cnn,none"][s])
                  for s in range(8)])
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    i = pooled.pool.interaction
    assert i.mean_diff == pytest.approx(d.mean()) and (i.ci_low, i.ci_high) == pytest.approx(
        (d.mean() - half, d.mean() + half))
    h = r.to_json()["checks"][0]["pool"]["heterogeneity"]
    assert h["difference"] == "mlp − cnn" and h["effect"] == pytest.approx(0.05, abs=0.01)


def test_a_pool_names_checks_of_the_same_measure_and_direction():
    from tricklab.lessons.lesson import Lesson

    lesson = get_lesson("batchnorm")
    fields = {f.name: getattr(lesson, f.name) for f in dataclasses.fields(Lesson)}
    bad = dataclasses.replace(lesson.checks[0], pool=("mlp", "cnn_faster"))    # steps, not accuracy
    with pytest.raises(ValueError, match="pool part 'cnn_faster'"):
        Lesson(**{**fields, "checks": (bad, *lesson.checks[1:])})
    with pytest.raises(ValueError, match="pool part 'nope'"):
        Lesson(**{**fields, "checks": (dataclasses.replace(lesson.checks[0], pool=("nope",)), *lesson.checks[1:])})
    assert get_lesson("init").primary.pool == ("tanh", "relu")
