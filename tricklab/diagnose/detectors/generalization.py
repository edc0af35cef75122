"""Overfitting, judged statistically, and too many parameters for the data (advice, not an alarm).

Overfitting is a claim about held-out data, so it must be more than the noise of a finite validation set:

- **Validation loss rising** (AUTOTRAINER's "test turns bad", Zhang et al. ICSE 2021; Prechelt 1998's
  generalisation loss): the validation loss is above its best so far by more than ``overfit_z`` (2) standard
  errors — the SE from the per-example losses, std/√n, which the loop reports as ``val_loss_se`` (a 360-example
  validation set at loss 0.3 has an SE of ≈ 0.03, so "rose by 1 %" is noise) — on ``overfit_epochs`` (2)
  consecutive epochs, while the training loss is no worse than at the best epoch (training itself is fine)
  and the validation accuracy is within ``overfit_gap`` of its best: memorising raises the held-out loss while
  the held-out accuracy stays (the model grows over-confident on the examples it gets wrong); a collapse of the
  accuracy is the evaluated model becoming unstable — batch norm's running statistics lagging weights that SGD
  moves fast (measured: the user corpus's BN CNN at SGD 0.1, 96 % → 58 % → 97 % in three epochs).
  Without an SE, one is approximated from the split's size and error rate (``loss_noise``); without either,
  the rise must be half the best loss (the loss of 144 digits rose 19 % on noise alone, accuracy unchanged).
- **Train/validation gap** (AUTOTRAINER's "test not well"): training accuracy − validation accuracy ≥
  ``overfit_gap`` (0.1) *and* beyond 2 standard errors of the difference (√(a(1 − a)/n) per side), on
  ``overfit_epochs`` consecutive epochs whose validation loss is no new best (a gap of ``overfit_gap_large``, 0.3,
  counts whatever the validation loss does: 60 memorised examples at 100 % against 18 % held out, the held-out
  loss creeping down from its peak, is overfitting) — and only where the training split was measured exactly as
  the validation split is (``train_eval_*``: eval mode, the epoch's final weights,
  an average where one is kept). Running means over an epoch's batches come from train mode (dropout on, batch
  statistics) and from moving weights: with batch norm or an EMA their gap to the evaluated model is an
  artefact (the default CNN at SGD lr 0.5: batches 87 %, the same weights evaluated 25 % on the training split
  and 28 % on validation). Loops that report only running means get the loss rule alone.

Both only where overfitting can exist (Prechelt 1998: the validation error is meaningful only once training is
stable). The gap rule needs the training split fit well above chance (evaluated accuracy at least chance +
``overfit_above_chance`` × (1 − chance)); the loss rule needs the run to have **learned** on held-out data — its
validation accuracy is at least chance + ``overfit_above_chance`` (0.15)
× (1 − chance), 23.5 % for ten classes (without an accuracy or a class count: its best validation loss ≤
``overfit_learned`` × the loss at the start) — and it is **stable**: no instability finding (NaN/Inf, exploding
gradients, a loss spike, oscillation, oversized updates, a learning rate too high) in the epochs judged, and
the training loss did not rise by more than ``overfit_change`` against the epoch before.

Too many parameters: more than ``params_per_example`` (10) parameters per training example — the capacity
check of ``tricklab.tricks.regularization``. It is advice about the setup, not a diagnosis of the run: the
doctor keeps it in ``Doctor.info``; where overfitting is observed, the numbers become that alarm's evidence.
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


def chance_level(ctx: Context) -> float | None:
    """1/C for a classifier with C classes (None when unknown)."""
    c = ctx.classes
    return 1.0 / c if c and c >= 2 else None


def has_learned(ctx: Context, metrics: EpochMetrics) -> bool:
    """Validation accuracy well above chance (see the module docstring); the loss-based ``learned`` without an
    accuracy or a class count."""
    chance = chance_level(ctx)
    if chance is None or not finite(metrics.val_accuracy):
        return learned(ctx)
    return metrics.val_accuracy >= chance + ctx.thresholds.overfit_above_chance * (1 - chance)  # type: ignore[operator]


def loss_noise(metrics: EpochMetrics) -> float | None:
    """The validation loss's standard error: as reported (``val_loss_se``), else approximated from the split's size
    n and the error rate e = 1 − accuracy as loss/√(e·n) — the SE of a loss that is ≈ 0 on the examples classified
    right and large on the e·n others, which is what a classifier's per-example cross-entropy looks like (ours;
    max(e, 1/n) keeps it finite). None when neither is known."""
    if finite(metrics.val_loss_se) and metrics.val_loss_se > 0:  # type: ignore[operator]
        return float(metrics.val_loss_se)  # type: ignore[arg-type]
    n, acc, loss = metrics.val_examples, metrics.val_accuracy, metrics.val_loss
    if not n or not finite(acc) or not finite(loss):
        return None
    err = max(1.0 - float(acc), 1.0 / n)  # type: ignore[arg-type]
    return abs(float(loss)) / (err * n) ** 0.5  # type: ignore[arg-type]


def fit_learned(ctx: Context, metrics: EpochMetrics) -> bool:
    """The training split, evaluated, is fit well above chance (the gap rule's "learned": overfitting is learning
    the training set without the held-out one). True when the class count is unknown."""
    chance = chance_level(ctx)
    if chance is None or not finite(metrics.train_eval_accuracy):
        return True
    return metrics.train_eval_accuracy >= chance + ctx.thresholds.overfit_above_chance * (1 - chance)  # type: ignore[operator]


def gap_noise(metrics: EpochMetrics) -> float:
    """Standard error of training − validation accuracy, both measured on ``val_examples`` examples (0 unknown)."""
    n = metrics.val_examples
    a, b = metrics.train_eval_accuracy, metrics.val_accuracy
    if not n or not finite(a) or not finite(b):
        return 0.0
    return ((a * (1 - a) + b * (1 - b)) / n) ** 0.5  # type: ignore[operator]


class Overfitting(Detector):
    """The validation loss above its best by more than its noise, or an eval-mode accuracy gap beyond its noise,
    sustained, once the run has learned and is stable (see the module docstring)."""

    kind = "overfitting"

    def reset(self) -> None:
        self.gap = Streak()
        self.turn = Streak()

    def end_epoch(self, metrics: EpochMetrics, ctx: Context) -> Finding | None:
        epochs = list(ctx.epochs)
        stable = stable_since(ctx, 1) and not training_loss_rose(epochs, self.t.overfit_change)
        gap = None
        if finite(metrics.train_eval_accuracy) and finite(metrics.val_accuracy):
            gap = float(metrics.train_eval_accuracy) - float(metrics.val_accuracy)  # type: ignore[arg-type]
        noise = gap_noise(metrics)
        widening = gap is not None and gap >= max(self.t.overfit_gap, self.t.overfit_z * noise) \
            and (gap >= self.t.overfit_gap_large or not validation_improved(epochs, self.t.overfit_change))
        n_gap = self.gap.update(stable and fit_learned(ctx, metrics) and widening, metrics.step)
        rise = self._rise(epochs)
        n_turn = self.turn.update(stable and has_learned(ctx, metrics) and rise is not None, metrics.step)
        if n_gap < self.t.overfit_epochs and n_turn < self.t.overfit_epochs:
            return None
        vals = [e.val_loss for e in epochs if finite(e.val_loss)]
        evidence = {"epoch": metrics.epoch, "train_accuracy": metrics.fit_accuracy,
                    "val_accuracy": metrics.val_accuracy, "gap": gap, "train_loss": metrics.fit_loss,
                    "val_loss": metrics.val_loss, "best_val_loss": min(vals) if vals else None,
                    "val_loss_se": metrics.val_loss_se, "gap_se": noise or None,
                    "train_evaluated": 1.0 if finite(metrics.train_eval_accuracy) else 0.0}
        p, n = ctx.num_params, ctx.num_examples
        if p and n and p > self.t.params_per_example * n:   # capacity: the evidence of what is observed
            evidence.update(num_params=p, num_examples=n, params_per_example=p / n)
        if n_gap >= self.t.overfit_epochs:
            return self.finding(self.gap.start(metrics.step), "gap", (), evidence)
        evidence.update(rise=rise)
        return self.finding(self.turn.start(metrics.step), "val_rising", (), evidence)

    def _rise(self, epochs: list[EpochMetrics]) -> float | None:
        """How far the last validation loss is above the best earlier one, when that exceeds the noise (``overfit_z``
        standard errors, or 5 % without one) and the training loss is no worse than at the best epoch."""
        if len(epochs) < 2:
            return None
        cur = epochs[-1]
        earlier = [e for e in epochs[:-1] if finite(e.val_loss)]
        if not earlier or not finite(cur.val_loss):
            return None
        best = min(earlier, key=lambda e: float(e.val_loss))  # type: ignore[arg-type]
        rise = float(cur.val_loss) - float(best.val_loss)  # type: ignore[arg-type]
        se = loss_noise(cur)
        bar = self.t.overfit_z * se if se is not None else 0.5 * abs(float(best.val_loss))  # type: ignore[arg-type]
        if rise <= bar:
            return None
        accs = [float(e.val_accuracy) for e in epochs if finite(e.val_accuracy)]  # type: ignore[arg-type]
        if accs and finite(cur.val_accuracy) and cur.val_accuracy < max(accs) - self.t.overfit_gap:  # type: ignore[operator]
            return None   # held-out accuracy collapsed: the evaluated model is unstable, it did not memorise
        train_best, train_cur = best.fit_loss, cur.fit_loss
        if finite(train_best) and finite(train_cur) and train_cur > train_best * (1 + self.t.overfit_change):  # type: ignore[operator]
            return None
        return rise


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
