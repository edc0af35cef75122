"""The Trainer: a plain, fast loop over in-memory tensors — or any ``Dataset``/``DataLoader`` — with a small fixed
set of events.

Hot path (tensors): data lives on the device, batches are index slices of a per-epoch permutation (no per-sample
Python, no DataLoader), and the loop never reads a device value back to the host on an ordinary step: the
loss sum, the correct count and the first non-finite step are accumulated as device tensors and read every
``check_every`` steps and at the end of each epoch. Data that is not a pair of tensors comes in batches from
``tricklab.data.loader`` (in the same seeded order where the Trainer orders it), moved to the model's device. The
loop and its rules are ``tricklab.train.loop`` (shared
with the population engine); the Trainer is its learner for one model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tricklab.data.loader import DataBatches, EpochBatches, evaluation_batches, is_data, known_length
from tricklab.train import distributed, loop
from tricklab.train.checkpoint import load_checkpoint, save_checkpoint, training_state_mismatch
from tricklab.train.distributed import World
from tricklab.train.events import Callback, TrainState
from tricklab.train.loop import batches_per_epoch, epoch_order, scheduled_lr, split_metrics
from tricklab.train.loop import data_order_generator as data_order_generator  # re-exported (its old home)
from tricklab.tricks.accumulation import micro_batches
from tricklab.tricks.augment import Augment, batch_generator
from tricklab.tricks.precision import autocast, loss_scaler
from tricklab.tricks.precision import refusal as precision_refusal
from tricklab.tricks.schedules import apply_lr
from tricklab.tricks.soft_targets import lambda_rng, mixed_loss, mixup, smoothed_loss

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Examples per evaluation batch. Small enough that a small model's activations stay in a CPU's cache: 16 default
# CNNs evaluated on MNIST-1D's 3,600 training examples take 1.38 s of CPU at 512 against 2.23 s at 2048 (1 thread,
# 2 MB of L2 per core); the result differs only by the rounding of the float32 batch means.
EVAL_BATCH = 512


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor | Dataset | DataLoader, y: torch.Tensor | None = None, *,
             batch_size: int = EVAL_BATCH, loss_fn: LossFn = F.cross_entropy) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` on (x, y) — or on every example of a ``Dataset``/``DataLoader`` ``x``
    (in its own order, on the model's device) — in eval mode; one host sync at the end."""
    was_training = model.training
    model.eval()
    if is_data(x):
        device = _device_of(model)
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = evaluation_batches(x, batch_size, device)
    else:
        assert isinstance(x, torch.Tensor) and y is not None
        device = x.device
        batches = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size))
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    for xb, yb in batches:
        out = model(xb)
        loss_sum += loss_fn(out, yb).double() * len(yb)
        correct += (out.argmax(dim=1) == yb).sum()
        n += len(yb)
    model.train(was_training)
    return split_metrics(loss_sum, correct, n)[0]


def evaluate_split(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader | None,
                   **kwargs: Any) -> dict[str, float | None] | None:
    """``evaluate`` on a split as a run holds it — a pair of tensors or a ``Dataset``/``DataLoader`` — or None for
    a split that is absent or empty."""
    if data is None or (isinstance(data, tuple) and not len(data[0])):
        return None
    return dict(evaluate(model, *data, **kwargs) if isinstance(data, tuple) else evaluate(model, data, **kwargs))


