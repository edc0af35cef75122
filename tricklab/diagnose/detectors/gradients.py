"""Vanishing and exploding gradients — AUTOTRAINER's ratio rules, and where they fail.

AUTOTRAINER (Zhang et al., ICSE 2021) compares the gradient norm of the first weight layer with the last:
vanishing when ‖g_first‖/‖g_last‖ < β₁ = 1e-3 and ‖g_first‖ < β₂ = 1e-4; exploding when the ratio > β₃ = 70.
Copied as is, the ratio is wrong in three common cases, so the detectors here add:

1. **A forward signal that dies.** In a deep ReLU net initialised too small (σ = 1/n_in), every layer's output
   shrinks by ~√(1/(2 n_in)) (He et al. 2015), so after 20 layers the activations are ~1e-20 of the first
   layer's. Every weight gradient ∂L/∂W_k = δ_k·h_{k−1}ᵀ is then tiny — the first *and* the last — and the
   ratio stays near 1. We therefore also look at the forward signal: the smallest activation std of any
   later layer relative to the first layer's (below 1e-3 = β₁'s three orders of magnitude) together with an
   absolutely tiny first-layer gradient (below β₂).
2. **Saturation is not explosion.** A tanh net with N(0, 1) weights (n_in = 64) has ~80 % of its units
   saturated; the backward pass multiplies by Wᵀ whose scale is √n_in ≈ 8 per layer, so the first layer's
   gradient is 10⁶ × the last's — a huge ratio — yet Adam's steps stay normal and the loss is finite. The
   cause is the saturated, badly initialised layers, and the saturation detector names it: the ratio rule
   does not fire while any sigmoid/tanh layer is more than half saturated.
3. **Branching nets.** "The first layer" is the front of the network (its first quarter of weight layers):
   in an Inception module four layers read the input, and a 1-channel 1×1 convolution followed by batch norm
   gets a zero gradient by construction; one such layer does not make the network's gradient vanish.

Both gradient-ratio rules are judged only while the loss is not moving (AUTOTRAINER checks gradients only
when training does not converge); a healthy ResNet or batch-normed net whose ratio happens to be extreme for
a moment while it learns raises nothing. Non-finite gradients are immediate; a gradient norm that grows an
order of magnitude above its start value while the loss is worse than at the start is an explosion as well
(the too-high-learning-rate case, where the ratio can stay ordinary). So is a training loss that climbs well
above its value at the start and stays there (``divergence``): behind batch norm the weight gradients stay
bounded however large the steps (the normalised output does not depend on the weights' scale), yet the steps
throw the net out of its basin — the last, un-normalised layer's logits grow and the loss explodes instead.
"""

from __future__ import annotations

import math

from tricklab.diagnose.detectors.base import (
    Context,
    Detector,
    Finding,
    Streak,
    finite,
    signal_std,
    weight_layers,
)
from tricklab.diagnose.detectors.precision import forward_overflow
from tricklab.diagnose.records import LayerStats, ProbeRecord


def front(layers: list[LayerStats]) -> list[LayerStats]:
    """The front of the network: its first quarter of weight layers (at least one), in forward order."""
    return layers[:max(1, math.ceil(len(layers) / 4))]


def first_last_ratio(layers: list[LayerStats]) -> tuple[float, float, float] | None:
    """(‖g_first‖, ‖g_last‖, ratio) over finite gradient norms, None when undefined (fewer than 2 layers or a
    zero last-layer gradient). ‖g_first‖ is the largest gradient norm of the front (``front``): in a branching
    net several layers read the input, and a layer with one input channel followed by batch norm gets no
    gradient by construction (batch norm makes its output invariant to the weight's scale, which for a single
    input channel is the weight's only direction) — one such layer is not the network's gradient vanishing."""
    grads = [layer for layer in layers if finite(layer.grad_norm)]
    if len(grads) < 2 or grads[-1].grad_norm <= 0:
        return None
    g_first = max(float(layer.grad_norm) for layer in front(grads[:-1]))
    g_last = float(grads[-1].grad_norm)
    return g_first, g_last, g_first / g_last


def signal_collapse(layers: list[LayerStats]) -> tuple[float, LayerStats] | None:
    """(min_k std_k / std_first, the layer k where it is smallest) over the layers after the first."""
    if len(layers) < 2:
        return None
    base = signal_std(layers[0])
    if base is None or base <= 0:
        return None  # a silent first layer is the dead-units detector's business
    ratios = [(s / base, layer) for layer in layers[1:] if (s := signal_std(layer)) is not None]
    return min(ratios, key=lambda t: t[0]) if ratios else None


def max_saturation(layers: list[LayerStats]) -> float:
    return max((float(layer.frac_saturated) for layer in layers if finite(layer.frac_saturated)), default=0.0)


