"""The doctor inside a Hugging Face ``transformers.Trainer``: ``Trainer(..., callbacks=[DoctorCallback()])``.

Needs ``transformers`` (the ``transformers`` extra). The Trainer's events map onto the probe:

- ``on_step_begin`` (before the first micro-batch of an optimizer step) arms the probe on probe steps
  (``state.global_step``) and, for that step only, hooks the model's output to read the loss the model
  computes itself (``outputs.loss``: a Hugging Face model given ``labels``); the probe measures the first
  micro-batch's forward pass;
- ``on_pre_optimizer_step`` reads the gradients — after the Trainer's own clipping (``max_grad_norm``, 1.0 by
  default), so gradient norms above it are not seen; the loss, forward-pass and update-size rules are unaffected;
- ``on_step_end`` makes the ``ProbeRecord`` (the mean loss of the step's micro-batches) for the ``Doctor``;
- ``on_evaluate`` ends a doctor epoch with ``eval_loss`` (and ``eval_accuracy`` where ``compute_metrics`` returns
  ``accuracy``) as the validation numbers, and the mean of the training losses the Trainer logged since.

New alarms are printed (``tricklab doctor: …``) and added to the Trainer's log history (``log_history``) as
``{"doctor/<kind>": step}`` entries; ``self.alarms`` holds them, the same objects as everywhere else.
"""

from __future__ import annotations

import math
from typing import Any

import torch

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("tricklab.integrations.transformers needs transformers: pip install 'tricklab[transformers]'"
                      ) from err

from tricklab.diagnose.doctor import Doctor
from tricklab.diagnose.probes import DEFAULT_EVERY, UNKNOWN, Probe
from tricklab.diagnose.records import Alarm


def report(alarm: Alarm) -> str:
    """The line printed for a new alarm."""
    return f"tricklab doctor: [{alarm.kind} @ step {alarm.step}] {alarm.message}"


class DoctorCallback(TrainerCallback):
    """Probes the Trainer's model every ``every`` optimizer steps; alarms in ``self.alarms`` (module docstring).

    ``verbose``: print each new alarm; ``doctor_kwargs`` go to ``Doctor`` (``num_classes``, ``thresholds`` ...).
    """

    def __init__(self, every: int = DEFAULT_EVERY, verbose: bool = True, **doctor_kwargs: Any) -> None:
        self.every = every
        self.verbose = verbose
        self.doctor_kwargs = doctor_kwargs
        self.doctor: Doctor | None = None
        self.probe: Probe | None = None
        self.alarms: list[Alarm] = []
        self._loss_hook: Any = None
        self._step_losses: list[torch.Tensor] = []
        self._logged_losses: list[float] = []
        self._optimizer: torch.optim.Optimizer | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: torch.nn.Module | None = None,
                       optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        if model is None:
            return
        num_params = sum(p.numel() for p in model.parameters())
        setup = {"optimizer": optimizer, **self.doctor_kwargs}
        self.doctor = Doctor(num_params=num_params, **setup)
        # accelerate's optimizer wrapper holds the fp16 loss scaler (None without one); no fp16: no scaler
        scaler = getattr(optimizer, "scaler", UNKNOWN) if optimizer is not None else UNKNOWN
        if scaler is UNKNOWN and not getattr(args, "fp16", False):
            scaler = None
        self.probe = Probe(model, every=self.every, scaler=scaler)
        self._optimizer = optimizer

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.probe is None or not self.probe.begin(state.global_step):
            return
        self._step_losses = []
        self._loss_hook = self.probe.model.register_forward_hook(self._read_loss)

    def _read_loss(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._step_losses.append(loss.detach().float())

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.probe is not None:
            self.probe.after_backward()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None
        if self.probe is None or self.doctor is None or self.probe.step is None:
            return
        loss = torch.stack(self._step_losses).mean() if self._step_losses else math.nan
        lr = self._optimizer.param_groups[0]["lr"] if self._optimizer is not None else None
        record = self.probe.after_step(loss, epoch=int(state.epoch or 0), lr=lr)
        if record is not None:
            self._report(state, self.doctor.observe(record))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        value = (logs or {}).get("loss")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._logged_losses.append(float(value))

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        if self.doctor is None:
            return
        metrics = metrics or {}
        epoch_metrics: dict[str, float] = {}
        if self._logged_losses:
            epoch_metrics["train_loss"] = sum(self._logged_losses) / len(self._logged_losses)
            self._logged_losses = []
        for name, key in (("eval_loss", "val_loss"), ("eval_accuracy", "val_accuracy")):
            if isinstance(metrics.get(name), (int, float)):
                epoch_metrics[key] = float(metrics[name])
        self._report(state, self.doctor.end_epoch(int(state.epoch or 0), state.global_step, epoch_metrics))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None
        if self.probe is not None:
            self.probe.close()

    def _report(self, state: Any, new: list[Alarm]) -> None:
        if not new:
            return
        self.alarms += new
        for alarm in new:
            if self.verbose:
                print(report(alarm), flush=True)
            state.log_history.append({f"doctor/{alarm.kind}": alarm.step, "step": state.global_step})