def _device_of(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


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

    ``train`` and ``val`` are pairs of tensors (the fast path: the data lives on the device, batches are index
    slices) or any ``torch.utils.data.Dataset`` or ``DataLoader`` — map-style or iterable, any collate function,
    worker processes — whose batches are (inputs, labels) (``tricklab.data.loader``: the order is the same seeded
    permutation as the tensor path's where the Trainer orders the data). A dataset is batched by ``batch_size``
    with ``num_workers`` workers; a loader keeps its own batch size and workers.

    Tricks of the step itself (each in ``tricklab.tricks``): ``precision`` "bf16" or "fp16" (autocast; fp16 with a
    dynamic loss scale, CUDA only: ``tricks.precision``), ``accumulate`` = N (each optimizer step takes N·batch_size
    examples as N micro-batches: ``tricks.accumulation``), ``augment`` (``tricks.augment``), ``mixup`` = α and
    ``label_smoothing`` = ε (``tricks.soft_targets``: training loss only; validation reports ``loss_fn``). Without
    any of them the step is the plain one.

    ``lr_schedule`` maps the global step to a learning rate (see ``tricklab.tricks.schedules``); the value,
    times ``state.lr_scale`` (metric-driven schedules write it) and each group's ``lr_scale``, is written into
    the optimizer before every step. With ``checkpoint_dir`` the full training state is saved atomically at
    the end of every epoch, and ``fit(resume=True)`` continues from it exactly.

    ``evals_per_epoch`` = k > 1 validates k times per epoch (evenly spaced steps, the last at the epoch's end; the
    epoch-end validation and its events as with k = 1): each evaluation's step, training seconds, validation loss
    and accuracy in the epoch's history row under ``"evals"`` (``tricklab.train.loop``), for time-to-accuracy at
    a finer resolution than an epoch. Evaluation leaves training as it was: the numbers at epoch ends equal k = 1's.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader,
        val: tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader | None = None,
        *,
        epochs: int,
        batch_size: int,
        seed: int = 0,
        lr_schedule: Callable[[int], float] | None = None,
        callbacks: Sequence[Callback] = (),
        loss_fn: LossFn = F.cross_entropy,
        checkpoint_dir: str | Path | None = None,
        check_every: int = 25,
        eval_batch_size: int = EVAL_BATCH,
        num_workers: int = 0,
        precision: str = "fp32",
        accumulate: int = 1,
        augment: Augment | None = None,
        mixup: float = 0.0,
        label_smoothing: float = 0.0,
        world: World | None = None,
        evals_per_epoch: int = 1,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.val = val
        self.epochs = epochs
        self.seed = seed
        self.lr_schedule = lr_schedule
        self.callbacks = list(callbacks)
        self.loss_fn = loss_fn
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.check_every = max(1, check_every)
        self.eval_batch_size = eval_batch_size
        self.data: DataBatches | None = None
        if is_data(train):
            self.device = _device_of(model)
            self.x_train = self.y_train = None
            self.data = DataBatches(train, batch_size=batch_size, device=self.device, num_workers=num_workers,
                                    accumulate=accumulate,
                                    order=lambda epoch, n: epoch_order(seed, epoch, n),
                                    seeds=lambda epoch: data_order_generator(seed, epoch), steps=batches_per_epoch)
            self.batch_size = self.data.batch_size
            self.num_examples: int | None = known_length(self.data.dataset)   # None: an iterable without a length
            self.steps_per_epoch = self.data.steps_per_epoch or 0
            self.batches = self._data_batches
        else:
            self.x_train, self.y_train = train
            self.device = self.x_train.device
            self.batch_size = min(batch_size * accumulate, len(self.x_train))
            self.num_examples = len(self.x_train)
            self.steps_per_epoch = batches_per_epoch(len(self.x_train), self.batch_size)
            self.batches = None   # the loop's tensor fast path
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        if isinstance(evals_per_epoch, bool) or not isinstance(evals_per_epoch, int) or evals_per_epoch < 1:
            raise ValueError(f"evals_per_epoch must be a whole number >= 1, got {evals_per_epoch!r}")
        self.evals_per_epoch = evals_per_epoch
        if label_smoothing and loss_fn is not F.cross_entropy:
            raise ValueError("label_smoothing smooths the cross-entropy's targets; this Trainer has another loss_fn")
        problem = precision_refusal(precision, self.device)
        if problem:
            raise ValueError(problem)
        self.precision, self.accumulate, self.augment, self.mixup = precision, accumulate, augment, mixup
        self.train_loss: LossFn = smoothed_loss(label_smoothing) if label_smoothing else loss_fn
        self.scaler = loss_scaler(precision, self.device)
        # the plain step (no trick in the step itself): today's fast path, op for op
        self._plain = precision == "fp32" and accumulate == 1 and augment is None and not mixup \
            and not label_smoothing
        self.world = world   # several processes (tricklab.train.distributed): each trains its shard of a batch
        if world is not None and not self._plain:
            raise ValueError("several processes train the plain step only: precision fp32, accumulate 1, no "
                             "augment, mixup or label smoothing")
        self._ddp = distributed.wrap(model, self.device) if world is not None else None
        self.wall_seconds = 0.0
        self.rows: list[TrainState] = []   # the loop's rows: this run's state while ``fit`` runs

    # -- events -----------------------------------------------------------------------------------------------
    def _fire(self, event: str, state: TrainState, *args: Any) -> None:
        loop.fire(self.callbacks, event, state, *args)

    def _set_lr(self, state: TrainState) -> None:
        if self.lr_schedule is None:
            state.lr = self.optimizer.param_groups[0]["lr"]
            return
        state.lr = scheduled_lr(self.lr_schedule, state)
        apply_lr(self.optimizer, state.lr)

    # -- the loop (``tricklab.train.loop``, with this Trainer as its learner of one row) ----------------------
    def fit(self, resume: bool = False) -> TrainState:
        """Run the remaining epochs; returns the final ``TrainState`` (status, history, step, ...)."""
        state = TrainState(self, self.model, self.optimizer, steps_per_epoch=self.steps_per_epoch)
        if resume:
            self._restore(state)
        started = time.perf_counter()
        self.rows = [state]
        loop.fit(self)
        self.wall_seconds = time.perf_counter() - started
        return state

    def data_seeds(self) -> int:
        return self.seed

    def epochs_of(self, row: int) -> int:
        return self.epochs

    def callbacks_of(self, row: int) -> Sequence[Callback]:
        return self.callbacks

    def begin_epoch(self) -> None:
        self.model.train()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.rows[0]
        state.x, state.y = x, y
        self._set_lr(state)
        self._fire("on_batch_begin", state)
        if self._ddp is not None:
            out, loss = self._sharded_forward_backward(x, y)
        elif self._plain:
            out = self.model(x)
            loss = self.loss_fn(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        else:
            out, loss = self._tricked_forward_backward(x, y, state.step)
        state.loss = loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)   # callbacks (clipping, the doctor) see the true gradients
        self._fire("on_before_optimizer_step", state)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)       # skipped when a gradient overflowed; the scale adapts
            self.scaler.update()
        else:
            self.optimizer.step()
        return state.loss, out

    def _sharded_forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's shard of the global batch through DDP (gradients all-reduced: the global batch's mean
        gradient, ``distributed.shard_weight``); returns the global batch's logits and mean loss, the same in
        every process."""
        assert self.world is not None and self._ddp is not None
        xs, ys = distributed.shard(x, self.world), distributed.shard(y, self.world)
        out = self._ddp(xs)
        loss = self.loss_fn(out, ys)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * distributed.shard_weight(len(ys), len(y), self.world)).backward()
        with torch.no_grad():
            return (distributed.gather_batch(out.detach(), len(y), self.world),
                    distributed.global_mean_loss(loss, len(ys), len(y)))

    def _tricked_forward_backward(self, x: torch.Tensor, y: torch.Tensor, step: int
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward of one optimizer step with the step's tricks: augmentation and mixup (random
        numbers from (seed, step) alone: ``tricks.augment.batch_generator``), ``accumulate`` micro-batches
        (``tricks.accumulation``), autocast and the loss scale (``tricks.precision``), label smoothing. Returns
        the logits of the (augmented, mixed) batch and its mean loss."""
        generator = batch_generator(self.seed, step, x.device) if self.augment is not None or self.mixup else None
        if self.augment is not None:
            x = self.augment(x, generator)
        targets, lam = y.unsqueeze(1), 1.0
        if self.mixup:
            x, y_a, y_b, lam = mixup(x, y, self.mixup, generator, lambda_rng(self.seed, step))
            targets = torch.stack([y_a, y_b], dim=1)
        self.optimizer.zero_grad(set_to_none=True)
        outs, total = [], torch.zeros((), device=x.device)
        for xb, tb, weight in micro_batches(x, targets, self.accumulate):
            with autocast(self.precision, x.device):
                out = self.model(xb)
            logits = out.float() if out.dtype in (torch.float16, torch.bfloat16) else out   # the loss in ≥ fp32
            loss = self.train_loss(logits, tb[:, 0]) if not self.mixup else \
                mixed_loss(self.train_loss, logits, tb[:, 0], tb[:, 1], lam)
            scaled = loss * weight if weight != 1.0 else loss
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            outs.append(logits.detach())
            total = total + loss.detach() * weight
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), total

    def end_step(self) -> None:
        self._fire("on_batch_end", self.rows[0])

    def _data_batches(self, epoch: int) -> EpochBatches:
        assert self.data is not None
        return EpochBatches(self.data, epoch)

    def validate(self) -> list[dict[str, float] | None]:
        model = self.rows[0].eval_model or self.model
        if self.world is not None:   # every process evaluates the same model
            distributed.average_buffers(model)
        if is_data(self.val):
            return [evaluate(model, self.val, batch_size=self.eval_batch_size, loss_fn=self.loss_fn)]
        if self.val is None or not len(self.val[0]):
            return [None]
        return [evaluate(model, *self.val, batch_size=self.eval_batch_size, loss_fn=self.loss_fn)]

    def validate_between(self) -> list[dict[str, float] | None]:
        """An evaluation inside an epoch (``evals_per_epoch`` > 1): as ``validate``, but several processes do not
        average their batch-norm statistics first (that would change what each process trains on from here; the
        epoch end averages them as always) — process 0 records its own model's numbers."""
        if self.world is None:
            return self.validate()
        model = self.rows[0].eval_model or self.model
        return [evaluate_split(model, self.val, batch_size=self.eval_batch_size, loss_fn=self.loss_fn)]  # type: ignore[list-item]

    def end_epoch(self) -> None:
        if self.checkpoint_dir is not None:
            self._save(self.rows[0])

    def keep(self, rows: list[int]) -> None:
        self.rows = [self.rows[r] for r in rows]

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
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
        })

    def _restore(self, state: TrainState) -> None:
        if self.checkpoint_dir is None:
            raise ValueError("resume needs a checkpoint_dir")
        # a checkpoint whose tensors do not fit this model (another width, say) is passed over like a damaged one
        ckpt = load_checkpoint(self.checkpoint_dir,
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
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
