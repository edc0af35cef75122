"""Regularisation: dropout, param groups, coupled/decoupled weight decay against float64 formulas and AdamW."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tricklab.errors import InputError
from tricklab.tricks.norm import apply_weight_norm
from tricklab.tricks.regularization import (
    REGULARIZERS,
    add_decoupled_weight_decay,
    capacity_warning,
    count_parameters,
    l2_penalty,
    make_dropout,
    param_groups,
)


def test_catalogue_names() -> None:
    assert REGULARIZERS.names() == ["dropout", "weight_decay_l2", "weight_decay_decoupled", "capacity_check"]


def test_dropout_zeroes_a_fraction_p_and_rescales_the_rest() -> None:
    p = 0.3
    layer = make_dropout(p)
    x = torch.rand(200_000) + 0.5
    torch.manual_seed(0)
    y = layer.train()(x)
    zeroed = (y == 0).float().mean().item()
    assert zeroed == pytest.approx(p, abs=0.005)  # binomial std √(p(1−p)/n) ≈ 0.001
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    assert torch.equal(layer.eval()(x), x)
    assert isinstance(make_dropout(0.0), nn.Identity)
    for bad in (1.0, -0.1):
        with pytest.raises(InputError) as err:
            make_dropout(bad)
        assert err.value.field == "model.dropout"


class _Net(nn.Module):
    """Every kind of parameter param_groups must place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.gn = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 16)
        self.ln = nn.LayerNorm(16)
        self.head = nn.Linear(16, 4, bias=False)
        self.tied = self.head  # a shared module: its weight must appear once
        self.scale = nn.Parameter(torch.ones(()))  # a 0-dim learnable scalar


def _ids(params: list[torch.Tensor]) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_decay_weights_only() -> None:
    net = _Net()
    groups = param_groups(net, 5e-4)
    assert [g["decay_name"] for g in groups] == ["decay", "no_decay"]
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    decay, no_decay = groups[0]["params"], groups[1]["params"]
    assert _ids(decay) == _ids([net.conv.weight, net.fc.weight, net.head.weight])
    assert _ids(no_decay) == _ids(
        [net.conv.bias, net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias, net.fc.bias, net.ln.weight,
         net.ln.bias, net.scale]
    )  # fmt: skip
    assert len(decay) + len(no_decay) == len(list(net.parameters()))  # each parameter exactly once
    torch.optim.SGD(groups, lr=0.1)  # a valid optimiser spec


def test_param_groups_drop_empty_groups_and_can_be_decoupled() -> None:
    only_norm = param_groups(nn.BatchNorm1d(4), 0.1)
    assert [g["decay_name"] for g in only_norm] == ["no_decay"]
    decoupled = param_groups(nn.Linear(3, 2), 0.1, decoupled=True)
    assert [(g["weight_decay"], g["decoupled_decay"]) for g in decoupled] == [(0.0, 0.1), (0.0, 0.0)]
    with pytest.raises(InputError):
        param_groups(nn.Linear(3, 2), -1.0)


def test_param_groups_weight_norm_decays_direction_not_length() -> None:
    net = apply_weight_norm(nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5, 3)))
    groups = {g["decay_name"]: _ids(g["params"]) for g in param_groups(net, 1e-3)}
    conv, fc = net[0].parametrizations.weight, net[3].parametrizations.weight
    assert conv.original0.dim() == 3  # g has shape (out, 1, 1): the ≥ 2-D rule alone would decay it
    assert groups["decay"] == _ids([conv.original1, fc.original1])
    assert groups["no_decay"] == _ids([conv.original0, fc.original0, net[0].bias, net[3].bias])


def _problem(dtype: torch.dtype = torch.float64) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).to(dtype)
    x = torch.randn(32, 6, dtype=dtype)
    y = torch.randn(32, 2, dtype=dtype)
    return model, x, y


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def _clone(model: nn.Module) -> nn.Module:
    twin = _problem()[0]
    twin.load_state_dict(model.state_dict())
    return twin


