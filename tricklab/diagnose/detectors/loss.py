"""What the loss curve says: NaN/Inf, spikes, oscillation, plateau.

Per-batch losses are noisy: late in a healthy run a batch at 3 × the median is ordinary when the median is
0.05. So every loss rule here is measured against the loss *at the start* of the run (the first probe's, before
training has changed much — about ln K for K balanced classes): a spike must jump by half of it, an oscillation must
swing by half of it, a plateau seen on probes must still be within 10 % of it. Those bars separate a run that
is broken from one that is merely noisy, whatever the loss's units.

- NaN/Inf loss: immediate, never explained away (AUTOTRAINER's "nan_loss", and the Trainer's divergence).
- Loss spike: one probe's loss > ``spike_factor`` (3) × the median of the previous probes (up to 8; from the
  second probe on) and above it by ``spike_jump`` (0.5) × the start loss. Immediate — a spike is one-off by
  nature (and with a too-high learning rate the net may be dead by the next probe), hence the high bar.
  An epoch whose mean training loss exceeds 3 × the start loss counts too: it catches a burst that fell
  between two probes.
- Oscillation: over the last ``oscillation_window`` (8) probes, at least ``oscillation_turns`` (4) changes of
  direction, a swing (max − min) of at least ``oscillation_amplitude`` (0.5) × the start loss, and no net
  improvement (AUTOTRAINER's "unstable loss" looks at the same up-and-down pattern in the accuracy).
- Plateau: the loss is not moving. Each rule's window spans ``plateau_min_steps`` (100) optimizer steps at
  least, so what it sees does not depend on how often the probe looks. Per probe: the median of the second half
  of the last ``plateau_window`` (8) probes — or more, as many as span 100 steps — improved on the first half's
  by less than 2 %, while the loss is still ≥ 0.9 × the start loss
  (the run has not got going: slower progress drowns in per-batch noise over 8 probes). Per epoch: the training
  loss improved by less than 1 % (AUTOTRAINER ε) per epoch over ``plateau_epochs`` (2) epochs (or as many as span
  100 steps) while the run is not
  at its floor — training accuracy below 0.99 (running or evaluated) and the training loss above
  ``plateau_floor`` (5 %) of the start loss: a loss ≈ 0 cannot fall further, a memorised set is converged. Neither while the learning rate is below 0.1 × its peak: annealed (a flat loss at the end of a
  one-cycle run is the plan) or still warming up to the rate the loop was set to.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from tricklab.diagnose.detectors.base import Context, Detector, EpochMetrics, Finding, finite, median
from tricklab.diagnose.detectors.precision import forward_overflow
from tricklab.diagnose.records import ProbeRecord


class _Stepped(Protocol):
    @property
    def step(self) -> int: ...


S = TypeVar("S", bound=_Stepped)


class NonFiniteLoss(Detector):
    """The loss is NaN or ±Inf: immediate, never explained by another alarm."""

    kind = "nan_loss"

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        if finite(record.loss) or forward_overflow(record):   # float16's range: ``Fp16Overflow`` names it
            return None
        return nonfinite_finding(record.step, record.loss)


def nonfinite_finding(step: int, loss: float | None = None) -> Finding:
    """The NaN/Inf-loss finding (also made by ``Doctor.nonfinite_loss`` from the Trainer's check)."""
    evidence = {"loss": float(loss)} if isinstance(loss, (int, float)) else {}
    return Finding(kind=NonFiniteLoss.kind, step=step, criterion="loss", evidence=evidence, explainable=False)


class LossSpike(Detector):
    """One probe's loss jumps far above the recent median (see the module docstring); immediate."""

    kind = "loss_spike"
    explained_by = ("lr_too_high", "exploding_init")

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        if not finite(record.loss):
            return None
        before = ctx.losses(self.t.oscillation_window + 1)[:-1]  # the current record is the last one kept
        if not before:
            return None
        start, med = ctx.start_loss, median(before)
        if not finite(start):
            return None
        if record.loss > self.t.spike_factor * med and record.loss - med > self.t.spike_jump * abs(start):
            factor = record.loss / med if med > 0 else float("inf")
            return self.finding(record.step, "jump", (), {"loss": record.loss, "median_before": med,
                                                          "factor": factor, "loss_start": start})
        return None

    def end_epoch(self, metrics: EpochMetrics, ctx: Context) -> Finding | None:
        """An epoch whose mean training loss is far above the start loss: a burst between two probes (a
        too-high learning rate can blow up and kill a net within a few steps) still shows in the mean."""
        loss, start = metrics.train_loss, ctx.start_loss
        if not finite(loss) or not finite(start) or start <= 0:
            return None
        if loss > self.t.spike_factor * start and loss - start > self.t.spike_jump * start:  # type: ignore[operator]
            return self.finding(metrics.step, "epoch", (), {"loss": loss, "median_before": start,
                                                            "factor": loss / start, "loss_start": start,
                                                            "epoch": metrics.epoch})
        return None


class Oscillation(Detector):
    """The loss goes up and down by a large amount without net progress (see the module docstring)."""

    kind = "oscillation"
    explained_by = ("unscaled_inputs", "nan_loss", "lr_too_high", "exploding_init")

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        w = self.t.oscillation_window
        losses = ctx.losses(w)
        start = ctx.start_loss
        if len(losses) < w or not finite(start) or start == 0:
            return None
        diffs = [b - a for a, b in zip(losses, losses[1:]) if b != a]
        turns = sum(1 for a, b in zip(diffs, diffs[1:]) if (a > 0) != (b > 0))
        swing = (max(losses) - min(losses)) / abs(start)
        half = w // 2
        first, second = median(losses[:half]), median(losses[half:])
        improvement = (first - second) / abs(first) if first else 0.0
        if turns >= self.t.oscillation_turns and swing >= self.t.oscillation_amplitude \
                and improvement < self.t.moving_improvement:
            steps = [r.step for r in list(ctx.records)[-w:]]
            return self.finding(steps[0], "swing", (), {"turns": turns, "swing": swing, "loss_min": min(losses),
                                                        "loss_max": max(losses), "improvement": improvement,
                                                        "window": w})
        return None


def _spanning(items: list[S], count: int, steps: int) -> list[S] | None:
    """The last ``count`` or more of ``items`` (probe records or epochs, oldest first, each with a ``step``):
    as many as it takes to span ``steps`` optimizer steps; None when all of them span less."""
    if len(items) < count:
        return None
    last = items[-1].step
    for first in range(len(items) - count, -1, -1):
        if last - items[first].step >= steps:
            return items[first:]
    return None


class Plateau(Detector):
    """The loss is not moving while the learning rate is still up (see the module docstring).

    Explained by the problems that stop learning on their own (vanishing gradients, dead or saturated units,
    a learning rate whose updates are far too small or large, unscaled inputs, NaN).
    """

    kind = "plateau"
    explained_by = ("vanishing_gradients", "dead_units", "saturation", "update_ratio", "unscaled_inputs",
                    "nan_loss", "exploding_gradients", "exploding_init", "vanishing_init", "lr_too_high",
                    "lr_too_low", "linear_model", "output_loss_mismatch")

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        recs = _spanning([r for r in ctx.records if finite(r.loss)], self.t.plateau_window, self.t.plateau_min_steps)
        start = ctx.start_loss
        if recs is None or not finite(start) or start <= 0:
            return None
        w = len(recs)
        if not ctx.lr_near_peak(record.lr, self.t.plateau_lr_gate):
            return None
        losses = [float(r.loss) for r in recs]
        half = w // 2
        first, second = median(losses[:half]), median(losses[half:])
        if first <= 0:
            return None
        improvement = (first - second) / first
        if improvement < self.t.plateau_improvement and second >= self.t.plateau_loss_fraction * start:
            return self.finding(recs[0].step, "probes", (), {"loss_before": first, "loss_now": second,
                                                            "improvement": improvement, "loss_start": start,
                                                            "window": w, "lr": record.lr})
        return None

    def end_epoch(self, metrics: EpochMetrics, ctx: Context) -> Finding | None:
        epochs = _spanning(list(ctx.epochs), self.t.plateau_epochs + 1, self.t.plateau_min_steps)
        if epochs is None or not all(finite(e.train_loss) for e in epochs):
            return None
        n = len(epochs) - 1
        if not ctx.lr_near_peak(metrics.lr, self.t.plateau_lr_gate):
            return None
        if finite(metrics.train_accuracy) and metrics.train_accuracy >= self.t.plateau_fit_accuracy:  # type: ignore[operator]
            return None
        if finite(metrics.fit_accuracy) and metrics.fit_accuracy >= self.t.plateau_fit_accuracy:  # type: ignore[operator]
            return None
        floor = self.t.plateau_floor * ctx.start_loss if finite(ctx.start_loss) and ctx.start_loss > 0 else None
        if floor is not None and any(finite(v) and v <= floor for v in (metrics.train_loss, metrics.fit_loss)):  # type: ignore[operator]
            return None   # at its floor: a memorised training set is converged, not stuck
        before, now = float(epochs[0].train_loss), float(epochs[-1].train_loss)  # type: ignore[arg-type]
        if before <= 0:
            return None
        improvement = (before - now) / before
        if improvement < self.t.plateau_epoch_improvement * n:
            return self.finding(epochs[0].step, "epochs", (), {
                "loss_before": before, "loss_now": now, "improvement": improvement, "epochs": n,
                "train_accuracy": metrics.train_accuracy, "lr": metrics.lr})
        return None
