"""Exploding and vanishing initialisations, named on the first probe — before training goes anywhere.

Rules that compare later probes with the first cannot see a problem that is already there at step 0: the
"start" they compare against is itself broken. These rules judge the first probe of a run (and the first after
each repair) on three numbers that a sound initialisation fixes:

- **The loss at init against ln C.** A fresh classifier with C classes predicts about 1/C for every class, so
  its cross-entropy is ≈ ln C (2.30 for ten classes); logits of rms s give ≈ s·√(2 ln C) once s ≫ 1. A loss
  at init ≥ ``init_loss_factor`` (3) × ln C means logits an order of magnitude too large.
- **The signal along the forward pass.** Each weight layer's input rms is measured; the signal reaching a
  later layer (or the output) relative to the first layer's input: ≥ ``init_signal_growth`` (100) is an
  explosion, ≤ ``init_signal_decay`` (1e-3) a collapse — or, backwards, a first/last gradient ratio below
  AUTOTRAINER's β₁ = 1e-3 (biases keep the forward signal at their own scale while weak weights still
  shrink the gradient at every layer). He et al. 2015 ("Delving Deep into Rectifiers", §2.2):
  with Var(w) = c/n_in every ReLU layer multiplies the signal's second moment by c/2, so anything but c = 2
  grows or shrinks geometrically with depth; Glorot & Bengio 2010 saw the same for tanh and sigmoid nets.
- **Where it starts.** Each layer's *weight gain* √(n_in · mean W²) — what its weights alone multiply the
  signal's rms by (√2 for He, 1 for LeCun, 1/√3 for PyTorch's default, √n_in for N(0, 1)). The first layer in
  forward order whose gain is ≥ ``init_gain_high`` (4; a variance 8 × He's) or ≤ ``init_gain_low`` (0.3) is
  named; without such a layer the weights are not the cause (inputs × 1000 blow up the loss with every gain
  normal: that is ``unscaled_inputs``). The gradient at step 0 is evidence too: the first/last gradient ratio
  (AUTOTRAINER's β₃ = 70 for an explosion) and each end's ‖g‖/‖W‖.

Not judged here: an explosion in a sigmoid/tanh net (half or more of its activations) with a layer more than
half saturated, and a collapse in any net with such a layer (oversized weights in a sigmoid/tanh net — the lesson's
deep sigmoid net with N(0, 1) weights: the saturation rule names it after ``persist`` probes, and the gradient
rules stand back as well; one tanh elsewhere, BERT's pooler behind an exploding attention stack, does not hide an
explosion), and a ReLU layer that is ≥ 70 % dead (the dead-units rule): both are the same bad initial state seen through its activation, and those
rules carry the remedies that fit. Batch norm after a layer makes its scale harmless; the signal checks then
see nothing, as they should.
"""

from __future__ import annotations

import math

from tricklab.diagnose.detectors.base import Context, Detector, Finding, finite, weight_layers
from tricklab.diagnose.detectors.gradients import first_last_ratio, max_saturation
from tricklab.diagnose.records import LayerStats, ProbeRecord
from tricklab.tricks.activations import SATURATING


def signal_extremes(layers: list[LayerStats], record: ProbeRecord) -> tuple[float, float, LayerStats | None] | None:
    """(largest, smallest) rms of the signal reaching a later layer or the output, relative to the first layer's
    input rms, and the layer where the smallest is reached (None: the output); None when not measurable."""
    ref = layers[0].input_rms if layers else None
    if not finite(ref) or not ref > 0:  # type: ignore[operator]
        return None
    points: list[tuple[float, LayerStats | None]] = [(float(lay.input_rms) / ref, lay) for lay in layers[1:]
                                                      if finite(lay.input_rms)]
    if finite(record.output_rms):
        points.append((float(record.output_rms) / ref, None))  # type: ignore[arg-type]
    if not points:
        return None
    low = min(points, key=lambda p: p[0])
    return max(p[0] for p in points), low[0], low[1]


def init_loss_ratio(record: ProbeRecord, ctx: Context) -> float | None:
    """The loss at this probe over ln C (None without a class count or a finite loss)."""
    c = ctx.classes
    if not c or c < 2 or not finite(record.loss):
        return None
    return float(record.loss) / math.log(c)


def gradient_evidence(layers: list[LayerStats]) -> dict[str, float]:
    """The gradient at this probe: first/last ratio and ‖g‖/‖W‖ at either end."""
    out: dict[str, float] = {}
    ratio = first_last_ratio(layers)
    if ratio is not None:
        out.update(grad_first=ratio[0], grad_last=ratio[1], grad_ratio=ratio[2])
    for name, lay in (("first", layers[0]), ("last", layers[-1])):
        if finite(lay.grad_norm) and finite(lay.weight_norm) and lay.weight_norm > 0:
            out[f"grad_to_weight_{name}"] = float(lay.grad_norm) / float(lay.weight_norm)
    return out


