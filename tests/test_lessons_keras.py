"""Issue 16 item 9: the Keras cross-check (``bench/lessons_keras.py``) and the lesson book's display of it.

The Keras model must be tricklab's model layer for layer (same parameters per layer, the same logits from the same
weights, dropout and batch norm where tricklab puts them); the Keras trials must be judged by tricklab's own
statistics; the book must show both frameworks' effects and, where the verdicts differ, say how from the numbers.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")   # keras picks its backend on import
keras = pytest.importorskip("keras")

import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from tests.test_lesson_pooling import _batchnorm  # noqa: E402
from tricklab.lessons import get_lesson, lesson_spec  # noqa: E402
from tricklab.lessons.book import (  # noqa: E402
    book_section,
    disagreement,
    load_cross_check,
    position,
    write_book,
)
from tricklab.lessons.inference import infer  # noqa: E402
from tricklab.lessons.outcome import measure_values, side_values  # noqa: E402
from tricklab.lessons.verdicts import orient  # noqa: E402
from tricklab.train.loop import batches_per_epoch  # noqa: E402
from tricklab.train.run import build_recipe_model, prepare_data  # noqa: E402
from tricklab.tricks.schedules import one_cycle  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "bench" / "lessons_keras.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("lessons_keras", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lessons_keras"] = module
    spec.loader.exec_module(module)
    return module


def _recipe(tmp_path, lesson: str, arm: str, seed: int = 0):
    return lesson_spec(get_lesson(lesson), True, tmp_path).trial_recipe(arm, seed)


def _arm(tmp_path, lesson: str, **model) -> str:
    """The first arm of ``lesson`` whose model has these fields (the arms are read from the lesson, not named)."""
    spec = lesson_spec(get_lesson(lesson), True, tmp_path)
    return next(a for a in spec.arm_names()
                if all(getattr(spec.trial_recipe(a, 0).model, k) == v for k, v in model.items()))


# the layout as a sequence of layer kinds: torch modules and Keras layers named alike
TORCH_KINDS = {nn.Linear: "dense", nn.Conv1d: "conv", nn.Conv2d: "conv", nn.BatchNorm1d: "batchnorm",
               nn.BatchNorm2d: "batchnorm", nn.ReLU: "relu", nn.Dropout: "dropout", nn.MaxPool1d: "maxpool",
               nn.MaxPool2d: "maxpool", nn.AdaptiveAvgPool1d: "globalavg", nn.AdaptiveAvgPool2d: "globalavg",
               nn.Flatten: "flatten"}


def _torch_layout(model: nn.Module) -> list[str]:
    kinds = [TORCH_KINDS[type(m)] for m in model.modules() if type(m) in TORCH_KINDS]
    # global average pooling then flatten is Keras's one GlobalAveragePooling layer
    return [k for i, k in enumerate(kinds) if not (k == "flatten" and i and kinds[i - 1] == "globalavg")]


def _keras_layout(model) -> list[str]:
    names = {"Dense": "dense", "Conv1D": "conv", "Conv2D": "conv", "BatchNormalization": "batchnorm",
             "Dropout": "dropout", "MaxPooling1D": "maxpool", "MaxPooling2D": "maxpool", "Flatten": "flatten",
             "GlobalAveragePooling1D": "globalavg", "GlobalAveragePooling2D": "globalavg"}
    out = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Activation":
            out.append(layer.get_config()["activation"])
        elif kind in names:
            out.append(names[kind])
    return out


@pytest.mark.parametrize("lesson", ["dropout", "batchnorm"])
def test_the_keras_model_is_tricklabs_model_layer_for_layer(bench, tmp_path, lesson):
    """Every arm of the lesson as it is defined now (read at run time: the arms may change)."""
    spec = lesson_spec(get_lesson(lesson), True, tmp_path)
    seen = set()
    for arm in spec.arm_names():
        recipe = spec.trial_recipe(arm, 0)
        splits = prepare_data(recipe)
        check = bench.mirror(recipe, splits)
        assert check.same, (arm, check.to_json())
        assert check.torch_params == check.keras_params > 0
        assert [n for _, n in check.torch_layers] == [n for _, n in check.keras_layers]
        assert check.max_abs_diff <= bench.MIRROR_TOLERANCE
        torch_model = build_recipe_model(recipe, splits, 0)
        keras_model = bench.keras_model(recipe, splits.input_shape, splits.num_classes)
        layout = _keras_layout(keras_model)
        assert layout == _torch_layout(torch_model), arm
        assert ("dropout" in layout) == (recipe.model.dropout > 0)
        assert layout.count("batchnorm") == (recipe.model.depth if recipe.model.norm == "batch" else 0)
        for layer in keras_model.layers:
            if type(layer).__name__ == "Dropout":
                assert layer.rate == recipe.model.dropout
            if type(layer).__name__ == "BatchNormalization":
                assert (layer.momentum, layer.epsilon) == (0.9, 1e-5)   # torch's momentum 0.1 and eps, in Keras's terms
        seen.add((recipe.model.dropout > 0, recipe.model.norm))
    assert seen >= ({(True, "none"), (False, "none")} if lesson == "dropout" else {(False, "batch"), (False, "none")})


def test_the_mirror_check_fails_when_the_layouts_differ(bench, tmp_path, monkeypatch):
    recipe = _recipe(tmp_path, "batchnorm", _arm(tmp_path, "batchnorm", name="cnn", norm="none"))
    splits = prepare_data(recipe)
    monkeypatch.setattr(bench, "pool_positions", lambda depth, spatial: set())   # Keras without the max-pooling
    check = bench.mirror(recipe, splits)
    assert check.torch_params == check.keras_params       # pooling has no parameters: only the logits tell
    assert not check.same and check.max_abs_diff > 1e-2
    wider = recipe.model_copy(update={"model": recipe.model.model_copy(update={"width": 16})})
    monkeypatch.setattr(bench, "keras_model", lambda r, shape, classes, real=bench.keras_model:
                        real(wider, shape, classes))
    check = bench.mirror(recipe, splits)
    assert not check.same and check.torch_params != check.keras_params and math.isinf(check.max_abs_diff)


def test_the_keras_schedule_is_tricklabs_one_cycle(bench):
    for lr, total in ((3e-3, 420), (1e-2, 63)):
        keras_schedule, reference = bench.OneCycle(lr, total), one_cycle(lr, total_steps=total)
        got = np.array([float(keras_schedule(t)) for t in range(total + 3)])
        expected = np.array([reference(t) for t in range(total + 3)])
        # float32 in Keras, float64 in tricklab: equal to float32's rounding of the peak rate
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * lr)


def _judged_checks_match_tricklabs_rule(result):
    """Every check recomputed from the per-seed values with tricklab's inference and verdict rule (the shared_lr
    check from the arms at their own LR; a pooled check inconclusive where its models disagree in sign)."""
    for c in result.checks:
        trials = result.shared_trials if c.check.name == "shared_lr" else result.trials
        values = measure_values(c.check.measure, trials)
        diff = infer(side_values(values, c.check.treatment), side_values(values, c.check.baseline),
                     c.check.measure.method)
        oriented = orient(diff, c.check.expects, margin=c.check.resolved_margin(c.baseline_mean), p_holm=c.oriented.p_holm)
        expected = oriented.verdict if c.pool is None or c.pool.agree else "inconclusive"
        assert (c.oriented.effect, c.oriented.ci_low, c.oriented.ci_high, c.oriented.verdict) == \
               (oriented.effect, oriented.ci_low, oriented.ci_high, expected), c.check.name


@pytest.mark.slow
def test_the_keras_records_are_judged_by_tricklabs_statistics_and_compared_check_by_check(bench, tmp_path,
                                                                                          monkeypatch):
    """The wiring, fast: Keras's training replaced by records with known test accuracies (dropout p > 0 loses 2
    points, with seed noise); the mirror check, tricklab's judge and the side-by-side rows are the real ones."""
    lesson = bench.budgeted(get_lesson("dropout"), False, 6, 1)
    spec = lesson_spec(lesson, False, tmp_path)
    rng = np.random.default_rng(0)
    trained = []

    def fake_train(recipe, splits, lr):
        trained.append((recipe.seed, lr))
        acc = 0.95 - 0.02 * (recipe.model.dropout > 0) + 0.003 * rng.standard_normal()
        return {"status": "completed", "test_accuracy": acc, "recipe": {"epochs": 1},
                "data": {"num_classes": 10, "test": len(splits.y_test)},
                "history": [{"epoch": 1, "step": 21, "val_accuracy": acc, "epoch_seconds": 1.0}]}

    monkeypatch.setattr(bench, "train_keras", fake_train)
    own = {arm: float(spec.trial_recipe(arm, 0).optimizer.lr) for arm in spec.arm_names()}
    lrs = {arm: lr * (10 ** 0.5 if i == 0 else 1.0) for i, (arm, lr) in enumerate(own.items())}   # one arm tuned
    tuned = [bench.TunedArm(arm, own[arm], lrs[arm], (), (1000,)) for arm in spec.arm_names()]
    result, mirrors, _, runs = bench.keras_side(lesson, False, spec, tuned, lrs, progress=False,
                                                cache=tmp_path / "cache")
    assert runs == len(trained) == len(spec.arm_names()) * 6 + 6      # the tuned arm also at its own LR
    assert all(m["same"] for m in mirrors.values())
    assert [c.check.name for c in result.checks][:2] == [lesson.primary.name, "shared_lr"]
    _judged_checks_match_tricklabs_rule(result)
    assert result.primary.verdict == "not_supported"                   # −2 points, 0.3 points of noise, 6 seeds
    # a second invocation reads the cached records: nothing trained again, the same numbers
    again, _, _, _ = bench.keras_side(lesson, False, spec, tuned, lrs, progress=False, cache=tmp_path / "cache")
    assert len(trained) == runs and again.primary.oriented == result.primary.oriented
    # the side-by-side rows: tricklab's side from its JSON, Keras's from this result; a differing verdict has its why
    keras_json = result.to_json()
    tricklab_json = copy.deepcopy(keras_json)
    tricklab_json["checks"][0]["verdict"] = "supported"
    rows = bench.compare("dropout", tricklab_json, keras_json)
    assert [r["check"] for r in rows] == [c.check.name for c in result.checks]
    assert rows[0]["keras"]["effect"] == keras_json["checks"][0]["effect"] == result.primary.oriented.effect
    assert not rows[0]["agree"] and "tricklab supported" in rows[0]["why"] and "Keras not_supported" in rows[0]["why"]
    assert all(r["agree"] and r["why"] is None for r in rows[1:])
    assert "| dropout | " + rows[0]["check"] + " |" in bench.table([{"lesson": "dropout", "checks": rows}])


