"""What the doctor sees and what it says: per-layer probe statistics, per-step records, alarms.

Plain dataclasses of Python floats (the probe reads the device once per probe step), JSON round-trippable,
so the same records feed detectors, the run directory (``probes.jsonl``), the store and the report. ``Alarm``
is defined in ``tricklab.store.records`` (the core's own alarms and the store use it too) and re-exported here.
"""

from __future__ import annotations

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
)
