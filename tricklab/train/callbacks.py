"""The tricks that need the training loop, as Trainer callbacks around the pure tricks of ``tricklab.tricks``.

Each callback keeps its statistics on the device during the epoch and reports them into
``state.epoch_metrics`` at ``on_epoch_end``; each has ``state_dict``/``load_state_dict`` so a resumed run
continues exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from tricklab.train.events import Callback, TrainState
from tricklab.tricks.averaging import EMA, SWA, recompute_bn_stats
from tricklab.tricks.clipping import ClipTally, clip_gradients_
from tricklab.tricks.early_stopping import EarlyStopping
from tricklab.tricks.monitor import Monitor
from tricklab.tricks.schedules import Plateau


class GradientClipping(Callback):
    """Clips gradients before every optimizer step and records how often it fired and the norm before it.

    The setting starts as the recipe's and changes when a callback asks ``state.set_clipping`` (the doctor's
    repair): the request is applied before the next step and kept in ``state_dict``, so a resumed run clips as
    the run it continues did."""

    def __init__(self, mode: str, threshold: float) -> None:
        self.mode = mode
        self.threshold = threshold
        self._params: list[torch.nn.Parameter] = []
        self._tally = ClipTally()

    def on_fit_begin(self, state: TrainState) -> None:
        self._params = [p for p in state.model.parameters() if p.requires_grad]

    def on_epoch_begin(self, state: TrainState) -> None:
        self._tally = ClipTally(device=next(iter(self._params)).device if self._params else "cpu")

    def on_before_optimizer_step(self, state: TrainState) -> None:
        if state.clipping is not None:
            (self.mode, self.threshold), state.clipping = state.clipping, None
        stats = clip_gradients_(self._params, self.mode, self.threshold)
        self._tally.add(stats.fired, stats.norm_before)

    def on_epoch_end(self, state: TrainState) -> None:
        state.epoch_metrics.update(self._tally.metrics())

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # checkpoints written before the setting was kept hold {}: the recipe's setting stands
        self.mode, self.threshold = state.get("mode", self.mode), state.get("threshold", self.threshold)


class EarlyStoppingCallback(Callback):
    """Stops after ``patience`` epochs without improvement of the monitored validation metric and restores
    the best weights at the end of training."""

    def __init__(self, patience: int, monitor: str = "val_loss", min_delta: float = 0.0) -> None:
        self.monitor = monitor
        self.stopper = EarlyStopping(patience=patience, min_delta=min_delta, mode=Monitor(monitor).mode)
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.epoch_metrics.get(self.monitor)
        if value is None:
            return
        if self.stopper.update(value, state.eval_model or state.model) and not state.stop:
            state.stop, state.status = True, "stopped_early"
            state.stop_reason = f"{self.monitor} did not improve for {self.stopper.patience} epochs"
            self.stopped_epoch = state.epoch

    def on_fit_end(self, state: TrainState) -> None:
        if state.status != "diverged" and self.stopper.best_state is not None:
            self.stopper.restore(state.eval_model or state.model)

    @property
    def best_epoch(self) -> int | None:
        """The 1-based epoch of the best value (None before any epoch improved on the start)."""
        return None if self.stopper.best_index < 0 else self.stopper.best_index + 1

    def state_dict(self) -> dict[str, Any]:
        return {"stopper": self.stopper.state_dict(), "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stopper.load_state_dict(state["stopper"])
        self.stopped_epoch = state["stopped_epoch"]


class WeightAveraging(Callback):
    """EMA (updated every step) or SWA (updated at the end of every epoch after the first ``swa_start_epoch``
    epochs, i.e. from epoch ``swa_start_epoch + 1`` on; epochs count from 1); the averaged model is the one
    evaluated. Batch-norm statistics of the averaged model are recomputed on the training data at the end."""

    def __init__(self, mode: str, *, decay: float = 0.999, swa_start_epoch: int = 0) -> None:
        self.mode = mode
        self.decay = decay
        self.swa_start_epoch = swa_start_epoch
        self.averager: EMA | SWA | None = None
        self._pending: dict[str, Any] | None = None

    def on_fit_begin(self, state: TrainState) -> None:
        self.averager = EMA(state.model, self.decay) if self.mode == "ema" else SWA(state.model)
        if self._pending is not None:
            self.averager.load_state_dict(self._pending)
            self._pending = None
        if self.mode == "ema" or state.epoch > self.swa_start_epoch:
            state.eval_model = self.averager.averaged_model

    def on_batch_end(self, state: TrainState) -> None:
        if self.mode == "ema" and self.averager is not None:
            self.averager.update(state.model)

    def on_epoch_end(self, state: TrainState) -> None:
        # SWA's average joins after the evaluation of the epoch in which it starts; its batch-norm statistics
        # are recomputed each time it changes (the average of weights has no matching running statistics).
        if self.mode == "swa" and self.averager is not None and state.epoch > self.swa_start_epoch:
            self.averager.update(state.model)
            self._recompute_bn(state)
            state.eval_model = self.averager.averaged_model

    def on_fit_end(self, state: TrainState) -> None:
        if self.averager is not None and state.status != "diverged" and state.eval_model is not None:
            self._recompute_bn(state)

    def _recompute_bn(self, state: TrainState) -> None:
        assert self.averager is not None
        t = state.trainer
        batches = (t.x_train[i:i + t.batch_size] for i in range(0, len(t.x_train), t.batch_size))
        recompute_bn_stats(self.averager.averaged_model, batches)

    def state_dict(self) -> dict[str, Any]:
        return self.averager.state_dict() if self.averager is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state or None


class PlateauSchedule(Callback):
    """The metric-driven schedule: multiplies the LR by ``factor`` after ``patience`` stalled evaluations."""

    def __init__(self, factor: float, patience: int, monitor: str = "val_loss") -> None:
        self.monitor = monitor
        self.plateau = Plateau(factor=factor, patience=patience, mode=Monitor(monitor).mode)

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.epoch_metrics.get(self.monitor, state.epoch_metrics.get("train_loss"))
        if value is not None:
            state.lr_scale = self.plateau.update(value)

    def state_dict(self) -> dict[str, Any]:
        return self.plateau.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state)
