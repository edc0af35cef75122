"""The learning rate against the optimizer in use: the cause behind oversized or vanishing steps.

An exploding loss, oversized updates, a loss that does not move — these are symptoms; when the learning rate
is outside the range the optimizer in use is known to work in, the rate is the cause, and the doctor says so,
with the range. Typical ranges (the lower and upper ends of what the literature and the frameworks' defaults
use; a rate outside them is not wrong by itself, which is why a symptom must be seen as well):

- Adam family (Adam, AdamW, NAdam, RAdam, Adamax): 1e-5 … 1e-2. Kingma & Ba 2015 use 1e-3 (PyTorch's default);
  transformers train at 1e-4 … 5e-4 (Vaswani et al. 2017 peak ≈ 7e-4; Devlin et al. 2019 fine-tune at 2e-5 …
  5e-5); Adam's per-coordinate step is ≈ lr, so 1e-2 already moves a weight of scale 0.1 by 10 % a step.
- SGD without momentum: 1e-3 … 1 (the lesson's 0.1; LeCun et al. 1998 give η ≈ 1/largest Hessian eigenvalue;
  batch-normalised nets train up to ≈ 1, see ``repair.HEALTHY_PEAK_RATIO``'s measurements).
- SGD with momentum γ: the effective step is lr/(1 − γ), so 1e-4 … 0.5 (He et al. 2016: 0.1 with γ = 0.9).
- RMSprop: 1e-5 … 1e-2 (Hinton's lecture 6e: 1e-3). Adagrad: 1e-3 … 0.5 (Duchi et al. 2011; PyTorch 1e-2).
  Adadelta: 1e-2 … 10 (Zeiler 2012 uses 1.0).

``lr_too_high``: the rate is above the range and the steps are visibly too large on ``persist`` consecutive
probes — a median update ratio ‖Δw‖/‖w‖ above 10^``update_log10_high`` (Karpathy's 1e-3 × 100), a training loss
above ``divergence_factor`` × its start value, a gradient norm ``exploding_growth`` × its start while the loss is
worse, or — after a first probe whose update was already oversized — dead ReLUs, a loss that stalls, or weights
inflated to ``lr_weight_inflation`` (3) × their size at the start (what such steps leave behind: behind batch
norm a layer's output does not depend on ‖W‖, so oversized steps inflate it and the update ratio is small
again — Hoffer et al. 2018, "Norm matters"; the update ratio of a dead net is small as well) — or the loss is NaN/Inf (at once). ``lr_too_low``: the rate is below the range, the median update ratio is
below 10^``update_log10_low`` or the loss is not moving (``Context.stalled``), while the loss is still near its
start value, on ``persist`` consecutive probes. The symptoms' own rules (exploding gradients, update ratio,
plateau, dead units ...) stand back once the cause is named. Unknown optimizer: no finding.
"""

from __future__ import annotations

import math
from typing import Any

from tricklab.diagnose.detectors.base import (
    Context,
    Detector,
    Finding,
    Streak,
    finite,
    median,
    median_weight_norm,
    weight_layers,
)
from tricklab.diagnose.detectors.update_ratio import log10_ratio
from tricklab.diagnose.records import ProbeRecord

TYPICAL_LR: dict[str, tuple[float, float]] = {
    "adam": (1e-5, 1e-2),
    "sgd": (1e-3, 1.0),
    "momentum": (1e-4, 0.5),
    "rmsprop": (1e-5, 1e-2),
    "adagrad": (1e-3, 0.5),
    "adadelta": (1e-2, 10.0),
}
"""Optimizer family → (low, high): the typical learning-rate range (sources in the module docstring)."""

USUAL_LR: dict[str, float] = {"adam": 3e-3, "sgd": 0.1, "momentum": 0.05, "rmsprop": 1e-3, "adagrad": 1e-2,
                              "adadelta": 1.0}
"""Optimizer family → a usual rate inside its range, where a repair of a rate far outside it lands: tricklab's
recipe default for Adam/AdamW (3e-3), the lesson's 0.1 for SGD and 0.05 with momentum 0.9 (an effective step of
0.5), Hinton's 1e-3 for RMSprop, PyTorch's defaults for Adagrad (1e-2) and Adadelta (1.0, Zeiler 2012)."""

FAMILY_NAMES = {"adam": "Adam/AdamW", "sgd": "SGD", "momentum": "SGD with momentum", "rmsprop": "RMSprop",
                "adagrad": "Adagrad", "adadelta": "Adadelta"}
"""How the advice names each family."""

_FAMILIES = {"adam": "adam", "adamw": "adam", "nadam": "adam", "radam": "adam", "adamax": "adam", "lamb": "adam",
             "rmsprop": "rmsprop", "adagrad": "adagrad", "adadelta": "adadelta", "sgd": "sgd",
             "momentum": "momentum", "nesterov": "momentum"}


def optimizer_family(optimizer: Any) -> str | None:
    """The family (a key of ``TYPICAL_LR``) of a ``torch.optim.Optimizer`` or a name (``adamw``, ``sgd`` ...);
    SGD with a momentum > 0 is ``momentum``. None when unknown."""
    if optimizer is None:
        return None
    if isinstance(optimizer, str):
        return _FAMILIES.get(optimizer.lower())
    name = type(optimizer).__name__.lower()
    family = _FAMILIES.get(name)
    groups = getattr(optimizer, "param_groups", None) or [{}]
    if family == "sgd" and (groups[0].get("momentum") or 0) > 0:
        return "momentum"
    if family is None:  # tricklab's and other libraries' optimizers: judge by what their groups hold
        if "betas" in groups[0]:
            return "adam"
        if "momentum" in groups[0]:
            return "momentum" if (groups[0].get("momentum") or 0) > 0 else "sgd"
    return family


