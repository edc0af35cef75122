"""The training loop, written once: epochs of optimizer steps over in-memory tensors, for one model (the
``Trainer``) or for K models that advance in lock step (``tricklab.population``: K members as one stacked model).

The loop holds the rules, a ``Learner`` the arithmetic. A *row* is one model being trained, with its own
``TrainState`` and callbacks (the Trainer has one row; a population one per member). Each rule is written here
and nowhere else:

- data order: row r's batches of epoch e are a permutation that depends on (seed_r, e) alone (``epoch_order``),
  cut into ``steps_per_epoch`` slices of ``batch_size`` columns (``batches_per_epoch``);
- learning rate: the row's schedule at its global step times its ``lr_scale`` (``scheduled_lr``);
- the epoch's training loss, accuracy and first non-finite step of every row are sums on the device
  (``EpochTotals``), read every ``check_every`` steps and at the end of the epoch — no host sync on an
  ordinary step;
- divergence: a row whose loss turned non-finite is marked diverged at the next check (``mark_diverged``), ends
  its epoch without validation and leaves; the other rows go on untouched;
- the epoch's metrics (the names and order of ``TrainState.history``), validation and its ``on_evaluate``,
  ``on_epoch_end``, the history;
- the evaluation cadence: a learner with ``evals_per_epoch`` = k > 1 (an optional attribute; 1 when absent) is also
  validated k − 1 times inside each epoch, after the steps ``eval_steps`` plans (evenly spaced). Each evaluation
  is recorded as ``{"step", "seconds", "val_loss", "val_accuracy"}`` — ``seconds``: wall seconds of training
  since the run began, the evaluations' own time left out — in the epoch's history row under ``"evals"``, the
  epoch-end validation last (``EVALS``). It fires no event and changes nothing the training sees: the model is
  evaluated in eval mode under ``no_grad`` (no random numbers drawn, batch-norm statistics untouched) and is back in
  training mode after, so the epoch-end numbers of k = 4 are those of k = 1. With k = 1 the history is exactly
  what it was before the cadence existed (no ``"evals"`` key). A learner may evaluate in between with its own
  ``validate_between()`` (optional; default ``validate``);
- leaving: a row leaves when it diverged, ran its epochs, or a callback wrote ``state.stop`` (in the middle of an
  epoch the epoch ends once every row has); ``on_fit_end`` fires for it, then the learner drops it.

Events, per row, in the order of ``tricklab.train.events``: the loop fires ``on_fit_begin``,
``on_epoch_begin``, ``on_evaluate``, ``on_epoch_end`` and ``on_fit_end`` to ``learner.callbacks_of(row)``. The
batch events belong to the learner's step: the Trainer fires them to its callbacks; a population has no
per-member batch callbacks (its probes measure every member at once and go to the members' observers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from tricklab.train.events import Callback, TrainState
from tricklab.train.rows import EVALS


def data_order_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG of one epoch's batch order: a function of (seed, epoch) alone, so a resumed run sees the same
    order as an uninterrupted one without saving generator state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63 - 1))


def epoch_order(seed: int, epoch: int, n: int) -> Tensor:
    """The order in which a run with ``seed`` visits the ``n`` training examples in ``epoch`` (on the CPU)."""
    return torch.randperm(n, generator=data_order_generator(seed, epoch))


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps per epoch for ``n`` examples. A last batch of a single example would break batch norm
    in training mode, so it is dropped (those examples are drawn again, in other batches, next epoch)."""
    bs = min(batch_size, n)
    return n // bs + (1 if n % bs > 1 else 0)


def scheduled_lr(schedule: Callable[[int], float], state: TrainState) -> float:
    """η of the row's next step: its schedule at its global step times its ``lr_scale`` (the plateau schedule
    and the doctor's repairs write the scale)."""
    return schedule(state.step) * state.lr_scale


def mark_diverged(state: TrainState, step: int) -> None:
    """The row's loss was non-finite at ``step``: it stops, diverged."""
    state.status, state.diverged_step = "diverged", step
    state.stop, state.stop_reason = True, f"non-finite loss at step {step}"


def split_metrics(loss_sum: Tensor, correct: Tensor, n: int) -> list[dict[str, float]]:
    """Per row, the mean loss and accuracy over ``n`` examples from device sums (one host read each); a
    non-finite mean loss reads NaN (+inf and NaN alike: the run has no usable loss there)."""
    n = max(n, 1)
    losses = [v / n for v in loss_sum.reshape(-1).tolist()]
    return [{"loss": v if math.isfinite(v) else float("nan"), "accuracy": c / n}
            for v, c in zip(losses, correct.reshape(-1).tolist())]


