"""The records a run leaves — alarms, metric rows, repairs, store rows — each defined once and kept in one shape."""

from __future__ import annotations

import math

import torch
from torch import nn

from tricklab.diagnose.records import Alarm as DiagnoseAlarm
from tricklab.diagnose.repair import CLIP, RepairPlan
from tricklab.diagnose.trainer_callback import DoctorCallback
from tricklab.store import Store
from tricklab.store.records import Alarm
from tricklab.train.callbacks import GradientClipping
from tricklab.train.events import Callback, TrainState
from tricklab.train.rows import metric_rows
from tricklab.train.run import RunResult
from tricklab.train.trainer import Trainer


def test_metric_rows_of_a_history():
    history = [{"epoch": 1, "step": 10, "train_loss": 0.5, "lr": 0.1},
               {"epoch": 2, "step": 20, "train_loss": math.nan, "val_loss": math.inf, "clip_fraction": 1, "odd": "x"}]
    assert metric_rows(history) == [(10, 1, "train_loss", 0.5), (10, 1, "lr", 0.1), (20, 2, "train_loss", None),
                                    (20, 2, "val_loss", None), (20, 2, "clip_fraction", 1.0), (20, 2, "odd", None)]
    assert metric_rows([]) == []


def test_one_alarm_record_from_the_doctor_to_the_json():
    assert DiagnoseAlarm is Alarm
    alarm = Alarm("nan_loss", 7, "the loss became NaN", advice=["lr×0.1"], evidence={"loss": math.inf})
    assert Alarm.of(alarm) is alarm
    assert Alarm.of(alarm.brief()) == Alarm("nan_loss", 7, "the loss became NaN")
    assert Alarm.of(alarm.to_dict()) == alarm
    result = RunResult(status="diverged", test_accuracy=None, test_loss=None, best_epoch=None, epochs=1, steps=8,
                       wall_seconds=1.0, run_dir=None, run_id="r", alarms=[alarm])
    assert result.to_json()["alarms"] == [{"kind": "nan_loss", "layer": None, "step": 7,
                                           "message": "the loss became NaN"}]   # the CLI contract's shape


def test_the_store_takes_alarms_and_their_rows_and_returns_rows(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.add_run("r", "demo", {"seed": 0})
        store.finish_run("r", "completed", {}, metric_rows([{"epoch": 1, "step": 5, "val_loss": 0.1}]),
                         [Alarm("plateau", 5, "flat", layer="fc1", advice=["lr×10"]),
                          {"kind": "nan_loss", "layer": None, "step": 9, "message": "m"}])
        assert store.alarms("r") == [{"step": 5, "kind": "plateau", "layer": "fc1", "message": "flat"},
                                     {"step": 9, "kind": "nan_loss", "layer": None, "message": "m"}]
        [run] = store.runs()
        assert run["id"] == "r" and run["recipe"] == {"seed": 0} and run["result"] == {}


def test_repairs_are_logged_in_the_json_shape():
    plan = RepairPlan()
    entry = plan.record(12, CLIP, "exploding_gradients", "grad norm 1e6")
    assert entry == {"step": 12, "action": CLIP.name, "reason": f"exploding_gradients: grad norm 1e6 → {CLIP.reason}"}
    assert plan.log == [entry]


def _trainer(callbacks: list[Callback]) -> Trainer:
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    model = nn.Linear(4, 2)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), None, epochs=2, batch_size=16,
                   seed=0, callbacks=callbacks)


def test_a_callback_changes_clipping_through_the_state():
    class Tighten(Callback):
        def on_epoch_begin(self, state: TrainState) -> None:
            if state.epoch == 2:   # epochs count from 1
                state.set_clipping("norm", 1e-6)

    clipping = GradientClipping("none", 1.0)
    t = _trainer([Tighten(), clipping])
    state = t.fit()
    fired = [h.get("clip_fraction") for h in state.history]
    assert fired == [0.0, 1.0] and state.clipping is None      # applied from the next step, then consumed
    assert (clipping.mode, clipping.threshold) == ("norm", 1e-6)
    resumed = GradientClipping("none", 1.0)
    resumed.load_state_dict(clipping.state_dict())             # kept in the checkpoint
    assert (resumed.mode, resumed.threshold) == ("norm", 1e-6)
    resumed.load_state_dict({})                                # a checkpoint from before: the recipe's setting
    assert (resumed.mode, resumed.threshold) == ("norm", 1e-6)


def test_the_doctor_switches_clipping_on_without_touching_the_clipping_callback():
    doctor = DoctorCallback(repair=RepairPlan(), recipe={"clip": {"mode": "none", "threshold": 1.0}})
    clipping = GradientClipping("none", 1.0)
    state = _trainer([doctor, clipping]).fit()
    doctor._take_snapshot(state)
    doctor._snapshot["step"] = state.step     # a healthy epoch to roll back to: an in-run action, no restart
    done = doctor._apply(state, CLIP, since=state.step + 1)
    assert done == CLIP.name and state.clipping == ("norm", CLIP.clip_threshold)
    assert doctor.recipe["clip"] == {"mode": "norm", "threshold": CLIP.clip_threshold}
    assert clipping.mode == "none"            # the request waits for the next optimizer step
