"""The built-in architectures by name (``model.name`` in a recipe) and ``build_model``, the one way to make them.

Every architecture takes every input rank: (F,) vectors, (C, L) signals, (C, H, W) images. ``depth`` counts
hidden weight layers (Inception: modules), ``width`` their units/channels; the layer order is always
weights → norm → activation → dropout. ``norm: weight`` builds no layer here: the caller re-parametrises the
weights after initialisation (``tricklab.tricks.norm.apply_weight_norm``).
"""

from __future__ import annotations

from torch import nn

from tricklab.errors import InputError
from tricklab.models.cnn import CNN, FlattenCNN
from tricklab.models.inception import Inception
from tricklab.models.mlp import MLP
from tricklab.models.resnet import ResNet
from tricklab.registry import Registry

CAPACITY_LESSON = (
    "Anzahl der Modellparameter mit der Anzahl der Trainingsbeispiele in Einklang bringen — "
    "too powerful a model overfits (balance parameters against training examples)"
)

MODELS = Registry("model")
MODELS.register(
    "mlp",
    formula="h_k = drop(act(norm(W_k·h_{k−1} + b_k))), k = 1..depth, on the flattened input; logits = W·h_depth + b",
    reference="Rumelhart, Hinton & Williams 1986; MNIST-1D baseline: Greydanus 2020, arXiv:2011.14439",
    lesson=CAPACITY_LESSON,
    note="ignores the order of the inputs; depth hidden Linear layers + 1 output layer",
    obj=MLP,
)
MODELS.register(
    "cnn",
    formula="depth × [conv → norm → act → drop], max-pool 2 (≤3×, spread over the depth), global avg pool, linear",
    reference="LeCun et al. 1998; global average pooling: Lin et al. 2013, arXiv:1312.4400",
    lesson=CAPACITY_LESSON,
    note="the plain network: resnet at the same depth has the same weight layers plus identity shortcuts",
    obj=CNN,
)
MODELS.register(
    "resnet",
    formula="x_{k+1} = x_k + F(x_k), F = [norm → act → drop → weights] × 2 (pre-activation); stem + depth−1 "
    "weight layers in blocks",
    reference="He et al. 2016, arXiv:1603.05027 (identity mappings); arXiv:1512.03385 (residual learning)",
    lesson="ResNet ist bis zu einem gewissen Grad selbstanpassend (adapts to the needed complexity: an unneeded "
    "block can learn F ≈ 0); " + CAPACITY_LESSON,
    note="vectors: residual MLP blocks; signals: Conv1d; images: Conv2d",
    obj=ResNet,
)
MODELS.register(
    "inception",
    formula="y = concat(conv1(x), conv3(reduce(x)), conv5(reduce(x)), proj(maxpool3(x))) → width channels; "
    "depth modules, global avg pool, linear",
    reference="Szegedy et al. 2015, arXiv:1409.4842 (GoogLeNet); with batch norm: Ioffe & Szegedy 2015",
    lesson="Inception ist bis zu einem gewissen Grad selbstanpassend (learns how much of each kernel size to "
    "use); " + CAPACITY_LESSON,
    note="depth counts Inception modules (each has 1 + 2 + 2 + 1 convolutions in four parallel branches)",
    obj=Inception,
)
MODELS.register(
    "cnn_flatten",
    formula="depth × [conv → norm → act], max-pool 2 while ≥ 256 features remain, flatten, drop, linear",
    reference="LeCun et al. 1998; the head of the lesson's Dropout.ipynb (Flatten → Dropout → Dense)",
    lesson="Dropout ... als Schicht ... während des Trainings werden zufällige Elemente des Eingabevektors auf null "
    "gesetzt, bevor sie an die nächste Schicht weitergegeben werden (dropout on the flattened features, as in "
    "Dropout.ipynb); " + CAPACITY_LESSON,
    note="the notebook's layout: dropout acts on every position of the last convolution (≥ 256 features where the "
    "input allows), not on a globally pooled vector of width channels as in cnn",
    obj=FlattenCNN,
)


DEFAULT_WIDTH = {"mlp": 256, "cnn": 32, "cnn_flatten": 32, "resnet": 32, "inception": 32}
"""``width`` when a recipe leaves it unset: channels of a conv layer and units of a dense layer are different
quantities. 32 channels suffice for MNIST-1D's CNN (0.979 test accuracy, 3 seeds); an MLP of 32 units
under-fits it (0.484; train accuracy 0.59), one of 256 reaches 0.68 (paper: 0.68). Measured on the default
recipe, 2-core CPU."""


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    depth: int = 4,
    width: int | None = None,
    activation: str = "relu",
    norm: str = "batch",
    dropout: float = 0.0,
) -> nn.Module:
    """The built-in architecture ``name`` for inputs of ``input_shape`` (no batch dimension), returning logits.

    >>> build_model("cnn", (1, 40), 10)(torch.zeros(64, 1, 40)).shape   # doctest: +SKIP
    torch.Size([64, 10])

    ``width`` None: the architecture's default (``DEFAULT_WIDTH``).
    Raises ``InputError`` on ``model.name``, ``model.depth``, ``model.width``, ``model.dropout``,
    ``model.activation``, ``model.norm`` or ``model.input_shape`` with the allowed values. Parameters keep
    PyTorch's default initialisation: the caller applies the recipe's init scheme.
    """
    if name not in MODELS:
        raise InputError("model.name", f"unknown model {name!r}", MODELS.allowed())
    architecture = MODELS.get(name).obj
    if width is None:
        width = DEFAULT_WIDTH[MODELS.canonical(name)]
    return architecture(
        tuple(input_shape), num_classes, depth=depth, width=width, activation=activation, norm=norm, dropout=dropout
    )
