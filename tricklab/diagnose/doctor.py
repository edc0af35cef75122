"""The Doctor: probe records and epoch metrics in, deduplicated alarms with advice out.

    doctor = Doctor(num_params=p, num_examples=n)
    for record in records:                    # from tricklab.diagnose.probes.Probe, every N steps
        for alarm in doctor.observe(record):  # new alarms only
            print(alarm.message, alarm.advice)
    doctor.end_epoch(epoch, step, {"train_loss": ..., "train_accuracy": ..., "val_loss": ..., "val_accuracy": ...,
                                   "train_eval_loss": ..., "train_eval_accuracy": ...})  # the last two: optional
    doctor.diagnosis()                        # ["saturation", ...]
    doctor.info                               # advice that is no diagnosis (too many parameters per example)

Detectors run in a fixed order, causes before symptoms (inputs, units, gradients, then update sizes and the
loss curve), and a finding whose cause is already raised is not raised itself (``Finding.explained_by``):
a flat loss behind dead ReLUs is one problem, the dead ReLUs. One alarm per (kind, group): a repeated
finding updates its alarm's evidence, layers and message but keeps the first step; ``observe`` returns only
alarms not seen before. NaN/Inf is immediate; everything else must persist (see ``Thresholds``). Every
instability finding (``INSTABILITY``) marks the step in ``Context.unstable_step``, raised or not: epochs that
contain one are not judged for overfitting (their validation numbers say nothing about generalisation).

Memory is bounded whatever the run's length: the last ``max_records`` records, the last ``max_epochs``
epochs, a few running numbers and at most one alarm per kind and group; all plain Python, so
``state_dict()`` is JSON data and a resumed run judges exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tricklab.diagnose.advice import to_alarm
from tricklab.diagnose.detectors import (
    Context,
    DeadUnits,
    Detector,
    EpochMetrics,
    ExplodingGradients,
    ExplodingInit,
    Finding,
    Fp16Overflow,
    Fp16Underflow,
    LearningRateTooHigh,
    LearningRateTooLow,
    LinearModel,
    LossSpike,
    NonFiniteLoss,
    Oscillation,
    OutputLossMismatch,
    Overfitting,
    Plateau,
    Saturation,
    Thresholds,
    TooManyParameters,
    UnscaledInputs,
    UpdateRatio,
    VanishingGradients,
    VanishingInit,
)
from tricklab.diagnose.detectors.learning_rate import optimizer_family, scheduled_peak
from tricklab.diagnose.detectors.loss import nonfinite_finding
from tricklab.diagnose.records import Alarm, ProbeRecord

DETECTORS: tuple[type[Detector], ...] = (
    Fp16Overflow,
    NonFiniteLoss,
    UnscaledInputs,
    TooManyParameters,
    OutputLossMismatch,
    LinearModel,
    ExplodingInit,
    VanishingInit,
    LearningRateTooHigh,
    LearningRateTooLow,
    DeadUnits,
    Saturation,
    VanishingGradients,
    ExplodingGradients,
    Fp16Underflow,
    UpdateRatio,
    LossSpike,
    Oscillation,
    Plateau,
    Overfitting,
)
"""Every detector, causes before symptoms (the order in which one observation is judged)."""

HALF_PRECISION = (Fp16Overflow, Fp16Underflow)
"""The detectors that judge a step a loss scaler skipped (``ProbeRecord.overflow_skip``): nothing else does —
the step changed nothing, and its gradients are the overflow the scaler caught, not the model's state."""

INSTABILITY = frozenset({"nan_loss", "exploding_gradients", "loss_spike", "oscillation", "lr_too_high"})
"""Kinds that say the steps are too large for the loss surface (so is an update ratio in the ``high`` group):
while one holds, the run is unstable and its validation numbers say nothing about generalisation."""

STATIC_KINDS = frozenset({"too_many_parameters", "linear_model"})
"""Properties of the setup, not of the run's state: kept over ``reset`` and ignored by ``healthy_since``."""

INFO_KINDS = frozenset({"too_many_parameters"})
"""Advice, not a diagnosis: kept in ``Doctor.info``, never among ``alarms``/``diagnosis`` (where overfitting is
observed, the overfitting alarm carries the same numbers as its evidence)."""

MAX_RECORDS = 64
"""Records kept (at the probe's default period of 20 steps: the last 1,280 steps) — enough for every window."""


@dataclass
class _Entry:
    """One deduplicated alarm and when its condition was last seen."""

    alarm: Alarm
    group: str
    last_seen: int

    def to_dict(self) -> dict[str, Any]:
        return {"alarm": self.alarm.to_dict(), "group": self.group, "last_seen": self.last_seen}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Entry:
        return cls(alarm=Alarm(**d["alarm"]), group=d.get("group", ""), last_seen=int(d["last_seen"]))