class VanishingGradients(Detector):
    """The gradient no longer reaches the first layers (see the module docstring).

    Fires after ``persist`` consecutive probes on which the loss is not moving and either
    (a) ‖g_first‖/‖g_last‖ < ``vanishing_ratio`` (1e-3, AUTOTRAINER β₁) and ‖g_first‖ < ``vanishing_first_grad``
    (1e-4, AUTOTRAINER β₂) — ‖g_first‖ being the largest gradient of the network's front (``front``) — or
    (b) the forward signal collapses: min_k std_k/std_first < ``signal_collapse`` (1e-3; He et al. 2015's
    variance argument) and ‖g_first‖ < ``vanishing_first_grad``.
    Explained by dead units (zero gradients behind dead ReLUs) and unscaled inputs.
    """

    kind = "vanishing_gradients"
    explained_by = ("dead_units", "unscaled_inputs", "vanishing_init", "lr_too_low", "output_loss_mismatch")

    def reset(self) -> None:
        self.streak = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        layers = weight_layers(record)
        ratio = first_last_ratio(layers)
        collapse = signal_collapse(layers)
        head = [float(layer.grad_norm) for layer in front(layers[:-1] or layers) if finite(layer.grad_norm)]
        g_first = max(head) if head else math.nan
        tiny_first = finite(g_first) and g_first < self.t.vanishing_first_grad
        by_ratio = ratio is not None and ratio[2] < self.t.vanishing_ratio and tiny_first
        by_signal = collapse is not None and collapse[0] < self.t.signal_collapse and tiny_first
        holds = (by_ratio or by_signal) and ctx.stalled()
        if self.streak.update(holds, record.step) < self.t.persist:
            return None
        small = [layer for layer in layers if finite(layer.grad_norm) and layer.grad_norm < self.t.vanishing_first_grad]
        evidence: dict[str, float] = {"grad_first": g_first, "loss": record.loss,
                                      "loss_improvement": ctx.loss_improvement() or 0.0}
        if ratio is not None:
            evidence.update(grad_last=ratio[1], grad_ratio=ratio[2])
        if collapse is not None:
            evidence.update(signal_ratio=collapse[0], signal_layer_index=collapse[1].depth_index)
        criterion = "signal" if by_signal else "ratio"  # the signal explains why the ratio is what it is
        affected = small or layers[:1]
        return self.finding(self.streak.start(record.step), criterion, affected, evidence)


class ExplodingGradients(Detector):
    """Gradients that blow up (see the module docstring).

    Immediate when the global or any layer's gradient norm is NaN/Inf. Otherwise after ``persist`` consecutive
    probes of either (a) growth: the global ‖g‖ > ``exploding_growth`` (10) × its value at the first probe
    while the loss is above its value there, or (b) ratio: ‖g_first‖/‖g_last‖ >
    ``exploding_ratio`` (70, AUTOTRAINER β₃) while the loss is not moving and no sigmoid/tanh layer is more
    than ``saturated_fraction`` saturated (then saturation explains the ratio), or (c) divergence: the loss
    above ``divergence_factor`` (1.5) × its value at the first probe. Rule (b) is also explained by a raised
    saturation alarm; every non-NaN rule by unscaled inputs.
    """

    kind = "exploding_gradients"
    explained_by = ("saturation", "unscaled_inputs", "exploding_init", "lr_too_high")

    def reset(self) -> None:
        self.streak = Streak()
        self.diverging = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        layers = weight_layers(record)
        bad = [layer for layer in layers if not finite(layer.grad_norm)]
        if forward_overflow(record):       # float16's range, not the gradients: ``Fp16Overflow`` names it
            return None
        if bad or not finite(record.grad_norm):
            self.streak.update(True, record.step)
            return self.finding(record.step, "nonfinite", bad or layers[:1],
                                {"grad_norm": record.grad_norm, "loss": record.loss}, explainable=False)
        start_gn, start_loss = ctx.start_grad_norm, ctx.start_loss
        growth = record.grad_norm / start_gn if finite(start_gn) and start_gn > 0 else math.nan
        by_growth = (finite(growth) and growth > self.t.exploding_growth and finite(record.loss)
                     and finite(start_loss) and record.loss > start_loss)
        ratio = first_last_ratio(layers)
        saturated = max_saturation(layers)
        by_ratio = (ratio is not None and ratio[2] > self.t.exploding_ratio and ctx.stalled()
                    and saturated <= self.t.saturated_fraction)
        by_divergence = (finite(record.loss) and finite(start_loss) and start_loss > 0
                         and record.loss > self.t.divergence_factor * start_loss)
        self.diverging.update(by_divergence, record.step)
        if self.streak.update(by_growth or by_ratio or by_divergence, record.step) < self.t.persist:
            return None
        evidence: dict[str, float] = {"grad_norm": record.grad_norm, "grad_norm_start": start_gn,
                                      "growth": growth, "loss": record.loss, "loss_start": start_loss}
        if ratio is not None:
            evidence.update(grad_first=ratio[0], grad_last=ratio[1], grad_ratio=ratio[2])
        peak = max(float(layer.grad_norm) for layer in layers) if layers else 0.0
        carrying = [layer for layer in layers if layer.grad_norm >= 0.1 * peak] if peak > 0 else layers[:1]
        if by_growth:
            return self.finding(self.streak.start(record.step), "growth", carrying, evidence,
                                explained_by=("unscaled_inputs", "exploding_init", "lr_too_high"))
        if self.diverging.count >= self.t.persist:
            evidence["loss_factor"] = record.loss / start_loss
            update = [float(layer.update_ratio) for layer in layers if finite(layer.update_ratio)]
            if update:
                evidence["update_ratio"] = max(update)
            return self.finding(self.diverging.start(record.step), "divergence", layers[-1:], evidence,
                                explained_by=("unscaled_inputs", "exploding_init", "lr_too_high"))
        return self.finding(self.streak.start(record.step), "ratio", carrying, evidence)
