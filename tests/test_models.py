"""Built-in architectures and user models: shapes for every input rank, what ``depth`` counts, the lesson's layer
order (weights → norm → activation → dropout), real identity shortcuts, gradient flow, and errors for people."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from tricklab.errors import InputError
from tricklab.models import MODELS, HiddenLayer, InceptionModule, PreActBlock, build_model, load_user_model
from tricklab.models.blocks import pool_positions
from tricklab.models.inception import branch_widths
from tricklab.tricks.norm import NORMS, after_activation

NAMES = ["mlp", "cnn", "resnet", "inception", "cnn_flatten"]
SHAPES = {1: (12,), 2: (2, 16), 3: (3, 8, 8)}  # a vector, a 2-channel signal, a small RGB image
WEIGHTS = (nn.Linear, nn.Conv1d, nn.Conv2d)
CONVS = (nn.Conv1d, nn.Conv2d)
NORM_TYPE = {
    "batch": (nn.BatchNorm1d, nn.BatchNorm2d),
    "batch_after_act": (nn.BatchNorm1d, nn.BatchNorm2d),  # the same layer, placed after the activation
    "layer": (nn.LayerNorm, nn.GroupNorm),  # LayerNorm for vectors, GroupNorm(1, C) for feature maps
    "group": (nn.GroupNorm,),
    "weight": (nn.Identity,),  # weight norm re-parametrises the weights later; no layer here
    "none": (nn.Identity,),
}
SKIP_IN_ORDER = (nn.Dropout, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten)


def count(model: nn.Module, kinds: type | tuple[type, ...]) -> int:
    return sum(isinstance(m, kinds) for m in model.modules())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def leaves(model: nn.Module) -> list[nn.Module]:
    """Leaf modules in registration order (the forward order for these architectures)."""
    return [m for m in model.modules() if not list(m.children())]


def test_registry_names_and_catalogue_text() -> None:
    assert MODELS.names() == NAMES
    for entry in MODELS:
        assert entry.formula and entry.reference and entry.lesson
    assert "selbstanpassend" in MODELS.get("resnet").lesson and "selbstanpassend" in MODELS.get("inception").lesson
    assert "1603.05027" in MODELS.get("resnet").reference and "1409.4842" in MODELS.get("inception").reference


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("norm", NORMS.names())
@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_logits_shape_for_every_rank_norm_and_activation(name: str, rank: int, norm: str, activation: str) -> None:
    shape = SHAPES[rank]
    model = build_model(name, shape, 7, depth=3, width=16, activation=activation, norm=norm)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()
    model.eval()
    assert model(torch.randn(1, *shape)).shape == (1, 7)


@pytest.mark.parametrize("depth", [1, 2, 5])
@pytest.mark.parametrize("rank", sorted(SHAPES))
def test_mlp_depth_counts_hidden_linear_layers(rank: int, depth: int) -> None:
    model = build_model("mlp", SHAPES[rank], 10, depth=depth, width=6)
    assert count(model, nn.Linear) == depth + 1
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [6] * depth + [10]


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 20])
@pytest.mark.parametrize("shape", [(1, 40), (3, 8, 8)])
def test_plain_and_residual_at_the_same_depth_have_the_same_weight_layers(shape: tuple[int, ...], depth: int) -> None:
    cnn = build_model("cnn", shape, 10, depth=depth, width=8)
    resnet = build_model("resnet", shape, 10, depth=depth, width=8)
    assert count(cnn, CONVS) == count(resnet, CONVS) == depth
    assert count(cnn, nn.Linear) == count(resnet, nn.Linear) == 1
    assert n_params(cnn) == n_params(resnet)  # only the shortcuts differ
    assert count(resnet, PreActBlock) == depth // 2  # stem + blocks of two (+ one block of one if depth is even)


@pytest.mark.parametrize("depth", [1, 4, 7])
def test_residual_mlp_on_vectors_matches_the_plain_mlp(depth: int) -> None:
    mlp = build_model("mlp", (12,), 3, depth=depth, width=8)
    resnet = build_model("resnet", (12,), 3, depth=depth, width=8)
    assert count(resnet, CONVS) == 0
    assert count(mlp, nn.Linear) == count(resnet, nn.Linear) == depth + 1
    assert n_params(mlp) == n_params(resnet)


def test_deep_cnn_on_a_length_40_signal_pools_three_times() -> None:
    model = build_model("cnn", (1, 40), 10, depth=20)
    assert count(model, nn.MaxPool1d) == 3
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)
    assert pool_positions(20, (40,)) == {5, 10, 15}
    assert pool_positions(4, (40,)) == {1, 2, 3}
    assert pool_positions(4, (2,)) == {2}  # a length-2 signal can be halved once
    assert pool_positions(1, (40,)) == {0}
    assert pool_positions(4, ()) == set()


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("rank", [2, 3])
def test_inception_depth_counts_modules_of_four_branches(rank: int, depth: int) -> None:
    model = build_model("inception", SHAPES[rank], 10, depth=depth, width=12)
    modules = [m for m in model.modules() if isinstance(m, InceptionModule)]
    assert len(modules) == depth
    for module in modules:
        assert list(module.branches) == ["branch1", "branch3", "branch5", "branch_pool"]
        kernels = sorted(m.kernel_size[0] for m in module.modules() if isinstance(m, CONVS))
        assert kernels == [1, 1, 1, 1, 3, 5]  # 1-wide, two reductions, 3, 5, pool projection
    x = torch.randn(2, *SHAPES[rank])
    assert modules[0](model.reshape(x)).shape[1] == 12  # branches concatenated to width channels


@pytest.mark.parametrize("width", range(1, 10))
def test_inception_branch_widths_sum_to_width(width: int) -> None:
    widths = branch_widths(width)
    assert sum(widths) == width and widths[0] >= 1
    module = InceptionModule(1, 2, width)
    assert module(torch.randn(3, 2, 10)).shape == (3, width, 10)


@pytest.mark.parametrize("norm", NORMS.names())
@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_every_weight_layer_is_followed_by_norm_then_activation(name: str, rank: int, norm: str) -> None:
    """weights → norm → activation; for ``batch_after_act`` weights → activation → norm."""
    model = build_model(name, SHAPES[rank], 4, depth=4, width=8, activation="tanh", norm=norm, dropout=0.2)
    order = [m for m in leaves(model) if not isinstance(m, SKIP_IN_ORDER)]
    weights = [i for i, m in enumerate(order) if isinstance(m, WEIGHTS)]
    logits = order[weights[-1]]
    assert isinstance(logits, nn.Linear) and logits.out_features == 4 and weights[-1] == len(order) - 1
    expected = (nn.Tanh, NORM_TYPE[norm]) if after_activation(norm) else (NORM_TYPE[norm], nn.Tanh)
    for i in weights[:-1]:  # every hidden weight layer (pooling and dropout skipped; a residual add is not a module)
        after = order[i + 1 : i + 3]
        assert isinstance(after[0], expected[0]) and isinstance(after[1], expected[1]), (name, i, after)


@pytest.mark.parametrize("norm", NORMS.names())
def test_hidden_layer_order_and_norm_kind(norm: str) -> None:
    for dims, x in ((0, torch.randn(4, 6)), (1, torch.randn(4, 6, 9)), (2, torch.randn(4, 6, 5, 5))):
        layer = HiddenLayer(dims, 6, 8, kernel_size=3, activation="gelu", norm=norm, dropout=0.1)
        order = ["weights", "act", "norm", "drop"] if after_activation(norm) else ["weights", "norm", "act", "drop"]
        assert list(dict(layer.named_children())) == order
        assert isinstance(layer.weights, WEIGHTS[dims]) and isinstance(layer.act, nn.GELU)
        assert isinstance(layer.norm, NORM_TYPE[norm]) and layer.drop.p == 0.1
        assert layer(x).shape[:2] == (4, 8) and layer(x).shape[2:] == x.shape[2:]  # "same" padding
    assert "drop" not in dict(HiddenLayer(0, 6, 8, dropout=0.0).named_children())


@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_dropout_placement(name: str, rank: int) -> None:
    depth = 5
    model = build_model(name, SHAPES[rank], 3, depth=depth, width=8, dropout=0.3)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    dense = name == "mlp" or (name == "resnet" and rank == 1)
    if dense:
        # mlp: one per hidden layer; residual MLP: one per pre-activation (depth − 1 in blocks + the final one)
        assert len(drops) == depth
    else:
        # convolutional nets: once, on the pooled features right before the logits layer
        assert len(drops) == 1
        head = list(model.head.named_children())
        assert [n for n, _ in head][-2:] == ["drop", "out"]
    assert all(d.p == 0.3 for d in drops)
    assert count(build_model(name, SHAPES[rank], 3, depth=depth, width=8, dropout=0.0), nn.Dropout) == 0


@pytest.mark.parametrize("rank", sorted(SHAPES))
def test_residual_block_adds_the_identity(rank: int) -> None:
    torch.manual_seed(0)
    model = build_model("resnet", SHAPES[rank], 3, depth=6, width=8).eval()
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 3
    block = blocks[1]
    h = torch.randn(4, 8, *([6] * (rank - 1)))
    with torch.no_grad():
        torch.testing.assert_close(block(h), h + block.residual(h))
        assert not torch.allclose(block(h), h)
        last = block.residual.weights2
        last.weight.zero_()
        last.bias.zero_()
        torch.testing.assert_close(block(h), h)  # F(x) = 0: the block is exactly the identity


def test_single_layer_block_when_depth_minus_one_is_odd() -> None:
    model = build_model("resnet", (1, 40), 3, depth=4, width=8)
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert [count(b, nn.Conv1d) for b in blocks] == [2, 1]
    names = list(dict(blocks[0].residual.named_children()))
    assert names == ["norm1", "act1", "weights1", "norm2", "act2", "weights2"]


@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name: str, rank: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, SHAPES[rank], 5, depth=4, width=8, norm="batch", dropout=0.1)
    x, y = torch.randn(6, *SHAPES[rank]), torch.randint(0, 5, (6,))
    nn.functional.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        if p.ndim > 1:  # weight matrices/kernels (biases before batch norm get exactly zero gradient)
            assert p.grad.abs().sum() > 0, pname


def test_width_and_activation_reach_the_layers() -> None:
    model = build_model("cnn", (1, 40), 10, depth=3, width=24, activation="leaky_relu", norm="group")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [c.out_channels for c in convs] == [24, 24, 24] and convs[0].in_channels == 1
    assert count(model, nn.LeakyReLU) == 3 and count(model, nn.GroupNorm) == 3
    assert model.input_shape == (1, 40) and model.num_classes == 10


def test_vector_input_is_a_one_channel_signal_for_convolutions() -> None:
    for name in ("cnn", "inception"):
        model = build_model(name, (40,), 10, depth=2, width=8)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv1d))
        assert first.in_channels == 1
        assert model(torch.randn(3, 40)).shape == (3, 10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"depth": 0}, "model.depth"),
        ({"depth": 2.5}, "model.depth"),
        ({"depth": True}, "model.depth"),
        ({"width": 0}, "model.width"),
        ({"dropout": -0.1}, "model.dropout"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"activation": "swish"}, "model.activation"),
        ({"norm": "instance"}, "model.norm"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameters_name_their_field(name: str, kwargs: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        build_model(name, (1, 40), 10, **kwargs)
    assert err.value.field == field and err.value.allowed


def test_unknown_model_and_bad_input_shape() -> None:
    with pytest.raises(InputError) as err:
        build_model("vgg", (1, 40), 10)
    assert err.value.field == "model.name" and "resnet" in err.value.allowed
    for shape in [(), (1, 2, 3, 4), (0, 40)]:
        with pytest.raises(InputError) as err:
            build_model("cnn", shape, 10)
        assert err.value.field == "model.input_shape"
    with pytest.raises(InputError) as err:
        build_model("mlp", (40,), 0)
    assert err.value.field == "model.num_classes"


USER_MODULE = """
import torch
from torch import nn