@pytest.mark.slow
def test_keras_trials_train_in_tricklabs_batches_and_evaluations(bench, tmp_path):
    """Real Keras training (3 seeds, 1 epoch): the steps and in-epoch evaluations tricklab plans, judged by its rule."""
    lesson = bench.budgeted(get_lesson("dropout"), True, 3, 1)
    spec = lesson_spec(lesson, True, tmp_path)
    lrs = {arm: float(spec.trial_recipe(arm, 0).optimizer.lr) for arm in spec.arm_names()}
    result, mirrors, _, trained = bench.keras_side(lesson, True, spec, None, lrs, progress=False)
    assert trained == len(spec.arm_names()) * 3 and all(m["same"] for m in mirrors.values())
    for t in result.trials:
        recipe = spec.trial_recipe(t.arm, t.seed)
        steps = batches_per_epoch(len(prepare_data(recipe).x_train), recipe.data.batch_size)
        assert t.status == "completed" and [h["step"] for h in t.result["history"]] == [steps]
        assert 0.0 <= t.result["test_accuracy"] <= 1.0
        k = getattr(recipe, "evals_per_epoch", 1)
        if k > 1:     # validations inside the epoch at tricklab's planned steps, the epoch's end last
            evals = t.result["history"][0]["evals"]
            assert [e["step"] for e in evals] == [*sorted(bench.between_evals(steps, k)), steps]
            assert all(a["seconds"] < b["seconds"] for a, b in zip(evals, evals[1:]))
    _judged_checks_match_tricklabs_rule(result)


