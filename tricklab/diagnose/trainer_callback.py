"""The doctor inside tricklab's Trainer: probes on its events, detectors on the records, repair on alarms.

Events used: ``on_batch_begin`` arms the probe on probe steps; ``on_before_optimizer_step`` reads the
gradients (this callback runs before the clipping callback, so norms are pre-clipping); ``on_batch_end``
turns the probe step into a ``ProbeRecord`` for the ``Doctor``; ``on_epoch_end`` gives the epoch metrics
(overfitting, plateau). Records go to ``probes.jsonl`` and alarms to ``alarms.json`` in the run directory.

With ``repair`` the callback keeps the last healthy weights (at the start and after every epoch without a new
alarm) and the weights of the best validation loss in memory, and on an alarm rolls back to the healthy ones
and applies the next action of ``repair.POLICIES``. Rebuild actions end the run with ``restart`` and
``rebuild_overrides`` set; ``doctor_train`` (``can_restart=True``) starts the changed recipe. An in-run action
taken before any healthy epoch is applied as a restart as well (see ``repair``).
"""

from __future__ import annotations

import copy
import json
import math
from collections import deque
from pathlib import Path
from typing import Any

import torch

from tricklab.diagnose.doctor import STATIC_KINDS, Doctor
from tricklab.diagnose.probes import DEFAULT_EVERY, Probe
from tricklab.diagnose.records import Alarm
from tricklab.diagnose.repair import (
    HEALTHY_PEAK_RATIO,
    PRIORITY,
    UNSTABLE_UPDATE_RATIO,
    Action,
    RepairPlan,
)
from tricklab.fsutil import atomic_write_text
from tricklab.train.callbacks import GradientClipping
from tricklab.train.events import Callback, TrainState
from tricklab.train.run import json_safe

PROBES_FILE = "probes.jsonl"
ALARMS_FILE = "alarms.json"
RECENT_PROBES = 5
"""Probes whose update ratios tell whether the steps before an alarm were oversized (100 steps by default)."""
INSTABILITY = frozenset({"nan_loss", "exploding_gradients", "loss_spike"})


