"""Activation functions by name; the doctor needs to know which family a unit belongs to.

``saturating`` activations (sigmoid, tanh) lose gradient at large |x|; ``rectifier`` activations
(relu-family) can die (output exactly 0 for every input).
"""

from __future__ import annotations

from torch import nn

from tricklab.registry import Registry

ACTIVATIONS = Registry("activation")

ACTIVATIONS.register("relu", formula="max(0, x)", reference="Nair & Hinton 2010", obj=nn.ReLU)
ACTIVATIONS.register(
    "leaky_relu",
    formula="max(0.01x, x)",
    reference="Maas et al. 2013",
    note="cannot die: a remedy for dead ReLUs",
    obj=nn.LeakyReLU,
)
ACTIVATIONS.register("tanh", formula="tanh(x)", reference="LeCun et al. 1998", note="saturates at |x| >> 1", obj=nn.Tanh)
ACTIVATIONS.register(
    "sigmoid", formula="1/(1+e^-x)", reference="Rumelhart et al. 1986", note="saturates; mean 0.5, not 0", obj=nn.Sigmoid
)
ACTIVATIONS.register("gelu", formula="x·Φ(x)", reference="Hendrycks & Gimpel 2016", obj=nn.GELU)
ACTIVATIONS.register(
    "selu", formula="λ·(x if x>0 else α(e^x−1))", reference="Klambauer et al. 2017", note="self-normalising with lecun init", obj=nn.SELU
)

SATURATING = frozenset({"tanh", "sigmoid"})
RECTIFIERS = frozenset({"relu", "leaky_relu"})
"""The families whose units can die (0 for every input); the probes count their dead units."""

SATURATION = {"tanh": (0.0, 0.97), "sigmoid": (0.5, 0.47)}
"""family → (centre c, half-width t): saturated where |a − c| > t, i.e. |tanh| > 0.97, sigmoid ∉ [0.03, 0.97]."""

ACTIVATION_FAMILIES: dict[type[nn.Module], str] = {
    **{entry.obj: entry.name for entry in ACTIVATIONS},  # relu, leaky_relu, tanh, sigmoid, gelu, selu
    nn.ReLU6: "relu",          # dies like ReLU (0 for x <= 0)
    nn.PReLU: "leaky_relu",
    nn.RReLU: "leaky_relu",
    nn.SiLU: "gelu",           # smooth self-gated x·σ(βx): the GELU family
    nn.Mish: "gelu",
    nn.ELU: "selu",            # SELU = λ·ELU_α: the same exponential negative branch
    nn.CELU: "selu",
}
"""Activation module type → the family the probes' records name; the doctor needs saturating vs rectifier."""


def activation_family(module: nn.Module) -> str | None:
    """The family (``relu`` … ``selu``) of an activation module, None for anything else."""
    family = ACTIVATION_FAMILIES.get(type(module))
    if family is None:
        for cls, fam in ACTIVATION_FAMILIES.items():
            if isinstance(module, cls):
                return fam
    return family


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (see ``ACTIVATIONS``)."""
    return ACTIVATIONS.get(name).obj()
