"""The Trainer's small fixed set of events and the typed state every callback receives.

Events, in order: ``on_fit_begin`` → per epoch (``on_epoch_begin`` → per batch (``on_batch_begin`` →
forward/backward → ``on_before_optimizer_step`` (clipping runs here) → step → ``on_batch_end``) →
``on_evaluate`` → ``on_epoch_end``) → ``on_fit_end``. A callback stops training by setting ``state.stop``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn


class TrainerView(Protocol):
    """What a callback may read of the loop that fires its events (``train.trainer.Trainer`` is one). Declared
    here, below the Trainer, so that the events do not import the loop that fires them (no cycle). Read-only:
    a callback changes training through ``TrainState``, never through the trainer."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def eval_batch_size(self) -> int: ...
    @property
    def x_train(self) -> torch.Tensor: ...
    @property
    def y_train(self) -> torch.Tensor: ...
    @property
    def val(self) -> tuple[torch.Tensor, torch.Tensor] | None: ...   # (x_val, y_val)
    @property
    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]: ...
    @property
    def callbacks(self) -> Sequence[Callback]: ...


@dataclass
class TrainState:
    """What a callback may read (and, where noted, write) at any event."""

    trainer: TrainerView
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0                      # the current epoch, numbered from 1 as in the history and the CLI;
    # 0 before the first (on_fit_begin), and between epochs the number of epochs done
    step: int = 0                       # optimizer steps taken so far (global)
    steps_per_epoch: int = 0
    x: torch.Tensor | None = None       # current batch (batch events only)
    y: torch.Tensor | None = None
    loss: torch.Tensor | None = None    # current batch loss, a device tensor (no host sync)
    lr: float = 0.0                     # learning rate of this step
    epoch_metrics: dict[str, float] = field(default_factory=dict)  # callbacks add keys at on_epoch_end
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per finished epoch
    eval_model: nn.Module | None = None  # set by averaging callbacks: the model evaluated instead of ``model``
    lr_scale: float = 1.0               # multiplier on the schedule (metric-driven schedules write it)
    stop: bool = False                  # write True to end training after this batch/epoch
    stop_reason: str = ""
    status: str = "completed"           # completed | stopped_early | diverged
    diverged_step: int | None = None
    first_bad_step: torch.Tensor | None = None  # device scalar: first step of this epoch with a non-finite loss
    # (-1 = none). A callback that repairs a run in place (the doctor) resets it with ``fill_(-1)``.
    clipping: tuple[str, float] | None = None  # (mode, threshold) asked for with ``set_clipping``, not yet applied

    def set_clipping(self, mode: str, threshold: float) -> None:
        """Clip gradients with ``mode`` (``tricks.clipping``: norm, unit, value, agc, none) at ``threshold`` from
        the next optimizer step on — how a callback (the doctor's repair) changes clipping without reaching into
        another callback. The Trainer's ``GradientClipping`` callback applies the request and keeps it in its
        checkpointed state; a Trainer without one does not clip, and the request stays unapplied."""
        self.clipping = (mode, float(threshold))


class Callback:
    """Base class: override the events you need. ``state_dict``/``load_state_dict`` make resume exact."""

    def on_fit_begin(self, state: TrainState) -> None: ...
    def on_epoch_begin(self, state: TrainState) -> None: ...
    def on_batch_begin(self, state: TrainState) -> None: ...
    def on_before_optimizer_step(self, state: TrainState) -> None: ...
    def on_batch_end(self, state: TrainState) -> None: ...
    def on_evaluate(self, state: TrainState, split: str, metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_fit_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
