"""Units that no longer learn: dead ReLUs and saturated sigmoid/tanh units.

- A ReLU unit is *dead* when its input is <= 0 for every example (and position) of the batch: its output and
  its gradient are 0, so nothing moves it back (Maas et al. 2013; Lu et al. 2019, "Dying ReLU and
  Initialization"). AUTOTRAINER (Zhang et al., ICSE 2021) calls a net dying when ≥ γ = 0.7 of it is dead; we
  apply γ per layer, to ReLU layers only (a leaky ReLU still passes 0.01 × the gradient, so its "dead" units
  recover — that is why it is the remedy).
- A sigmoid/tanh unit is *saturated* where |tanh| > 0.97 or the sigmoid is within 0.03 of 0 or 1: its
  derivative is below 6 % of its peak, so gradients through it vanish (Glorot & Bengio 2010 saw the top
  sigmoid layer saturate at init; LeCun et al. 1998 advise inputs and weights that keep units in the
  linear range). More than half of a layer saturated for ``persist`` probes is an alarm.

Both carry, as evidence, the gradient ratio first/last layer: a saturated tanh net can show a ratio far above
AUTOTRAINER's explosion threshold, and the message says that saturation, not explosion, is the cause.
"""

from __future__ import annotations

from tricklab.diagnose.detectors.base import Context, Detector, Finding, Streak, finite, weight_layers
from tricklab.diagnose.detectors.gradients import first_last_ratio
from tricklab.diagnose.records import ProbeRecord
from tricklab.tricks.activations import SATURATING


class DeadUnits(Detector):
    """≥ ``dead_fraction`` (0.7, AUTOTRAINER γ) of a ReLU layer's units dead on ``persist`` consecutive probes.

    Explained by vanishing gradients (a forward signal that has died leaves only the biases, which kills
    units as a symptom) and by unscaled inputs.
    """

    kind = "dead_units"
    explained_by = ("vanishing_gradients", "unscaled_inputs", "lr_too_high", "exploding_init", "vanishing_init")

    def reset(self) -> None:
        self.streak = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        layers = weight_layers(record)
        dead = [layer for layer in layers if layer.activation == "relu" and finite(layer.frac_dead)
                and layer.frac_dead >= self.t.dead_fraction]  # type: ignore[operator]
        if self.streak.update(bool(dead), record.step) < self.t.persist:
            return None
        relu_layers = [layer for layer in layers if layer.activation == "relu"]
        evidence = {"frac_dead": float(dead[0].frac_dead),  # type: ignore[arg-type]
                    "max_frac_dead": max(float(layer.frac_dead) for layer in dead),  # type: ignore[arg-type]
                    "dead_layers": len(dead), "relu_layers": len(relu_layers),
                    "grad_first": float(layers[0].grad_norm) if layers else 0.0}
        return self.finding(self.streak.start(record.step), "fraction", dead, evidence)


class Saturation(Detector):
    """More than ``saturated_fraction`` (0.5) of a sigmoid/tanh layer saturated on ``persist`` consecutive probes.

    Explained by unscaled inputs (inputs of scale 1000 saturate the first layer whatever its init).
    """

    kind = "saturation"
    explained_by = ("unscaled_inputs", "exploding_init")

    def reset(self) -> None:
        self.streak = Streak()

    def observe(self, record: ProbeRecord, ctx: Context) -> Finding | None:
        layers = weight_layers(record)
        hot = [layer for layer in layers if layer.activation in SATURATING and finite(layer.frac_saturated)
               and layer.frac_saturated > self.t.saturated_fraction]  # type: ignore[operator]
        if self.streak.update(bool(hot), record.step) < self.t.persist:
            return None
        saturating = [layer for layer in layers if layer.activation in SATURATING]
        evidence = {"frac_saturated": float(hot[0].frac_saturated),  # type: ignore[arg-type]
                    "max_frac_saturated": max(float(layer.frac_saturated) for layer in hot),  # type: ignore[arg-type]
                    "saturated_layers": len(hot), "saturating_layers": len(saturating),
                    "pre_std": float(hot[0].pre_std)}
        ratio = first_last_ratio(layers)
        if ratio is not None:
            evidence.update(grad_ratio=ratio[2])
        return self.finding(self.streak.start(record.step), str(hot[0].activation), hot, evidence)
