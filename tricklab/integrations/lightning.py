"""The doctor inside a PyTorch Lightning ``Trainer``: ``trainer = L.Trainer(callbacks=[DoctorCallback()])``.

Needs the ``lightning`` extra (``pip install -e ".[lightning]"``). Lightning's hooks map onto the probe:

- ``on_train_batch_start`` arms it on probe steps (``trainer.global_step``, the optimizer steps so far);
- ``on_before_backward`` reads the step's loss — in automatic *and* manual optimization, whatever
  ``training_step`` returns (Lightning divides it by ``accumulate_grad_batches`` before the backward pass in
  automatic optimization; the doctor multiplies that back, so the loss is per batch as the user wrote it);
- ``on_before_optimizer_step`` reads the gradients;
- ``on_train_batch_end`` makes the ``ProbeRecord`` once the optimizer has stepped (``global_step`` moved on):
  with gradient accumulation after the last micro-batch, with the mean loss of the micro-batches; a batch that
  ``training_step`` skipped (returned None: no backward — Lightning still steps the optimizer on no gradient and
  counts it) is not measured and the next batch is;
- the end of each training epoch gives the doctor the epoch's mean training loss (from the losses seen, whatever
  the module logs) and, where the module logs them, ``val_loss`` and ``val_accuracy``/``val_acc``, with the
  number of validation examples counted on the validation batches (the overfitting rule's noise). No
  validation loop: overfitting is simply not judged.

Every new alarm is printed (``tricklab doctor: …``) and logged to the Lightning logger as the metric
``doctor/<kind>`` whose value is the step it was first seen at (plus ``doctor/alarms``, the count so far). The
alarms are the same objects the tricklab Trainer and ``tl.watch`` produce (``self.alarms``).
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("tricklab.integrations.lightning needs the lightning extra: pip install 'tricklab[lightning]'"
                      ) from err

from tricklab.diagnose.doctor import Doctor
from tricklab.diagnose.probes import DEFAULT_EVERY, UNKNOWN, Probe, current_scale
from tricklab.diagnose.records import Alarm

VAL_METRICS = {"val_loss": "val_loss", "val_accuracy": "val_accuracy", "val_acc": "val_accuracy"}
"""Names a LightningModule logs its validation numbers under → the doctor's names."""


def _inputs(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        return next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
    return None


def _loss_scaler(trainer: pl.Trainer) -> Any:
    """The loss scaler of Lightning's mixed-precision plugin (``precision="16-mixed"``); None when the trainer's
    precision uses none (32, bf16, "16-true"); ``UNKNOWN`` for a plugin that does not say."""
    plugin = getattr(trainer, "precision_plugin", None)
    if plugin is None:
        return UNKNOWN
    if hasattr(plugin, "scaler"):
        return plugin.scaler
    return None if str(getattr(plugin, "precision", "")) in ("32-true", "64-true", "bf16-mixed", "bf16-true",
                                                             "16-true") else UNKNOWN


def report(alarm: Alarm) -> str:
    """The line printed for a new alarm."""
    return f"tricklab doctor: [{alarm.kind} @ step {alarm.step}] {alarm.message}"


class DoctorCallback(pl.Callback):
    """Probes the LightningModule every ``every`` optimizer steps; alarms in ``self.alarms`` (module docstring).

    ``verbose``: print each new alarm; ``doctor_kwargs`` go to ``Doctor`` (``num_classes``, ``thresholds`` ...).
    """

    def __init__(self, every: int = DEFAULT_EVERY, verbose: bool = True, **doctor_kwargs: Any) -> None:
        self.every = every
        self.verbose = verbose
        self.doctor_kwargs = doctor_kwargs
        self.doctor: Doctor | None = None
        self.probe: Probe | None = None
        self.alarms: list[Alarm] = []
        self._step_at_start = -1
        self._step_losses: list[torch.Tensor] = []   # losses of the probe step's micro-batches
        self._epoch_loss = torch.zeros((), dtype=torch.float64)
        self._epoch_batches = 0
        self._val_examples = 0

    # -- setup ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        num_params = sum(p.numel() for p in pl_module.parameters())
        self.doctor = Doctor(num_params=num_params, **self.doctor_kwargs)
        self.probe = Probe(pl_module, every=self.every, scaler=_loss_scaler(trainer))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.doctor is not None and trainer.optimizers and "optimizer" not in self.doctor_kwargs:
            self.doctor.set_optimizer(trainer.optimizers[0])

    # -- one step ---------------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_at_start = trainer.global_step
        if self.probe is not None:
            self.probe.begin(trainer.global_step, _inputs(batch))   # a no-op while accumulating into this step

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach().float()
        if self.probe is not None and (scale := current_scale(self.probe.scaler)) is not None:
            value = value / scale      # the mixed-precision plugin hands the hook the scaled loss S·L
        if pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1:
            value = value * trainer.accumulate_grad_batches   # Lightning divided it before the backward pass
        self._epoch_loss = self._epoch_loss.to(value.device) + value.double()
        self._epoch_batches += 1
        if self.probe is not None and self.probe.step == trainer.global_step:
            self._step_losses.append(value)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.probe is not None:
            self.probe.after_backward()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.probe is None or self.doctor is None or self.probe.step is None:
            return
        if not self._step_losses:
            # skipped: ``training_step`` returned None, so nothing was backpropagated (automatic optimization still
            # calls the optimizer, and counts a step, with no gradient) — measure the next batch instead
            self.probe.close()
            return
        if trainer.global_step == self._step_at_start:     # accumulating: the record waits for the step
            return
        loss = torch.stack(self._step_losses).mean()
        self._step_losses = []
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        record = self.probe.after_step(loss, epoch=trainer.current_epoch, lr=lr)
        if record is not None:
            self._report(trainer, pl_module, self.doctor.observe(record))

    # -- epochs -----------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_examples = 0

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        x = _inputs(batch)
        if x is not None and x.dim() > 0 and not trainer.sanity_checking:
            self._val_examples += int(x.shape[0])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.doctor is None:
            return
        metrics: dict[str, float] = {}
        if self._epoch_batches:
            metrics["train_loss"] = float(self._epoch_loss) / self._epoch_batches
        for name, key in VAL_METRICS.items():
            v = trainer.callback_metrics.get(name)
            if torch.is_tensor(v) and v.numel() == 1:
                metrics[key] = float(v)
        if "val_loss" in metrics and self._val_examples:
            metrics["val_examples"] = float(self._val_examples)
        self._epoch_loss = torch.zeros((), dtype=torch.float64)
        self._epoch_batches = 0
        self._report(trainer, pl_module, self.doctor.end_epoch(trainer.current_epoch, trainer.global_step, metrics))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe is not None:
            self.probe.close()

    # -- saying it --------------------------------------------------------------------------------------------
    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, new: list[Alarm]) -> None:
        if not new:
            return
        self.alarms += new
        for alarm in new:
            if self.verbose:
                print(report(alarm), flush=True)
        for logger in trainer.loggers:
            logger.log_metrics({**{f"doctor/{a.kind}": float(a.step or 0) for a in new},
                                "doctor/alarms": float(len(self.alarms))}, step=trainer.global_step)
