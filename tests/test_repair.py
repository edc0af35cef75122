"""Repair: the policies' order and budget, rollback, adapted learning-rate changes, restarts, early stopping."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tricklab.diagnose.records import Alarm
from tricklab.diagnose.repair import POLICIES, RepairPlan
from tricklab.diagnose.run_doctor import doctor_train
from tricklab.diagnose.trainer_callback import DoctorCallback
from tricklab.recipe import Recipe, recipe_to_dict
from tricklab.train import train

RECIPE = recipe_to_dict(Recipe())


# -- the plan ---------------------------------------------------------------------------------------------------
def test_each_problem_gets_its_policy_in_order_until_the_budget_is_spent():
    plan = RepairPlan(budget=3)
    names = [plan.next_action("exploding_gradients", {}, RECIPE).name for _ in range(3)]
    assert names == [a.name for a in POLICIES["exploding_gradients"][:3]]
    assert plan.next_action("exploding_gradients", {}, RECIPE) is None      # budget spent
    assert plan.used == 3


def test_an_action_that_changes_nothing_is_skipped():
    recipe = {**RECIPE, "model": {**RECIPE["model"], "activation": "relu", "norm": "batch"},
              "init": {"scheme": "he"}}
    plan = RepairPlan()
    # the standard cure (ReLU + He + batch norm) already holds: the next action of the policy is taken
    assert plan.next_action("vanishing_gradients", {}, recipe).name == "model.name=resnet"
    # one of its three overrides holding is not enough to skip it
    partly = {**recipe, "init": {"scheme": "normal"}}
    assert RepairPlan().next_action("vanishing_gradients", {}, partly).name.startswith("ReLU + He")


def test_a_user_model_gets_only_optimizer_side_repairs():
    user = {**RECIPE, "model": {**RECIPE["model"], "python": "pkg.mod:factory"}}
    plan = RepairPlan()
    assert plan.next_action("vanishing_gradients", {}, user) is None        # every action changes the model
    assert plan.next_action("exploding_gradients", {}, user).lr_factor == 0.1


def test_dead_units_after_oversized_steps_lower_the_rate_else_reinitialise():
    assert RepairPlan().next_action("dead_units", {}, RECIPE).reinit
    assert RepairPlan().next_action("dead_units", {}, RECIPE, unstable=True).lr_factor == 0.1


def test_after_oversized_steps_a_plateau_is_answered_by_a_cut_not_a_raise():
    assert RepairPlan().next_action("plateau", {}, RECIPE).lr_factor == 10.0
    assert RepairPlan().next_action("plateau", {}, RECIPE, unstable=True).lr_factor < 1
    assert RepairPlan().next_action("oscillation", {}, RECIPE).lr_factor < 1     # the loss swings: steps too large


def test_update_ratio_direction_picks_the_policy_and_a_plateau_after_a_cut_is_not_a_raise():
    plan = RepairPlan()
    assert plan.next_action("update_ratio", {"log10_update_ratio": 0.5}, RECIPE).lr_factor < 1
    assert plan.next_action("plateau", {}, RECIPE).lr_factor < 1            # not ×10 right after a cut
    assert RepairPlan().next_action("update_ratio", {"log10_update_ratio": -6}, RECIPE).lr_factor > 1


def test_the_log_names_what_was_done_and_why():
    plan = RepairPlan()
    action = plan.next_action("nan_loss", {}, RECIPE)
    entry = plan.record(120, action, "nan_loss", "the loss is NaN", name="lr×0.01")
    assert entry == {"step": 120, "action": "lr×0.01", "reason": f"nan_loss: the loss is NaN → {action.reason}"}


# -- the callback in a real run ---------------------------------------------------------------------------------
SMALL = ["data.name=synthetic", "data.variant=teacher", "data.size=2000", "model.name=mlp", "model.width=32",
         "model.depth=2", "data.batch_size=50"]


pytestmark = pytest.mark.usefixtures("one_thread")


class RaiseAt(DoctorCallback):
    """The doctor with one scripted alarm at a given step (the repair machinery under test, not a detector)."""

    def __init__(self, kind: str, at: int, **kw):
        super().__init__(every=5, **kw)
        self.kind, self.at = kind, at
        self.weights_at_snapshot: dict[str, torch.Tensor] | None = None

    def on_batch_end(self, state):
        super().on_batch_end(state)
        if state.step == self.at:
            self.weights_at_snapshot = {k: v.clone() for k, v in self._snapshot["model"].items()}
            self._raise(state, [Alarm(kind=self.kind, step=state.step - 5, message="scripted")], state.step)


def test_an_in_run_cut_rolls_back_to_the_last_healthy_epoch_and_goes_on(tmp_path):
    """29 steps per epoch: the alarm at step 70 is in the third epoch; the snapshot is the second's end."""
    plain = train(overrides=[*SMALL, "epochs=3"], runs_root=tmp_path, store=None, callbacks=[DoctorCallback()])
    cb = RaiseAt("loss_spike", at=70, repair=RepairPlan(), recipe=recipe_to_dict(Recipe()))
    result = train(overrides=[*SMALL, "epochs=3"], runs_root=tmp_path, store=None, callbacks=[cb])
    assert cb._snapshot["step"] == 58 and cb.repairs[0]["step"] == 70
    assert cb.repairs[0]["action"] == "lr×0.1" and not cb.restart
    assert result.epochs == 3 and result.status == "completed"          # training went on after the repair
    assert cb.before is not None and cb.before["alarm"] == "loss_spike"
    # the same schedule, a tenth of it from the repair on
    assert result.history[1]["lr"] == pytest.approx(plain.history[1]["lr"])
    assert result.history[2]["lr"] == pytest.approx(0.1 * plain.history[2]["lr"])


