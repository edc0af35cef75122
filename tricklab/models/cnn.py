"""The plain convolutional network: ``depth`` convolutions of ``width`` channels, max-pooling by 2 at most
three times spread over the depth, global average pooling and a linear layer to the logits.

    h_k = act(norm(W_k ∗ h_{k−1} + b_k))  [then max-pool 2 after the layers ``pool_positions`` picks]
    logits = W_out · dropout(mean_positions(h_depth)) + b_out

LeCun et al. 1998 ("Gradient-based learning applied to document recognition"); global average pooling from
Lin et al. 2013 (arXiv:1312.4400). The "plain" network of He et al. 2016 (arXiv:1512.03385): ``resnet`` at the
same depth has the same convolutions plus identity shortcuts, so "plain vs residual" is one override.

Design, measured on the default recipe (MNIST-1D standardised, depth 4, width 32, batch norm, He init, AdamW
3e-3, one-cycle, 15 epochs, batch 64; test accuracy, mean of seeds 0–2, 2-core CPU, torch 2.13):

    stride-2 convs, flatten head:      kernel 3 0.919, kernel 5 0.943
    stride-2 convs, global avg pool:   kernel 5 0.965
    max-pool 2, global avg pool:       kernel 3 0.967, kernel 5 0.979 (this design), kernel 7 0.978

Global pooling helps because MNIST-1D shifts each digit at random; max-pooling keeps the strongest response of
each window. Pooling early (after layers 0, 1, 2 instead of 1, 2, 3, with strides) cost 5 points. Training
takes ~7 s per run there. Images use 3×3 kernels (Simonyan & Zisserman 2014, arXiv:1409.1556: two 3×3 see as
far as one 5×5, for fewer weights).

``cnn_flatten`` (``FlattenCNN``) is the layout of the lesson's Dropout notebook instead: convolutions with
max-pooling, then every position flattened (no global pooling) → dropout → the output layer, so that dropout acts on
a wide vector (the notebook: 320 features) — the head where the notebook measured its claim. It pools only as often
as keeps the flattened vector at ``FLATTEN_MIN`` features or more (digits 8×8 with 32 channels: once, 4·4·32 = 512;
MNIST-1D: twice, 10·32 = 320; MNIST 28×28: twice, 7·7·32 = 1,568).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from tricklab.models.blocks import (
    ClassifierHead,
    HiddenLayer,
    Reshape,
    check_hparams,
    check_input,
    downsample,
    pool_positions,
    signal_shape,
)

KERNEL_SIZE = {1: 5, 2: 3}
"""Kernel size per number of spatial dimensions: 5 for signals (measured, see above), 3×3 for images."""

FLATTEN_MIN = 256
"""Fewest features ``FlattenCNN`` flattens where the input is large enough: pooling stops before it would go below
(Dropout.ipynb flattens 320; with fewer the dropout layer acts on little more than a pooled vector)."""

HEADS = ("pool", "flatten")


def pooled_size(size: int, times: int) -> int:
    """A length after ``times`` max-poolings by 2 (odd sizes round up, as ``downsample`` does)."""
    for _ in range(times):
        size = -(-size // 2)
    return size


def flatten_pools(pools: set[int], width: int, spatial: tuple[int, ...]) -> set[int]:
    """The first of ``pools`` (layer indices, in depth order) that keep ``width`` × the pooled positions at
    ``FLATTEN_MIN`` or more (none when even the unpooled input has fewer: it is flattened as it is)."""
    ordered = sorted(pools)
    for n in range(len(ordered), -1, -1):
        features = width * math.prod(pooled_size(s, n) for s in spatial)
        if features >= FLATTEN_MIN or n == 0:
            return set(ordered[:n])
    return set()


class FlattenHead(nn.Sequential):
    """Flatten every position of every channel → (dropout) → linear layer to the logits (``out``): the head of
    Dropout.ipynb (``Flatten() → Dropout(d) → Dense(10)``), where dropout acts on ``features`` units (320 in the
    notebook) rather than on a pooled vector of ``width`` channels."""

    def __init__(self, features: int, num_classes: int, dropout: float = 0.0) -> None:
        parts: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        if dropout > 0:
            parts["drop"] = nn.Dropout(dropout)
        parts["out"] = nn.Linear(features, num_classes)
        super().__init__(parts)


class CNN(nn.Module):
    """``depth`` conv layers (weights → norm → activation), max-pooling, global pooling head (with the dropout).

    A vector input (F,) is read as a one-channel signal (1, F). Submodules: ``reshape``,
    ``body.layer1`` … ``body.layer{depth}`` with ``body.pool1`` … between them, ``head`` (``head.out``: the
    logits layer).
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
        kernel_size: int | None = None,
        head: str = "pool",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.input_shape = check_input(input_shape, num_classes)
        self.num_classes = num_classes
        activation, norm = check_hparams(depth, width, activation, norm, dropout)
        shape = signal_shape(self.input_shape)
        dims = len(shape) - 1
        kernel = kernel_size or KERNEL_SIZE[dims]
        pools = pool_positions(depth, shape[1:])
        if head == "flatten":
            pools = flatten_pools(pools, width, shape[1:])
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, pooled = shape[0], 0
        for i in range(depth):
            layers[f"layer{i + 1}"] = HiddenLayer(
                dims, channels, width, kernel_size=kernel, activation=activation, norm=norm, dropout=0.0
            )
            channels = width
            if i in pools:
                pooled += 1
                layers[f"pool{pooled}"] = downsample(dims)
        self.reshape = Reshape(shape)
        self.body = nn.Sequential(layers)
        if head == "flatten":
            features = width * math.prod(pooled_size(n, pooled) for n in shape[1:])
            self.head: nn.Module = FlattenHead(features, num_classes, dropout)   # dropout on every position
        else:
            self.head = ClassifierHead(dims, width, num_classes, dropout)  # dropout once, on the pooled features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.reshape(x)))


class FlattenCNN(CNN):
    """Dropout.ipynb's layout (``cnn_flatten``): ``depth`` conv layers with max-pooling, then flatten (≥
    ``FLATTEN_MIN`` features where the input allows) → dropout → linear. Same submodules as ``CNN``; ``head`` is a
    ``FlattenHead`` (``head.flatten``, ``head.drop``, ``head.out``)."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        depth: int = 2,
        width: int = 32,
        activation: str = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
        kernel_size: int | None = None,
    ) -> None:
        super().__init__(input_shape, num_classes, depth=depth, width=width, activation=activation, norm=norm,
                         dropout=dropout, kernel_size=kernel_size, head="flatten")
