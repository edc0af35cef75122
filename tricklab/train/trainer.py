"""The Trainer: a plain, fast loop over in-memory tensors with a small fixed set of events.

Hot path: data lives on the device, batches are index slices of a per-epoch permutation (no per-sample
Python, no DataLoader), and the loop never reads a device value back to the host on an ordinary step: the
loss sum, the correct count and the first non-finite step are accumulated as device tensors and read every
``check_every`` steps and at the end of each epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.train.checkpoint import load_checkpoint, save_checkpoint, training_state_mismatch
from tricklab.train.events import Callback, TrainState
from tricklab.tricks.schedules import apply_lr

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def data_order_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch's batch order: a function of (seed, epoch) alone, so a resumed run sees the same
    order as an uninterrupted one without saving generator state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63 - 1))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch for ``n`` examples. A last batch of a single example would break batch norm
    in training mode, so it is dropped (those examples are drawn again, in other batches, next epoch)."""
    bs = min(batch_size, n)
    return n // bs + (1 if n % bs > 1 else 0)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2048,
             loss_fn: LossFn = F.cross_entropy) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on (x, y), in eval mode; one host sync at the end."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size])
        yb = y[i:i + batch_size]
        loss_sum += loss_fn(out, yb).double() * len(yb)
        correct += (out.argmax(dim=1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    loss = loss_sum.item() / n
    return {"loss": loss if math.isfinite(loss) else float("nan"), "accuracy": correct.item() / n}


MAX_TRAINING_SUBSET = 4096
"""At most this many training examples are evaluated by ``training_subset``'s users each epoch."""


def training_subset(n_train: int, n_val: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Indices of a fixed subset of the training split to evaluate like the validation split (the doctor's
    like-for-like overfitting check): as many examples as the validation split (at least 1, at most
    ``MAX_TRAINING_SUBSET``), evenly spaced — no random numbers drawn, the same subset every epoch."""
    n = min(n_train, max(n_val, 1), MAX_TRAINING_SUBSET)
    return torch.linspace(0, max(n_train - 1, 0), n).round().long().to(device)


class Trainer:
    """Train ``model`` with ``optimizer`` on (x_train, y_train), evaluating on (x_val, y_val) each epoch.

    ``lr_schedule`` maps the global step to a learning rate (see ``tricklab.tricks.schedules``); the value,
    times ``state.lr_scale`` (metric-driven schedules write it) and each group's ``lr_scale``, is written into
    the optimizer before every step. With ``checkpoint_dir`` the full training state is saved atomically at
    the end of every epoch, and ``fit(resume=True)`` continues from it exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        lr_schedule: Callable[[int], float] | None = None,
        callbacks: Sequence[Callback] = (),
        loss_fn: LossFn = F.cross_entropy,
        checkpoint_dir: str | Path | None = None,
        check_every: int = 25,
        eval_batch_size: int = 2048,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.x_train, self.y_train = train
        self.val = val
        self.epochs = epochs
        self.batch_size = min(batch_size, len(self.x_train))
        self.seed = seed
        self.lr_schedule = lr_schedule
        self.callbacks = list(callbacks)
        self.loss_fn = loss_fn
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.check_every = max(1, check_every)
        self.eval_batch_size = eval_batch_size
        self.steps_per_epoch = batches_per_epoch(len(self.x_train), self.batch_size)
        self.wall_seconds = 0.0

    # -- events -----------------------------------------------------------------------------------------------
    def _fire(self, event: str, state: TrainState, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(state, *args)

    def _set_lr(self, state: TrainState) -> None:
        if self.lr_schedule is None:
            state.lr = self.optimizer.param_groups[0]["lr"]
            return
        state.lr = self.lr_schedule(state.step) * state.lr_scale
        apply_lr(self.optimizer, state.lr)

    # -- the loop ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainState:
        """Run the remaining epochs; returns the final ``TrainState`` (status, history, step, ...)."""
        state = TrainState(self, self.model, self.optimizer, steps_per_epoch=self.steps_per_epoch)
        if resume:
            self._restore(state)
        started = time.perf_counter()
        self._fire("on_fit_begin", state)
        while state.epoch < self.epochs and not state.stop:
            self._run_epoch(state)
            if state.status == "diverged":
                break
            state.epoch += 1
            if self.checkpoint_dir is not None:
                self._save(state)
        self._fire("on_fit_end", state)
        self.wall_seconds = time.perf_counter() - started
        return state

    def _run_epoch(self, state: TrainState) -> None:
        model, opt = self.model, self.optimizer
        device = self.x_train.device
        model.train()
        state.epoch_metrics = {}
        self._fire("on_epoch_begin", state)
        epoch_start = time.perf_counter()
        order = torch.randperm(len(self.x_train), generator=data_order_generator(self.seed, state.epoch))
        order = order.to(device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        state.first_bad_step = first_bad = torch.full((), -1, device=device, dtype=torch.int64)
        seen = 0
        for b in range(self.steps_per_epoch):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            state.x, state.y = self.x_train[idx], self.y_train[idx]
            self._set_lr(state)
            self._fire("on_batch_begin", state)
            out = model(state.x)
            loss = self.loss_fn(out, state.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            state.loss = loss.detach()
            self._fire("on_before_optimizer_step", state)
            opt.step()
            with torch.no_grad():  # few dispatches: at ~3 ms per step each extra op costs ~0.2% (bench/trainer_overhead.py)
                loss_sum.add_(state.loss, alpha=len(idx))  # = loss.double()·n added in float64 (n·loss is exact)
                correct += (out.detach().argmax(dim=1) == state.y).sum()
                first_bad.masked_fill_(~torch.isfinite(state.loss) & (first_bad < 0), state.step)
            seen += len(idx)
            state.step += 1
            self._fire("on_batch_end", state)
            last = b == self.steps_per_epoch - 1
            if (state.step % self.check_every == 0 or last) and int(first_bad) >= 0:
                state.status, state.diverged_step = "diverged", int(first_bad)
                state.stop, state.stop_reason = True, f"non-finite loss at step {state.diverged_step}"
                break
            if state.stop:
                break
        state.x = state.y = None
        metrics = {"epoch": state.epoch + 1, "step": state.step, "lr": state.lr,
                   "train_loss": loss_sum.item() / max(seen, 1), "train_accuracy": correct.item() / max(seen, 1)}
        if state.status != "diverged" and self.val is not None and len(self.val[0]):
            val = evaluate(state.eval_model or model, *self.val, batch_size=self.eval_batch_size,
                           loss_fn=self.loss_fn)
            metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            self._fire("on_evaluate", state, "val", val)
        metrics["epoch_seconds"] = time.perf_counter() - epoch_start
        state.epoch_metrics.update(metrics)
        self._fire("on_epoch_end", state)
        state.history.append(dict(state.epoch_metrics))

    # -- checkpoints ------------------------------------------------------------------------------------------
    def _save(self, state: TrainState) -> None:
        assert self.checkpoint_dir is not None
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        save_checkpoint(self.checkpoint_dir, {
            "epoch": state.epoch,
            "step": state.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": cuda_rng,
            "history": state.history,
            "lr_scale": state.lr_scale,
            "stop": state.stop,
            "stop_reason": state.stop_reason,
            "status": state.status,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
        })

    def _restore(self, state: TrainState) -> None:
        if self.checkpoint_dir is None:
            raise ValueError("resume needs a checkpoint_dir")
        # a checkpoint whose tensors do not fit this model (another width, say) is passed over like a damaged one
        ckpt = load_checkpoint(self.checkpoint_dir, map_location=self.x_train.device,
                               fits=lambda c: training_state_mismatch(c, self.model, self.optimizer))
        if ckpt is None:
            return  # killed before the first epoch ended: start from the beginning
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        if ckpt["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        state.epoch, state.step = ckpt["epoch"], ckpt["step"]
        state.history = list(ckpt["history"])
        state.lr_scale = ckpt["lr_scale"]
        state.stop, state.stop_reason, state.status = ckpt["stop"], ckpt["stop_reason"], ckpt["status"]
        for cb, cb_state in zip(self.callbacks, ckpt["callbacks"]):
            cb.load_state_dict(cb_state)
