"""Overfitting and too many parameters for the data — the lesson's balance of capacity against examples.

- Overfitting (AUTOTRAINER, Zhang et al. ICSE 2021, ``loss_issue``): the training accuracy exceeds the
  validation accuracy by ≥ 0.1 ("test not well"), or the validation loss rises while the training loss falls
  ("test turns bad"), on ``overfit_epochs`` (2) consecutive epochs. AUTOTRAINER uses an absolute loss change
  ε = 0.01; we use a relative 1 % so the rule does not depend on the loss's units.

  Both sides are compared like with like: where the loop measured the training split as it measures the
  validation split (``train_eval_loss``/``train_eval_accuracy``: eval mode, the epoch's final weights — the
  Trainer's doctor does), those numbers are used. The running means over an epoch's batches are not a
  generalisation measure: they come from train mode (dropout on, batch statistics) and from weights that
  moved during the epoch. With batch norm and a large learning rate the running statistics lag the weights,
  so the evaluated model is bad on *both* splits (measured on the default CNN with SGD at lr 0.5: training
  split 25 % and validation 28 % in eval mode, training batches 87 %): a gap against the running means is
  then an artefact, not overfitting. The running means remain the fallback for loops that report nothing else.

  And overfitting is judged only where it can exist (Prechelt 1998, "Early Stopping — But When?": the
  validation error is only meaningful once training is stable; his training-progress measure is large during
  "unstable phases of training, where training error goes up rather than down"):
  the run has **learned** — its best validation loss so far is at most ``overfit_learned`` (0.9) × the loss at
  the start (≈ ln C for a fresh classifier: a model that never beat chance on held-out data has nothing to
  overfit) — and it is **stable** — no instability finding (NaN/Inf, exploding gradients, a loss spike, an
  oscillating loss, oversized updates) held during the epochs judged (``Context.unstable_step``), and for the
  gap rule the epoch's training loss did not rise by more than ``overfit_change`` against the epoch before
  (the turn rule requires it to fall anyway). The gap rule also counts only epochs whose validation loss is no
  new best (by ``overfit_change``): a gap measured on a few hundred examples moves by several points from
  sampling alone (an evenly spaced and a random subset of the default MLP's training split differ by 6 points
  at 50 %), and while validation still improves every epoch there is nothing to stop early.
- Too many parameters: more than ``params_per_example`` (10) parameters per training example — the capacity
  check of ``tricklab.tricks.regularization`` (the lesson: balance parameters against examples). It is a
  property of the setup, not of the run: raised once, at the first observation, and kept over ``reset``.
"""

from __future__ import annotations

from tricklab.diagnose.detectors.base import Context, Detector, EpochMetrics, Finding, Streak, finite
from tricklab.diagnose.records import ProbeRecord


def learned(ctx: Context) -> bool:
    """True unless the run is known not to have beaten chance on held-out data: its best validation loss so far
    above ``overfit_learned`` × the loss at the start (unknown start or no validation loss: True)."""
    vals = [float(e.val_loss) for e in ctx.epochs if finite(e.val_loss)]  # type: ignore[arg-type]
    start = ctx.start_loss
    return not (finite(start) and start > 0 and vals and min(vals) > ctx.thresholds.overfit_learned * start)


def stable_since(ctx: Context, epochs: int) -> bool:
    """True when no instability finding held during the last ``epochs`` epochs kept in ``ctx`` (an epoch that
    ends at step s covers the steps before s)."""
    kept = list(ctx.epochs)
    start = kept[-1 - epochs].step if len(kept) > epochs else 0
    return ctx.unstable_step is None or ctx.unstable_step < start


def training_loss_rose(epochs: list[EpochMetrics], change: float) -> bool:
    """The last epoch's training loss (the running mean the optimizer saw) rose by more than ``change``
    (relative) against the epoch before: training itself is not progressing — Prechelt's "unstable phase"."""
    if len(epochs) < 2:
        return False
    prev, cur = epochs[-2].train_loss, epochs[-1].train_loss
    return finite(prev) and finite(cur) and prev > 0 and cur > prev * (1 + change)  # type: ignore[operator]


