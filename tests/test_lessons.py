"""Lessons: the verdict rule and its orientation, the checks, the measures, the mechanism probe, the registry, the
CLI (errors, one quick lesson end to end with resume) and — slow — every lesson's quick variant plus the lesson book
in headless Chromium."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from tests.conftest import last_json, run_cli
from tricklab.lessons import (
    INCONCLUSIVE,
    LESSONS,
    NO_MEANINGFUL_DIFFERENCE,
    NOT_SUPPORTED,
    SMOKE,
    SUPPORTED,
    VERDICTS,
    Check,
    TrialView,
    evaluate_check,
    get_lesson,
    lesson_spec,
    orient,
    verdict,
)
from tricklab.lessons.inference import infer
from tricklab.lessons.measures import DIVERGED, GAP, TEST_ACCURACY, steps_to
from tricklab.lessons.mechanism import InitProfile, init_profile
from tricklab.lessons.run import judge
from tricklab.lessons.tuning import QUICK_MULTIPLIERS

JSON_KEYS = {"lesson", "claim", "verdict", "n_seeds", "effect", "ci_low", "ci_high", "report"}


def consistent(obj: dict) -> bool:
    """The verdict follows from the printed interval, margin and n (the rule of issue 16); a quick run says smoke
    and keeps the rule's answer as verdict_at_this_budget."""
    if obj.get("variant") == "quick" or "verdict_at_this_budget" in obj:
        if obj["verdict"] != SMOKE:
            return False
        obj = {**obj, "verdict": obj["verdict_at_this_budget"]}
    low, high, margin, n = obj["ci_low"], obj["ci_high"], obj["margin"], obj.get("n", obj.get("n_seeds"))
    if low is None or high is None or n < 5 or low == high:
        return obj["verdict"] == INCONCLUSIVE
    if -margin <= low and high <= margin:
        return obj["verdict"] == NO_MEANINGFUL_DIFFERENCE
    if obj.get("p_holm") is not None and obj["p_holm"] >= 0.05:
        return obj["verdict"] == INCONCLUSIVE
    if low > 0:
        return obj["verdict"] == SUPPORTED
    if high < 0:
        return obj["verdict"] == NOT_SUPPORTED
    return obj["verdict"] == INCONCLUSIVE


# -- the verdict rule ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.01, 0.2, SUPPORTED), (-0.3, -0.02, NOT_SUPPORTED), (-0.1, 0.1, INCONCLUSIVE),
    (0.0, 0.1, INCONCLUSIVE), (-0.1, 0.0, INCONCLUSIVE), (0.0, 0.0, INCONCLUSIVE),
    (0.5, 0.5, INCONCLUSIVE),                      # degenerate [d, d]: never supported
    (0.002, 0.008, NO_MEANINGFUL_DIFFERENCE),      # above 0, but inside the margin: too small to matter
    (-0.009, 0.004, NO_MEANINGFUL_DIFFERENCE), (-0.01, 0.01, NO_MEANINGFUL_DIFFERENCE),
    (0.005, 0.011, SUPPORTED), (-0.011, -0.001, NOT_SUPPORTED), (-0.011, 0.005, INCONCLUSIVE),
    (None, None, INCONCLUSIVE), (math.nan, 1.0, INCONCLUSIVE), (-math.inf, math.inf, INCONCLUSIVE),
])
def test_four_verdicts_from_the_interval_and_the_margin(low, high, expected):
    assert verdict(low, high, margin=0.01, n=8) == expected


def test_no_verdict_stronger_than_inconclusive_below_five_seeds():
    for n in range(5):
        assert verdict(0.1, 0.2, margin=0.01, n=n) == INCONCLUSIVE
        assert verdict(-0.001, 0.001, margin=0.01, n=n) == INCONCLUSIVE
    assert verdict(0.1, 0.2, margin=0.01, n=5) == SUPPORTED


def test_a_secondary_check_needs_its_holm_adjusted_p_below_five_percent():
    assert verdict(0.02, 0.2, margin=0.01, n=8, p_adjusted=0.2) == INCONCLUSIVE
    assert verdict(0.02, 0.2, margin=0.01, n=8, p_adjusted=0.01) == SUPPORTED
    assert verdict(-0.005, 0.005, margin=0.01, n=8, p_adjusted=0.9) == NO_MEANINGFUL_DIFFERENCE