# -- the book -------------------------------------------------------------------------------------------------

def _side(verdict, effect, low, high, n=8, margin=0.01, p_holm=None):
    return {"verdict": verdict, "effect": effect, "ci_low": low, "ci_high": high, "n": n, "margin": margin,
            "method": "t", "p": 0.01, "p_holm": p_holm}


def _cross_check(result, keras_side_of: dict[str, dict]) -> dict:
    checks = []
    for c in result.to_json()["checks"]:
        t = _side(c["verdict"], c["effect"], c["ci_low"], c["ci_high"], c["n"], c["margin"], c["p_holm"])
        k = keras_side_of.get(c["check"], t)
        checks.append({"check": c["check"], "question": c["question"], "measure": c["measure"],
                       "measure_label": c["measure_label"], "tricklab": t, "keras": k,
                       "agree": t["verdict"] == k["verdict"]})
    return {"bench": "lessons_keras", "keras": "3.15.1", "keras_backend": "torch",
            "differences": ["random streams: Keras draws its own initial weights"],
            "lessons": [{"lesson": "batchnorm", "variant": "full", "seeds": list(range(8)), "epochs": 15,
                         "study": result.spec.name, "checks": checks}]}


@pytest.fixture
def no_figures(monkeypatch):
    """The book's figures are another test's business (tests/test_lesson_plots.py): drawing them here is slow."""
    from tricklab.lessons import book

    monkeypatch.setattr(book, "_images", lambda r: [])