CALLS = []

def make_net(input_shape, num_classes):
    CALLS.append((input_shape, num_classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], num_classes))

def broken(input_shape, num_classes):
    raise ValueError("width must be even")

def not_a_module(input_shape, num_classes):
    return "a string"

class Nets:
    @staticmethod
    def small(input_shape, num_classes):
        return nn.Linear(input_shape[0], num_classes)

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_package(tmp_path, monkeypatch) -> str:
    """A package ``tl_user_nets`` on sys.path with a working factory and broken ones."""
    pkg = tmp_path / "tl_user_nets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(USER_MODULE))
    (pkg / "crashes.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("tl_user_nets", "tl_user_nets.nets", "tl_user_nets.crashes"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    return "tl_user_nets"


def test_user_model_factory_is_called_with_shape_and_classes(user_package: str) -> None:
    model = load_user_model(f"{user_package}.nets:make_net", [1, 40], 10)
    assert isinstance(model, nn.Module)
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)
    assert sys.modules[f"{user_package}.nets"].CALLS == [((1, 40), 10)]
    assert isinstance(load_user_model(f"{user_package}.nets:Nets.small", (40,), 3), nn.Linear)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("no_colon_here", "not a factory reference"),
        ("a:b:c", "not a factory reference"),
        ("", "not a factory reference"),
        ("tl_user_nets.nets:", "not a factory reference"),
        ("tl_user_nets.missing:make_net", "cannot import"),
        ("tl_user_nets.crashes:make_net", "boom at import"),
        ("tl_user_nets.nets:nope", "no attribute"),
        ("tl_user_nets.nets:NOT_CALLABLE", "not a callable"),
        ("tl_user_nets.nets:broken", "width must be even"),
        ("tl_user_nets.nets:not_a_module", "not a torch.nn.Module"),
    ],
)
def test_user_model_errors_name_model_python(user_package: str, spec: str, words: str) -> None:
    with pytest.raises(InputError) as err:
        load_user_model(spec, (1, 40), 10)
    assert err.value.field == "model.python"
    assert words in str(err.value)