def test_an_interval_upside_down_or_a_negative_margin_is_a_bug():
    with pytest.raises(ValueError):
        verdict(0.2, 0.1, margin=0.01, n=8)
    with pytest.raises(ValueError):
        verdict(0.1, 0.2, margin=-0.01, n=8)


def _diff(treatment, baseline, method="t"):
    return infer(dict(enumerate(treatment)), dict(enumerate(baseline)), method)


def test_the_paired_interval_is_students_t_of_the_differences():
    t, b = [0.91, 0.89, 0.93, 0.90, 0.92], [0.85, 0.86, 0.84, 0.86, 0.85]
    d = np.subtract(t, b)
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))  # reference, float64
    o = orient(_diff(t, b), "higher", margin=0.01)
    assert o.n == 5 and o.sign == 1 and o.method == "t"
    assert o.effect == pytest.approx(d.mean()) and o.ci_low == pytest.approx(d.mean() - half)
    assert o.ci_high == pytest.approx(d.mean() + half) and o.verdict == SUPPORTED
    assert o.p == pytest.approx(sps.ttest_rel(t, b).pvalue)


def test_orientation_flips_a_lower_is_the_claim_difference():
    # the treatment's loss is lower on every seed: what a "lower" claim predicts
    lower = _diff([0.20, 0.25, 0.22, 0.21, 0.24], [0.30, 0.33, 0.35, 0.31, 0.36])
    assert lower.ci_high < 0
    o = orient(lower, "lower", margin=0.01)
    assert o.sign == -1 and o.effect == pytest.approx(-lower.mean_diff)
    assert (o.ci_low, o.ci_high) == pytest.approx((-lower.ci_high, -lower.ci_low)) and o.ci_low > 0
    assert o.verdict == SUPPORTED
    assert orient(lower, "higher", margin=0.01).verdict == NOT_SUPPORTED
    no_effect = orient(_diff([0.3, 0.2, 0.25, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25, 0.25]), "lower", margin=0.01)
    assert no_effect.verdict == INCONCLUSIVE


def test_identical_arms_are_inconclusive_and_print_no_negative_zero():
    o = orient(_diff([0.5, 0.6, 0.7, 0.8, 0.9], [0.5, 0.6, 0.7, 0.8, 0.9]), "lower", margin=0.01)
    assert o.verdict == INCONCLUSIVE and math.copysign(1.0, o.effect) == 1.0   # [0, 0] is degenerate


def test_one_seed_gives_no_interval_and_no_verdict_either_way():
    o = orient(_diff([0.9], [0.1]), "higher", margin=0.01)
    assert (o.n, o.ci_low, o.verdict) == (1, None, INCONCLUSIVE)


def test_two_seeds_with_the_same_difference_are_not_supported():
    """The audit's case: n = 2, both differences 0.2 — a [0.2, 0.2] interval called supported."""
    for method in ("t", "permutation"):
        o = orient(_diff([0.9, 0.8], [0.7, 0.6], method), "higher", margin=0.01)
        assert o.verdict == INCONCLUSIVE, method


# -- checks over several arms ---------------------------------------------------------------------------------------
def test_a_check_averages_each_side_per_seed_and_keeps_only_complete_pairs():
    values = {"a": {0: 0.8, 1: 0.9, 2: 0.7, 3: 0.6}, "b": {0: 0.6, 1: 0.7, 2: 0.9},
              "base": {0: 0.5, 1: 0.5, 2: 0.6, 3: 0.1}}
    check = Check("c", "?", TEST_ACCURACY, ("a", "b"), ("base",))
    r = evaluate_check(check, values)
    expected = [(0.8 + 0.6) / 2 - 0.5, (0.9 + 0.7) / 2 - 0.5, (0.7 + 0.9) / 2 - 0.6]  # seed 3 lacks arm b
    assert r.n == 3 and r.oriented.effect == pytest.approx(np.mean(expected))
    assert r.treatment_mean == pytest.approx(np.mean([0.7, 0.8, 0.8]))
    assert r.margin == 0.01 and r.verdict == INCONCLUSIVE   # n = 3 < 5


def test_a_check_refuses_an_arm_on_both_sides_and_a_bad_expectation():
    with pytest.raises(ValueError):
        Check("c", "?", TEST_ACCURACY, ("a",), ("a", "b"))
    with pytest.raises(ValueError):
        Check("c", "?", TEST_ACCURACY, ("a",), ("b",), expects="bigger")  # type: ignore[arg-type]