def saturating_net(layers: list[LayerStats], fraction: float) -> bool:
    """A sigmoid/tanh net (at least half of the layers with an activation have one) with a layer more than
    ``fraction`` saturated: the saturation rule's case."""
    acts = [lay.activation for lay in layers if lay.activation is not None]
    return bool(acts) and 2 * sum(a in SATURATING for a in acts) >= len(acts) and max_saturation(layers) > fraction


class _InitRule(Detector):
    """Shared by both directions: judged on the first record kept (the first probe of the run or after a reset)."""

    def judged(self, record: ProbeRecord, ctx: Context) -> list[LayerStats] | None:
        if len(ctx.records) != 1:
            return None
        layers = weight_layers(record)
        if not layers:
            return None
        if any(lay.activation == "relu" and finite(lay.frac_dead) and lay.frac_dead >= self.t.dead_fraction  # type: ignore[operator]
               for lay in layers):
            return None
        return layers

    def evidence(self, record: ProbeRecord, ctx: Context, layers: list[LayerStats], culprit: LayerStats,
                 signal: tuple[float, float, LayerStats | None] | None) -> dict[str, float]:
        gains = [float(lay.weight_gain) for lay in layers if finite(lay.weight_gain)]  # type: ignore[arg-type]
        acts = [lay.activation for lay in layers if lay.activation is not None]
        e: dict[str, float] = {"loss": record.loss, "weight_gain": float(culprit.weight_gain or math.nan),
                               "saturating": sum(a in SATURATING for a in acts) / len(acts) if acts else 0.0,
                               "layer_index": culprit.depth_index, "layers": len(layers),
                               "max_gain": max(gains, default=math.nan), "min_gain": min(gains, default=math.nan)}
        if ctx.classes:
            e.update(classes=ctx.classes, ln_classes=math.log(ctx.classes))
        ratio = init_loss_ratio(record, ctx)
        if ratio is not None:
            e["loss_over_ln_c"] = ratio
        if finite(record.output_rms):
            e["logit_rms"] = float(record.output_rms)  # type: ignore[arg-type]
        if signal is not None:
            e.update(signal_max=signal[0], signal_min=signal[1])
        e.update(gradient_evidence(layers))
        return e


class ExplodingInit(_InitRule):
    """On the first probe: a layer with weight gain ≥ ``init_gain_high`` (the first one is named) and one of: loss
    ≥ ``init_loss_factor`` × ln C, the signal ≥ ``init_signal_growth`` × the first layer's input, or a first/last
    gradient ratio above AUTOTRAINER's 70 (see the module docstring)."""

    kind = "exploding_init"
    explained_by = ("unscaled_inputs",)

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        layers = self.judged(record, ctx)
        if not layers:
            return None
        culprit = next((lay for lay in layers if finite(lay.weight_gain)
                        and lay.weight_gain >= self.t.init_gain_high), None)  # type: ignore[operator]
        if culprit is None or saturating_net(layers, self.t.saturated_fraction):
            return None
        signal = signal_extremes(layers, record)
        ratio = init_loss_ratio(record, ctx)
        grads = first_last_ratio(layers)
        by_loss = ratio is not None and ratio >= self.t.init_loss_factor
        by_signal = signal is not None and signal[0] >= self.t.init_signal_growth
        by_gradient = grads is not None and grads[2] > self.t.exploding_ratio
        if not (by_loss or by_signal or by_gradient):
            return None
        criterion = "loss" if by_loss else ("signal" if by_signal else "gradient")
        bad = [lay for lay in layers if finite(lay.weight_gain) and lay.weight_gain >= self.t.init_gain_high]  # type: ignore[operator]
        return self.finding(record.step, criterion, bad, self.evidence(record, ctx, layers, culprit, signal))


class VanishingInit(_InitRule):
    """On the first probe: a layer with weight gain ≤ ``init_gain_low`` (the first one is named) and the signal
    reaching a later layer or the output ≤ ``init_signal_decay`` × the first layer's input (module docstring)."""

    kind = "vanishing_init"
    explained_by = ("unscaled_inputs",)

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        layers = self.judged(record, ctx)
        if not layers or len(layers) < 2:
            return None
        if max_saturation(layers) > self.t.saturated_fraction:
            return None
        signal = signal_extremes(layers, record)
        grads = first_last_ratio(layers)
        by_signal = signal is not None and signal[1] <= self.t.init_signal_decay
        # the biases' own scale (PyTorch's default U(±1/√n_in)) keeps the forward signal off zero while weak
        # weights still shrink every backward step: twelve layers of gain 0.11 leave the first a 1e-10 gradient
        by_gradient = grads is not None and grads[2] < self.t.vanishing_ratio
        if not (by_signal or by_gradient):
            return None
        weak = [lay for lay in layers if finite(lay.weight_gain) and 0 < lay.weight_gain <= self.t.init_gain_low]  # type: ignore[operator]
        if not weak:
            return None
        e = self.evidence(record, ctx, layers, weak[0], signal)
        if by_signal:
            e["signal_layer_index"] = signal[2].depth_index if signal[2] is not None else len(layers)  # type: ignore[index]
        return self.finding(record.step, "signal" if by_signal else "gradient", weak, e)