def test_the_book_shows_the_keras_effects_and_says_how_a_verdict_differs(tmp_path, no_figures):
    result = _batchnorm(tmp_path, 0.05, 0.03)          # both models gain: tricklab says supported
    primary = result.primary.oriented
    assert primary.verdict == "supported" and primary.ci_low > 0
    data = _cross_check(result, {"final_accuracy": _side("inconclusive", 0.004, -0.003, 0.011)})
    section = book_section(result, tmp_path / "book.html", data)
    tables = dict(section.tables)
    table = tables["Keras cross-check"]
    rows = {row[0]: row for row in table.rows}
    assert rows["final_accuracy"][4:8] == ["+0.004", "[-0.003, 0.011]", "inconclusive", "no"]
    assert rows["final_accuracy"][3] == "supported" and rows["mlp"][-1] == "yes"
    sentence = disagreement(data["lessons"][0]["checks"][0])
    assert sentence in table.caption
    assert "tricklab supported" in sentence and "the interval lies above 0" in sentence
    assert "Keras inconclusive" in sentence and "includes 0 and reaches past the margin ±0.01" in sentence
    gap = 0.004 - primary.effect
    assert f"Keras's effect is {gap:+.3g} from tricklab's" in sentence
    assert "random streams: Keras draws its own initial weights" in table.caption
    assert any("differ on 1 of" in n and "final_accuracy" in n for n in section.notes)
    # all verdicts the same: no disagreement note, the caption says they agree
    agreeing = book_section(result, tmp_path / "book.html", _cross_check(result, {}))
    assert "The verdicts agree on every check." in dict(agreeing.tables)["Keras cross-check"].caption
    assert not any("Keras" in n for n in agreeing.notes)
    # no cross-check, or one without this lesson: the section is as before
    assert "Keras cross-check" not in dict(book_section(result, tmp_path / "b.html").tables)
    other = {**data, "lessons": [{**data["lessons"][0], "lesson": "dropout"}]}
    assert "Keras cross-check" not in dict(book_section(result, tmp_path / "b.html", other).tables)


