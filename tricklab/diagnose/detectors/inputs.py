"""Unscaled inputs: the network is fed numbers far from the unit scale every init scheme assumes.

LeCun, Bottou, Orr & Müller 1998 ("Efficient BackProp", §4.3): inputs should have mean ≈ 0 and a variance
≈ 1; every init formula (LeCun, Glorot, He: Var(w) ∝ 1/n_in) keeps a layer's output at the scale of its input,
so inputs of scale 1000 give pre-activations 1000 times too large — saturated sigmoid/tanh units, huge
first-layer gradients, or a batch norm silently absorbing it. The lesson: scale inputs to [0, 1], [−1, 1] or
to mean 0 / std 1.

The probe reports the batch's mean, std and max |x|. The scale measure is the root mean square
rms = √(mean² + std²): ≈ 1 for standardised or [−1, 1] data, ≈ 0.6 for [0, 1] pixels; 85 for raw
0–255 MNIST pixels; 1000s for data multiplied by 1000. An alarm needs, on ``persist`` consecutive probes, one
of: rms > ``input_rms_high`` (10, an order of magnitude above unit scale), rms < ``input_rms_low`` (1e-2, two
below), or max |x| > ``input_absmax`` (1000). The max |x| rule is deliberately loose: a rule of "|x| > 50"
fires on correctly standardised sparse features (Samuelson's inequality allows |z| up to √(N − 1): ≈ 34 for a
rare pixel of the 1,150 training digits), whereas no standardised value of fewer than 10⁶ examples exceeds
1000. Infinite inputs count as unscaled; a batch whose statistics are all NaN is not judged (that is also
what the probe reports for non-float inputs such as token ids — and NaN inputs make a NaN loss anyway).
"""

from __future__ import annotations

import math

from tricklab.diagnose.detectors.base import Context, Detector, Finding, Streak, finite
from tricklab.diagnose.records import ProbeRecord


def input_rms(record: ProbeRecord) -> float:
    """√(mean² + std²) of the probe batch's inputs (nan when unknown)."""
    if not (finite(record.input_mean) and finite(record.input_std)):
        return math.nan
    return math.hypot(record.input_mean, record.input_std)


class UnscaledInputs(Detector):
    """Inputs whose rms ∉ [``input_rms_low``, ``input_rms_high``] = [1e-2, 10] or whose max |x| >
    ``input_absmax`` (1000) on ``persist`` consecutive probes (see the module docstring)."""

    kind = "unscaled_inputs"

    def reset(self) -> None:
        self.streak = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        rms = input_rms(record)
        absmax = record.input_absmax
        stats = (record.input_mean, record.input_std, absmax)
        if all(not isinstance(v, (int, float)) or math.isnan(v) for v in stats):
            # no float inputs seen (token ids, say) — or all-NaN inputs, which the NaN loss will name
            self.streak.update(False, record.step)
            return None
        nonfinite = not finite(rms) or not finite(absmax)
        if nonfinite:
            criterion = "nonfinite"
        elif rms > self.t.input_rms_high:
            criterion = "large"
        elif rms < self.t.input_rms_low:
            criterion = "small"
        elif absmax > self.t.input_absmax:
            criterion = "outliers"
        else:
            criterion = ""
        if self.streak.update(bool(criterion), record.step) < self.t.persist:
            return None
        return self.finding(self.streak.start(record.step), criterion, (), {
            "input_mean": record.input_mean, "input_std": record.input_std, "input_absmax": absmax,
            "input_rms": rms})
