"""Validation several times per epoch (``evals_per_epoch``; issue 16 item 5): where the evaluations fall, what they
record, and that they change nothing the training sees.

The reference for "nothing changes" is the same run with one evaluation per epoch: the epoch-end numbers, the
final weights and the batch-norm statistics of k = 4 are bit-identical to k = 1's (a CNN with batch norm and dropout,
so both an RNG draw and a running-statistics update would show). Each recorded evaluation is compared with an
independent ``evaluate`` of the model at that step."""

from __future__ import annotations

import csv
import io
import time

import pytest
import torch
from torch import nn

from tricklab.errors import InputError
from tricklab.population.support import population_unsupported
from tricklab.recipe import Recipe, recipe_from_dict
from tricklab.train.events import Callback, TrainState
from tricklab.train.loop import eval_steps, trained_seconds
from tricklab.train.rows import EVALS, history_csv, metric_rows
from tricklab.train.trainer import Trainer, evaluate


def _data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x, xv = torch.randn(300, 1, 20, generator=g), torch.randn(100, 1, 20, generator=g)
    return (x, (x.sum(dim=(1, 2)) > 0).long()), (xv, (xv.sum(dim=(1, 2)) > 0).long())


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(),
                         nn.Linear(80, 2))


def _fit(k: int | None, callbacks: list[Callback] = (), **kw) -> tuple[TrainState, nn.Module]:  # type: ignore[assignment]
    train, val = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    extra = {} if k is None else {"evals_per_epoch": k}
    torch.manual_seed(2)   # dropout masks come from the global RNG
    state = Trainer(model, opt, train, val, epochs=3, batch_size=32, seed=0, callbacks=list(callbacks),
                    **extra, **kw).fit()
    return state, model


def _epoch_ends(history):
    return [{k: v for k, v in h.items() if k not in ("epoch_seconds", EVALS)} for h in history]


def test_eval_steps_are_evenly_spaced_and_the_last_is_the_epoch_end():
    assert eval_steps(21, 4) == [5, 10, 15]          # + the epoch end, 21
    assert eval_steps(10, 4) == [2, 5, 7]
    assert eval_steps(10, 1) == [] and eval_steps(0, 4) == []
    assert eval_steps(3, 8) == [1, 2]                 # more evaluations than steps: each step once
    assert eval_steps(1, 4) == []


def test_one_evaluation_per_epoch_is_the_history_as_before():
    default, _ = _fit(None)
    one, _ = _fit(1)
    assert all(EVALS not in h for h in one.history)
    assert [list(h) for h in one.history] == [list(h) for h in default.history]   # same keys, same order
    assert _epoch_ends(one.history) == _epoch_ends(default.history)


def test_four_evaluations_change_nothing_the_training_sees():
    one, m1 = _fit(1)
    four, m4 = _fit(4)
    assert _epoch_ends(four.history) == _epoch_ends(one.history)       # bit-identical epoch-end numbers
    for a, b in zip(m1.state_dict().values(), m4.state_dict().values(), strict=True):
        assert torch.equal(a, b)                                         # weights and batch-norm statistics
    steps = [[e["step"] for e in h[EVALS]] for h in four.history]
    assert steps == [[2, 5, 7, 10], [12, 15, 17, 20], [22, 25, 27, 30]]
    for h in four.history:                                               # the epoch-end one is the row's own
        assert h[EVALS][-1]["val_loss"] == h["val_loss"] and h[EVALS][-1]["val_accuracy"] == h["val_accuracy"]


class _Reference(Callback):
    """Evaluates the model itself after every step (the reference for what the cadence records) and notes whether
    each training step saw the model in training mode."""

    def __init__(self) -> None:
        self.at: dict[int, dict[str, float]] = {}
        self.modes: list[bool] = []

    def on_batch_begin(self, state: TrainState) -> None:
        self.modes.append(state.model.training)

    def on_batch_end(self, state: TrainState) -> None:
        self.at[state.step] = evaluate(state.model, *state.trainer.val)   # type: ignore[misc]  # steps taken


def test_each_evaluation_is_the_model_at_its_step_in_eval_mode():
    ref = _Reference()
    four, _ = _fit(4, [ref])
    assert all(ref.modes) and len(ref.modes) == 30          # every step trained in training mode
    for h in four.history:
        for e in h[EVALS]:
            assert e["val_loss"] == ref.at[e["step"]]["loss"] and e["val_accuracy"] == ref.at[e["step"]]["accuracy"]


