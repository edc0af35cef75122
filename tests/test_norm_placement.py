"""``model.norm: batch_after_act`` — batch norm after the activation instead of before it (the placement the
batch-norm lesson's sentence names), checked against a reference built from torch's own layers with the same
weights; and the alternatives the lesson names (layer norm, weight norm) against torch's LayerNorm and
``torch.nn.utils.parametrizations.weight_norm``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from tricklab.errors import InputError
from tricklab.models import build_model
from tricklab.models.blocks import HiddenLayer
from tricklab.tricks.norm import NORMS, after_activation, apply_weight_norm


def _reference_mlp(model: nn.Module, order: tuple[str, ...]) -> nn.Sequential:
    """A plain torch Sequential with ``model``'s Linear weights and fresh BatchNorm1d layers in ``order``."""
    layers: list[nn.Module] = [nn.Flatten()]
    for block in model.body:
        lin = nn.Linear(block.weights.in_features, block.weights.out_features)
        lin.load_state_dict(block.weights.state_dict())
        parts = {"weights": lin, "norm": nn.BatchNorm1d(lin.out_features), "act": nn.ReLU()}
        layers += [parts[name] for name in order]
    out = nn.Linear(model.out.in_features, model.out.out_features)
    out.load_state_dict(model.out.state_dict())
    return nn.Sequential(*layers, out)


@pytest.mark.parametrize(("norm", "order"), [("batch", ("weights", "norm", "act")),
                                               ("batch_after_act", ("weights", "act", "norm"))])
def test_the_placement_matches_torch_layers_in_that_order(norm, order):
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 3, depth=2, width=16, norm=norm)
    assert [name for name, _ in model.body.layer1.named_children()] == list(order)
    ref = _reference_mlp(model, order)
    x = torch.randn(32, 8) * 3 + 1
    model.train(), ref.train()
    assert torch.allclose(model(x), ref(x), atol=1e-5)
    model.eval(), ref.eval()   # the running statistics were updated alike
    assert torch.allclose(model(x), ref(x), atol=1e-5)


def test_the_two_placements_compute_different_functions():
    torch.manual_seed(0)
    before = build_model("mlp", (8,), 3, depth=2, width=16, norm="batch")
    torch.manual_seed(0)
    after = build_model("mlp", (8,), 3, depth=2, width=16, norm="batch_after_act")
    x = torch.randn(32, 8)
    assert not torch.allclose(before(x), after(x), atol=1e-3)
    # after the activation, each unit's output is normalised over the batch: mean 0, std 1 (γ = 1, β = 0)
    h = after.body.layer1(x)
    assert torch.allclose(h.mean(0), torch.zeros(16), atol=1e-5)
    assert after_activation("batch_after_act") and not after_activation("batch")


def test_cnn_and_resnet_take_the_other_placement_too():
    cnn = build_model("cnn", (1, 8, 8), 10, depth=2, width=8, norm="batch_after_act")
    assert [n for n, _ in cnn.body.layer1.named_children()] == ["weights", "act", "norm"]
    assert isinstance(cnn.body.layer1.norm, nn.BatchNorm2d)
    res = build_model("resnet", (1, 8, 8), 10, depth=3, width=8, norm="batch_after_act")
    assert [n for n, _ in res.body.block1.residual.named_children()][:3] == ["act1", "norm1", "weights1"]
    assert [n for n, _ in res.final.named_children()] == ["act", "norm"]
    assert res(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert "batch_after_act" in NORMS.allowed()


def test_an_unknown_norm_names_the_new_value():
    with pytest.raises(InputError) as err:
        build_model("mlp", (8,), 3, norm="batch_later")
    assert "batch_after_act" in str(err.value)


def test_layer_norm_is_torchs_layer_norm():
    torch.manual_seed(0)
    block = HiddenLayer(0, 8, 16, norm="layer")
    ref = nn.LayerNorm(16)
    x = torch.randn(5, 8) * 4 + 2
    z = block.weights(x)
    assert torch.allclose(block.norm(z), ref(z), atol=1e-6)
    # every example normalised over its own features: independent of the rest of the batch
    assert torch.allclose(block(x)[:1], block(x[:1]), atol=1e-6)


def test_weight_norm_is_torchs_parametrization_and_keeps_the_initial_weights():
    torch.manual_seed(0)
    model = build_model("mlp", (8,), 3, depth=2, width=16, norm="weight")
    w = model.body.layer1.weights.weight.detach().clone()
    apply_weight_norm(model)
    lin = model.body.layer1.weights
    assert torch.allclose(lin.weight, w, atol=1e-6)
    ref = nn.Linear(8, 16)
    with torch.no_grad():
        ref.weight.copy_(w)
    ref = weight_norm(ref, name="weight", dim=0)
    g = lin.parametrizations.weight.original0
    assert torch.allclose(g, ref.parametrizations.weight.original0, atol=1e-6)
    assert torch.allclose(g, w.norm(dim=1, keepdim=True), atol=1e-6)       # g = ‖w‖ per output unit at the start
    with torch.no_grad():
        lin.bias.copy_(ref.bias)
        g.mul_(2.0)                                                      # the length alone doubles the weights
        ref.parametrizations.weight.original0.mul_(2.0)
    x = torch.randn(4, 8)
    assert torch.allclose(lin(x), ref(x), atol=1e-5) and torch.allclose(lin.weight, 2 * w, atol=1e-5)
