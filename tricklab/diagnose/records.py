"""What the doctor sees and what it says: per-layer probe statistics, per-step records, alarms.

Plain dataclasses of Python floats (the probe reads the device once per probe step), JSON round-trippable,
so the same records feed detectors, the run directory (``probes.jsonl``), the store and the report. ``Alarm``
is defined in ``tricklab.store.records`` (the core's own alarms and the store use it too) and re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tricklab.store.records import Alarm

__all__ = ["ALARM_KINDS", "Alarm", "LayerStats", "ProbeRecord"]


@dataclass
class LayerStats:
    """One weight layer (Linear/Conv) at one probe step.

    ``pre_*``: the layer's output (before norm/activation); ``act_*``: the output of the activation that
    follows it in the forward pass (None when there is none, e.g. the logits layer). ``activation`` is the
    family of that activation (``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``, ``gelu``, ``selu``, None).
    ``frac_saturated``: share of activations with |tanh| > 0.97, or sigmoid within 0.03 of 0 or 1 (None for
    other families); ``frac_dead``: share of units (channels for convolutions) whose pre-activation is <= 0 for
    every example and position of the probe batch (relu family only, else None).
    ``update_ratio`` = ‖Δw‖/‖w‖ of this step's optimizer update (None when the optimizer step was not seen).
    ``weight_gain`` = ‖W‖/√n_out = √(n_in · mean(W²)), what the weights alone multiply the signal's rms by:
    √2 for He, 1 for LeCun, 1/√3 for PyTorch's default, √n_in for N(0, 1) weights (biases left out).
    ``input_rms``: root mean square of the layer's input, so rms(output)/rms(input) is the layer's own gain
    whatever the wiring around it (residual sums, branches); None when not measured.
    """

    name: str
    kind: str                      # "linear" | "conv1d" | "conv2d" | ...
    depth_index: int               # order in the forward pass, 0 = first weight layer
    activation: str | None
    pre_mean: float
    pre_std: float
    act_mean: float | None
    act_std: float | None
    frac_saturated: float | None
    frac_dead: float | None
    grad_norm: float
    weight_norm: float
    update_ratio: float | None
    input_rms: float | None = None
    weight_gain: float | None = None   # ‖W‖/√n_out = √(n_in · mean W²): the init's gain on the signal's rms

    @property
    def output_rms(self) -> float:
        """√(mean² + std²) of the layer's output."""
        return float((self.pre_mean ** 2 + self.pre_std ** 2) ** 0.5)

    @property
    def gain(self) -> float | None:
        """rms(output)/rms(input): ≈ √2 for He init behind a ReLU, ≈ 1 for LeCun, √n_in for N(0, 1) weights."""
        if self.input_rms is None or not self.input_rms > 0:
            return None
        return self.output_rms / self.input_rms


@dataclass
class ProbeRecord:
    """Everything measured at one probe step."""

    step: int
    epoch: int
    loss: float
    grad_norm: float               # global L2 norm of all gradients (before clipping)
    input_mean: float              # statistics of the probe batch's inputs (unscaled-input detection)
    input_std: float
    input_absmax: float
    layers: list[LayerStats] = field(default_factory=list)
    clip_fired: bool | None = None
    lr: float | None = None
    # the model's output (its last dimension = the classes of a classifier): width, rms, min, max, and the
    # largest |row sum − 1| (≈ 0 when the model already outputs probabilities)
    output_dim: int | None = None
    output_rms: float | None = None
    output_min: float | None = None
    output_max: float | None = None
    output_rowsum_dev: float | None = None
    # weight-layer calls of the forward pass preceded by a nonlinear function since the previous weight-layer
    # call (0 with two or more layers: the model is linear); None when fewer than two ran
    hidden_nonlinear: int | None = None
    # the family of the function whose result the forward pass returns (``sigmoid``, ``tanh``, ``other`` for
    # softmax ...), None when it returns a weight layer's output (logits)
    output_activation: str | None = None
    # half precision: ``float16``/``bfloat16`` when the weight layers computed in it (autocast or a .half()
    # model), None for float32; ``loss_scale``: a dynamic loss scaler's scale after this step's update (None
    # without a known, enabled scaler); ``grad_subnormal``: in float16, the share of the weight layers' nonzero
    # gradient entries that were subnormal in float16 after the loss scale (|S·g| < 2^−14: precision lost, the
    # smallest ones flushed to 0) — None where not measured (not float16, or whether a scaler runs is unknown)
    compute_dtype: str | None = None
    loss_scale: float | None = None
    grad_subnormal: float | None = None
    # the weight layers' own dtype when it is 16-bit (``float16``/``bfloat16``: a ``.half()`` model, no float32
    # master copy), None for float32/float64
    weight_dtype: str | None = None

    @property
    def overflow_skip(self) -> bool:
        """A float16 step whose gradients overflowed while the loss stayed finite: a dynamic loss scaler skipped
        it (nothing was learned; its statistics are the overflow the scaler caught, not the model's state)."""
        return self.compute_dtype == "float16" and math.isfinite(self.loss) and not math.isfinite(self.grad_norm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeRecord:
        d = dict(d)
        d["layers"] = [LayerStats(**layer) for layer in d.get("layers", [])]
        return cls(**d)


ALARM_KINDS = (
    "vanishing_gradients",
    "exploding_gradients",
    "dead_units",
    "saturation",
    "update_ratio",
    "nan_loss",
    "loss_spike",
    "plateau",
    "oscillation",
    "overfitting",
    "unscaled_inputs",
    "too_many_parameters",
    "exploding_init",
    "vanishing_init",
    "lr_too_high",
    "lr_too_low",
    "linear_model",
    "output_loss_mismatch",
    "fp16_overflow",
    "fp16_underflow",
)