def validation_improved(epochs: list[EpochMetrics], change: float) -> bool:
    """The last epoch's validation loss is a new best, by more than ``change`` (relative) below every earlier
    one: the model still generalises better each epoch, whatever the gap (False for the first epoch)."""
    earlier = [float(e.val_loss) for e in epochs[:-1] if finite(e.val_loss)]  # type: ignore[arg-type]
    cur = epochs[-1].val_loss if epochs else None
    return bool(earlier) and finite(cur) and cur < min(earlier) * (1 - change)  # type: ignore[operator]


def _loss_pair(prev: EpochMetrics, cur: EpochMetrics) -> tuple[float | None, float | None]:
    """The two epochs' training losses from the same source (evaluated where both have it)."""
    if finite(prev.train_eval_loss) and finite(cur.train_eval_loss):
        return prev.train_eval_loss, cur.train_eval_loss
    return prev.train_loss, cur.train_loss


class Overfitting(Detector):
    """Train/validation accuracy gap ≥ ``overfit_gap`` (0.1), or validation loss up while training loss goes
    down by more than ``overfit_change`` (1 %) each, on ``overfit_epochs`` (2) consecutive epochs — training
    measured like validation where it was, and only once the run has learned and is stable (module docstring)."""

    kind = "overfitting"

    def reset(self) -> None:
        self.gap = Streak()
        self.turn = Streak()

    def end_epoch(self, metrics: EpochMetrics, ctx: Context) -> Finding | None:
        judged = learned(ctx)
        epochs = list(ctx.epochs)
        gap = None
        if finite(metrics.fit_accuracy) and finite(metrics.val_accuracy):
            gap = float(metrics.fit_accuracy) - float(metrics.val_accuracy)  # type: ignore[arg-type]
        stable = stable_since(ctx, 1) and not training_loss_rose(epochs, self.t.overfit_change)
        widening = gap is not None and gap >= self.t.overfit_gap and not validation_improved(epochs, self.t.overfit_change)
        n_gap = self.gap.update(judged and stable and widening, metrics.step)
        turned = False
        if judged and stable_since(ctx, 2) and len(epochs) >= 2:   # both epochs compared were stable
            prev, cur = epochs[-2], epochs[-1]
            train_prev, train_cur = _loss_pair(prev, cur)
            if all(finite(v) and v > 0 for v in (train_prev, train_cur, prev.val_loss, cur.val_loss)):
                c = self.t.overfit_change
                turned = (train_cur < train_prev * (1 - c)  # type: ignore[operator]
                          and cur.val_loss > prev.val_loss * (1 + c))  # type: ignore[operator]
        n_turn = self.turn.update(turned, metrics.step)
        if n_gap < self.t.overfit_epochs and n_turn < self.t.overfit_epochs:
            return None
        vals = [e.val_loss for e in epochs if finite(e.val_loss)]
        evidence = {"epoch": metrics.epoch, "train_accuracy": metrics.fit_accuracy,
                    "val_accuracy": metrics.val_accuracy, "gap": gap, "train_loss": metrics.fit_loss,
                    "val_loss": metrics.val_loss, "best_val_loss": min(vals) if vals else None,
                    "train_evaluated": 1.0 if finite(metrics.train_eval_accuracy) else 0.0}
        if n_gap >= self.t.overfit_epochs:
            return self.finding(self.gap.start(metrics.step), "gap", (), evidence)
        prev_val = epochs[-1 - self.t.overfit_epochs].val_loss if len(epochs) > self.t.overfit_epochs else None
        evidence["val_loss_before"] = prev_val
        return self.finding(self.turn.start(metrics.step), "val_rising", (), evidence)


class TooManyParameters(Detector):
    """More than ``params_per_example`` (10) parameters per training example (needs ``num_params`` and
    ``num_examples`` given to the doctor); checked at the first record or epoch."""

    kind = "too_many_parameters"

    def _check(self, step: int, ctx: Context) -> Finding | None:
        p, n = ctx.num_params, ctx.num_examples
        if p is None or n is None or p <= self.t.params_per_example * max(n, 0):
            return None
        per = p / n if n > 0 else float("inf")
        return self.finding(step, "capacity", (), {"num_params": p, "num_examples": n, "params_per_example": per,
                                                   "limit": self.t.params_per_example}, explainable=False)

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        return self._check(record.step, ctx)

    def end_epoch(self, metrics: EpochMetrics, ctx: Context) -> Finding | None:
        return self._check(metrics.step, ctx)
