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


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (see ``ACTIVATIONS``)."""
    return ACTIVATIONS.get(name).obj()