def eval_steps(steps: int, evals_per_epoch: int) -> list[int]:
    """The batches of an epoch of ``steps`` optimizer steps (counted from 1) after which the k − 1 evaluations
    inside the epoch run: ⌊j·steps/k⌋ for j = 1 … k − 1, evenly spaced; the k-th is the epoch's end. A batch
    planned twice (k > steps) is evaluated once; an epoch of unknown length (an iterable dataset) has none."""
    k = evals_per_epoch
    return sorted({j * steps // k for j in range(1, k)} - {0, steps}) if steps > 0 and k > 1 else []


def synced_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device has run the work queued on it (CUDA and MPS run asynchronously:
    without the wait, training kernels still queued would be timed as the evaluation that waits for them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


def trained_seconds(history: Sequence[Mapping[str, Any]]) -> float:
    """Wall seconds of training recorded in ``history`` (a resumed run's start): the ``seconds`` of its latest
    evaluation (``EVALS``), 0 when it has none."""
    for row in reversed(history):
        evals = row.get(EVALS)
        if isinstance(evals, list) and evals:
            return float(evals[-1]["seconds"])
    return 0.0


def fire(callbacks: Sequence[Callback], event: str, state: TrainState, *args: Any) -> None:
    """Call ``event`` of every callback, in order."""
    for cb in callbacks:
        getattr(cb, event)(state, *args)


class EpochTotals:
    """One epoch's running sums per row, on the device: loss × examples (float64), correct predictions, and the
    first step with a non-finite loss (-1: none yet). Every row sees the same number of examples (``seen``).
    With an evaluation cadence (``evals_per_epoch`` > 1): each row's evaluations so far (``evals``), its training
    seconds before this epoch (``before``), and the seconds this epoch spent evaluating (``eval_seconds``)."""

    def __init__(self, rows: int, device: torch.device) -> None:
        self.loss_sum = torch.zeros(rows, dtype=torch.float64, device=device)
        self.correct = torch.zeros(rows, dtype=torch.int64, device=device)
        self.first_bad = torch.full((rows,), -1, dtype=torch.int64, device=device)
        self.seen = 0
        self.evals: list[list[dict[str, float]]] | None = None   # None: no cadence (k = 1)
        self.before: list[float] = []
        self.eval_seconds = 0.0

    def add(self, losses: Tensor, logits: Tensor, y: Tensor, step: int) -> None:
        """Count one step: ``losses`` (one per row: shape () for one model, (K,) stacked), ``logits`` (…, B,
        classes) and labels ``y`` (…, B). Call under ``torch.no_grad()``; three small kernels, no host sync."""
        n = y.shape[-1]
        self.loss_sum.add_(losses, alpha=n)  # = losses.double()·n added in float64 (n·loss is exact)
        self.correct += (logits.argmax(dim=-1) == y).sum(dim=-1)
        self.first_bad.masked_fill_(~torch.isfinite(losses) & (self.first_bad < 0), step)
        self.seen += n

    def attach(self, rows: Sequence[TrainState]) -> None:
        """Give each row a view of its first non-finite step (``TrainState.first_bad_step``: a callback that
        repairs a run in place resets it)."""
        for r, state in enumerate(rows):
            state.first_bad_step = self.first_bad[r]

    def nonfinite(self) -> dict[int, int]:
        """Row → first step with a non-finite loss, for the rows that had one (one host read)."""
        return {r: step for r, step in enumerate(self.first_bad.tolist()) if step >= 0}

    def means(self) -> list[tuple[float, float]]:
        """Per row: the epoch's mean training loss (as it is: ±inf or NaN after a non-finite step) and accuracy
        so far."""
        n = max(self.seen, 1)
        return [(v / n, c / n) for v, c in zip(self.loss_sum.tolist(), self.correct.tolist())]

    def keep(self, rows: list[int]) -> None:
        self.loss_sum, self.correct, self.first_bad = (t[rows] for t in (self.loss_sum, self.correct, self.first_bad))
        if self.evals is not None:
            self.evals, self.before = [self.evals[r] for r in rows], [self.before[r] for r in rows]

    def record(self, rows: Sequence[TrainState], validation: list[dict[str, float] | None], trained: float) -> None:
        """Add an evaluation of every row (those with a validation split that have not diverged) after ``trained``
        seconds of training in this epoch."""
        assert self.evals is not None
        for r, (state, val) in enumerate(zip(rows, validation, strict=True)):
            if val is not None and state.status != "diverged":
                self.evals[r].append({"step": state.step, "seconds": self.before[r] + trained,
                                      "val_loss": val["loss"], "val_accuracy": val["accuracy"]})


class Learner(Protocol):
    """What ``fit`` trains: K ≥ 1 models in lock step. ``rows`` holds the ``TrainState`` of every model still
    training, in row order — the order of every per-row tensor and list below."""

    rows: list[TrainState]
    x_train: Tensor
    y_train: Tensor
    device: torch.device
    batch_size: int
    steps_per_epoch: int
    check_every: int

    def data_seeds(self) -> int | list[int]:
        """The seed of the data order: one (one model, batches (B, …)) or one per row (stacked, (K, B, …))."""
        ...

    def epochs_of(self, row: int) -> int:
        """How many epochs the row trains (unless it stops or diverges first)."""
        ...

    def callbacks_of(self, row: int) -> Sequence[Callback]:
        """The row's callbacks, which the loop gives the epoch and fit events."""
        ...

    def begin_epoch(self) -> None:
        """Before the epoch's first event (training mode, per-epoch statistics of the learner's own)."""
        ...

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One optimizer step of every row on its batch: learning rates (``scheduled_lr``), forward, loss,
        backward, clipping, update, and the batch events up to the update. Returns the loss of every row
        (detached) and the logits."""
        ...

    def end_step(self) -> None:
        """After the step's totals are counted and every row's ``step`` advanced (``on_batch_end``)."""
        ...

    def validate(self) -> list[dict[str, float] | None]:
        """Every row's validation ``loss`` and ``accuracy`` (eval mode); None for a row without a validation
        split."""
        ...

    def end_epoch(self) -> None:
        """After every remaining row's ``epoch`` advanced, before finished rows leave (checkpoints)."""
        ...

    def keep(self, rows: list[int]) -> None:
        """Go on with these rows only, in this order (the others left: their ``on_fit_end`` has fired)."""
        ...


def fit(learner: Learner) -> None:
    """Train every row of ``learner`` until it leaves (see the module docstring)."""
    for r, state in enumerate(learner.rows):
        fire(learner.callbacks_of(r), "on_fit_begin", state)
    _leave(learner, _finished(learner))   # a resumed run may have nothing left to do
    while learner.rows:
        run_epoch(learner)
        if learner.rows:
            learner.end_epoch()
        _leave(learner, _finished(learner))


def run_epoch(learner: Learner) -> None:
    """One epoch of every row: its steps, then validation and the epoch's metrics; diverged rows leave at the
    check that finds them."""
    learner.begin_epoch()
    for r, state in enumerate(learner.rows):
        state.epoch += 1                  # epochs are numbered from 1 (TrainState.epoch), as in the history
        state.epoch_metrics = {}
        fire(learner.callbacks_of(r), "on_epoch_begin", state)
    started = time.perf_counter()
    totals = _train_steps(learner, started)
    if learner.rows:
        ended = synced_clock(learner.device) if totals.evals is not None else 0.0
        validation = learner.validate()
        if totals.evals is not None:
            totals.record(learner.rows, validation, ended - started - totals.eval_seconds)
        _end_epoch(learner, range(len(learner.rows)), totals, started, validation)


class TensorBatches:
    """The fast path: an epoch's batches as index slices of ``learner.x_train``/``y_train`` (on the device) in the
    epoch's order — (B, …) for one model, (K, B, …) for K stacked rows; ``keep`` follows the rows that remain."""

    def __init__(self, learner: Learner, epoch: int) -> None:
        self.learner, self.order = learner, _order(learner, epoch)
        self.steps: int | None = learner.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        x, y, bs = self.learner.x_train, self.learner.y_train, self.learner.batch_size
        for b in range(self.learner.steps_per_epoch):
            idx = self.order[..., b * bs:(b + 1) * bs]
            yield x[idx], y[idx]

    def keep(self, rows: list[int]) -> None:
        self.order = self.order[rows]


class Batches(Protocol):
    """An epoch's training batches for ``fit``: (x, y) pairs on the learner's device; ``steps`` of them (None:
    unknown until the iterator ends, an iterable dataset without a length); ``keep`` as ``Learner.keep``."""

    steps: int | None

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def keep(self, rows: list[int]) -> None: ...


def epoch_batches(learner: Learner, epoch: int) -> Batches:
    """The learner's batches of ``epoch`` (counted from 0): its own (``learner.batches(epoch)``: a dataset or a
    ``DataLoader``) where it has them, else the tensor fast path (``TensorBatches``)."""
    own = getattr(learner, "batches", None)
    return own(epoch) if own is not None else TensorBatches(learner, epoch)


def _train_steps(learner: Learner, started: float) -> EpochTotals:
    """The epoch's optimizer steps, until its last batch or until every row has stopped."""
    rows = learner.rows
    batches = epoch_batches(learner, rows[0].epoch - 1)   # the data order's epoch index counts from 0
    totals = EpochTotals(len(rows), learner.device)
    totals.attach(rows)
    last = batches.steps - 1 if batches.steps is not None else -1
    cadence = getattr(learner, "evals_per_epoch", 1)
    planned: set[int] = set()
    if cadence > 1:
        totals.evals, totals.before = [[] for _ in rows], [trained_seconds(state.history) for state in rows]
        planned = set(eval_steps(batches.steps or 0, cadence))
    checked = False
    for b, (x, y) in enumerate(batches):
        step = rows[0].step
        losses, logits = learner.train_step(x, y)
        with torch.no_grad():  # few dispatches: at ~3 ms per step each extra op costs ~0.2% (bench/trainer_overhead.py)
            totals.add(losses, logits, y, step)
        for state in rows:
            state.step += 1
        learner.end_step()
        checked = (step + 1) % learner.check_every == 0 or b == last
        if checked:
            rows = _check(learner, totals, started, batches)
        if all(state.stop for state in rows):   # also when no row is left
            break
        if b + 1 in planned:
            _evaluate_between(learner, totals, started)
    else:
        if not checked and totals.seen:   # a source of unknown length ended: its last batch is checked here
            _check(learner, totals, started, batches)
    return totals


def _evaluate_between(learner: Learner, totals: EpochTotals, started: float) -> None:
    """An evaluation inside the epoch (``evals_per_epoch`` > 1): every row's validation metrics, recorded with the
    step and the training seconds so far; its own time is counted in ``totals.eval_seconds``, not as training."""
    now = synced_clock(learner.device)
    validate = getattr(learner, "validate_between", learner.validate)
    totals.record(learner.rows, validate(), now - started - totals.eval_seconds)
    totals.eval_seconds += synced_clock(learner.device) - now


def _check(learner: Learner, totals: EpochTotals, started: float, batches: Batches) -> list[TrainState]:
    """The check every ``check_every`` steps and at the epoch's last: diverged rows leave (``_drop_diverged``)."""
    kept = _drop_diverged(learner, totals, started)
    if kept is not None:
        batches.keep(kept)
    return learner.rows


def _order(learner: Learner, epoch: int) -> Tensor:
    """This epoch's data order: (n,) for one model, (K, n) for K stacked rows."""
    seeds, n = learner.data_seeds(), len(learner.x_train)
    order = (epoch_order(seeds, epoch, n) if isinstance(seeds, int)
             else torch.stack([epoch_order(seed, epoch, n) for seed in seeds]))
    return order.to(learner.x_train.device)


def _drop_diverged(learner: Learner, totals: EpochTotals, started: float) -> list[int] | None:
    """Rows whose loss turned non-finite are marked diverged, end their epoch (no validation) and leave. Returns
    the rows kept (None when none diverged)."""
    bad = totals.nonfinite()
    if not bad:
        return None
    for r, step in bad.items():
        mark_diverged(learner.rows[r], step)
    _end_epoch(learner, list(bad), totals, started, None)
    kept = [r for r in range(len(learner.rows)) if r not in bad]
    _leave(learner, list(bad))
    totals.keep(kept)
    totals.attach(learner.rows)
    return kept


def _end_epoch(learner: Learner, rows: Sequence[int], totals: EpochTotals, started: float,
               validation: list[dict[str, float] | None] | None) -> None:
    """The epoch's metrics of ``rows`` (the names and order every history has), their ``on_evaluate`` and
    ``on_epoch_end``, and their history."""
    train = totals.means()
    for r in rows:
        state, callbacks = learner.rows[r], learner.callbacks_of(r)
        state.x = state.y = None
        metrics = {"epoch": state.epoch, "step": state.step, "lr": state.lr,
                   "train_loss": train[r][0], "train_accuracy": train[r][1]}
        val = validation[r] if validation is not None else None
        if val is not None and state.status != "diverged":
            metrics.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            fire(callbacks, "on_evaluate", state, "val", val)
        metrics["epoch_seconds"] = time.perf_counter() - started - totals.eval_seconds
        if totals.evals is not None:
            metrics[EVALS] = totals.evals[r]   # type: ignore[assignment]  # a list: the epoch's evaluations
        state.epoch_metrics.update(metrics)
        fire(callbacks, "on_epoch_end", state)
        state.history.append(dict(state.epoch_metrics))


def _finished(learner: Learner) -> list[int]:
    return [r for r, state in enumerate(learner.rows) if state.stop or state.epoch >= learner.epochs_of(r)]


def _leave(learner: Learner, rows: list[int]) -> None:
    """``rows`` are done: their ``on_fit_end``, then the learner goes on without them."""
    if not rows:
        return
    for r in rows:
        fire(learner.callbacks_of(r), "on_fit_end", learner.rows[r])
    learner.keep([r for r in range(len(learner.rows)) if r not in rows])
