"""Learning-rate schedules as pure functions of the step, and the one adapter that writes them into an optimiser.

A schedule is a factory: hyperparameters in, ``Callable[[int], float]`` out (step → learning rate, step 0 is
the first optimiser step), as in optax. Every length a factory takes counts optimiser steps (``step_size``,
``total_steps``, ``warmup_steps``); ``epochs_to_steps`` converts a number of epochs, and ``build_schedule`` builds
a recipe's schedule from its epochs. Schedules compose (``warmup(cosine(...), ...)``) and hold no state, so
resuming a run needs only the step. The one exception is ``plateau``: it reacts to a validation metric, so it
is a small stateful class (``Plateau``) whose multiplier scales whatever the step schedule gives.

Lesson ("Lernratenabnahme"): large η early for fast progress, small η late for fine-tuning — "indem η nach
jeder Epoche des Trainings mit einer Zahl (z. B. 0,98) multipliziert wird" (``exponential``), or a more
elaborate schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from torch.optim import Optimizer

from tricklab.errors import InputError
from tricklab.registry import Registry

Schedule = Callable[[int], float]

SCHEDULES = Registry("schedule")


def constant(lr: float) -> Schedule:
    """η(t) = η₀ for every step t (the baseline)."""
    return lambda t: lr


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimiser steps in ``epochs`` epochs of ``steps_per_epoch`` steps (rounded to the nearest step): how a
    length in epochs becomes a factory's argument, ``cosine(lr, total_steps=epochs_to_steps(15, 71))``."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if not epochs >= 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    return int(round(epochs * steps_per_epoch))


def exponential(lr: float, *, step_size: int, gamma: float = 0.98) -> Schedule:
    """η(t) = η₀·γ^⌊t / step_size⌋: multiply by γ every ``step_size`` optimiser steps — after every epoch with
    ``step_size=steps_per_epoch``.

    The lesson's rule with its γ = 0.98 ("nach jeder Epoche ... mit 0,98 multipliziert"); torch's
    ``ExponentialLR`` stepped once per epoch.
    """
    if step_size < 1:
        raise ValueError(f"step_size must be >= 1, got {step_size}")
    return lambda t: lr * gamma ** (t // step_size)


def step_decay(lr: float, *, step_size: int, gamma: float = 0.1) -> Schedule:
    """η(t) = η₀·γ^⌊t / step_size⌋ with ``step_size`` in optimiser steps (torch's ``StepLR``).

    The classic "divide by 10 every few epochs" of He et al. 2016 (arXiv:1512.03385). Registered as ``step``.
    """
    if step_size < 1:
        raise ValueError(f"step_size must be >= 1, got {step_size}")
    return lambda t: lr * gamma ** (t // step_size)


def cosine(lr: float, *, total_steps: int, final_lr: float = 0.0) -> Schedule:
    """η(t) = η_f + (η₀ − η_f)·(1 + cos(π·t/T))/2 for t < T, η_f from t = T on.

    Loshchilov & Hutter 2017, "SGDR" (arXiv:1608.03983), one cycle without restarts (torch's
    ``CosineAnnealingLR`` with T_max = T, eta_min = η_f): η(0) = η₀, η(T) = η_f.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")

    def schedule(t: int) -> float:
        if t >= total_steps:
            return final_lr
        return final_lr + (lr - final_lr) * (1.0 + math.cos(math.pi * t / total_steps)) / 2.0

    return schedule


def warmup(schedule: Schedule, *, warmup_steps: int, start_factor: float = 0.0) -> Schedule:
    """Linear warmup over any schedule: η(t) = s(t)·(f₀ + (1 − f₀)·min(1, (t + 1)/W)).

    W = ``warmup_steps``, f₀ = ``start_factor``, s the wrapped schedule. The warmup multiplies, it does not
    shift time: s keeps its own step axis (a cosine over T steps still ends at T), so it composes with every
    schedule. Step t (0-based) gets the fraction (t + 1)/W of the ramp: the first step already moves (η > 0
    even with f₀ = 0, no wasted step), step W − 1 and every later step run s(t) unchanged, so η(W) = s(W).
    With f₀ > 0 the ramp starts from f₀·s(t) instead of 0. W = 0 returns ``schedule`` itself.
    Goyal et al. 2017, "Accurate, Large Minibatch SGD" (arXiv:1706.02677), gradual warmup. Not in the lesson.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= start_factor <= 1.0:
        raise ValueError(f"start_factor must lie in [0, 1], got {start_factor}")
    if warmup_steps == 0:
        return schedule

    def warmed(t: int) -> float:
        ramp = min(1.0, (t + 1) / warmup_steps)
        return schedule(t) * (start_factor + (1.0 - start_factor) * ramp)

    return warmed


def one_cycle(
    max_lr: float,
    *,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The 1cycle policy (Smith & Topin 2017, arXiv:1708.07120), as torch's ``OneCycleLR`` (cos, two phases).

    η_start = max_lr/div_factor, η_end = η_start/final_div_factor, a = pct_start·T − 1 (T = ``total_steps``):
    for t ≤ a, η(t) = cos_anneal(η_start → max_lr, t/a); after, η(t) = cos_anneal(max_lr → η_end, (t − a)/(T − 1 − a)),
    cos_anneal(x → y, p) = y + (x − y)(1 + cos πp)/2. So η(0) = η_start, max_lr is reached at step index
    pct_start·T − 1 (when that is an integer; otherwise the peak falls between two steps, as in torch), η_end at
    the last step T − 1, and steps past T − 1 stay at η_end. Momentum cycling (the other half of OneCycleLR) is
    not done here.
    """
    peak = float(pct_start * total_steps) - 1.0
    last = float(total_steps - 1)
    if not 0.0 < peak < last:
        raise ValueError(f"one_cycle needs 1 < pct_start·total_steps < total_steps, got {pct_start}·{total_steps}")
    start_lr = max_lr / div_factor
    end_lr = start_lr / final_div_factor

    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)

    def schedule(t: int) -> float:
        t = min(max(t, 0), total_steps - 1)
        if t <= peak:
            return anneal(start_lr, max_lr, t / peak)
        return anneal(max_lr, end_lr, (t - peak) / (last - peak))

    return schedule


