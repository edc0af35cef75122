"""Faithful measures (issue 16 items 5 and 6): time to accuracy read between epoch ends, the dropout notebook's
layout (flatten of ≥ 256 features → dropout → output layer) on the digits, MNIST-1D and MNIST's IDX files, the
overfitting gap in eval mode over a whole ensemble, and lr_decay's constant η tuned like every schedule."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.lessons.catalog import dropout, lr_decay, overfitting
from tricklab.lessons.lesson import TrialView
from tricklab.lessons.measures import EVAL_GAP, evaluations, seconds_to, steps_to
from tricklab.lessons.run import lesson_spec
from tricklab.lessons.tuning import tuning_study
from tricklab.models import build_model
from tricklab.models.cnn import CNN, FLATTEN_MIN, FlattenCNN
from tricklab.train.trainer import evaluate
from tricklab.tricks.averaging import Ensemble


# -- time to accuracy between epoch ends ---------------------------------------------------------------------------
def _evals(step0: int, seconds0: float, accs: list[float]) -> list[dict[str, float]]:
    return [{"step": step0 + 5 * (i + 1), "seconds": seconds0 + 0.1 * (i + 1), "val_loss": 1.0 - a,
             "val_accuracy": a} for i, a in enumerate(accs)]


def _trial(status: str = "completed", **result) -> TrialView:
    history = [{"epoch": 1, "step": 20, "val_accuracy": 0.5, "train_loss": 0.9, "epoch_seconds": 1.0,
                "evals": _evals(0, 0.0, [0.3, 0.85, 0.6, 0.5])},
               {"epoch": 2, "step": 40, "val_accuracy": 0.92, "train_loss": 0.5, "epoch_seconds": 1.0,
                "evals": _evals(20, 0.4, [0.7, 0.8, 0.9, 0.92])}]
    base = {"data": {"num_classes": 10}, "recipe": {"epochs": 4}, "history": history}
    return TrialView("a", 0, status, {**base, **result})


def test_steps_to_reads_the_first_evaluation_at_the_target():
    t = _trial()
    assert steps_to("val_accuracy", 0.8)(t) == 10              # inside epoch 1 (its end read 0.5)
    assert steps_to("val_accuracy", 0.9)(t) == 35              # the third evaluation of epoch 2
    assert steps_to("val_accuracy", 0.95)(t) == 80             # never: the budget, 4 epochs × 20 steps
    assert steps_to("val_accuracy", 0.8)(_trial("diverged")) == 80
    assert steps_to("val_loss", 0.12)(t) == 35                 # a loss: at or below
    assert steps_to("train_loss", 0.6)(t) == 40                # not evaluated inside epochs: the epoch ends


def test_seconds_to_reads_the_training_seconds_of_that_evaluation():
    t = _trial()
    assert seconds_to("val_accuracy", 0.8)(t) == pytest.approx(0.2)
    assert seconds_to("val_accuracy", 0.9)(t) == pytest.approx(0.7)
    # never: the seconds of its 2 epochs (0.8, training only) per epoch × 4 planned
    assert seconds_to("val_accuracy", 0.95)(t) == pytest.approx(0.8 / 2 * 4)
    assert seconds_to("val_accuracy", 0.8)(_trial("diverged")) == pytest.approx(1.6)


def test_without_evaluations_inside_epochs_the_epoch_ends_count_as_before():
    plain = _trial()
    for h in plain.result["history"]:
        del h["evals"]
    assert evaluations(plain.result, "val_accuracy") is None
    assert steps_to("val_accuracy", 0.8)(plain) == 40 and seconds_to("val_accuracy", 0.8)(plain) == 2.0
    assert evaluations(_trial().result, "val_accuracy")[0]["step"] == 5


# -- the dropout notebook's layout ---------------------------------------------------------------------------------
def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if not list(m.children())]


@pytest.mark.parametrize(("shape", "features"), [((1, 8, 8), 512), ((40,), 320), ((1, 28, 28), 1568)])
def test_cnn_flatten_puts_dropout_between_a_wide_flatten_and_the_output_layer(shape, features):
    model = build_model("cnn_flatten", shape, 10, depth=2, width=32, norm="none", dropout=0.5)
    assert isinstance(model, FlattenCNN)
    leaves = _leaves(model)
    names = [n for n, _ in leaves]
    assert names[-3:] == ["head.flatten", "head.drop", "head.out"]
    assert isinstance(leaves[-3][1], nn.Flatten) and isinstance(leaves[-2][1], nn.Dropout)
    assert leaves[-2][1].p == 0.5 and isinstance(leaves[-1][1], nn.Linear)
    convs = [n for n, m in leaves if isinstance(m, nn.Conv1d | nn.Conv2d)]
    pools = [n for n, m in leaves if isinstance(m, nn.MaxPool1d | nn.MaxPool2d)]
    assert len(convs) == 2 and pools and names.index(pools[0]) > names.index(convs[0])   # convolutions → pooling
    assert not any(isinstance(m, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d) for _, m in leaves)
    seen: dict[str, int] = {}

    def width(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen["width"] = inputs[0].shape[1]

    model.head.drop.register_forward_hook(width)
    model(torch.zeros(2, *shape))
    assert seen["width"] == features == model.head.out.in_features and features >= FLATTEN_MIN


def test_the_plain_cnn_keeps_its_global_pooling_head():
    model = build_model("cnn", (1, 8, 8), 10, depth=2, width=32, dropout=0.5)
    assert type(model) is CNN
    assert [n for n, _ in _leaves(model)][-4:] == ["head.pool", "head.flatten", "head.drop", "head.out"]
    assert model.head.out.in_features == 32


@pytest.mark.parametrize("data", [{"name": "digits"}, {"name": "synthetic", "variant": "teacher", "size": 600}])
def test_a_population_of_cnn_flatten_members_trains_each_as_the_trainer_does(data, one_thread):
    """Two members stacked (channels-last, the flatten reordered to the Trainer's channel-first order), one with
    dropout: in float64 each member's loss follows its own Trainer's over 50 steps to ~1e-15."""
    import dataclasses

    from tests.test_population import _MemberLosses, _trainer_losses
    from tricklab.population.engine import PopulationMember, train_population
    from tricklab.population.support import population_unsupported
    from tricklab.recipe import recipe_from_dict
    from tricklab.train.run import prepare_data

    recipes = [recipe_from_dict({"data": {**data, "batch_size": 32}, "epochs": 4, "seed": seed,
                                 "model": {"name": "cnn_flatten", "depth": 2, "width": 8, "norm": "none",
                                           "dropout": p}}) for seed, p in ((0, 0.0), (1, 0.3))]
    assert all(population_unsupported(r) is None for r in recipes)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        splits = prepare_data(recipes[0])
        splits = dataclasses.replace(splits, x_train=splits.x_train.double(), x_val=splits.x_val.double(),
                                     x_test=splits.x_test.double())
        observers = [_MemberLosses() for _ in recipes]
        train_population([PopulationMember(r, observer=o) for r, o in zip(recipes, observers, strict=True)],
                         splits=splits, probe_every=1)
        for recipe, observer in zip(recipes, observers, strict=True):
            alone = _trainer_losses(recipe, splits)
            assert len(alone) >= 50
            assert max(abs(a - b) / abs(a) for a, b in zip(alone[:50], observer.losses[:50])) < 1e-9
    finally:
        torch.set_default_dtype(default)


def test_the_dropout_lesson_trains_the_notebook_layout_on_the_digits_and_mnist1d(tmp_path):
    from tricklab.train.run import build_recipe_model, prepare_data

    lesson = dropout.LESSON
    spec = lesson_spec(lesson, True, tmp_path)
    assert set(spec.arm_names()) == {f"{d},p={p:g}" for d in ("digits", "mnist1d") for p in dropout.RATES}
    assert {c.name for c in lesson.checks if c.pool} == {"accuracy", "faster", "faster_seconds"}
    for data, width in (("digits", 512), ("mnist1d", 320)):
        recipe = spec.trial_recipe(f"{data},p=0.5", 0)
        assert recipe.data.name == data and recipe.model.name == "cnn_flatten" and recipe.model.dropout == 0.5
        assert recipe.evals_per_epoch == dropout.EVALS_PER_EPOCH > 1
        model = build_recipe_model(recipe, prepare_data(recipe), 0)
        assert model.head.out.in_features == width and isinstance(model.head.drop, nn.Dropout)


def _write_idx(path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes: 0, 0, type 0x08, the number of dimensions, each as big-endian uint32."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_the_dropout_lesson_runs_on_mnist_idx_files(tmp_path):
    import tricklab as tl

    rng = np.random.default_rng(0)
    for part, n in (("train", 120), ("t10k", 40)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, label in enumerate(labels):                  # a bright bar whose row is the class: learnable
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 250
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte", images)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte", labels)
    lesson = dropout.on_mnist(str(tmp_path))
    assert "mnist,p=0.5" in lesson.arm_names() and "mnist" in lesson.checks[0].pool
    spec = lesson_spec(lesson, True, tmp_path / "out")
    recipe = spec.trial_recipe("mnist,p=0.5", 0).model_copy(update={"epochs": 2, "name": "mnist-dropout"})
    assert recipe.data.name == "idx" and recipe.data.path == str(tmp_path)
    result = tl.train(recipe, runs_root=tmp_path / "runs")
    assert result.status == "completed" and result.data["input_shape"] == [1, 28, 28]
    assert result.num_params == 32 * 9 + 32 + 32 * 32 * 9 + 32 + 7 * 7 * 32 * 10 + 10   # flatten of 1,568
    assert result.test_accuracy is not None and math.isfinite(result.history[-1]["train_loss"])


def test_the_command_line_adds_mnist_to_the_dropout_lesson_from_mnist_dir(tmp_path):
    from tests.conftest import last_json, run_cli
    from tests.test_data_files import mnist_dir
    from tricklab.cli.lesson_cmd import _with_mnist
    from tricklab.lessons.registry import select

    mnist_dir(tmp_path)
    lessons = _with_mnist(select("all"), "all", tmp_path)
    [with_mnist] = [lesson for lesson in lessons if lesson.name == "dropout"]
    assert "mnist,p=0.5" in with_mnist.arm_names() and len(lessons) == len(select("all"))
    assert [lesson.name for lesson in lessons] == [lesson.name for lesson in select("all")]
    for args, words in ((["init", "--mnist", str(tmp_path)], "does not measure on MNIST"),
                        (["dropout", "--mnist", str(tmp_path / "none")], "is not a directory"),
                        (["dropout", "--mnist", str(tmp_path / "out")], "lacks train-images-idx3-ubyte")):
        (tmp_path / "out").mkdir(exist_ok=True)
        done = run_cli("lesson", *args, "--quick", "--json", "--out", str(tmp_path / "book"), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        error = last_json(done.stdout)["error"]
        assert error["field"] == "--mnist" and words in error["message"]


# -- the overfitting gap: eval mode, the whole ensemble ------------------------------------------------------------
def test_the_gap_is_the_eval_mode_train_accuracy_minus_the_test_accuracy():
    t = TrialView("ensemble", 0, "completed", {"train_accuracy": 1.0, "test_accuracy": 0.875, "history": [
        {"epoch": 1, "step": 7, "train_accuracy": 0.5}]})
    assert EVAL_GAP(t) == 0.125                      # not the minibatch mean of training mode (0.5)
    assert EVAL_GAP(TrialView("a", 0, "diverged", {"train_accuracy": 1.0, "test_accuracy": 0.1})) is None
    assert EVAL_GAP(TrialView("a", 0, "completed", {"test_accuracy": 0.9})) is None
    assert overfitting.LESSON.checks[1].measure is EVAL_GAP


def test_an_ensembles_train_accuracy_is_that_of_its_averaged_probabilities_in_eval_mode():
    torch.manual_seed(0)
    x = torch.randn(64, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    members = [nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)).double()
               for _ in range(3)]
    for m in members:
        m.train()
    got = evaluate(Ensemble(members), x, y)
    with torch.no_grad():   # by hand: each member without dropout, probabilities averaged, then the argmax
        probs = sum(torch.softmax(m[3](torch.relu(m[0](x))), dim=1) for m in members) / 3
    assert got["accuracy"] == (probs.argmax(dim=1) == y).double().mean().item()
    assert got["loss"] == pytest.approx(-torch.log(probs[torch.arange(64), y]).mean().item(), rel=1e-12)
    first = evaluate(members[0], x, y)["accuracy"]
    alone = [(torch.softmax(m[3](torch.relu(m[0](x))), 1).argmax(1) == y).double().mean().item() for m in members]
    assert first == alone[0] and len(set(alone)) > 1        # the members differ: the first one is not the ensemble
    assert all(m.training for m in members)                   # evaluation put them back in training mode


# -- lr_decay: the constant η is tuned as every schedule is -------------------------------------------------------
def test_lr_decay_tunes_the_constant_arm_on_the_same_grid_as_the_schedules(tmp_path):
    lesson = lr_decay.LESSON
    assert lesson.tune
    grid = tuning_study(lesson, lesson_spec(lesson, False, tmp_path), False)    # the full variant's grid
    by_arm: dict[str, list[float]] = {}
    for arm in grid.arm_names():
        recipe = grid.trial_recipe(arm, grid.seed_list()[0])
        by_arm.setdefault(recipe.schedule.name, []).append(float(recipe.optimizer.lr))
    assert set(by_arm) == {"constant", "exponential", "step", "cosine", "one_cycle"}
    assert len(by_arm["constant"]) >= 3 and sorted(by_arm["constant"]) == sorted(by_arm["cosine"])
    assert max(by_arm["constant"]) / min(by_arm["constant"]) == pytest.approx(100.0)   # η × 10^(±1)
