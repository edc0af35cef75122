"""What the model outputs against what the loss expects, and whether the model can be nonlinear at all.

- **Probabilities fed to a loss that expects logits.** ``F.cross_entropy`` applies log-softmax itself; a model
  that already ends in softmax hands it numbers in [0, 1] whose rows sum to 1. The loss then is
  −p_y + log Σ_j e^{p_j}, which can never fall below log(e + C − 1) − 1 (1.46 for ten classes, where a model
  that has learned reaches ≈ 0.1), and its gradient is squashed twice. The probe measures the output's min,
  max and largest |row sum − 1|: every value in [0, 1] with rows within ``probability_tolerance`` (1e-3) of 1
  is a softmax output. Where the loop is known to use cross-entropy (tricklab's Trainer) that is the finding at
  once; elsewhere the loss is unknown (log + NLL is right for the same output, BCE for sigmoid outputs), so the
  finding also needs the loss to stay at or above the cross-entropy floor for ``plateau_window`` probes — a
  correct loss falls below it (BCE of a fresh sigmoid head is ≈ 0.69). Outputs all in [0, 1] without summing to
  1 count as probabilities where the probe saw an activation function produce them (a sigmoid head) — the
  logits of a net whose ReLUs are all dead are its last layer's bias, and those can lie in [0, 1] too.
- **The wrong number of outputs.** With C classes and a C′-wide output, C′ > C trains silently (the extra
  classes are never a target; the loss at init is ln C′, not ln C); C′ < C fails on the first target ≥ C′.
  Needs the class count (the Trainer gives it; ``Doctor(num_classes=...)`` elsewhere).
- **A linear model.** Two or more weight layers with no nonlinear function between any two of them (the probe
  counts activations, softmax, max pooling, recurrent cells wherever they are called): the composition of
  linear maps is one linear map, however deep (Minsky & Papert 1969; the lesson's "without a nonlinearity,
  depth adds nothing"). Judged on every probe; a property of the code, so it is not re-raised after a repair.
"""

from __future__ import annotations

import math

from tricklab.diagnose.detectors.base import Context, Detector, Finding, Streak, finite, weight_layers
from tricklab.diagnose.records import ProbeRecord


def probability_floor(classes: int) -> float:
    """The smallest value cross-entropy can take on a probability vector over ``classes`` classes."""
    return math.log(math.e + classes - 1) - 1


def outputs_probabilities(record: ProbeRecord, tolerance: float) -> tuple[bool, bool]:
    """(every output value in [0, 1], and rows sum to 1 within ``tolerance``)."""
    lo, hi, dev = record.output_min, record.output_max, record.output_rowsum_dev
    if not (finite(lo) and finite(hi)) or not record.output_dim or record.output_dim < 2:
        return False, False
    bounded = lo >= 0 and hi <= 1  # type: ignore[operator]
    return bounded, bounded and finite(dev) and dev <= tolerance  # type: ignore[operator]


class OutputLossMismatch(Detector):
    """The model outputs probabilities where the loss expects logits, or a number of outputs other than the
    number of classes (see the module docstring)."""

    kind = "output_loss_mismatch"

    def reset(self) -> None:
        self.streak = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        dim = record.output_dim
        if dim and ctx.num_classes and dim >= 2 and dim != ctx.num_classes:
            return self.finding(record.step, "classes", weight_layers(record)[-1:], {
                "output_dim": dim, "classes": ctx.num_classes, "loss": record.loss,
                "ln_output_dim": math.log(dim), "ln_classes": math.log(ctx.num_classes)}, explainable=False)
        bounded, softmax = outputs_probabilities(record, self.t.probability_tolerance)
        # rows that sum to 1, or values in [0, 1] that an activation at the end of forward produced (the logits of
        # a dead net are its last bias: they can lie in [0, 1] without being probabilities)
        probabilities = softmax or (bounded and record.output_activation is not None)
        c = dim or 0
        floor = probability_floor(c) if c >= 2 else math.nan
        if ctx.loss == "cross_entropy":
            holds, need = probabilities, 1
        else:
            holds = probabilities and finite(record.loss) and record.loss >= floor - self.t.probability_tolerance
            need = self.t.plateau_window
        if self.streak.update(bool(holds), record.step) < need:
            return None
        return self.finding(self.streak.start(record.step), "softmax" if softmax else "bounded",
                            weight_layers(record)[-1:], {
                                "output_min": record.output_min, "output_max": record.output_max,
                                "rowsum_dev": record.output_rowsum_dev, "output_dim": dim, "loss": record.loss,
                                "loss_floor": floor, "loss_known": 1.0 if ctx.loss == "cross_entropy" else 0.0},
                            explainable=False)


class LinearModel(Detector):
    """Two or more weight layers and no nonlinearity between them (see the module docstring)."""

    kind = "linear_model"

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        if record.hidden_nonlinear != 0:
            return None
        layers = weight_layers(record)
        if len(layers) < 2:
            return None
        return self.finding(record.step, "no_nonlinearity", layers, {"weight_layers": len(layers),
                                                                     "nonlinear_between": 0}, explainable=False)
