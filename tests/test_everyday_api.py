"""The public API (issue 18 item 3): ``import tricklab as tl`` reaches the Trainer, its callbacks, the tricks for any
loop, the schedules and the clipping functions — lazily, without torch; schedule factories take every length in
optimiser steps; epochs are numbered from 1 in callbacks, history, checkpoints and results alike."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch
from torch import nn

import tricklab as tl
from tests.conftest import ROOT

FACTORIES = ("constant", "exponential", "step_decay", "cosine", "warmup", "one_cycle")


def test_import_tricklab_stays_torch_free_and_every_name_resolves():
    code = ("import sys, tricklab as tl; assert 'torch' not in sys.modules, 'torch at import'; "
            "[getattr(tl, n) for n in tl.__all__]; assert 'torch' in sys.modules; print(len(tl.__all__))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == len(tl.__all__)


def test_the_names_users_look_for_are_there():
    from tricklab.diagnose.trainer_callback import DoctorCallback
    from tricklab.train.callbacks import EarlyStoppingCallback, WeightAveraging
    from tricklab.tricks import averaging, clipping, early_stopping, lr_find, schedules

    assert tl.DoctorCallback is DoctorCallback and issubclass(tl.DoctorCallback, tl.Callback)
    assert tl.EarlyStoppingCallback is EarlyStoppingCallback and tl.WeightAveraging is WeightAveraging
    assert (tl.EMA, tl.SWA, tl.Ensemble) == (averaging.EMA, averaging.SWA, averaging.Ensemble)
    assert tl.EarlyStopping is early_stopping.EarlyStopping and tl.lr_find is lr_find.lr_find
    assert tl.clip_gradients_ is clipping.clip_gradients_ and tl.global_grad_norm is clipping.global_grad_norm
    for name in (*FACTORIES, "Plateau", "epochs_to_steps", "apply_lr"):
        assert getattr(tl, name) is getattr(schedules, name)
    for name in ("Trainer", "Callback", "TrainState", "watch", "Doctor", "train", "Recipe", "load_recipe"):
        assert name in tl.__all__ and name in dir(tl)


@pytest.mark.parametrize("name", FACTORIES)
def test_schedule_factories_count_steps_not_epochs(name):
    params = inspect.signature(getattr(tl, name)).parameters
    assert not any("epoch" in p for p in params), params


def test_epochs_to_steps_and_the_recipe_builder_agree():
    assert tl.epochs_to_steps(15, 71) == 1065 and tl.epochs_to_steps(0.5, 71) == 36
    with pytest.raises(ValueError, match="steps_per_epoch"):
        tl.epochs_to_steps(1, 0)
    from tricklab.tricks.schedules import build_schedule

    spe = 20
    by_epoch = build_schedule("exponential", lr=0.1, total_steps=200, steps_per_epoch=spe, gamma=0.9)
    by_step = tl.exponential(0.1, step_size=tl.epochs_to_steps(1, spe), gamma=0.9)
    assert [by_epoch(t) for t in range(200)] == [by_step(t) for t in range(200)]
    assert by_step(spe - 1) == 0.1 and by_step(spe) == pytest.approx(0.09)


class Seen(tl.Callback):
    """Which epoch number a callback sees at each event."""

    def __init__(self) -> None:
        self.begin: list[int] = []
        self.end: list[int] = []
        self.fit_begin: list[int] = []

    def on_fit_begin(self, state):
        self.fit_begin.append(state.epoch)

    def on_epoch_begin(self, state):
        self.begin.append(state.epoch)

    def on_epoch_end(self, state):
        self.end.append(state.epoch)


def _trainer(callbacks, epochs=3, checkpoint_dir=None):
    torch.manual_seed(0)
    x, y = torch.randn(96, 4), torch.randint(0, 3, (96,))
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    return tl.Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (x[:64], y[:64]), (x[64:], y[64:]),
                      epochs=epochs, batch_size=16, callbacks=callbacks, checkpoint_dir=checkpoint_dir)


def test_callbacks_see_the_epoch_numbers_of_the_history(one_thread):
    seen = Seen()
    state = _trainer([seen]).fit()
    assert seen.fit_begin == [0]
    assert seen.begin == seen.end == [h["epoch"] for h in state.history] == [1, 2, 3]
    assert state.epoch == 3


def test_a_resumed_run_goes_on_counting(tmp_path, one_thread):
    _trainer([Seen()], epochs=2, checkpoint_dir=tmp_path).fit()
    seen = Seen()
    state = _trainer([seen], epochs=3, checkpoint_dir=tmp_path).fit(resume=True)
    assert seen.fit_begin == [2] and seen.begin == seen.end == [3]
    assert [h["epoch"] for h in state.history] == [1, 2, 3]


def test_early_stopping_names_the_epochs_of_the_history(one_thread):
    stopper = tl.EarlyStoppingCallback(patience=1, monitor="val_loss")
    stopper.stopper.improves = lambda value: stopper.stopper.best_index < 0   # only the first epoch "improves"
    state = _trainer([stopper], epochs=5).fit()
    assert [h["epoch"] for h in state.history] == [1, 2]
    assert stopper.best_epoch == 1 and stopper.stopped_epoch == 2 == state.history[-1]["epoch"]


def test_swa_averages_the_epochs_after_its_start(one_thread):
    swa = tl.WeightAveraging("swa", swa_start_epoch=1)
    _trainer([swa], epochs=3).fit()
    assert swa.averager is not None and swa.averager.n_averaged == 2   # epochs 2 and 3