class DoctorCallback(Callback):
    """Attach a ``Doctor`` to a Trainer run (see the module docstring)."""

    def __init__(self, *, every: int = DEFAULT_EVERY, run_dir: str | Path | None = None,
                 repair: RepairPlan | None = None, recipe: dict[str, Any] | None = None,
                 doctor_kwargs: dict[str, Any] | None = None, can_restart: bool = False) -> None:
        self.every = every
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.repair = repair
        self.recipe = copy.deepcopy(recipe or {})
        self.doctor_kwargs = doctor_kwargs or {}
        self.doctor: Doctor | None = None
        self.probe: Probe | None = None
        self.alarms: list[Alarm] = []          # every alarm raised in this run, in order
        self.repairs: list[dict[str, Any]] = []
        self.before: dict[str, Any] | None = None
        self.can_restart = can_restart        # the caller starts the run again when ``restart`` is set
        self.restart = False
        self.rebuild_overrides: list[str] = []
        self._snapshot: dict[str, Any] | None = None
        self._best: dict[str, Any] | None = None   # weights of the best validation loss (repair only)
        self._best_val = math.inf
        self._best_epoch = 0
        self._patience: int | None = None        # early stopping switched on by a repair
        self._pending: list[str] = []
        self._alarm_this_epoch = False
        self._resume_doctor: dict[str, Any] | None = None
        self._update_ratio: float | None = None  # median ‖Δw‖/‖w‖ over layers at the last probe
        self._recent_ratios: deque[float] = deque(maxlen=RECENT_PROBES)  # and at the last few

    # -- events -----------------------------------------------------------------------------------------
    def on_fit_begin(self, state: TrainState) -> None:
        trainer = state.trainer
        num_params = sum(p.numel() for p in state.model.parameters())
        self.doctor = Doctor(num_params=num_params, num_examples=len(trainer.x_train), **self.doctor_kwargs)
        if self._resume_doctor:
            self.doctor.load_state_dict(self._resume_doctor)
        self.probe = Probe(state.model, every=self.every)
        if self.run_dir is not None and state.step == 0:
            (self.run_dir / PROBES_FILE).unlink(missing_ok=True)
        if self.repair is not None:
            self._take_snapshot(state)

    def on_batch_begin(self, state: TrainState) -> None:
        assert self.probe is not None
        self.probe.begin(state.step, state.x)

    def on_before_optimizer_step(self, state: TrainState) -> None:
        assert self.probe is not None
        self.probe.after_backward()

    def on_batch_end(self, state: TrainState) -> None:
        assert self.probe is not None and self.doctor is not None
        step = state.step - 1  # the step that just ran
        record = self.probe.after_step(state.loss, epoch=state.epoch, lr=state.lr)
        new: list[Alarm] = []
        if record is not None:
            self._pending.append(json.dumps(record.to_dict(), allow_nan=True))
            ratios = sorted(r for layer in record.layers if (r := layer.update_ratio) is not None and math.isfinite(r))
            if ratios:
                self._update_ratio = self._at_peak(ratios[len(ratios) // 2], state)
                self._recent_ratios.append(self._update_ratio)
            new += self.doctor.observe(record)
        if self.repair is not None and state.loss is not None and not math.isfinite(float(state.loss)):
            new += self.doctor.nonfinite_loss(step)
        self._raise(state, new, step)

    def on_epoch_end(self, state: TrainState) -> None:
        assert self.doctor is not None
        metrics = {k: v for k, v in state.epoch_metrics.items() if isinstance(v, (int, float))}
        self._raise(state, self.doctor.end_epoch(state.epoch, state.step, metrics), state.step)
        self._flush()
        if self.repair is not None and state.status != "diverged":
            self._early_stopping(state, metrics.get("val_loss"))
            if not self._alarm_this_epoch and not state.stop:
                self._take_snapshot(state)
        self._alarm_this_epoch = False

    def on_fit_end(self, state: TrainState) -> None:
        if self.probe is not None:
            self.probe.close()
        if self.doctor is not None and state.status == "diverged" and not any(a.kind == "nan_loss"
                                                                              for a in self.alarms):
            self._raise(state, self.doctor.nonfinite_loss(state.diverged_step or state.step), state.step)
        self._flush()

    # -- alarms and repairs ---------------------------------------------------------------------------------
    def _raise(self, state: TrainState, new: list[Alarm], step: int) -> None:
        if not new:
            return
        self.alarms.extend(new)
        self._alarm_this_epoch = self._alarm_this_epoch or any(a.kind not in STATIC_KINDS for a in new)
        if self.repair is None or state.stop:
            return
        rank = {kind: i for i, kind in enumerate(PRIORITY)}
        unstable = (max(self._recent_ratios, default=0.0) > UNSTABLE_UPDATE_RATIO
                    or any(a.kind in INSTABILITY for a in self.alarms))
        for alarm in sorted(new, key=lambda a: rank.get(a.kind, len(rank))):
            action = self.repair.next_action(alarm.kind, alarm.evidence, self.recipe, unstable=unstable)
            if action is None:
                continue
            if self.before is None:
                last = state.history[-1] if state.history else {}
                self.before = {"step": step, "alarm": alarm.kind, "train_loss": _finite(state.loss),
                               "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss")}
            done = self._apply(state, action, since=alarm.step)
            self.repairs.append(self.repair.record(step, action, alarm.kind, alarm.message, name=done))
            break

    def _apply(self, state: TrainState, action: Action, since: int = 0) -> str:
        """Roll back and apply ``action`` against a problem seen since step ``since``; returns what was done
        (the log's name for it). A snapshot taken at or after ``since`` already had the problem: then only a
        restart goes back far enough."""
        assert self.doctor is not None
        if action.patience is not None:
            self._patience = action.patience   # in-run, no rollback: training goes on while it helps
            return action.name
        if action.stop:
            self._rollback(state, self._best)
            state.stop, state.status = True, "stopped_early"
            state.stop_reason = ("doctor: stopped with the weights of the best validation loss" if self._best
                                 else "doctor: stopped at the last healthy weights")
            return action.name
        self._rollback(state, self._snapshot)
        done = [action.name]
        if action.lr_factor is not None:
            factor = self._lr_factor(action)
            state.lr_scale *= factor
            done = [f"lr×{factor:.3g}"]
        if action.clip_threshold is not None:
            for cb in state.trainer.callbacks:
                if isinstance(cb, GradientClipping):
                    cb.mode, cb.threshold = "norm", action.clip_threshold
            self.recipe.setdefault("clip", {}).update(mode="norm", threshold=action.clip_threshold)
        if action.weight_decay_factor is not None:
            for group in state.optimizer.param_groups:
                for key in ("weight_decay", "decoupled_decay"):
                    if isinstance(group.get(key), float):
                        group[key] *= action.weight_decay_factor
        no_healthy = self._snapshot is None or self._snapshot["step"] == 0 or self._snapshot["step"] >= since
        if action.rebuild or (self.can_restart and no_healthy):
            # the next run keeps what in-run repairs changed (learning rate, clipping)
            carried = []
            if state.lr_scale != 1.0 and "optimizer" in self.recipe:
                carried.append(f"optimizer.lr={self.recipe['optimizer']['lr'] * state.lr_scale:.6g}")
            clip = self.recipe.get("clip", {})
            if clip.get("mode") == "norm":
                carried += [f"clip.mode={clip['mode']}", f"clip.threshold={clip['threshold']}"]
            self.rebuild_overrides = carried + list(action.overrides)
            self.restart = True
            what = " ".join(self.rebuild_overrides) or "a fresh initialisation"
            state.stop, state.stop_reason = True, f"doctor: start again with {what}"
            return " + ".join(done) + ("" if action.rebuild else " (restart: no healthy epoch to roll back to)")
        self.doctor.reset()
        self._recent_ratios.clear()
        return " + ".join(done)

    def _at_peak(self, ratio: float, state: TrainState) -> float:
        """The update ratio scaled to the run's peak learning rate (the recipe's rate × the repairs' scale):
        a warm-up or an annealed schedule shrinks the steps on purpose, and an adapted change of the rate
        must aim at the steps the schedule's peak will take. Unscaled without a recipe."""
        peak = self.recipe.get("optimizer", {}).get("lr")
        if not isinstance(peak, (int, float)) or not state.lr or state.lr <= 0:
            return ratio
        return ratio * peak * state.lr_scale / state.lr

    def _early_stopping(self, state: TrainState, val_loss: float | None) -> None:
        """Keep the weights of the best validation loss; once a repair switched early stopping on, stop with
        them after ``patience`` epochs without a better one."""
        if isinstance(val_loss, float) and math.isfinite(val_loss) and val_loss < self._best_val:
            self._best_val, self._best_epoch = val_loss, state.epoch
            self._best = self._copy(state)
            return
        if self._patience is not None and not state.stop and state.epoch - self._best_epoch >= self._patience:
            self._rollback(state, self._best)
            state.stop, state.status = True, "stopped_early"
            state.stop_reason = (f"doctor: early stopping — no better validation loss for {self._patience} epochs; "
                                 f"weights of epoch {self._best_epoch + 1} restored")

    def _lr_factor(self, action: Action) -> float:
        """An adapted change of the learning rate: the update of SGD and Adam scales with the rate, so one
        change can correct a rate several decades off. A cut, when the update ratio (median over layers, at the
        peak rate) of one of the last few probes exceeded ``UNSTABLE_UPDATE_RATIO``, or a raise, when it is below
        1e-4, aims at
        ``HEALTHY_PEAK_RATIO`` (factors within [1e-4, 1e5]). Otherwise the action's own factor."""
        factor = action.lr_factor
        assert factor is not None
        recent = sorted(self._recent_ratios)
        if factor < 1 and recent and recent[-1] > UNSTABLE_UPDATE_RATIO:
            # sized by the median of the recent probes: the largest, taken once the weights have blown up,
            # is past the range where the update grows in proportion to the rate, and would over-cut
            return max(1e-4, min(factor, HEALTHY_PEAK_RATIO / recent[len(recent) // 2]))
        ratio = self._update_ratio
        if factor > 1 and ratio is not None and 0 < ratio < 1e-4:
            return min(1e5, max(factor, HEALTHY_PEAK_RATIO / ratio))
        return factor

    def _take_snapshot(self, state: TrainState) -> None:
        self._snapshot = self._copy(state)

    @staticmethod
    def _copy(state: TrainState) -> dict[str, Any]:
        return {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()},
            "optimizer": copy.deepcopy(state.optimizer.state_dict()),
            "step": state.step,
        }

    def _rollback(self, state: TrainState, snapshot: dict[str, Any] | None) -> None:
        if snapshot is None:
            return
        state.model.load_state_dict(snapshot["model"])
        state.optimizer.load_state_dict(snapshot["optimizer"])
        if state.first_bad_step is not None:
            state.first_bad_step.fill_(-1)

    # -- files ----------------------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.run_dir is None:
            return
        if self._pending:
            with open(self.run_dir / PROBES_FILE, "a", encoding="utf-8") as fh:
                fh.write("\n".join(self._pending) + "\n")
            self._pending.clear()
        atomic_write_text(self.run_dir / ALARMS_FILE, json.dumps(json_safe([a.to_dict() for a in self.alarms]),
                                                                 indent=1))

    def state_dict(self) -> dict[str, Any]:
        return {"doctor": self.doctor.state_dict() if self.doctor is not None else {},
                "alarms": [a.to_dict() for a in self.alarms]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alarms = [Alarm(**a) for a in state.get("alarms", [])]
        self._resume_doctor = state.get("doctor")


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value) if not isinstance(value, torch.Tensor) else float(value.detach())
    return f if math.isfinite(f) else None

