"""Models written the way people write them — the user-model benchmark's corpus (``bench/doctor_user_corpus.py``).

Plain ``nn.Module`` code: activations called as functions inside ``forward`` (``F.relu``, ``torch.tanh``,
``x.clamp(min=0)``, ``F.gelu``), the author's own initialisation in ``__init__``, batch and layer norm, residual
blocks, a GRU, a small transformer. Every factory has tricklab's ``model.python`` signature
``factory(input_shape, num_classes)``, so a recipe names it as ``bench.user_models:<name>``; the benchmark also
builds them directly for the Python API (``tl.watch`` in a hand-written loop).

Healthy ones are what a tutorial would write; broken ones carry ONE mistake seen in real code, named in the
factory's docstring (weights scaled by hand, N(0, 1) init in wide layers, a bias that kills the ReLUs, no
activation at all, a softmax before ``cross_entropy``). Nothing here knows about tricklab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _flat(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


def _weights(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


# -- MLPs -------------------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """x → [Linear → act]×depth → Linear, the activation a function called in forward."""

    def __init__(self, n_in: int, n_out: int, width: int = 128, depth: int = 3, act: str = "relu",
                 norm: str = "none", dropout: float = 0.0, head: str = "logits") -> None:
        super().__init__()
        dims = [n_in] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.norms = nn.ModuleList(
            (nn.BatchNorm1d(width) if norm == "batch" else nn.LayerNorm(width)) for _ in range(depth)
        ) if norm != "none" else None
        self.out = nn.Linear(width, n_out)
        self.act, self.dropout, self.head = act, dropout, head

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        if self.act == "relu":
            return F.relu(h)
        if self.act == "clamp":
            return h.clamp(min=0)
        if self.act == "gelu":
            return F.gelu(h)
        if self.act == "silu":
            return F.silu(h)
        if self.act == "leaky":
            return F.leaky_relu(h, 0.1)
        if self.act == "tanh":
            return torch.tanh(h)
        if self.act == "sigmoid":
            return torch.sigmoid(h)
        return h    # "none": the mistake of a linear stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i, layer in enumerate(self.hidden):
            h = layer(h)
            if self.norms is not None:
                h = self.norms[i](h)
            h = self.activate(h)
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
        logits = self.out(h)
        if self.head == "softmax":
            return F.softmax(logits, dim=1)
        if self.head == "sigmoid":
            return torch.sigmoid(logits)
        return logits


def _init(model: nn.Module, how: str, scale: float = 1.0, bias: float = 0.0, hidden_only: bool = False) -> nn.Module:
    """The author's own init: ``kaiming``/``xavier``/``normal`` (std ``scale``)/``kaiming×scale``; biases ``bias``."""
    layers = _weights(model)
    if hidden_only:
        layers = layers[:-1]
    with torch.no_grad():
        for m in layers:
            if how == "kaiming":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.weight.mul_(scale)
            elif how == "xavier":
                nn.init.xavier_uniform_(m.weight)
                m.weight.mul_(scale)
            elif how == "normal":
                nn.init.normal_(m.weight, 0.0, scale)
            if m.bias is not None:
                nn.init.constant_(m.bias, bias)
    return model


def mlp_relu(shape, c):
    """Healthy: F.relu, PyTorch's default init."""
    return MLP(_flat(shape), c)


def mlp_gelu_layernorm(shape, c):
    """Healthy: Linear → LayerNorm → F.gelu."""
    return MLP(_flat(shape), c, norm="layer", act="gelu")


def mlp_tanh_xavier(shape, c):
    """Healthy: torch.tanh with the author's Xavier init (Glorot & Bengio's recommendation)."""
    return _init(MLP(_flat(shape), c, act="tanh"), "xavier")


def mlp_clamp_kaiming(shape, c):
    """Healthy: the ReLU written as x.clamp(min=0), Kaiming init by hand."""
    return _init(MLP(_flat(shape), c, act="clamp"), "kaiming")


def mlp_bn_dropout(shape, c):
    """Healthy: Linear → BatchNorm1d → F.relu → dropout 0.2."""
    return MLP(_flat(shape), c, norm="batch", dropout=0.2)


def mlp_silu_deep(shape, c):
    """Healthy: six F.silu layers, Kaiming init."""
    return _init(MLP(_flat(shape), c, depth=6, act="silu"), "kaiming")


def mlp_leaky(shape, c):
    """Healthy: F.leaky_relu(0.1)."""
    return MLP(_flat(shape), c, act="leaky")


def mlp_sigmoid_xavier(shape, c):
    """Healthy: two torch.sigmoid layers with Xavier init."""
    return _init(MLP(_flat(shape), c, depth=2, act="sigmoid"), "xavier")


def mlp_wide(shape, c):
    """Healthy architecture, far more parameters than a small training set (the overfitting setups)."""
    return MLP(_flat(shape), c, width=512, depth=3)


def mlp_deep(shape, c):
    """Healthy: eight F.relu layers of 64, Kaiming init (the deep MLPs' twin)."""
    return _init(MLP(_flat(shape), c, depth=8, width=64), "kaiming")


