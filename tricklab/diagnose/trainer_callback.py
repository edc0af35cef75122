"""The doctor inside tricklab's Trainer: probes on its events, detectors on the records, repair on alarms.

Events used: ``on_batch_begin`` arms the probe on probe steps; ``on_before_optimizer_step`` reads the
gradients (this callback runs before the clipping callback, so norms are pre-clipping); ``on_batch_end``
turns the probe step into a ``ProbeRecord`` for the ``Doctor``; ``on_epoch_end`` gives the epoch metrics
(overfitting, plateau). Records go to ``probes.jsonl`` and alarms to ``alarms.json`` in the run directory.

With ``repair`` the callback keeps the last healthy weights (at the start and after every epoch without a new
alarm) in memory, and on an alarm rolls back to them and applies the next action of ``repair.POLICIES``.
Rebuild actions end the run with ``rebuild_overrides`` set; ``doctor_train`` starts the changed recipe.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import torch

from tricklab.diagnose.doctor import Doctor
from tricklab.diagnose.probes import DEFAULT_EVERY, Probe
from tricklab.diagnose.records import Alarm
from tricklab.diagnose.repair import PRIORITY, Action, RepairPlan
from tricklab.fsutil import atomic_write_text
from tricklab.train.callbacks import GradientClipping
from tricklab.train.events import Callback, TrainState
from tricklab.train.run import json_safe

PROBES_FILE = "probes.jsonl"
ALARMS_FILE = "alarms.json"


class DoctorCallback(Callback):
    """Attach a ``Doctor`` to a Trainer run (see the module docstring)."""

    def __init__(self, *, every: int = DEFAULT_EVERY, run_dir: str | Path | None = None,
                 repair: RepairPlan | None = None, recipe: dict[str, Any] | None = None,
                 doctor_kwargs: dict[str, Any] | None = None) -> None:
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
        self.rebuild_overrides: list[str] = []
        self._snapshot: dict[str, Any] | None = None
        self._pending: list[str] = []
        self._alarm_this_epoch = False
        self._resume_doctor: dict[str, Any] | None = None
        self._update_ratio: float | None = None  # median ‖Δw‖/‖w‖ over layers at the last probe

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
            self._update_ratio = ratios[len(ratios) // 2] if ratios else self._update_ratio
            new += self.doctor.observe(record)
        if self.repair is not None and state.loss is not None and not math.isfinite(float(state.loss)):
            new += self.doctor.nonfinite_loss(step)
        self._raise(state, new, step)

    def on_epoch_end(self, state: TrainState) -> None:
        assert self.doctor is not None
        metrics = {k: v for k, v in state.epoch_metrics.items() if isinstance(v, (int, float))}
        self._raise(state, self.doctor.end_epoch(state.epoch, state.step, metrics), state.step)
        self._flush()
        if self.repair is not None and not self._alarm_this_epoch and state.status != "diverged":
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
        self._alarm_this_epoch = True
        if self.repair is None or state.stop:
            return
        rank = {kind: i for i, kind in enumerate(PRIORITY)}
        for alarm in sorted(new, key=lambda a: rank.get(a.kind, len(rank))):
            action = self.repair.next_action(alarm.kind, alarm.evidence, self.recipe)
            if action is None:
                continue
            if self.before is None:
                last = state.history[-1] if state.history else {}
                self.before = {"step": step, "alarm": alarm.kind, "train_loss": _finite(state.loss),
                               "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss")}
            self.repairs.append(self.repair.record(step, action, alarm.kind, alarm.message))
            self._apply(state, action)
            break

    def _apply(self, state: TrainState, action: Action) -> None:
        assert self.doctor is not None
        self._rollback(state)
        if action.rebuild:
            # the rebuilt run keeps what in-run repairs already changed (learning rate, clipping)
            carried = []
            if state.lr_scale != 1.0 and "optimizer" in self.recipe:
                carried.append(f"optimizer.lr={self.recipe['optimizer']['lr'] * state.lr_scale:.6g}")
            clip = self.recipe.get("clip", {})
            if clip.get("mode") == "norm":
                carried += [f"clip.mode={clip['mode']}", f"clip.threshold={clip['threshold']}"]
            self.rebuild_overrides = carried + list(action.overrides)
            state.stop, state.stop_reason = True, f"doctor: rebuild with {' '.join(action.overrides)}"
            return
        if action.stop:
            state.stop, state.status = True, "stopped_early"
            state.stop_reason = "doctor: stopped at the last healthy weights"
            return
        if action.lr_factor is not None:
            state.lr_scale *= self._lr_factor(action)
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
        self.doctor.reset()

    def _lr_factor(self, action: Action) -> float:
        """A cut goes at least to where the median update/weight ratio is ~1e-3 (Karpathy's rule of thumb:
        updates are about a thousandth of the weights); the update of SGD and Adam scales with the learning
        rate, so one cut suffices even when the rate is several decades too high."""
        factor = action.lr_factor
        assert factor is not None
        ratio = self._update_ratio
        if factor < 1 and ratio is not None and ratio > 1e-2:
            factor = max(1e-4, min(factor, 1e-3 / ratio))
        return factor

    def _take_snapshot(self, state: TrainState) -> None:
        self._snapshot = {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()},
            "optimizer": copy.deepcopy(state.optimizer.state_dict()),
            "step": state.step,
        }

    def _rollback(self, state: TrainState) -> None:
        if self._snapshot is None:
            return
        state.model.load_state_dict(self._snapshot["model"])
        state.optimizer.load_state_dict(self._snapshot["optimizer"])
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