def test_coupled_l2_equals_the_gradient_of_the_penalised_loss() -> None:
    """SGD(weight_decay=λ) on the weights = a plain SGD step on L + λ/2·‖w‖² (float64); biases undecayed."""
    lr, lam = 0.1, 0.05
    model, x, y = _problem()
    reference = _clone(model)
    opt = torch.optim.SGD(param_groups(model, lam), lr=lr)
    weights = [reference[0].weight, reference[2].weight]
    for _ in range(3):
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
        reference.zero_grad()
        (_loss(reference, x, y) + l2_penalty(weights, lam)).backward()
        with torch.no_grad():
            for p in reference.parameters():
                p -= lr * p.grad
    for p, r in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_with_decoupled_hook_matches_the_formula(momentum: float) -> None:
    """w ← w(1 − ηλ) − η·b with b ← γb + ∇L(w) (float64, by hand), over several steps and a changing η."""
    lam = 0.05
    model, x, y = _problem()
    reference = [p.detach().clone() for p in model.parameters()]
    decayed = [p.dim() >= 2 for p in model.parameters()]
    opt = torch.optim.SGD(param_groups(model, lam, decoupled=True), lr=0.1, momentum=momentum)
    handle = add_decoupled_weight_decay(opt)
    buffers = [torch.zeros_like(r) for r in reference]
    for step in range(4):
        lr = 0.1 / (step + 1)
        for group in opt.param_groups:
            group["lr"] = lr
        twin = _clone(model)
        with torch.no_grad():
            for p, r in zip(twin.parameters(), reference):
                p.copy_(r)
        grads = torch.autograd.grad(_loss(twin, x, y), list(twin.parameters()))
        for i, (r, g) in enumerate(zip(reference, grads)):
            buffers[i] = momentum * buffers[i] + g if step > 0 else g.clone()
            r.mul_(1 - lr * lam if decayed[i] else 1.0).sub_(lr * buffers[i])
        opt.zero_grad()
        _loss(model, x, y).backward()
        opt.step()
    for p, r in zip(model.parameters(), reference):
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)
    handle.remove()
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.param_groups[0]["momentum"] = 0.0
    opt.param_groups[1]["momentum"] = 0.0
    opt.step()  # zero gradient, no momentum, hook removed: nothing may move
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_adam_with_decoupled_hook_equals_adamw() -> None:
    lam, betas, eps = 0.1, (0.8, 0.95), 1e-7
    model, x, y = _problem(torch.float32)
    twin = _problem(torch.float32)[0]
    twin.load_state_dict(model.state_dict())
    adam = torch.optim.Adam(param_groups(model, lam, decoupled=True), lr=0.01, betas=betas, eps=eps)
    add_decoupled_weight_decay(adam)
    adamw = torch.optim.AdamW(param_groups(twin, lam), lr=0.01, betas=betas, eps=eps)
    for step in range(10):
        for opt in (adam, adamw):
            for group in opt.param_groups:
                group["lr"] = 0.01 * (1 - step / 20)  # a schedule: the decay must use the current η
        for m, opt in ((model, adam), (twin, adamw)):
            opt.zero_grad()
            _loss(m, x, y).backward()
            opt.step()
    moved = max((p - q).abs().max().item() for p, q in zip(model.parameters(), _problem(torch.float32)[0].parameters()))
    assert moved > 1e-2  # the test is not vacuous: the weights moved
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_hook_ignores_torch_adamws_own_flag() -> None:
    """AdamW's groups carry ``decoupled_weight_decay=True`` (a bool): the hook must not decay a second time."""
    model, x, y = _problem(torch.float32)
    twin = _problem(torch.float32)[0]
    twin.load_state_dict(model.state_dict())
    hooked = torch.optim.AdamW(param_groups(model, 0.1), lr=0.01)
    assert hooked.param_groups[0].get("decoupled_weight_decay", True) is True  # the key exists since torch 2.6
    add_decoupled_weight_decay(hooked)
    plain = torch.optim.AdamW(param_groups(twin, 0.1), lr=0.01)
    for m, opt in ((model, hooked), (twin, plain)):
        for _ in range(3):
            opt.zero_grad()
            _loss(m, x, y).backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


def test_capacity_warning() -> None:
    assert capacity_warning(1_000, 100) is None
    assert capacity_warning(1_000, 100, ratio=5.0) is not None
    message = capacity_warning(1_000_000, 1_000)
    assert message is not None and "1,000,000" in message and "1,000 training examples" in message
    assert capacity_warning(10, 0) is not None
    net = nn.Linear(10, 5)
    net.bias.requires_grad_(False)
    assert count_parameters(net) == 50
