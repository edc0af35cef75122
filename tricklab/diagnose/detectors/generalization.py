"""Overfitting and too many parameters for the data — the lesson's balance of capacity against examples.

- Overfitting (AUTOTRAINER, Zhang et al. ICSE 2021, ``loss_issue``): the training accuracy exceeds the
  validation accuracy by ≥ 0.1 ("test not well"), or the validation loss rises while the training loss falls
  ("test turns bad"), on ``overfit_epochs`` (2) consecutive epochs. AUTOTRAINER uses an absolute loss change
  ε = 0.01; we use a relative 1 % so the rule does not depend on the loss's units. The training accuracy of
  an epoch is averaged over its batches while the model still improves (and with dropout on), so it is
  biased low: the gap rule is conservative early in a run.
- Too many parameters: more than ``params_per_example`` (10) parameters per training example — the capacity
  check of ``tricklab.tricks.regularization`` (the lesson: balance parameters against examples). It is a
  property of the setup, not of the run: raised once, at the first observation, and kept over ``reset``.
"""

from __future__ import annotations

from tricklab.diagnose.detectors.base import Context, Detector, EpochMetrics, Finding, Streak, finite
from tricklab.diagnose.records import ProbeRecord


class Overfitting(Detector):
    """Train/validation accuracy gap ≥ ``overfit_gap`` (0.1), or validation loss up while training loss goes
    down by more than ``overfit_change`` (1 %) each, on ``overfit_epochs`` (2) consecutive epochs."""

    kind = "overfitting"

    def reset(self) -> None:
        self.gap = Streak()
        self.turn = Streak()

    def end_epoch(self, metrics: EpochMetrics, ctx: Context) -> Finding | None:
        gap = None
        if finite(metrics.train_accuracy) and finite(metrics.val_accuracy):
            gap = float(metrics.train_accuracy) - float(metrics.val_accuracy)  # type: ignore[arg-type]
        n_gap = self.gap.update(gap is not None and gap >= self.t.overfit_gap, metrics.step)
        turned = False
        epochs = list(ctx.epochs)
        if len(epochs) >= 2:
            prev, cur = epochs[-2], epochs[-1]
            if all(finite(v) and v > 0 for v in (prev.train_loss, cur.train_loss, prev.val_loss, cur.val_loss)):
                c = self.t.overfit_change
                turned = (cur.train_loss < prev.train_loss * (1 - c)  # type: ignore[operator]
                          and cur.val_loss > prev.val_loss * (1 + c))  # type: ignore[operator]
        n_turn = self.turn.update(turned, metrics.step)
        if n_gap < self.t.overfit_epochs and n_turn < self.t.overfit_epochs:
            return None
        vals = [e.val_loss for e in epochs if finite(e.val_loss)]
        evidence = {"epoch": metrics.epoch, "train_accuracy": metrics.train_accuracy,
                    "val_accuracy": metrics.val_accuracy, "gap": gap, "train_loss": metrics.train_loss,
                    "val_loss": metrics.val_loss, "best_val_loss": min(vals) if vals else None}
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