def is_instability(kind: str, group: str = "") -> bool:
    """True for a finding or alarm that means the steps are too large (see ``INSTABILITY``)."""
    return kind in INSTABILITY or (kind == "update_ratio" and group == "high")


class Doctor:
    """Watches a run through its probe records and epoch metrics; see the module docstring.

    ``thresholds``: a ``Thresholds`` (defaults documented there); ``num_params``/``num_examples``: for the
    capacity check (too many parameters per training example); ``max_records``/``max_epochs``: memory bounds;
    ``num_classes``: the targets' class count (the output-width and ln C checks; else the output's width is
    taken); ``optimizer``: the optimizer in use or its name (``adamw``, ``sgd`` ...; the learning-rate rules
    compare the rate with its typical range); ``loss``: ``"cross_entropy"`` when the loop is known to use it;
    ``lr``: the rate the loop was set to (a schedule's peak) — the learning-rate alarms name it rather than the
    rate a warm-up has reached at the step (read from the optimizer's ``initial_lr``/``max_lr`` when not given).
    """

    def __init__(self, thresholds: Thresholds | None = None, *, num_params: int | None = None,
                 num_examples: int | None = None, max_records: int = MAX_RECORDS, max_epochs: int = 64,
                 detectors: Sequence[type[Detector]] = DETECTORS, num_classes: int | None = None,
                 optimizer: Any = None, loss: str | None = None, lr: float | None = None) -> None:
        self.thresholds = thresholds or Thresholds()
        self.max_records, self.max_epochs = max_records, max_epochs
        self._num_params, self._num_examples = num_params, num_examples
        self._setup = {"num_classes": num_classes, "optimizer": optimizer_family(optimizer),
                       "loss": loss if loss in ("cross_entropy",) else None, "lr": lr}
        self._optimizer = None if lr is not None else optimizer   # where the set rate is read (``scheduled_peak``)
        self._detector_types = tuple(detectors)
        self.reset(keep_static=False)

    # -- the three inputs ---------------------------------------------------------------------------------
    def observe(self, record: ProbeRecord) -> list[Alarm]:
        """Judge one probe record; returns the alarms raised for the first time."""
        if self._optimizer is not None and (peak := scheduled_peak(self._optimizer)) is not None:
            self.ctx.configured_lr = self._setup["lr"] = peak   # a scheduler made after the doctor sets it late
        detectors = self.detectors
        if record.overflow_skip:
            detectors = [d for d in detectors if isinstance(d, HALF_PRECISION)]
        else:
            self.ctx.add_record(record)
        findings = [f for d in detectors if (f := d.observe(record, self.ctx)) is not None]
        return self._raise(findings, record.step)

    def end_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> list[Alarm]:
        """Judge a finished epoch (``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy``, ``lr``;
        missing keys are skipped); returns the alarms raised for the first time. Give ``train_eval_loss`` and
        ``train_eval_accuracy`` too where you can — a fixed subset of the training split evaluated exactly as
        the validation split is (``model.eval()``, the epoch's final weights): overfitting then compares like
        with like instead of against the running training-batch means (see ``detectors.generalization``)."""
        if self._fresh:
            # the first epoch after a reset (a repair): its running training means mix steps before the repair
            # with steps after it, so they are not judged (the evaluated numbers are)
            metrics = {k: v for k, v in metrics.items() if k not in ("train_loss", "train_accuracy")}
            self._fresh = False
        em = EpochMetrics.from_metrics(epoch, step, metrics)
        self.ctx.add_epoch(em)
        findings = [f for d in self.detectors if (f := d.end_epoch(em, self.ctx)) is not None]
        loss = metrics.get("train_loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            findings.insert(0, nonfinite_finding(step, float(loss)))
        return self._raise(findings, step)

    def nonfinite_loss(self, step: int) -> list[Alarm]:
        """The training loop saw a NaN/Inf loss at ``step`` (e.g. the Trainer's divergence check)."""
        return self._raise([nonfinite_finding(step)], step)

    # -- what it found ----------------------------------------------------------------------------------
    @property
    def alarms(self) -> list[Alarm]:
        """One alarm per (kind, group), in the order first raised, evidence as last seen."""
        return [e.alarm for e in self._entries.values()]

    @property
    def info(self) -> list[Alarm]:
        """Advice about the setup that is no diagnosis (``INFO_KINDS``: too many parameters per example)."""
        return list(self._info.values())

    def set_optimizer(self, optimizer: Any) -> None:
        """The optimizer in use (or its name) — for loops that make it after the doctor."""
        self._setup["optimizer"] = optimizer_family(optimizer)
        self.ctx.optimizer = self._setup["optimizer"]
        if self._optimizer is None and self._setup["lr"] is None:
            self._optimizer = optimizer

    def set_lr(self, lr: float | None) -> None:
        """The rate the loop is set to now (a schedule's peak) — e.g. after a repair changed it."""
        self._optimizer = None
        self.ctx.configured_lr = self._setup["lr"] = lr

    def diagnosis(self) -> list[str]:
        """The alarm kinds found, in the order first raised, each once."""
        kinds: list[str] = []
        for e in self._entries.values():
            if e.alarm.kind not in kinds:
                kinds.append(e.alarm.kind)
        return kinds

    def healthy_since(self, step: int) -> bool:
        """True when no problem of the run (capacity aside) was seen at or after ``step`` and at least
        ``persist`` probes from ``step`` on were judged — so a repair policy knows its fix held."""
        if any(e.last_seen >= step for e in self._entries.values() if e.alarm.kind not in STATIC_KINDS):
            return False
        judged = sum(1 for r in self.ctx.records if r.step >= step)
        return judged >= self.thresholds.persist

    # -- lifecycle ----------------------------------------------------------------------------------------
    def reset(self, keep_static: bool = True) -> None:
        """Start judging afresh (after a repair): records, summaries, persistence and alarms are cleared;
        setup alarms (too many parameters) are kept unless ``keep_static`` is False."""
        kept = {k: e for k, e in getattr(self, "_entries", {}).items() if keep_static and e.alarm.kind in STATIC_KINDS}
        self._fresh = keep_static and hasattr(self, "_entries")   # a repair's reset, not the doctor's first
        self.ctx = Context(self.thresholds, num_params=self._num_params, num_examples=self._num_examples,
                           max_records=self.max_records, max_epochs=self.max_epochs, **self._setup)
        if not hasattr(self, "_info") or not keep_static:
            self._info: dict[str, Alarm] = {}
        self.detectors: list[Detector] = [cls(self.thresholds) for cls in self._detector_types]
        self._entries: dict[tuple[str, str], _Entry] = dict(kept)
        self.ctx.raised = {e.alarm.kind for e in kept.values()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue judging exactly (JSON data; thresholds included for reference)."""
        return {
            "version": 1,
            "thresholds": self.thresholds.to_dict(),
            "context": self.ctx.state_dict(),
            "detectors": {type(d).__name__: d.state_dict() for d in self.detectors},
            "alarms": [e.to_dict() for e in self._entries.values()],
            "info": [a.to_dict() for a in self._info.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.ctx.load_state_dict(state.get("context", {}))
        self._num_params = self.ctx.num_params
        self._num_examples = self.ctx.num_examples
        saved = state.get("detectors", {})
        for d in self.detectors:
            d.load_state_dict(saved.get(type(d).__name__, {}))
        self._entries = {}
        for item in state.get("alarms", []):
            entry = _Entry.from_dict(item)
            self._entries[(entry.alarm.kind, entry.group)] = entry
        self.ctx.raised = {e.alarm.kind for e in self._entries.values()}
        self._info = {a["kind"]: Alarm(**a) for a in state.get("info", [])}
        self._setup.update(num_classes=self.ctx.num_classes, optimizer=self.ctx.optimizer, loss=self.ctx.loss,
                           lr=self.ctx.configured_lr)

    # -- internals ----------------------------------------------------------------------------------------
    def _raise(self, findings: list[Finding], step: int) -> list[Alarm]:
        if any(is_instability(f.kind, f.group) for f in findings):
            self.ctx.unstable_step = step
        new: list[Alarm] = []
        lr = self.ctx.peak_lr or self.ctx.last_lr  # recipes name the peak lr (one-cycle warms up to it)
        for f in findings:
            if f.kind in INFO_KINDS:
                if f.kind not in self._info:
                    self._info[f.kind] = to_alarm(f, lr)
                continue
            if f.explainable and any(kind in self.ctx.raised for kind in f.explained_by if kind != f.kind):
                continue
            key = (f.kind, f.group)
            entry = self._entries.get(key)
            if entry is None:
                alarm = to_alarm(f, lr)
                self._entries[key] = _Entry(alarm, f.group, max(step, f.step))
                self.ctx.raised.add(f.kind)
                new.append(alarm)
                continue
            first = entry.alarm
            layers = list(dict.fromkeys([*first.layers, *f.layers]))
            merged = to_alarm(dataclasses.replace(f, layers=layers), lr, step=first.step)
            merged.layer = first.layer or merged.layer
            entry.alarm = merged
            entry.last_seen = max(entry.last_seen, step)
        return new
