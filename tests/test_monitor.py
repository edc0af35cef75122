"""The one rule for a metric's direction (``tricks.monitor``) and everything that now asks it."""

from __future__ import annotations

import math

import pytest
import torch

from tricklab.study.spec import METRICS, TARGET_METRICS, Target
from tricklab.study.stats import steps_to_target
from tricklab.train.callbacks import EarlyStoppingCallback, PlateauSchedule
from tricklab.train.run import best_epoch
from tricklab.tricks.early_stopping import EarlyStopping
from tricklab.tricks.monitor import KNOWN_METRICS, Monitor, higher_is_better


def test_the_listed_metrics_agree_with_the_rule():
    assert all(higher_is_better(m) for m in KNOWN_METRICS["higher is better"])
    assert not any(higher_is_better(m) for m in KNOWN_METRICS["lower is better"])
    listed = {m for names in KNOWN_METRICS.values() for m in names}
    assert set(METRICS) <= listed and set(TARGET_METRICS) <= listed  # every metric a study names is listed


def test_mode_and_worst_follow_the_name():
    assert Monitor("val_accuracy").mode == "max" and Monitor("val_loss").mode == "min"
    assert Monitor("val_accuracy").worst == -math.inf and Monitor("wall_seconds").worst == math.inf
    assert Monitor("val_loss", higher=True).mode == "max"       # an explicit direction wins (a study's target)


@pytest.mark.parametrize(("name", "new", "best", "delta", "expected"), [
    ("val_loss", 0.5, 0.6, 0.0, True),
    ("val_loss", 0.6, 0.6, 0.0, False),          # equal is no improvement
    ("val_loss", 0.55, 0.6, 0.1, False),         # not by more than min_delta
    ("val_accuracy", 0.71, 0.7, 0.0, True),
    ("val_accuracy", 0.69, 0.7, 0.0, False),
    ("val_loss", math.nan, 0.6, 0.0, False),     # a diverged epoch is never the best
    ("val_loss", math.inf, math.nan, 0.0, False),
    ("val_loss", 3.0, None, 0.0, True),          # anything finite beats nothing
    ("val_loss", 3.0, math.inf, 0.0, True),      # and the worst value (an early stopper's start)
    ("val_accuracy", 0.0, -math.inf, 0.0, True),
])
def test_improved(name, new, best, delta, expected):
    assert Monitor(name).improved(new, best, delta) is expected


def test_best_and_best_index_ties_go_to_the_earliest():
    loss, acc = Monitor("val_loss"), Monitor("val_accuracy")
    assert loss.best([0.5, math.nan, 0.2, 0.3]) == 0.2 and acc.best([0.5, None, 0.9]) == 0.9
    assert loss.best([math.nan, None]) is None and loss.best_index([]) is None
    assert loss.best_index([0.4, 0.2, 0.2, math.nan]) == 1
    assert acc.best_index([0.8, 0.9, 0.9, 0.1]) == 1
    history = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2}, {"epoch": 3, "val_accuracy": 0.7}]
    assert acc.best_index(history) == 2


def test_reached_is_at_or_past_the_target():
    assert Monitor("val_accuracy").reached(0.95, 0.95) and not Monitor("val_accuracy").reached(0.94, 0.95)
    assert Monitor("val_loss").reached(0.3, 0.3) and not Monitor("val_loss").reached(0.31, 0.3)
    assert not Monitor("val_loss").reached(math.nan, 0.3) and not Monitor("val_loss").reached(None, 0.3)


def test_early_stopping_compares_through_the_rule():
    stopper = EarlyStopping(patience=1, min_delta=0.1)
    assert stopper.improves(1.0) and not stopper.improves(math.nan)
    model = torch.nn.Linear(1, 1)
    stopper.update(1.0, model)
    assert not stopper.improves(0.95) and stopper.improves(0.85)


def test_callbacks_take_their_direction_from_the_monitored_name():
    assert EarlyStoppingCallback(3, "val_accuracy").stopper.mode == "max"
    assert EarlyStoppingCallback(3, "val_loss").stopper.mode == "min"
    assert PlateauSchedule(0.5, 2, monitor="val_accuracy").plateau.mode == "max"
    assert PlateauSchedule(0.5, 2).plateau.mode == "min"


def test_best_epoch_of_a_history():
    h = [{"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.8}, {"epoch": 2, "val_loss": 0.4, "val_accuracy": 0.9},
         {"epoch": 3, "val_loss": 0.4, "val_accuracy": 0.9}, {"epoch": 4, "val_loss": math.nan}]
    assert best_epoch(h, "val_loss") == 2 and best_epoch(h, "val_accuracy") == 2   # ties: the earliest
    assert best_epoch([{"epoch": 1}, {"epoch": 2, "val_loss": math.inf}], "val_loss") == 2  # none finite: the last
    assert best_epoch([], "val_loss") is None


def test_targets_and_steps_to_target_share_the_rule():
    assert Target(metric="val_accuracy", value=0.9).better_is_higher
    assert not Target(metric="val_loss", value=0.3).better_is_higher
    assert Target(metric="val_loss", value=0.3, higher_is_better=True).better_is_higher
    history = [{"step": 10, "epoch_seconds": 1.0, "val_loss": 0.5}, {"step": 20, "epoch_seconds": 1.0, "val_loss": 0.3}]
    assert steps_to_target(history, "val_loss", 0.3) == (20, 2.0)     # a loss is reached from above, by its name
