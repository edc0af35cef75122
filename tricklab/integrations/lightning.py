"""The doctor inside a PyTorch Lightning ``Trainer``: ``trainer = L.Trainer(callbacks=[DoctorCallback()])``.

Needs the ``lightning`` extra (``pip install -e ".[lightning]"``). Lightning's hooks map onto the probe:
``on_train_batch_start`` arms it on probe steps, ``on_before_optimizer_step`` reads the gradients,
``on_train_batch_end`` makes the ``ProbeRecord`` from the step's loss, and the end of each validation epoch
gives the doctor ``train_loss``/``val_loss``/``val_accuracy`` if the module logs them under those names.
The alarms are the same objects the tricklab Trainer and ``tl.watch`` produce.
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
from tricklab.diagnose.probes import DEFAULT_EVERY, Probe
from tricklab.diagnose.records import Alarm

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _inputs(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        return next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
    return None


def _loss(outputs: Any) -> torch.Tensor | None:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        return outputs.get("loss")
    return None


class DoctorCallback(pl.Callback):
    """Probes the LightningModule every ``every`` steps and keeps the doctor's alarms in ``self.alarms``."""

    def __init__(self, every: int = DEFAULT_EVERY, **doctor_kwargs: Any) -> None:
        self.every = every
        self.doctor_kwargs = doctor_kwargs
        self.doctor: Doctor | None = None
        self.probe: Probe | None = None
        self.alarms: list[Alarm] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        num_params = sum(p.numel() for p in pl_module.parameters())
        self.doctor = Doctor(num_params=num_params, **self.doctor_kwargs)
        self.probe = Probe(pl_module, every=self.every)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.probe is not None:
            self.probe.begin(trainer.global_step, _inputs(batch))

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.probe is not None:
            self.probe.after_backward()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.probe is None or self.doctor is None:
            return
        loss = _loss(outputs)
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        record = self.probe.after_step(loss if loss is not None else float("nan"), epoch=trainer.current_epoch,
                                       lr=lr)
        if record is not None:
            self.alarms += self.doctor.observe(record)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.doctor is None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k in EPOCH_METRICS and torch.is_tensor(v) and v.numel() == 1}
        self.alarms += self.doctor.end_epoch(trainer.current_epoch, trainer.global_step, metrics)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe is not None:
            self.probe.close()