# -- measures -------------------------------------------------------------------------------------------------------
def _trial(status="completed", **result):
    base = {"data": {"num_classes": 10}, "recipe": {"epochs": 3, "early_stopping": {"patience": 0}},
            "history": [{"epoch": 1, "step": 20, "val_accuracy": 0.5, "train_accuracy": 0.6},
                        {"epoch": 2, "step": 40, "val_accuracy": 0.92, "train_accuracy": 0.95},
                        {"epoch": 3, "step": 60, "val_accuracy": 0.9, "train_accuracy": 0.99}]}
    return TrialView("a", 0, status, {**base, **result} if status != "failed" else None)


def test_accuracy_counts_a_diverged_run_at_chance_and_a_failed_one_not_at_all():
    assert TEST_ACCURACY(_trial(test_accuracy=0.93)) == 0.93
    assert TEST_ACCURACY(_trial("diverged", test_accuracy=None)) == pytest.approx(0.1)
    assert TEST_ACCURACY(_trial("failed")) is None
    assert DIVERGED(_trial("diverged")) == 1.0 and DIVERGED(_trial()) == 0.0 and DIVERGED(_trial("failed")) is None


def test_steps_to_target_is_censored_at_the_budget():
    assert steps_to("val_accuracy", 0.9)(_trial()) == 40
    assert steps_to("val_accuracy", 0.99)(_trial()) == 60          # never reached: the whole budget (3 × 20)
    assert steps_to("val_accuracy", 0.5)(_trial("diverged")) == 60   # a diverged run never reaches it
    stopped = _trial("stopped_early", history=_trial().result["history"][:2])
    assert steps_to("val_accuracy", 0.99)(stopped) == 60           # the planned budget, not where it stopped


def test_the_gap_uses_the_epoch_whose_weights_were_evaluated():
    assert GAP(_trial(test_accuracy=0.9)) == pytest.approx(0.99 - 0.9)
    restored = _trial(test_accuracy=0.9, best_epoch=2, recipe={"epochs": 3, "early_stopping": {"patience": 1}})
    assert GAP(restored) == pytest.approx(0.95 - 0.9)


# -- the mechanism probe --------------------------------------------------------------------------------------------
def test_attenuation_counts_decades_between_the_last_and_the_first_layer():
    profile = InitProfile(("l1", "l2", "out"), (1.0, 1.0, 1.0), (1e-3, 1e-2, 1e-1), (None,) * 3, (None,) * 3, 2.3)
    assert profile.attenuation() == pytest.approx(2.0)
    assert InitProfile(("l1",), (1.0,), (0.1,), (None,), (None,), 2.3).attenuation() is None


@pytest.mark.parametrize(("scheme", "low", "high"), [("normal", 4.0, 8.0), ("he", 0.7, 1.4)])
def test_init_profile_shows_the_growth_per_layer_the_variance_argument_predicts(scheme, low, high):
    """ReLU layers of n_in = 64: N(0, 1) weights multiply the activation's size by about √(64/2) ≈ 5.7 per layer,
    He's N(0, 2/n_in) by about 1 (He et al. 2015). Geometric mean of the per-layer ratios over 8 hidden layers."""
    from tricklab.recipe import recipe_from_dict

    recipe = recipe_from_dict({"data": {"name": "synthetic", "variant": "teacher", "size": 600},
                               "model": {"name": "mlp", "depth": 9, "width": 64, "norm": "none"},
                               "init": {"scheme": scheme}})
    profile = init_profile(recipe, seed=0)
    hidden = np.array(profile.act_std[1:9])
    growth = float(np.exp(np.mean(np.log(hidden[1:] / hidden[:-1]))))
    assert low < growth < high
    assert len(profile.layers) == 10 and all(g > 0 for g in profile.grad_std)


# -- the registry and the lesson definitions -----------------------------------------------------------------------
def test_every_lesson_in_the_lessons_order_each_with_a_valid_study_in_both_variants(tmp_path):
    assert list(LESSONS) == ["scaling", "floats", "init", "batchnorm", "bn_placement", "layernorm", "weightnorm",
                             "dropout", "dropout_averaging", "overfitting", "capacity", "averaging", "optimizers",
                             "clipping", "large_lr", "lr_decay", "architectures", "gradients"]
    for lesson in LESSONS.values():
        assert lesson.title_de and lesson.quote_de and lesson.claim and lesson.definition
        for quick in (True, False):
            spec = lesson_spec(lesson, quick, tmp_path)
            assert len(spec.seed_list()) >= 3
            assert set(spec.arm_names()) == set(lesson.arm_names())
            assert spec.name.startswith(f"lesson-{lesson.name}-{'quick' if quick else 'full'}-")
        assert lesson.quick.epochs <= lesson.full.epochs and lesson.quick.seeds <= lesson.full.seeds