class _SlowInEval(nn.Module):
    """A model that sleeps in eval mode only: evaluation time made large, training time small."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause, self.net = pause, nn.Sequential(nn.Flatten(), nn.Linear(20, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            time.sleep(self.pause)
        return self.net(x)


def test_seconds_count_training_only_and_grow():
    train, val = _data()
    torch.manual_seed(0)
    pause = 0.4
    model = _SlowInEval(pause)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), train, val, epochs=3, batch_size=32,
                      evals_per_epoch=4)
    state = trainer.fit()
    seconds = [e["seconds"] for h in state.history for e in h[EVALS]]
    assert seconds == sorted(seconds) and seconds[0] > 0
    # 9 evaluations inside epochs slept 9 pauses, and 3 at epoch ends 3 more: none of it is training. The bounds
    # lie halfway between the training alone (30 steps of a linear model: milliseconds) and the training with
    # those pauses, so a loaded machine slowing the training several times over does not decide the outcome.
    assert seconds[-1] < 9 * pause / 2, seconds
    # an epoch's seconds keep the epoch-end validation (as with k = 1) but not the 3 evaluations inside it
    assert all(pause <= h["epoch_seconds"] < pause + 3 * pause / 2 for h in state.history), state.history
    assert trainer.wall_seconds > 12 * pause


def test_a_resumed_run_counts_its_seconds_on(tmp_path):
    train, val = _data()

    def run(epochs: int, resume: bool) -> TrainState:
        model = _model()
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), train, val, epochs=epochs,
                          batch_size=32, evals_per_epoch=2, checkpoint_dir=tmp_path)
        return trainer.fit(resume=resume)

    first = run(2, False)
    assert trained_seconds(first.history) == first.history[-1][EVALS][-1]["seconds"] > 0
    later = run(3, True)
    assert later.history[:2] == first.history
    assert later.history[2][EVALS][0]["seconds"] > first.history[1][EVALS][-1]["seconds"]
    assert trained_seconds([{"epoch": 1, "step": 3}]) == 0.0


def test_evaluations_reach_the_store_rows_and_stay_out_of_the_csv():
    history = [{"epoch": 1, "step": 10, "val_loss": 0.5, EVALS: [
        {"step": 5, "seconds": 0.1, "val_loss": 0.7, "val_accuracy": 0.4},
        {"step": 10, "seconds": 0.2, "val_loss": 0.5, "val_accuracy": float("nan")}]}]
    assert metric_rows(history) == [(10, 1, "val_loss", 0.5),
                                    (5, 1, "evals.seconds", 0.1), (5, 1, "evals.val_loss", 0.7),
                                    (5, 1, "evals.val_accuracy", 0.4),
                                    (10, 1, "evals.seconds", 0.2), (10, 1, "evals.val_loss", 0.5),
                                    (10, 1, "evals.val_accuracy", None)]
    rows = list(csv.reader(io.StringIO(history_csv(history))))
    assert rows == [["epoch", "step", "val_loss"], ["1", "10", "0.5"]]


def test_bad_values_are_refused_naming_the_key():
    for bad in (0, -1, 1001, 2.5, True, "often"):
        with pytest.raises(InputError) as err:
            recipe_from_dict({"evals_per_epoch": bad})
        assert err.value.field == "evals_per_epoch"
    assert recipe_from_dict({"evals_per_epoch": 4}).evals_per_epoch == 4 and Recipe().evals_per_epoch == 1
    train, _ = _data()
    model = _model()
    with pytest.raises(ValueError, match="evals_per_epoch"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), train, epochs=1, batch_size=32, evals_per_epoch=0)


def test_the_cli_refuses_a_bad_value_with_exit_2(capsys):
    from tricklab.cli.main import main

    assert main(["train", "--set", "evals_per_epoch=0", "--json"]) == 2
    out = capsys.readouterr()
    assert "evals_per_epoch" in out.out and "Traceback" not in out.out + out.err


def test_a_population_trains_such_a_recipe_alone():
    assert population_unsupported(recipe_from_dict({"evals_per_epoch": 4})) == "evals_per_epoch"
    assert population_unsupported(recipe_from_dict({"evals_per_epoch": 1})) is None
