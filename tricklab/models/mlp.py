"""The multilayer perceptron: every input is flattened to a vector, then ``depth`` fully connected hidden
layers of ``width`` units and a linear output layer.

    h₀ = flatten(x);  h_k = dropout(act(norm(W_k·h_{k−1} + b_k))), k = 1..depth;  logits = W_out·h_depth + b_out

Rumelhart, Hinton & Williams 1986 ("Learning representations by back-propagating errors"). The baseline that
ignores the order of the inputs: on MNIST-1D it sees a shifted digit as a new pattern (the MNIST-1D paper,
Greydanus 2020, arXiv:2011.14439, reports 68% for an MLP against 94% for a CNN).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from tricklab.models.blocks import HiddenLayer, check_hparams, check_input


class MLP(nn.Module):
    """``depth`` hidden Linear layers (weights → norm → activation → dropout) and a Linear output layer.

    Submodules: ``flatten``, ``body.layer1`` … ``body.layer{depth}`` (each a ``HiddenLayer``), ``out``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        depth: int = 4,
        width: int = 32,
        activation: str = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_shape = check_input(input_shape, num_classes)
        self.num_classes = num_classes
        activation, norm = check_hparams(depth, width, activation, norm, dropout)
        features = math.prod(self.input_shape)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for k in range(1, depth + 1):
            layers[f"layer{k}"] = HiddenLayer(0, features, width, activation=activation, norm=norm, dropout=dropout)
            features = width
        self.flatten = nn.Flatten()
        self.body = nn.Sequential(layers)
        self.out = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.flatten(x)))