def test_where_an_interval_lies_is_read_from_the_numbers():
    assert "inside the margin ±0.01" in position(_side("no_meaningful_difference", 0.001, -0.004, 0.006))
    assert "below 0" in position(_side("not_supported", -0.02, -0.03, -0.01))
    assert "fewer than the rule's 5" in position(_side("inconclusive", 0.02, 0.01, 0.03, n=4))
    assert "cannot bound" in position(_side("inconclusive", 12.0, None, None, n=5))
    held = position(_side("inconclusive", 0.02, 0.01, 0.03, p_holm=0.2))
    assert "above 0" in held and "Holm-adjusted p = 0.2 is not below 0.05" in held
    apart = disagreement({"check": "c", "measure": "m", "tricklab": _side("supported", 0.05, 0.04, 0.06),
                          "keras": _side("not_supported", -0.05, -0.06, -0.04)})
    assert "do not overlap" in apart and "−0.1" in apart.replace("-", "−")


def test_write_book_finds_the_cross_check_beside_the_book_and_skips_a_broken_one(tmp_path, no_figures):
    result = _batchnorm(tmp_path, 0.05, 0.03)
    data = _cross_check(result, {"final_accuracy": _side("inconclusive", 0.004, -0.003, 0.011)})
    (tmp_path / "lessons_keras.json").write_text(json.dumps(data), encoding="utf-8")
    html = write_book([result], tmp_path / "book.html").read_text(encoding="utf-8")
    assert "Keras cross-check" in html and "includes 0 and reaches past the margin" in html
    (tmp_path / "lessons_keras.json").write_text("{not json", encoding="utf-8")
    assert load_cross_check(tmp_path / "lessons_keras.json") is None
    assert load_cross_check(tmp_path / "missing.json") is None
    html = write_book([result], tmp_path / "book.html", cross_check=tmp_path / "lessons_keras.json")
    assert "Keras cross-check" not in html.read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_bench_end_to_end_prints_the_table_and_the_json(bench, tmp_path, capsys):
    """tricklab's lesson in-process and Keras at the same budget (3 seeds, 1 epoch, 1 tuning seed; the rule cannot
    decide at 3 seeds, so this checks the machinery, not the verdicts)."""
    out = tmp_path / "cross.json"
    data = bench.main(["--lessons", "batchnorm", "--seeds", "3", "--epochs", "1", "--tuning-seeds", "1",
                       "--work", str(tmp_path / "work"), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == data == json.loads(out.read_text(encoding="utf-8"))
    assert printed[0].startswith("| lesson | check | tricklab effect")
    (entry,) = data["lessons"]
    lesson = get_lesson("batchnorm")
    assert entry["seeds"] == [0, 1, 2] and entry["epochs"] == 1 and entry["lesson"] == "batchnorm"
    assert [c["check"] for c in entry["checks"]][:2] == [lesson.primary.name, "shared_lr"]
    for c in entry["checks"]:
        assert c["agree"] == (c["tricklab"]["verdict"] == c["keras"]["verdict"])
        assert (c["why"] is None) == c["agree"]
        assert c["tricklab"]["n"] == c["keras"]["n"] == 3 and c["keras"]["verdict"] == "inconclusive"   # n < 5
    assert all(m["same"] for m in entry["mirror"].values())
    assert [a["name"] for a in entry["arms"]] == lesson.arm_names()
    assert data["differences"] == list(bench.DIFFERENCES)
    merged = bench.merge([str(out), str(out)])
    assert [e["lesson"] for e in merged["lessons"]] == ["batchnorm"] and len(merged["runs"]) == 2
