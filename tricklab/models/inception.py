"""The Inception network (Szegedy et al. 2015, "Going Deeper with Convolutions", arXiv:1409.4842), with a
norm layer after every convolution as in Inception v2 (Ioffe & Szegedy 2015, arXiv:1502.03167).

An Inception module looks at the same input through parallel branches of different receptive fields and
concatenates what they find along the channels:

    y = concat( conv1(x),  conv3(reduce₃(x)),  conv5(reduce₅(x)),  proj(maxpool3(x)) )

where ``reduce``/``proj`` are 1-wide convolutions and every convolution is weights → norm → activation. The
network learns how much of each scale to use — the lesson calls ResNet and Inception "bis zu einem gewissen
Grad selbstanpassend". ``depth`` modules, each concatenated to ``width`` channels (split evenly over the four
branches; the 1-wide branch takes the remainder, and branches that would get 0 channels, for width < 4, are
left out); dropout once, on the pooled features before the classifier (see ``ClassifierHead``); max-pooling by 2 at most three times between
modules (as GoogLeNet pools between its stages); global average pooling and a linear layer to the logits.
Kernel sizes 1, 3, 5 for signals and 1×1, 3×3, 5×5 for images; a vector (F,) is read as a signal (1, F).
"""

from __future__ import annotations

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


def branch_widths(width: int) -> list[int]:
    """Channels per branch [1-wide, 3-wide, 5-wide, pool] summing to ``width``; remainder to the 1-wide one."""
    base, rest = divmod(width, 4)
    return [base + rest, base, base, base]


class InceptionModule(nn.Module):
    """Parallel branches ``branch1``, ``branch3``, ``branch5``, ``branch_pool`` concatenated on channels."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        width: int,
        *,
        activation: str = "relu",
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()

        def layer(cin: int, cout: int, k: int) -> HiddenLayer:
            return HiddenLayer(dims, cin, cout, kernel_size=k, activation=activation, norm=norm)

        c1, c3, c5, cp = branch_widths(width)
        branches: OrderedDict[str, nn.Module] = OrderedDict(branch1=layer(in_channels, c1, 1))
        for name, k, c in (("branch3", 3, c3), ("branch5", 5, c5)):
            if c > 0:
                branches[name] = nn.Sequential(OrderedDict(reduce=layer(in_channels, c, 1), conv=layer(c, c, k)))
        if cp > 0:
            pool = (nn.MaxPool1d, nn.MaxPool2d)[dims - 1](3, stride=1, padding=1)
            branches["branch_pool"] = nn.Sequential(OrderedDict(pool=pool, proj=layer(in_channels, cp, 1)))
        self.branches = nn.ModuleDict(branches)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.cat([branch(x) for branch in self.branches.values()], dim=1))


class Inception(nn.Module):
    """``depth`` Inception modules of ``width`` channels, max-pooling between some, global pooling head.

    Submodules: ``reshape``, ``body.module1`` … ``body.module{depth}`` with ``body.pool1`` … between them,
    ``head`` (``head.out``: the logits layer).
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
        shape = signal_shape(self.input_shape)
        dims = len(shape) - 1
        pools = pool_positions(depth, shape[1:])
        body: OrderedDict[str, nn.Module] = OrderedDict()
        channels, pooled = shape[0], 0
        for i in range(depth):
            body[f"module{i + 1}"] = InceptionModule(
                dims, channels, width, activation=activation, norm=norm, dropout=0.0
            )
            channels = width
            if i in pools:
                pooled += 1
                body[f"pool{pooled}"] = downsample(dims)
        self.reshape = Reshape(shape)
        self.body = nn.Sequential(body)
        self.head = ClassifierHead(dims, width, num_classes, dropout)  # dropout once, before the classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.reshape(x)))