def mlp_deep10(shape, c):
    """Healthy: ten F.relu layers of 64, Kaiming init."""
    return _init(MLP(_flat(shape), c, depth=10, width=64), "kaiming")


def mlp_tanh4_xavier(shape, c):
    """Healthy: four torch.tanh layers of 128, Xavier init."""
    return _init(MLP(_flat(shape), c, width=128, depth=4, act="tanh"), "xavier")


def mlp_sigmoid5_xavier(shape, c):
    """Healthy: five torch.sigmoid layers of 128, Xavier init."""
    return _init(MLP(_flat(shape), c, width=128, depth=5, act="sigmoid"), "xavier")


def mlp_wide_kaiming(shape, c):
    """Healthy: three F.relu layers of 256, Kaiming init."""
    return _init(MLP(_flat(shape), c, width=256), "kaiming")


def mlp_relu_x10(shape, c):
    """Broken: Kaiming init multiplied by 10 ("bigger weights learn faster")."""
    return _init(MLP(_flat(shape), c), "kaiming", scale=10.0)


def mlp_normal_wide(shape, c):
    """Broken: nn.init.normal_(w) — N(0, 1) weights in 256-wide layers."""
    return _init(MLP(_flat(shape), c, width=256), "normal", scale=1.0)


def mlp_gelu_xavier(shape, c):
    """Healthy: F.gelu, Xavier init."""
    return _init(MLP(_flat(shape), c, act="gelu"), "xavier")


def mlp_gelu_x8(shape, c):
    """Broken: GELU net with Xavier init multiplied by 8."""
    return _init(MLP(_flat(shape), c, act="gelu"), "xavier", scale=8.0)


def mlp_deep_tiny(shape, c):
    """Broken: eight ReLU layers with N(0, 0.01) weights and zero biases (an old tutorial's init)."""
    return _init(MLP(_flat(shape), c, depth=8, width=64), "normal", scale=0.01)


def mlp_deep_kaiming_small(shape, c):
    """Broken: ten F.relu layers, Kaiming init scaled by 0.2."""
    return _init(MLP(_flat(shape), c, depth=10, width=64), "kaiming", scale=0.2)


def mlp_dead_bias(shape, c):
    """Broken: the author's init sets every hidden bias to −4 (their ReLUs start dead)."""
    return _init(MLP(_flat(shape), c), "kaiming", bias=-4.0, hidden_only=True)


def mlp_clamp_dead_bias(shape, c):
    """Broken: clamp(min=0) units with a bias of −5."""
    return _init(MLP(_flat(shape), c, act="clamp"), "kaiming", bias=-5.0, hidden_only=True)


def mlp_tanh_normal(shape, c):
    """Broken: torch.tanh with N(0, 1) weights: the units saturate."""
    return _init(MLP(_flat(shape), c, width=128, depth=4, act="tanh"), "normal", scale=1.0, hidden_only=True)


def mlp_sigmoid_normal(shape, c):
    """Broken: five torch.sigmoid layers with N(0, 1) weights."""
    return _init(MLP(_flat(shape), c, width=128, depth=5, act="sigmoid"), "normal", scale=1.0, hidden_only=True)


def mlp_linear_stack(shape, c):
    """Broken: three Linear layers and no activation between them."""
    return MLP(_flat(shape), c, act="none")


def mlp_linear_bn(shape, c):
    """Broken: Linear → BatchNorm → Linear → BatchNorm → Linear, never an activation."""
    return MLP(_flat(shape), c, depth=2, act="none", norm="batch")


def mlp_softmax_out(shape, c):
    """Broken: forward ends in F.softmax, and the loss is cross_entropy."""
    return MLP(_flat(shape), c, head="softmax")


def mlp_sigmoid_out(shape, c):
    """Broken: forward ends in torch.sigmoid (probabilities per class) before cross_entropy."""
    return MLP(_flat(shape), c, head="sigmoid")


