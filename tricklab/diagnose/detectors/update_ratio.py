"""The update/weight ratio: how much one optimizer step changes the weights, relative to their size.

Karpathy (CS231n, "Neural Networks Part 3: Learning and Evaluation"): track ‖Δw‖/‖w‖ per layer; around 1e-3
is healthy; much lower and the learning rate is probably too low, much higher and it is too high. We alarm
when the median weight layer is outside [1e-5, 1e-1] (two orders of magnitude either way) on ``persist``
consecutive probes: the learning rate is one number for all layers, so the median layer is what it governs,
and the layers individually outside the range are listed.

"Too small" is judged only while the learning rate is at least ``update_lr_gate`` (0.1) × the peak learning
rate seen so far: a one-cycle or cosine schedule that anneals to ~0 at the end shrinks the updates on
purpose. A layer whose update is exactly 0 (a frozen or dead layer) counts as −∞. Tiny updates caused by
vanishing gradients, dead or saturated units are those problems' symptom, not the learning rate's, so the
"low" finding is explained by them.
"""

from __future__ import annotations

import math

from tricklab.diagnose.detectors.base import Context, Detector, Finding, Streak, median, weight_layers
from tricklab.diagnose.records import LayerStats, ProbeRecord

LOW_EXPLAINED_BY = ("vanishing_gradients", "dead_units", "saturation", "unscaled_inputs", "lr_too_low",
                    "vanishing_init", "output_loss_mismatch", "linear_model")
HIGH_EXPLAINED_BY = ("unscaled_inputs", "lr_too_high", "exploding_init")


def log10_ratio(layer: LayerStats) -> float | None:
    """log10(‖Δw‖/‖w‖); −inf for a zero update; None when unknown or not a number."""
    r = layer.update_ratio
    if r is None or not isinstance(r, (int, float)) or math.isnan(r) or r < 0:
        return None
    if r == 0:
        return -math.inf
    return math.log10(r) if math.isfinite(r) else math.inf


class UpdateRatio(Detector):
    """Median layer's log10(‖Δw‖/‖w‖) outside [``update_log10_low``, ``update_log10_high``] = [−5, −1]
    (Karpathy's heuristic: healthy ≈ −3) on ``persist`` consecutive probes; two groups, ``high`` and ``low``.
    Evidence ``log10_update_ratio`` is the median (the repair policy reads its sign against −3)."""

    kind = "update_ratio"

    def reset(self) -> None:
        self.high = Streak()
        self.low = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        rated = [(layer, v) for layer in weight_layers(record) if (v := log10_ratio(layer)) is not None]
        if not rated:
            self.high.update(False, record.step)
            self.low.update(False, record.step)
            return None
        values = [v for _, v in rated]
        med = median(values)
        is_high = med > self.t.update_log10_high
        is_low = med < self.t.update_log10_low and ctx.lr_near_peak(record.lr, self.t.update_lr_gate)
        n_high = self.high.update(is_high, record.step)
        n_low = self.low.update(is_low, record.step)
        finite_values = [v for v in values if math.isfinite(v)]
        evidence = {"log10_update_ratio": med if math.isfinite(med) else (-30.0 if med < 0 else 30.0),
                    "log10_min": min(finite_values, default=-30.0), "log10_max": max(finite_values, default=30.0),
                    "lr": record.lr if record.lr is not None else math.nan, "layers_rated": len(rated)}
        if n_high >= self.t.persist:
            out = [layer for layer, v in rated if v > self.t.update_log10_high]
            return self.finding(self.high.start(record.step), "high", out, evidence, group="high",
                                explained_by=HIGH_EXPLAINED_BY)
        if n_low >= self.t.persist:
            out = [layer for layer, v in rated if v < self.t.update_log10_low]
            return self.finding(self.low.start(record.step), "low", out, evidence, group="low",
                                explained_by=LOW_EXPLAINED_BY)
        return None