class Plateau:
    """Reduce the learning rate when a validation metric stalls; ``update(metric)`` returns the multiplier.

    As torch's ``ReduceLROnPlateau`` (threshold_mode "rel"): a metric is an improvement when it beats the
    best so far by the relative threshold (mode "min": m < best·(1 − threshold); "max": m > best·(1 + threshold)).
    Each non-improving evaluation counts one; when the count exceeds ``patience`` — i.e. ``patience`` stalled
    evaluations are tolerated and the next stalled one reduces — the multiplier is multiplied by ``factor``
    and the count restarts (``cooldown`` evaluations after a reduction are not counted). ``min_lr`` is a floor
    on lr·multiplier where ``lr`` is the base rate the multiplier scales (default 1: then ``min_lr`` bounds the
    multiplier itself); as in torch, a reduction smaller than ``eps`` is skipped.
    Reference: torch.optim.lr_scheduler.ReduceLROnPlateau; not in the lesson.
    """

    def __init__(
        self,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        mode: Literal["min", "max"] = "min",
        min_lr: float = 0.0,
        *,
        cooldown: int = 0,
        lr: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.factor, self.patience, self.threshold, self.mode = factor, patience, threshold, mode
        self.min_lr, self.cooldown, self.lr, self.eps = min_lr, cooldown, lr, eps
        self.multiplier = 1.0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_left = 0
        self.num_reductions = 0

    def _is_better(self, metric: float) -> bool:
        if self.mode == "min":
            return metric < self.best * (1.0 - self.threshold)
        return metric > self.best * (1.0 + self.threshold)

    def update(self, metric: float) -> float:
        """Record one evaluation of the metric; return the multiplier to apply from now on."""
        metric = float(metric)
        if self._is_better(metric):
            self.best = metric
            self.num_bad = 0
        else:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
        if self.num_bad > self.patience:
            old = self.lr * self.multiplier
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.multiplier = new / self.lr
                self.num_reductions += 1
            self.cooldown_left = self.cooldown
            self.num_bad = 0
        return self.multiplier

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: settings, best metric, counters and the multiplier."""
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()``."""
        for key, value in state.items():
            setattr(self, key, value)


SCHEDULES.register(
    "constant",
    formula="η(t) = η₀",
    reference="—",
    obj=constant,
)
SCHEDULES.register(
    "exponential",
    formula="η(t) = η₀·γ^⌊t / step_size⌋, γ = 0.98; the recipe's step_size is one epoch of steps",
    reference="torch.optim.lr_scheduler.ExponentialLR (stepped per epoch)",
    lesson="η nach jeder Epoche mit einer Zahl (z. B. 0,98) multiplizieren",
    obj=exponential,
)
SCHEDULES.register(
    "step",
    formula="η(t) = η₀·γ^⌊t / step_size⌋, γ = 0.1",
    reference="He et al. 2016, arXiv:1512.03385; torch.optim.lr_scheduler.StepLR",
    obj=step_decay,
)
SCHEDULES.register(
    "cosine",
    formula="η(t) = η_f + (η₀ − η_f)(1 + cos(πt/T))/2, η_f after T",
    reference="Loshchilov & Hutter 2017, arXiv:1608.03983",
    obj=cosine,
)
SCHEDULES.register(
    "warmup",
    formula="η(t) = s(t)·(f₀ + (1 − f₀)·min(1, (t + 1)/W)); composable with any schedule s",
    reference="Goyal et al. 2017, arXiv:1706.02677",
    note="composable with any schedule (warmup_steps wraps the chosen one); alone it warms up a constant η",
    obj=warmup,
)
SCHEDULES.register(
    "one_cycle",
    formula="cos ramp max_lr/div → max_lr over pct_start·T steps, then cos to max_lr/(div·final_div) at T − 1",
    reference="Smith & Topin 2017, arXiv:1708.07120; torch.optim.lr_scheduler.OneCycleLR",
    aliases=("onecycle", "1cycle"),
    obj=one_cycle,
)
SCHEDULES.register(
    "plateau",
    formula="η ← max(factor·η, min_lr) after more than `patience` evaluations without relative improvement",
    reference="torch.optim.lr_scheduler.ReduceLROnPlateau",
    note="metric-driven: multiplies the step schedule's η by Plateau's multiplier",
    obj=Plateau,
)


def _need(field: str, value: float, minimum: float, what: str) -> None:
    if not value >= minimum:
        raise InputError(f"schedule.{field}", f"{what}, got {value!r}")


def build_schedule(
    name: str,
    *,
    lr: float,
    total_steps: int,
    steps_per_epoch: int,
    gamma: float = 0.98,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.0,
    step_size_epochs: int = 10,
    step_gamma: float = 0.1,
    final_lr: float = 0.0,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """The step → η function the trainer uses for schedule ``name`` (see ``SCHEDULES``).

    ``lr`` is the base (for ``one_cycle``: the peak) learning rate. ``gamma`` is ``exponential``'s factor per
    epoch; ``step`` multiplies by ``step_gamma`` every ``step_size_epochs`` epochs; ``cosine`` anneals to
    ``final_lr`` at ``total_steps``. ``warmup_steps`` > 0 wraps any schedule in ``warmup``; the name
    ``warmup`` alone is a warmed-up constant η. ``plateau`` returns the constant η: the trainer multiplies it
    by a ``Plateau``'s multiplier (``LRSchedule`` does this), because the reduction depends on validation
    metrics, not on the step.
    """
    try:
        canonical = SCHEDULES.canonical(name)
    except KeyError:
        raise InputError("schedule.name", f"unknown schedule {name!r}", allowed=SCHEDULES.allowed()) from None
    _need("lr", lr, 0.0, "the learning rate must be >= 0")
    _need("total_steps", total_steps, 1, "total_steps must be >= 1")
    _need("steps_per_epoch", steps_per_epoch, 1, "steps_per_epoch must be >= 1")
    _need("warmup_steps", warmup_steps, 0, "warmup_steps must be >= 0")
    if canonical == "exponential":
        schedule = exponential(lr, step_size=steps_per_epoch, gamma=gamma)
    elif canonical == "step":
        _need("step_size_epochs", step_size_epochs, 1, "step_size_epochs must be >= 1")
        schedule = step_decay(lr, step_size=step_size_epochs * steps_per_epoch, gamma=step_gamma)
    elif canonical == "cosine":
        schedule = cosine(lr, total_steps=total_steps, final_lr=final_lr)
    elif canonical == "one_cycle":
        if not 1.0 < pct_start * total_steps < total_steps:
            raise InputError(
                "schedule.pct_start",
                f"one_cycle needs 1 < pct_start·total_steps < total_steps, got {pct_start}·{total_steps}",
            )
        schedule = one_cycle(
            lr, total_steps=total_steps, pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor
        )
    else:  # constant, plateau, warmup: a constant η (plateau's multiplier is applied by LRSchedule)
        schedule = constant(lr)
    if canonical == "warmup" and warmup_steps == 0:
        raise InputError("schedule.warmup_steps", "the warmup schedule needs warmup_steps >= 1")
    if warmup_steps > 0:
        schedule = warmup(schedule, warmup_steps=warmup_steps, start_factor=warmup_start_factor)
    return schedule


def apply_lr(optimizer: Optimizer, lr: float) -> None:
    """Write η into every param group: group["lr"] = η·group.get("lr_scale", 1) (per-group multiplier)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class LRSchedule:
    """The adapter between a pure schedule and an optimiser: η(t) = schedule(t)·plateau multiplier.

    ``apply(optimizer, step)`` computes η for ``step`` and writes it with ``apply_lr``; ``report(metric)``
    feeds a validation metric to the ``Plateau`` (if any). ``state_dict()`` holds the last step and the
    plateau's state, all a checkpoint needs (the schedule itself is a pure function of the step).
    """

    def __init__(self, schedule: Schedule, plateau: Plateau | None = None) -> None:
        self.schedule = schedule
        self.plateau = plateau
        self.last_step = -1

    @property
    def multiplier(self) -> float:
        """The plateau multiplier (1 without a plateau)."""
        return self.plateau.multiplier if self.plateau is not None else 1.0

    def lr(self, step: int) -> float:
        """η for ``step`` (not written anywhere)."""
        return self.schedule(step) * self.multiplier

    def apply(self, optimizer: Optimizer, step: int) -> float:
        """Set every group's lr for ``step`` and return η."""
        value = self.lr(step)
        apply_lr(optimizer, value)
        self.last_step = step
        return value

    def report(self, metric: float) -> float:
        """Feed a validation metric to the plateau; return the multiplier now in force."""
        if self.plateau is not None:
            self.plateau.update(metric)
        return self.multiplier

    def state_dict(self) -> dict[str, Any]:
        """``{"last_step": int, "plateau": Plateau.state_dict() or None}``."""
        return {"last_step": self.last_step, "plateau": None if self.plateau is None else self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` (the schedule function is rebuilt from the recipe, not stored)."""
        self.last_step = int(state["last_step"])
        if state.get("plateau") is not None:
            if self.plateau is None:
                self.plateau = Plateau()
            self.plateau.load_state_dict(state["plateau"])
