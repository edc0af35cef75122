"""Normalisation layers, placed after the weights and before the activation (as the lesson says).

- ``batch``: BatchNorm (Ioffe & Szegedy 2015) — normalise each channel over the mini-batch.
- ``layer``: LayerNorm (Ba et al. 2016) — normalise each example over its features (for convolutions:
  over channels and positions, i.e. GroupNorm with one group).
- ``group``: GroupNorm (Wu & He 2018) — normalise each example over groups of channels.
- ``weight``: weight normalisation (Salimans & Kingma 2016) — w = g·v/‖v‖ per output unit; no layer is
  inserted, the weights themselves are re-parametrised (``apply_weight_norm``) after initialisation.
- ``none``: nothing.
- ``batch_after_act``: BatchNorm placed *after* the activation (weights → activation → norm) — the other order,
  so that the lesson's placement ("nach der Anwendung der Gewichte, aber vor der Aktivierungsfunktion") can be
  tested against it. In a pre-activation ResNet block it is activation → norm → weights.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from tricklab.registry import Registry

NORMS = Registry("norm")
NORMS.register(
    "batch",
    formula="y = γ·(x − μ_B)/√(σ²_B + ε) + β, statistics over the mini-batch (running averages at eval)",
    reference="Ioffe & Szegedy 2015, arXiv:1502.03167",
    lesson="Batch-Normalisierung: nach den Gewichten, vor der Aktivierung; höhere Endgenauigkeit, schnelleres Training",
    obj="batch",
)
NORMS.register(
    "layer",
    formula="y = γ·(x − μ)/√(σ² + ε) + β, statistics over each example's features",
    reference="Ba, Kiros & Hinton 2016, arXiv:1607.06450",
    lesson="Schichtnormierung (mentioned as an alternative)",
    obj="layer",
)
NORMS.register(
    "group",
    formula="as layer norm, statistics over groups of channels per example",
    reference="Wu & He 2018, arXiv:1803.08494",
    obj="group",
)
NORMS.register(
    "weight",
    formula="w = g·v/‖v‖ per output unit",
    reference="Salimans & Kingma 2016, arXiv:1602.07868",
    lesson="Gewichtsnormierung (mentioned as an alternative)",
    obj="weight",
)
NORMS.register("none", formula="identity", reference="—", obj="none")
NORMS.register(
    "batch_after_act",
    formula="as batch, placed after the activation: y = BN(act(W·x + b))",
    reference="Ioffe & Szegedy 2015 place it before the activation; after it is the common alternative",
    lesson="the other placement, against the lesson's \"nach den Gewichten, vor der Aktivierung\"",
    obj="batch_after_act",
)

AFTER_ACTIVATION = frozenset({"batch_after_act"})
"""Norm kinds that sit after the activation instead of before it (``after_activation``)."""


def after_activation(kind: str) -> bool:
    """True when norm ``kind`` is placed after the activation (weights → activation → norm)."""
    return NORMS.canonical(kind) in AFTER_ACTIVATION


def _groups(channels: int, target: int = 8) -> int:
    """The largest divisor of ``channels`` that is <= ``target`` (GroupNorm needs an exact division)."""
    for g in range(min(target, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def make_norm(kind: str, channels: int, dims: int) -> nn.Module:
    """A normalisation layer for ``channels`` features of a layer with ``dims`` spatial dimensions.

    ``dims`` is 0 for a Linear layer's output (N, C), 1 for Conv1d (N, C, L), 2 for Conv2d (N, C, H, W).
    ``weight`` and ``none`` give ``nn.Identity`` (weight norm re-parametrises the weights instead).
    """
    kind = NORMS.canonical(kind)
    if kind in ("batch", "batch_after_act"):
        return (nn.BatchNorm1d, nn.BatchNorm1d, nn.BatchNorm2d)[dims](channels)
    if kind == "layer":
        return nn.LayerNorm(channels) if dims == 0 else nn.GroupNorm(1, channels)
    if kind == "group":
        # groups of at least two features: a group of one is normalised to exactly 0
        return nn.GroupNorm(_groups(channels, min(8, max(1, channels // 2))), channels)
    return nn.Identity()


NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def is_norm(module: nn.Module) -> bool:
    """True for normalisation layers (their parameters get no weight decay)."""
    return isinstance(module, NORM_TYPES)


def apply_weight_norm(model: nn.Module) -> nn.Module:
    """Re-parametrise every Linear/Conv weight as g·v/‖v‖ (call after initialisation: w is unchanged)."""
    for module in list(model.modules()):
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            weight_norm(module, name="weight", dim=0)
    return model