def test_the_study_name_changes_with_the_lesson_and_not_otherwise(tmp_path):
    lesson = get_lesson("optimizers")
    assert lesson_spec(lesson, True, tmp_path).name == lesson_spec(lesson, True, tmp_path).name
    assert lesson_spec(lesson, True, tmp_path).name != lesson_spec(lesson, False, tmp_path).name


def test_derived_data_is_the_digits_scaled_and_offset(tmp_path):
    from sklearn.datasets import load_digits

    from tricklab.lessons.derived_data import derived_data

    path = derived_data("digits-x100", tmp_path)
    with np.load(path) as stored:
        x, y = stored["x"], stored["y"]
    raw = load_digits()
    assert x.shape == (1797, 1, 8, 8) and np.array_equal(y, raw.target)
    assert np.allclose(x.reshape(1797, 64), 100 * raw.data + 1000) and x.min() == 1000
    before = path.stat().st_mtime_ns
    assert derived_data("digits-x100", tmp_path) == path and path.stat().st_mtime_ns == before  # not rewritten


def test_unknown_lesson_names_the_allowed_ones():
    from tricklab.errors import InputError

    with pytest.raises(InputError) as err:
        get_lesson("nope")
    assert "scaling" in str(err.value) and "gradients" in str(err.value) and "all" in str(err.value)


# -- the explanation is written from the numbers -------------------------------------------------------------------
def _fake_scaling(tmp_path, raw_better: bool, quick: bool = False, seeds: int = 6, gap: float = 0.5,
                  noise: float = 0.01):
    lesson = get_lesson("scaling")
    spec = lesson_spec(lesson, quick, tmp_path)
    rng = np.random.default_rng(0)
    trials = []
    for seed in range(seeds):
        for arm in spec.arm_names():
            good = (arm == "raw") == raw_better
            acc = (0.4 + gap if good else 0.4) + noise * rng.standard_normal()
            trials.append(TrialView(arm, seed, "completed", {"test_accuracy": acc, "data": {"num_classes": 10,
                                                                                          "test": 359}}))
    return judge(lesson, quick, spec, trials)


def test_the_verdict_and_the_explanation_follow_the_measured_numbers(tmp_path):
    holds = _fake_scaling(tmp_path, raw_better=False)
    fails = _fake_scaling(tmp_path, raw_better=True)
    assert holds.primary.verdict == SUPPORTED and fails.primary.verdict == NOT_SUPPORTED
    assert holds.verdict == SUPPORTED and holds.to_json()["verdict"] == SUPPORTED
    assert "supported" in holds.explanation[0] and "not supported" in fails.explanation[0]
    assert "test set 359 per seed" in holds.explanation[0] and "margin ±0.01" in holds.explanation[0]
    raw = holds.mean("test_accuracy", "raw")
    assert f"raw: {raw:.3g}" in holds.explanation[0]
    assert holds.explanation[1] != fails.explanation[1]  # the ranking is measured, not written down
    assert fails.explanation[1].split(": ", 1)[1].startswith("raw ")
    same = _fake_scaling(tmp_path, raw_better=False, seeds=8, gap=0.0, noise=0.002)   # half-width ~0.002
    assert same.primary.verdict == NO_MEANINGFUL_DIFFERENCE and "inside ±margin" in same.explanation[0]
    payload = holds.to_json()
    assert payload["margin"] == 0.01 and payload["test_examples"] == 359 and consistent(payload)
    assert all(consistent(c) and c["test_examples"] == 359 for c in payload["checks"])
    assert all(a["test_examples"] == 359 for a in payload["arms"])


def test_a_quick_run_says_smoke_and_that_it_checks_the_machinery(tmp_path):
    quick = _fake_scaling(tmp_path, raw_better=False, quick=True, seeds=3)
    payload = quick.to_json()
    assert payload["verdict"] == SMOKE and payload["verdict_at_this_budget"] == INCONCLUSIVE   # n = 3
    assert all(c["verdict"] == SMOKE for c in payload["checks"]) and consistent(payload)
    assert "machinery, not the claim" in quick.explanation[0] and "machinery" in payload["smoke_note"]
    # even a huge effect over 3 seeds is no verdict
    assert "supported" not in quick.explanation[0]