def test_rollback_restores_the_snapshot_weights(tmp_path):
    class Check(RaiseAt):
        def _apply(self, state, action, since=0):
            done = super()._apply(state, action, since)
            self.after = {k: v.clone() for k, v in state.model.state_dict().items()}
            return done

    cb = Check("loss_spike", at=40, repair=RepairPlan(), recipe=recipe_to_dict(Recipe()))
    train(overrides=[*SMALL, "epochs=2"], runs_root=tmp_path, store=None, callbacks=[cb])
    assert cb._snapshot["step"] == 29
    for k, v in cb.weights_at_snapshot.items():
        assert torch.equal(cb.after[k], v), k


def test_a_repair_before_any_healthy_epoch_restarts_with_the_change_carried(tmp_path):
    cb = RaiseAt("exploding_gradients", at=10, repair=RepairPlan(), recipe=recipe_to_dict(Recipe()), can_restart=True)
    result = train(overrides=[*SMALL, "epochs=3"], runs_root=tmp_path, store=None, callbacks=[cb])
    assert cb.restart and result.epochs == 1                             # the run ended in its first epoch
    assert cb.rebuild_overrides == [f"optimizer.lr={Recipe().optimizer.lr * 0.1:.6g}"]
    assert "restart" in cb.repairs[0]["action"]


def test_early_stopping_switched_on_by_a_repair_ends_with_the_best_weights(tmp_path):
    cb = RaiseAt("overfitting", at=40, repair=RepairPlan(), recipe=recipe_to_dict(Recipe()))
    # a tiny training subset and a wide net: the validation loss turns up within a few epochs
    result = train(overrides=[*SMALL, "model.width=256", "data.train_subset=100", "epochs=40",
                              "schedule.name=constant", "optimizer.weight_decay=0"],
                   runs_root=tmp_path, store=None, callbacks=[cb])
    assert cb.repairs[0]["action"] == "early stopping (patience 3)"
    assert result.status == "stopped_early" and result.epochs < 40
    best = min(range(len(result.history)), key=lambda i: result.history[i]["val_loss"])
    assert result.epochs - 1 - best == 3                                 # stopped after 3 epochs without a better one
    assert result.val_loss == pytest.approx(result.history[best]["val_loss"], rel=1e-5)  # its weights restored


# -- end to end -------------------------------------------------------------------------------------------------
DIGITS = ["data.name=digits", "model.name=mlp", "model.width=64", "model.depth=2"]  # ~90 % in 3 epochs when healthy

def test_a_far_too_low_learning_rate_is_raised_to_where_updates_are_healthy(tmp_path):
    broken = [*DIGITS, "optimizer.lr=1e-7", "epochs=4"]
    plain = doctor_train(overrides=broken, runs_root=tmp_path)
    fixed = doctor_train(overrides=broken, repair=True, runs_root=tmp_path)
    assert "lr_too_low" in plain.diagnosis                               # the cause, not its symptom (issue 15)
    # a rate far below the range is set to the optimizer's usual rate at once (issue 15), not raised ×10 at a time
    assert fixed.repairs and fixed.repairs[0]["action"].startswith("optimizer.lr="), fixed.repairs
    assert "usual rate" in fixed.repairs[0]["action"]
    raised = float(fixed.repairs[0]["action"].split("=")[1].split()[0])
    assert raised / 1e-7 >= 100 and 1e-5 <= raised <= 1e-2                # one adapted raise, into Adam's range
    assert fixed.result.test_accuracy > max(plain.result.test_accuracy, 0.5) + 0.3
    assert fixed.before is not None