# -- CNNs (2-D images and 1-D signals) ----------------------------------------------------------------------------
class CNN(nn.Module):
    """conv → [BN] → act (→ max-pool after the second) ×n → global average → Linear."""

    def __init__(self, shape: tuple[int, ...], n_out: int, width: int = 32, n: int = 3, bn: bool = True,
                 act: str = "relu", head: str = "logits") -> None:
        super().__init__()
        conv = nn.Conv2d if len(shape) == 3 else nn.Conv1d
        norm = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        self.pool = F.max_pool2d if len(shape) == 3 else F.max_pool1d
        chans = [shape[0]] + [width] * n
        self.convs = nn.ModuleList(conv(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        self.norms = nn.ModuleList(norm(width) for _ in range(n)) if bn else None
        self.fc = nn.Linear(width, n_out)
        self.act, self.head = act, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms is not None:
                x = self.norms[i](x)
            if self.act == "relu":
                x = F.relu(x)
            if i == 1:
                x = self.pool(x, 2)
        logits = self.fc(x.flatten(2).mean(-1))
        return F.softmax(logits, dim=-1) if self.head == "softmax" else logits


def cnn_bn(shape, c):
    """Healthy: conv → BatchNorm → F.relu, max-pool, global average pooling."""
    return CNN(shape, c)


def cnn_plain(shape, c):
    """Healthy: the same without batch norm, PyTorch's default init."""
    return CNN(shape, c, bn=False)


def cnn_deep(shape, c):
    """Healthy: six convolutions without batch norm, Kaiming init."""
    return _init(CNN(shape, c, n=6, bn=False), "kaiming")


def cnn_plain_kaiming(shape, c):
    """Healthy: three convolutions without batch norm, Kaiming init."""
    return _init(CNN(shape, c, bn=False), "kaiming")


def cnn_plain_x8(shape, c):
    """Broken: no batch norm and Kaiming init × 8."""
    return _init(CNN(shape, c, bn=False), "kaiming", scale=8.0)


def cnn_deep_tiny(shape, c):
    """Broken: six convolutions without batch norm, N(0, 0.01) weights, zero biases."""
    return _init(CNN(shape, c, n=6, bn=False), "normal", scale=0.01)


def cnn_dead_bias(shape, c):
    """Broken: no batch norm, the conv biases set to −6 by the author's init."""
    return _init(CNN(shape, c, bn=False), "kaiming", bias=-6.0, hidden_only=True)


def cnn_no_activation(shape, c):
    """Broken: three convolutions with batch norm and average pooling, and no activation."""
    model = CNN(shape, c, act="none")
    model.pool = F.avg_pool2d if len(shape) == 3 else F.avg_pool1d
    return model


def cnn_softmax_out(shape, c):
    """Broken: the CNN returns F.softmax(logits)."""
    return CNN(shape, c, head="softmax")


# -- residual nets ----------------------------------------------------------------------------------------------
class Block(nn.Module):
    """The basic residual block as people write it: relu(bn2(conv2(relu(bn1(conv1 x)))) + x)."""

    def __init__(self, width: int, conv: type[nn.Module], norm: type[nn.Module] | None, pre: bool = False) -> None:
        super().__init__()
        self.conv1 = conv(width, width, 3, padding=1, bias=norm is None)
        self.conv2 = conv(width, width, 3, padding=1, bias=norm is None)
        self.bn1 = norm(width) if norm else nn.Identity()
        self.bn2 = norm(width) if norm else nn.Identity()
        self.pre = pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:   # pre-activation (He et al. 2016b): bn → relu → conv
            out = self.conv1(F.relu(self.bn1(x)))
            return x + self.conv2(F.relu(self.bn2(out)))
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class ResNet(nn.Module):
    def __init__(self, shape: tuple[int, ...], n_out: int, width: int = 32, blocks: int = 3, bn: bool = True,
                 pre: bool = False) -> None:
        super().__init__()
        conv = nn.Conv2d if len(shape) == 3 else nn.Conv1d
        norm = (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d) if bn else None
        self.stem = conv(shape[0], width, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(width, conv, norm, pre) for _ in range(blocks)])
        self.fc = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(x.flatten(2).mean(-1))


def resnet_basic(shape, c):
    """Healthy: three basic blocks with batch norm."""
    return ResNet(shape, c)


def resnet_preact(shape, c):
    """Healthy: three pre-activation blocks."""
    return ResNet(shape, c, pre=True)


def resnet_nobn(shape, c):
    """Healthy: residual blocks without normalisation, Kaiming init."""
    return _init(ResNet(shape, c, bn=False), "kaiming")


def resnet_nobn_normal(shape, c):
    """Broken: residual blocks without normalisation, nn.init.normal_(w, std=0.5) on every conv."""
    return _init(ResNet(shape, c, bn=False), "normal", scale=0.5)


# -- sequences: a GRU and a small transformer over the 1-D signal -------------------------------------------------
class GRUNet(nn.Module):
    """An image read row by row (a signal: sample by sample) → Linear embedding → GRU → last state → Linear."""

    def __init__(self, shape: tuple[int, ...], n_out: int, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(shape[-1] if len(shape) == 3 else shape[0], hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.flatten(1, 2) if x.dim() == 4 else x.transpose(1, 2)   # (batch, length, features)
        out, h = self.gru(F.relu(self.embed(seq)))
        return self.fc(h[-1])


class Attention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class TransformerBlock(nn.Module):
    def __init__(self, d: int, heads: int = 4) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Patches of 4 samples → Linear → + learned positions → 2 pre-norm blocks → mean → Linear."""

    def __init__(self, shape: tuple[int, ...], n_out: int, d: int = 32, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(shape[0] * patch, d)
        self.pos = nn.Parameter(torch.zeros(1, shape[-1] // patch, d))
        self.blocks = nn.Sequential(TransformerBlock(d), TransformerBlock(d))
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, n = x.shape
        tokens = x.view(b, ch, n // self.patch, self.patch).permute(0, 2, 1, 3).flatten(2)
        h = self.blocks(self.embed(tokens) + self.pos)
        return self.fc(self.ln(h).mean(1))


def gru(shape, c):
    """Healthy: a GRU over the signal."""
    return GRUNet(shape, c)


def transformer(shape, c):
    """Healthy: a two-block pre-norm transformer with F.scaled_dot_product_attention and F.gelu."""
    return TinyTransformer(shape, c)
