"""``watch``: the probe in a hand-written training loop, with one call per iteration.

    w = tl.watch(model, optimizer, every=20, doctor=tl.Doctor())
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        if (record := w.step(loss)) is not None: print(record.step, record.grad_norm)
    w.close()

How the step is cut up: a forward pre-hook on the model (training mode only) calls ``Probe.begin`` with the
batch (the first tensor argument), an ``optimizer.register_step_pre_hook`` calls ``Probe.after_backward``
(gradient norms and the weight snapshot, just before the update) and ``w.step(loss)`` calls
``Probe.after_step`` (update ratio, the one host sync) and hands the record to ``doctor.observe``.

Call order: ``w.step(loss)`` once per iteration, after ``optimizer.step()``. If the loop clips gradients,
the optimizer hook sees them clipped; call ``w.after_backward()`` between ``loss.backward()`` and the
clipping to measure them before (the hook then does nothing). Without an optimizer, ``w.step`` reads the
gradients itself, so call it before the next ``zero_grad``; update ratios are then None, since the probe did
not see the weights before the update.

``records`` keeps the last ``keep`` (default 1000) records; ``on_record`` receives every one as it is made
(for a file or a dashboard). The Lightning callback and the Trainer drive ``Probe`` directly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tricklab.diagnose.probes import DEFAULT_EVERY, UNKNOWN, Probe
from tricklab.diagnose.records import ProbeRecord

KEEP_RECORDS = 1000
"""Records a ``Watch`` keeps in memory (the last ones); at every 20th step, the last 20,000 steps."""


class Watch:
    """A ``Probe`` wired to a model (and optionally its optimizer) by hooks; see the module docstring."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        every: int = DEFAULT_EVERY,
        doctor: Any = None,
        *,
        keep: int = KEEP_RECORDS,
        on_record: Callable[[ProbeRecord], None] | None = None,
        scaler: Any = UNKNOWN,
    ) -> None:
        self.probe = Probe(model, every, scaler=scaler)
        self.model = model
        self.optimizer = optimizer
        self.doctor = doctor
        self.keep = keep
        self.on_record = on_record
        self.records: list[ProbeRecord] = []
        self.alarms: list[Any] = []          # everything doctor.observe returned, in order
        self.steps = 0                       # iterations finished (calls of step)
        self._lr: float | None = None
        if optimizer is not None and callable(getattr(doctor, "set_optimizer", None)) \
                and getattr(getattr(doctor, "ctx", None), "optimizer", None) is None:
            doctor.set_optimizer(optimizer)   # the learning-rate rules compare with this optimizer's range
        self._handles = [model.register_forward_pre_hook(self._on_forward, with_kwargs=True)]
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(self._on_optimizer_step))

    def _on_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if module.training and self.probe.wants(self.steps):
            x = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            self.probe.begin(self.steps, x)

    def _on_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.probe.wants(self.steps):
            if self.probe.scaler is UNKNOWN:
                self.probe.scaler = calling_scaler()
            self.after_backward()
            lr = optimizer.param_groups[0]["lr"]
            self._lr = float(lr)

    def after_backward(self) -> None:
        """Measure the gradients now (before clipping, if called before it); later calls do nothing."""
        self.probe.after_backward(snapshot=self.optimizer is not None)

    def step(self, loss: torch.Tensor | float, *, epoch: int = 0) -> ProbeRecord | None:
        """End this iteration: the record on probe steps (also kept, sent to ``on_record`` and the doctor)."""
        step = self.steps
        self.steps += 1
        if not self.probe.wants(step):
            return None
        self.probe.after_backward(snapshot=False)   # no-op when the optimizer hook ran
        lr, self._lr = self._lr, None
        record = self.probe.after_step(loss, epoch=epoch, lr=lr)
        if record is None:                          # no training-mode forward pass was seen this step
            return None
        self.records.append(record)
        if len(self.records) > self.keep:
            del self.records[: len(self.records) - self.keep]
        if self.on_record is not None:
            self.on_record(record)
        if self.doctor is not None:
            self.alarms.extend(self.doctor.observe(record) or [])
        return record

    def close(self) -> None:
        """Remove every hook this watch and its probe registered."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.probe.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def calling_scaler(depth: int = 12) -> Any:
    """The loss scaler whose ``step`` called the optimizer now stepping (``scaler.step(optimizer)`` runs
    ``optimizer.step()`` only when no gradient overflowed), found on the call stack; None when the optimizer
    was called by anything else — a float16 loop that steps its optimizer itself has no scaler. Looked up from
    an optimizer step hook, on probe steps, until found."""
    frame = sys._getframe(1)
    for _ in range(depth):
        frame = frame.f_back
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.amp.GradScaler):
            return owner
    return None


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    every: int = DEFAULT_EVERY,
    doctor: Any = None,
    *,
    keep: int = KEEP_RECORDS,
    on_record: Callable[[ProbeRecord], None] | None = None,
    scaler: Any = UNKNOWN,
) -> Watch:
    """Watch ``model`` in a hand-written loop: per-layer statistics every ``every`` steps (see ``Watch``).

    ``doctor``: any object with ``observe(record) -> list`` (``tricklab.diagnose.Doctor``); its alarms
    collect in ``Watch.alarms``. A ``Doctor`` made without an optimizer is told ``optimizer``'s (its learning-rate
    rules compare the rate with that optimizer's typical range). ``scaler``: in a float16 loop, its
    ``torch.amp.GradScaler`` (or None when it has none) — the doctor then reads the loss scale and judges float16
    underflow. Not given, it is found when ``scaler.step(optimizer)`` calls the watched optimizer (the call stack
    of the optimizer's step hook) — or known to be absent when the loop calls ``optimizer.step()`` itself. A step
    the scaler skips is never called an explosion, told or not (``detectors.precision``).
    """
    return Watch(model, optimizer, every, doctor, keep=keep, on_record=on_record, scaler=scaler)
