"""The doctor inside tricklab's Trainer: probes on its events, detectors on the records, repair on alarms.

Events used: ``on_batch_begin`` arms the probe on probe steps; ``on_before_optimizer_step`` reads the
gradients (this callback runs before the clipping callback, so norms are pre-clipping); ``on_batch_end``
turns the probe step into a ``ProbeRecord`` for the ``Doctor``; ``on_epoch_end`` gives the epoch metrics
(overfitting, plateau), together with the training split evaluated as the validation split is (eval mode, the
epoch's final weights, a fixed subset as large as the validation split), so that overfitting compares like
with like. Records go to ``probes.jsonl`` and alarms to ``alarms.json`` in the run directory.

With ``repair`` the callback keeps the last healthy weights (at the start and after every epoch without a new
alarm and without an oversized step) and the weights of the best validation loss in memory, and on an alarm
rolls back to the healthy ones and applies the next action of ``repair.POLICIES``. Rebuild actions end the run with ``restart`` and
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
import torch.nn.functional as F

from tricklab.diagnose.detectors.learning_rate import USUAL_LR, optimizer_family
from tricklab.diagnose.doctor import STATIC_KINDS, Doctor, is_instability
from tricklab.diagnose.probes import DEFAULT_EVERY, Probe
from tricklab.diagnose.records import Alarm
from tricklab.diagnose.repair import (
    HEALTHY_PEAK_RATIO,
    PRIORITY,
    UNSTABLE_UPDATE_RATIO,
    Action,
    Repair,
    RepairPlan,
    needs_code_change,
)
from tricklab.fsutil import atomic_write_text
from tricklab.train.events import Callback, TrainState
from tricklab.train.run import json_safe
from tricklab.train.trainer import evaluate, training_subset
from tricklab.tricks.init import init_model_, smallest_sound_init_
from tricklab.tricks.monitor import Monitor

PROBES_FILE = "probes.jsonl"
ALARMS_FILE = "alarms.json"
RECENT_PROBES = 5
"""Probes whose update ratios tell whether the steps before an alarm were oversized (100 steps by default)."""
KEPT_RATIOS = 64
"""Update ratios kept per attempt (with their steps), to size a learning-rate change from the probe nearest the
weights a repair resumes from; the first probe of the run is always kept."""

BEST_WEIGHTS = Monitor("val_loss")
"""What the repairing doctor keeps the best weights by (and stops early on, when a repair switches that on)."""

Ratio = tuple[int, float, float]
"""One probe's (step, median ‖Δw‖/‖w‖ over layers, learning rate of that step)."""


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
        self.repairs: list[Repair] = []
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
        # the first probe of the attempt (its ratio scaled by the momentum gain) and the latest ones
        self._first_ratio: Ratio | None = None
        self._ratios: deque[Ratio] = deque(maxlen=KEPT_RATIOS)
        self._oversized_epoch = False          # a probe of this epoch saw a median update ratio above the bound
        self.changes: dict[str, Any] = {}       # in-run repairs as recipe keys (init.scheme, optimizer.lr, clip.*)

    # -- events -----------------------------------------------------------------------------------------
    def on_fit_begin(self, state: TrainState) -> None:
        trainer = state.trainer
        num_params = sum(p.numel() for p in state.model.parameters())
        named = self.recipe.get("optimizer", {}).get("name")
        setup: dict[str, Any] = {
            "num_classes": _class_count(trainer),
            "optimizer": named if optimizer_family(named) is not None else state.optimizer,
            "loss": "cross_entropy" if trainer.loss_fn is F.cross_entropy else None,
            "lr": self._peak(state),
        }
        self.doctor = Doctor(num_params=num_params, num_examples=trainer.num_examples,
                             **{**setup, **self.doctor_kwargs})
        if self._resume_doctor:
            self.doctor.load_state_dict(self._resume_doctor)
        self.probe = Probe(state.model, every=self.every, scaler=trainer.scaler)   # None unless precision=fp16
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
                med = ratios[len(ratios) // 2]
                self._oversized_epoch = self._oversized_epoch or med > UNSTABLE_UPDATE_RATIO
                self._ratios.append((record.step, med, state.lr))
                if self._first_ratio is None:
                    self._first_ratio = (record.step, med * self._momentum_gain(state), state.lr)
            new += self.doctor.observe(record)
        if self.repair is not None and state.loss is not None and not math.isfinite(float(state.loss)):
            new += self.doctor.nonfinite_loss(step)
        self._raise(state, new, step)

    def on_epoch_end(self, state: TrainState) -> None:
        assert self.doctor is not None
        metrics = {k: v for k, v in state.epoch_metrics.items() if isinstance(v, (int, float))}
        if state.status != "diverged" and "val_loss" in metrics:
            fit = self._evaluate_training_split(state)
            if fit is not None:
                metrics.update(train_eval_loss=fit["loss"], train_eval_accuracy=fit["accuracy"])
            metrics.update(self._validation_noise(state))
        self._raise(state, self.doctor.end_epoch(state.epoch, state.step, metrics), state.step)
        self._flush()
        if self.repair is not None and state.status != "diverged":
            self._early_stopping(state, metrics.get("val_loss"))
            if not self._alarm_this_epoch and not self._oversized_epoch and not state.stop:
                self._take_snapshot(state)
        self._alarm_this_epoch = self._oversized_epoch = False

    def _evaluate_training_split(self, state: TrainState) -> dict[str, float] | None:
        """Loss and accuracy on a fixed subset of the training split (``training_subset``), evaluated exactly
        as the validation split is: the model the Trainer evaluates (an average where one is kept), eval mode."""
        trainer = state.trainer
        if not isinstance(trainer.val, tuple) or trainer.x_train is None or not len(trainer.x_train):  # tensors only
            return None
        idx = training_subset(len(trainer.x_train), len(trainer.val[0]), trainer.x_train.device)
        return evaluate(state.eval_model or state.model, trainer.x_train[idx], trainer.y_train[idx],
                        batch_size=trainer.eval_batch_size, loss_fn=trainer.loss_fn)

    def _validation_noise(self, state: TrainState) -> dict[str, float]:
        """The validation loss's standard error (std of the per-example losses / √n, eval mode, the model the
        Trainer evaluates) and the split's size: the overfitting rule's noise. Only the size for a loss other
        than cross-entropy (its per-example values are unknown)."""
        trainer = state.trainer
        if not isinstance(trainer.val, tuple) or not len(trainer.val[0]):   # none, or a Dataset (tensors only)
            return {}
        x, y = trainer.val
        if trainer.loss_fn is not F.cross_entropy:
            return {"val_examples": float(len(x))}
        model = state.eval_model or state.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                losses = torch.cat([F.cross_entropy(model(x[i:i + trainer.eval_batch_size]),
                                                    y[i:i + trainer.eval_batch_size], reduction="none").double()
                                    for i in range(0, len(x), trainer.eval_batch_size)])
        finally:
            model.train(was_training)
        n = len(losses)
        se = float(losses.std(correction=1)) / math.sqrt(n) if n > 1 else math.nan
        return {"val_loss_se": se, "val_examples": float(n)} if math.isfinite(se) else {"val_examples": float(n)}

    @property
    def info(self) -> list[Alarm]:
        """The doctor's advice that is no diagnosis (too many parameters per example)."""
        return self.doctor.info if self.doctor is not None else []

    def on_fit_end(self, state: TrainState) -> None:
        if self.probe is not None:
            self.probe.close()
        peak = self.recipe.get("optimizer", {}).get("lr")
        if state.lr_scale != 1.0 and isinstance(peak, (int, float)) and not self.restart:
            self.changes["optimizer.lr"] = f"{peak * state.lr_scale:.6g}"   # in-run learning-rate repairs
        clip = self.recipe.get("clip", {})
        if clip.get("mode") == "norm" and not self.restart:
            self.changes.update({"clip.mode": "norm", "clip.threshold": clip.get("threshold")})
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
        unstable = self._oversized(state) or any(is_instability(a.kind, _group(a)) for a in self.alarms)
        for alarm in sorted(new, key=lambda a: rank.get(a.kind, len(rank))):
            action = self.repair.next_action(alarm.kind, alarm.evidence, self.recipe, unstable=unstable)
            if action is None:
                if needs_code_change(alarm.kind, alarm.evidence, self.recipe):
                    entry = self.repair.note_code_change(step, alarm.kind, alarm.message, alarm.advice)
                    if entry is not None:
                        self.repairs.append(entry)
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
        if action.scheme is not None or action.schemes:
            return self._reinitialise(state, action)
        no_healthy = self._snapshot is None or self._snapshot["step"] == 0 or self._snapshot["step"] >= since
        restart = action.rebuild or (self.can_restart and no_healthy)
        self._rollback(state, self._snapshot)
        done = [action.name]
        if action.lr_factor is not None:
            resume = 0 if restart or self._snapshot is None else self._snapshot["step"]
            factor = self._lr_factor(action, state, resume)
            state.lr_scale *= factor
            peak = self._peak(state)
            done = [f"optimizer.lr={peak:.3g} (the optimizer's usual rate)" if action.usual_lr and peak
                    else f"lr×{factor:.3g}"]
        if action.clip_threshold is not None:
            state.set_clipping("norm", action.clip_threshold)
            self.recipe.setdefault("clip", {}).update(mode="norm", threshold=action.clip_threshold)
        if action.weight_decay_factor is not None:
            for group in state.optimizer.param_groups:
                for key in ("weight_decay", "decoupled_decay"):
                    if isinstance(group.get(key), float):
                        group[key] *= action.weight_decay_factor
        if restart:
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
        self.doctor.set_lr(self._peak(state))
        self._ratios.clear()
        return " + ".join(done)

    def _reinitialise(self, state: TrainState, action: Action) -> str:
        """The action's init scheme applied to the running model in place (every Linear/Conv weight redrawn,
        biases 0; norm layers keep theirs) — a named one, or the smallest of its candidates whose signal on the
        current batch stays sound (``smallest_sound_init_``) — the optimizer's state cleared (its moments belong to
        the old weights), and judging starts afresh from these weights, which become the healthy snapshot. Returns
        the log's name, with the scheme applied."""
        assert self.doctor is not None
        with torch.no_grad():
            if action.scheme is not None:
                scheme, name = action.scheme, action.name
                init_model_(state.model, scheme)
            else:
                scheme = smallest_sound_init_(state.model, state.x, action.schemes)
                name = f"re-initialise in place (init.scheme={scheme})"
        state.optimizer.state.clear()
        self.recipe.setdefault("init", {})["scheme"] = scheme
        self.changes["init.scheme"] = scheme
        self.doctor.reset()
        self._ratios.clear()
        self._first_ratio = None
        self._take_snapshot(state)
        return name

    def _at_peak(self, probe: Ratio, state: TrainState) -> float:
        """A probe's update ratio scaled to the run's peak learning rate now (the recipe's rate × the repairs'
        scale): the update is proportional to the rate, a warm-up or an annealed schedule shrinks the steps on
        purpose, and an adapted change of the rate must aim at the steps the schedule's peak will take.
        Unscaled without a recipe."""
        _, ratio, lr = probe
        peak = self._peak(state)
        return ratio if peak is None or not lr or lr <= 0 else ratio * peak / lr

    def _recent(self, state: TrainState) -> list[float]:
        """The last ``RECENT_PROBES`` update ratios at the peak rate, oldest first."""
        return [self._at_peak(p, state) for p in list(self._ratios)[-RECENT_PROBES:]]

    def _early_stopping(self, state: TrainState, val_loss: float | None) -> None:
        """Keep the weights of the best validation loss; once a repair switched early stopping on, stop with
        them after ``patience`` epochs without a better one."""
        if val_loss is not None and BEST_WEIGHTS.improved(val_loss, self._best_val):
            self._best_val, self._best_epoch = val_loss, state.epoch
            self._best = self._copy(state)
            return
        if self._patience is not None and not state.stop and state.epoch - self._best_epoch >= self._patience:
            self._rollback(state, self._best)
            state.stop, state.status = True, "stopped_early"
            state.stop_reason = (f"doctor: early stopping — no better validation loss for {self._patience} epochs; "
                                 f"weights of epoch {self._best_epoch} restored")

    def _lr_factor(self, action: Action, state: TrainState, resume: int) -> float:
        """An adapted change of the learning rate: the update of SGD, momentum and Adam is proportional to the
        rate at given weights and gradients, so one change can correct a rate several decades off.

        A cut, when the steps were oversized (``_oversized``), aims the peak rate's update ratio at
        ``HEALTHY_PEAK_RATIO``, measured on the first probe at or after ``resume`` — the weights the repaired run
        goes on from (0 for a restart: the same initial weights, so the measurement is exact, and taken before
        the oversized steps damaged them). Probes after the damage say little: dead units give zero gradients, inflated weights behind
        batch norm tiny ratios, and which of them a run shows depends on floating-point noise. Without such a
        probe, the median of the recent probes. A raise, when the update ratio is below 1e-4, aims at
        ``HEALTHY_PEAK_RATIO`` as well. Factors within [1e-4, 1e5]; otherwise the action's own factor."""
        factor = action.lr_factor
        assert factor is not None
        family = self.doctor.ctx.optimizer if self.doctor is not None else None
        peak = self._peak(state)
        if action.usual_lr and family in USUAL_LR and peak:
            return USUAL_LR[family] / peak
        recent = self._recent(state)
        if factor < 1 and self._oversized(state):
            measured = self._ratio_from(resume)
            at_peak = (self._at_peak(measured, state) if measured is not None
                       else sorted(recent)[len(recent) // 2] if recent else 0.0)
            if at_peak > 0:
                return max(1e-4, min(factor, HEALTHY_PEAK_RATIO / at_peak))
        ratio = recent[-1] if recent else None
        if factor > 1 and ratio is not None and 0 < ratio < 1e-4:
            return min(1e5, max(factor, HEALTHY_PEAK_RATIO / ratio))
        return factor

    def _peak(self, state: TrainState) -> float | None:
        """The run's peak learning rate now: the recipe's rate × the repairs' scale (None without a recipe)."""
        peak = self.recipe.get("optimizer", {}).get("lr")
        return peak * state.lr_scale if isinstance(peak, (int, float)) and peak > 0 else None

    def _oversized(self, state: TrainState) -> bool:
        """The steps were oversized: the median update ratio at the peak rate above ``UNSTABLE_UPDATE_RATIO`` on
        one of the last few probes or on the run's first (the one measured before the steps did any damage —
        later ones can look small when oversized steps have inflated the weights or killed the units)."""
        first = [self._at_peak(self._first_ratio, state)] if self._first_ratio is not None else []
        return max([*self._recent(state), *first], default=0.0) > UNSTABLE_UPDATE_RATIO

    def _momentum_gain(self, state: TrainState) -> float:
        """How much larger than the first step a momentum optimizer's steps grow: on its first step the buffer
        holds one gradient; with gradients that agree it approaches 1/(1 − γ) of them (γ = 0.9: ×10). 1 when
        the probe is not the run's first step (a resumed run's buffer is warm) or the optimizer has no momentum
        (Adam's normalised first step is its largest, so the first probe errs on the safe side there)."""
        if state.step != 1:
            return 1.0
        gamma = state.optimizer.param_groups[0].get("momentum", 0.0)
        return 1.0 / max(1.0 - float(gamma), 0.01) if isinstance(gamma, (int, float)) and 0 < gamma < 1 else 1.0

    def _ratio_from(self, step: int) -> Ratio | None:
        """The first probe kept at or after ``step`` with a positive update ratio and learning rate."""
        kept = [*([self._first_ratio] if self._first_ratio else []), *self._ratios]  # in the order of their steps
        return next((p for p in kept if p[0] >= step and p[1] > 0 and p[2] > 0), None)

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


def _class_count(trainer: Any) -> int | None:
    """The number of classes of integer targets (largest label + 1 over the training and validation splits)."""
    ys = [trainer.y_train] + ([trainer.val[1]] if isinstance(trainer.val, tuple) and len(trainer.val[1]) else [])
    if not all(isinstance(y, torch.Tensor) and not y.is_floating_point() and y.numel() for y in ys):
        return None
    return int(max(int(y.max()) for y in ys)) + 1


def _group(alarm: Alarm) -> str:
    """The update-ratio alarm's group (``high``/``low``) from its evidence; other kinds have none."""
    if alarm.kind != "update_ratio":
        return ""
    return "high" if alarm.evidence.get("log10_update_ratio", -3.0) > -3 else "low"


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value) if not isinstance(value, torch.Tensor) else float(value.detach())
    return f if math.isfinite(f) else None