def test_secondary_checks_are_holm_corrected_within_the_lesson(tmp_path):
    """Three secondary checks: their p-values are adjusted together (study.stats.holm, itself tested against the
    formula), the primary's is not."""
    from tricklab.lessons.outcome import evaluate_checks
    from tricklab.study.stats import holm

    r = _fake_scaling(tmp_path, raw_better=False)
    raw = [c.oriented.p for c in r.checks[1:]]
    assert [c.oriented.p_holm for c in r.checks[1:]] == pytest.approx(holm(raw))
    assert r.primary.oriented.p_holm is None
    # a lone secondary check is adjusted over a family of one: unchanged
    lone = evaluate_checks([(c, r.values[c.measure.key], None) for c in r.lesson.checks[:2]])
    assert lone[1].oriented.p_holm == pytest.approx(lone[1].oriented.p)


def test_the_book_escapes_every_text_it_is_given():
    from tricklab.report.lesson_book import BookSection, BookTable, render_lesson_book

    evil = '<script>alert(1)</script>"&'
    section = BookSection(anchor="lesson-x", title=evil, title_de=evil, quote_de=evil, claim=evil, definition=evil,
                          verdict=evil, verdict_numbers=evil, setup=[(evil, evil)], explanation=[evil],
                          tables=[(evil, BookTable([evil], [[evil]], caption=evil))], notes=[evil],
                          links=[(evil, evil)])
    page = render_lesson_book(evil, evil, [section], environment=[(evil, evil)])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&amp;" in page
    assert 'class="verdict verdict-inconclusive"' in page  # an unknown word never becomes a CSS class


def test_the_seeds_superscripts_are_superscripts_and_nothing_else_is_markup():
    from tricklab.lessons.registry import get_lesson
    from tricklab.report.lesson_book import _quote

    quote = str(_quote(get_lesson("floats").quote_de))
    assert "10<sup>-10</sup> und 10<sup>10</sup>" in quote and "&lt;sup&gt;" not in quote
    assert str(_quote("a<sup><b>x</b></sup> <i>y</i>")) == "a<sup>&lt;b&gt;x&lt;/b&gt;</sup> &lt;i&gt;y&lt;/i&gt;"


# -- the command line -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["lesson", "nope"], ["lesson", "scaling", "--workers", "0"], ["lesson", "scaling", "--executor", "bogus"],
])
def test_bad_input_exits_2_with_the_allowed_values(args, tmp_path):
    done = run_cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    if args[1] == "nope":
        assert "allowed: scaling, floats, init, batchnorm" in done.stderr and "all" in done.stderr


def test_an_out_path_that_is_a_file_exits_2(tmp_path):
    (tmp_path / "f").write_text("x")
    done = run_cli("lesson", "scaling", "--quick", "--out", str(tmp_path / "f"), cwd=tmp_path)
    assert done.returncode == 2 and "--out" in done.stderr