@pytest.mark.parametrize("optimizer, lr, gain", [("sgd", 50.0, 1.0), ("momentum", 20.0, 10.0)])
def test_a_cut_after_oversized_steps_is_sized_on_the_first_probe(tmp_path, optimizer, lr, gain):
    """No healthy epoch: the run restarts from the same initial weights, so the cut is measured on the first
    probe (taken on those weights, before any damage): the peak rate's median update ratio aimed at
    HEALTHY_PEAK_RATIO — the momentum buffer's first step counted at its 1/(1 − γ) steady-state size."""
    from tricklab.diagnose.repair import HEALTHY_PEAK_RATIO
    from tricklab.recipe import load_recipe

    rec = load_recipe(None, [*DIGITS, f"optimizer.name={optimizer}", f"optimizer.lr={lr}", "epochs=4"])
    cb = DoctorCallback(repair=RepairPlan(), recipe=recipe_to_dict(rec), can_restart=True, run_dir=tmp_path)
    train(rec, run_dir=tmp_path, store=None, callbacks=[cb])
    assert cb.restart and "restart" in cb.repairs[0]["action"], cb.repairs
    first = json.loads((tmp_path / "probes.jsonl").read_text().splitlines()[0])
    ratios = sorted(layer["update_ratio"] for layer in first["layers"] if layer["update_ratio"] is not None)
    at_peak = ratios[len(ratios) // 2] * gain * lr / first["lr"]
    assert first["step"] == 0 and at_peak > 0.1                          # the steps were oversized from the start
    assert cb.repairs[0]["action"].startswith(f"lr×{min(0.1, HEALTHY_PEAK_RATIO / at_peak):.3g} ")


def test_sgd_at_a_learning_rate_far_too_high_is_repaired(tmp_path):
    broken = [*DIGITS, "optimizer.name=sgd", "optimizer.lr=50", "epochs=4"]
    plain = doctor_train(overrides=broken, runs_root=tmp_path)
    fixed = doctor_train(overrides=broken, repair=True, runs_root=tmp_path)
    assert {"exploding_gradients", "nan_loss", "update_ratio", "loss_spike"} & set(plain.diagnosis)
    assert fixed.result.test_accuracy is not None and math.isfinite(fixed.result.test_accuracy)
    assert fixed.result.test_accuracy > max(plain.result.test_accuracy or 0.0, 0.5) + 0.3, fixed.repairs


def test_an_attempt_the_doctor_rebuilds_from_is_stored_as_abandoned_never_as_a_result(tmp_path, monkeypatch):
    """docs/RELIABILITY.md row 30: the first attempt ends with a restart (a scripted alarm before any healthy
    epoch); its store row and result.json say ``abandoned`` and why; the rebuilt run is the one result."""
    import tricklab.diagnose.run_doctor as run_doctor
    from tricklab.store import Store

    made: list[DoctorCallback] = []

    def first_scripted(**kw):
        made.append(RaiseAt("exploding_gradients", at=10, **{k: v for k, v in kw.items() if k != "every"})
                    if not made else DoctorCallback(**kw))
        return made[-1]

    monkeypatch.setattr(run_doctor, "DoctorCallback", first_scripted)
    out = doctor_train(overrides=[*SMALL, "epochs=2"], repair=True, runs_root=tmp_path / "runs",
                       store=tmp_path / "s.sqlite")
    assert out.attempts == 2 and out.result.status == "completed"
    with Store(tmp_path / "s.sqlite") as db:
        runs = db.runs()
    assert [r["status"] for r in runs] == ["abandoned", "completed"]
    assert runs[0]["result"]["status"] == "abandoned" and "optimizer.lr=" in runs[0]["result"]["abandoned"]
    first = json.loads((tmp_path / "runs" / runs[0]["id"] / "result.json").read_text())
    assert first["status"] == "abandoned" and runs[1]["id"] == out.result.run_id