def scheduled_peak(optimizer: Any) -> float | None:
    """The rate a ``torch.optim.Optimizer`` was set to before its scheduler moved it: torch's schedulers keep it
    in each group's ``initial_lr`` (``OneCycleLR``: ``max_lr``). None for a name, or a group without either."""
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        return None
    rates = [v for key in ("max_lr", "initial_lr") if isinstance(v := groups[0].get(key), (int, float))
             and math.isfinite(v) and v > 0]
    return float(max(rates)) if rates else None


def typical_range(ctx: Context) -> tuple[float, float] | None:
    if ctx.optimizer is None or ctx.optimizer not in TYPICAL_LR:
        return None
    low, high = TYPICAL_LR[ctx.optimizer]
    f = ctx.thresholds.lr_range_factor
    return low / f, high * f


def _median_ratio(record: ProbeRecord) -> float | None:
    values = [v for layer in weight_layers(record) if (v := log10_ratio(layer)) is not None]
    return median(values) if values else None


class LearningRateTooHigh(Detector):
    """The learning rate above the optimizer's typical range, with oversized steps (see the module docstring)."""

    kind = "lr_too_high"

    def reset(self) -> None:
        self.streak = Streak()
        self.kicked = Streak()     # count 1: the run's first probe already took an oversized step

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        bounds = typical_range(ctx)
        lr = record.lr if finite(record.lr) else ctx.peak_lr
        med = _median_ratio(record)
        if len(ctx.records) == 1:
            self.kicked.update(med is not None and med > self.t.update_log10_high, record.step)
        if bounds is None or not finite(lr) or lr <= bounds[1]:  # type: ignore[operator]
            self.streak.update(False, record.step)
            return None
        start_loss, start_gn = ctx.start_loss, ctx.start_grad_norm
        nonfinite = not finite(record.loss) or not finite(record.grad_norm)
        oversized = med is not None and med > self.t.update_log10_high
        diverging = finite(record.loss) and finite(start_loss) and start_loss > 0 \
            and record.loss > self.t.divergence_factor * start_loss
        growing = finite(record.grad_norm) and finite(start_gn) and start_gn > 0 \
            and record.grad_norm > self.t.exploding_growth * start_gn and finite(record.loss) \
            and finite(start_loss) and record.loss > start_loss
        dead = any(layer.activation == "relu" and finite(layer.frac_dead)
                   and layer.frac_dead >= self.t.dead_fraction for layer in record.layers)  # type: ignore[operator]
        # after an oversized first step, what such steps leave behind counts too: dead ReLUs, a loss that stalls
        w_now = median_weight_norm(record)
        inflated = w_now is not None and finite(ctx.start_weight_norm) and ctx.start_weight_norm > 0 \
            and w_now > self.t.lr_weight_inflation * ctx.start_weight_norm
        wrecked = self.kicked.count > 0 and (dead or inflated or (len(ctx.records) > self.t.persist and ctx.stalled()))
        n = self.streak.update(nonfinite or oversized or diverging or growing or wrecked, record.step)
        if not nonfinite and n < self.t.persist:
            return None
        criterion = ("nonfinite" if nonfinite else "oversized" if oversized else "diverging" if diverging
                     else "growth" if growing else "wrecked")
        named = ctx.named_lr(lr)
        return self.finding(self.streak.start(record.step), criterion, (), {
            "lr": named, "lr_now": lr, "range_low": bounds[0], "range_high": bounds[1],
            "times_high": named / bounds[1],  # type: ignore[operator]
            "family_index": list(TYPICAL_LR).index(ctx.optimizer),  # type: ignore[arg-type]
            "log10_update_ratio": med if med is not None and math.isfinite(med) else (30.0 if nonfinite else -30.0),
            "loss": record.loss, "loss_start": start_loss, "grad_norm": record.grad_norm,
            "grad_norm_start": start_gn}, explainable=not nonfinite)


class LearningRateTooLow(Detector):
    """The learning rate below the optimizer's typical range, with steps too small to move the loss (module
    docstring)."""

    kind = "lr_too_low"

    def reset(self) -> None:
        self.streak = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        bounds = typical_range(ctx)
        lr = record.lr if finite(record.lr) else ctx.peak_lr
        if bounds is None or not finite(lr) or lr >= bounds[0] \
                or not ctx.lr_near_peak(record.lr, self.t.update_lr_gate):  # type: ignore[operator]
            self.streak.update(False, record.step)
            return None
        med = _median_ratio(record)
        start = ctx.start_loss
        near_start = finite(record.loss) and finite(start) and record.loss >= self.t.plateau_loss_fraction * start
        tiny = med is not None and med < self.t.update_log10_low
        holds = near_start and (tiny or (len(ctx.records) > self.t.persist and ctx.stalled()))
        if self.streak.update(holds, record.step) < self.t.persist:
            return None
        named = ctx.named_lr(lr)
        return self.finding(self.streak.start(record.step), "tiny" if tiny else "stalled", (), {
            "lr": named, "lr_now": lr, "range_low": bounds[0], "range_high": bounds[1],
            "times_low": bounds[0] / named,  # type: ignore[operator]
            "family_index": list(TYPICAL_LR).index(ctx.optimizer),  # type: ignore[arg-type]
            "log10_update_ratio": med if med is not None and math.isfinite(med) else -30.0,
            "loss": record.loss, "loss_start": start})