def test_one_quick_lesson_end_to_end_then_resumed_without_training(tmp_path):
    out = tmp_path / "lessons"
    done = run_cli("lesson", "scaling", "--quick", "--json", "--quiet", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    first = last_json(done.stdout)
    assert JSON_KEYS <= set(first) and first["lesson"] == "scaling"
    assert first["verdict"] == SMOKE and first["verdict_at_this_budget"] in VERDICTS and consistent(first)
    changed = sum(a["lr"] != a["shared_lr"] for a in first["arms"])
    # 4 arms × 3 seeds at the shared LR, 4 arms × each grid LR × 1 tuning seed, 3 seeds of every arm whose LR changed
    grid = 4 * len(QUICK_MULTIPLIERS)
    assert first["variant"] == "quick" and first["n_seeds"] == 3 and first["trained_now"] == 12 + grid + 3 * changed
    assert all(a["tuned"] and len(a["lr_grid"]) == len(QUICK_MULTIPLIERS) and a["tuning_seeds"] == [1000] for a in first["arms"])
    assert first["checks"][1]["check"] == "shared_lr"
    assert first["margin"] == 0.01 and isinstance(first["test_examples"], int) and first["test_examples"] > 300
    assert all(c["verdict"] == SMOKE and c["verdict_at_this_budget"] in VERDICTS and consistent(c)
               for c in first["checks"])
    page = Path(first["report"]).read_text(encoding="utf-8")
    assert 'id="lesson-scaling"' in page and "Werte in einem vernünftigen Bereich halten" in page
    assert 'class="verdict verdict-smoke"' in page and "machinery" in page

    again = last_json(run_cli("lesson", "scaling", "--quick", "--json", "--quiet", "--out", str(out),
                              cwd=tmp_path).stdout)
    assert again["trained_now"] == 0
    assert (again["effect"], again["ci_low"], again["ci_high"], again["verdict"]) == \
        (first["effect"], first["ci_low"], first["ci_high"], first["verdict"])

    text = run_cli("lesson", "scaling", "--quick", "--quiet", "--out", str(out), cwd=tmp_path)
    assert text.returncode == 0 and "quick variant" in text.stdout and "verdict: smoke" in text.stdout
    assert "checks the machinery, not the claim" in text.stdout and "supported" not in text.stdout


# -- every lesson, quick, and the book in a browser (slow) ----------------------------------------------------------
@pytest.mark.slow
def test_all_lessons_quick_and_the_lesson_book_in_chromium(tmp_path):
    done = run_cli("lesson", "all", "--quick", "--json", "--quiet", "--out", str(tmp_path / "lessons"),
                   cwd=tmp_path, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    results = last_json(done.stdout)
    assert [r["lesson"] for r in results] == list(LESSONS)
    for r in results:
        assert JSON_KEYS <= set(r), r["lesson"]
        assert r["verdict"] == SMOKE and r["verdict_at_this_budget"] in VERDICTS and consistent(r), r
        assert all(consistent(c) for c in r["checks"]), r["lesson"]
        assert r["n_seeds"] >= 3 and r["variant"] == "quick" and r["trials_failed"] == 0, r
    book = Path(results[0]["report"])
    assert all(Path(r["report"]) == book for r in results) and book.name == "lessons-quick.html"
    page = book.read_text(encoding="utf-8")
    for r in results:
        assert f'id="lesson-{r["lesson"]}"' in page and f'id="lesson-{r["lesson"]}-verdict"' in page
        verdict_box = page.split(f'id="lesson-{r["lesson"]}-verdict"', 1)[1][:400]
        assert f">{r['verdict']}<" in verdict_box

    if shutil.which("chromium") is None and not Path("/usr/bin/chromium").is_file():
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")
    from tests.test_report_browser import IMAGE_PROBE, chromium, console_messages
    from tricklab.report.html import CSP

    script_csp = f'content="{CSP.replace(chr(39), "&#x27;")}"'
    assert script_csp in page
    probe = tmp_path / "probe.html"
    relaxed = script_csp.replace("default-src", "script-src &#x27;unsafe-inline&#x27;; default-src")
    probe.write_text(page.replace(script_csp, relaxed).replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")
    dom, stderr = chromium(tmp_path, probe, "--dump-dom")
    assert console_messages(stderr) == []
    total = int(re.search(r'data-imgs="(\d+)"', dom).group(1))
    ok = int(re.search(r'data-imgs-ok="(\d+)"', dom).group(1))
    assert total == page.count("<img ") >= 3 * len(results) and ok == total
    for r in results:
        assert f'id="lesson-{r["lesson"]}"' in dom
    _, stderr = chromium(tmp_path, book, f"--screenshot={tmp_path / 'book.png'}", height=3000)
    assert console_messages(stderr) == [] and (tmp_path / "book.png").stat().st_size > 20_000


def test_scaling_starts_from_the_data_as_it_comes_and_lr_decay_trains_long_enough_for_its_decay(tmp_path):
    """Issue 16 item 6, in part: raw digits are grey levels 0..16 (no artificial ×100 + 1000); ×0.98 per epoch
    must matter over the full variant (at most a quarter of the peak left)."""
    from tricklab.train.run import prepare_data

    scaling = get_lesson("scaling")
    assert scaling.derived_data is None
    raw = lesson_spec(scaling, True, tmp_path).trial_recipe("raw", 1)
    assert (raw.data.name, raw.data.scale) == ("digits", "none")
    x = prepare_data(raw).x_train
    assert float(x.min()) == 0.0 and float(x.max()) == 16.0
    decay = get_lesson("lr_decay")
    assert 0.98 ** decay.full.epochs <= 0.25
    assert lesson_spec(decay, False, tmp_path).trial_recipe("step", 0).schedule.step_size == decay.full.epochs // 3
