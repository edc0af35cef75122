"""Optimisers: every update rule against its formula in float64 (torch's own ones and tricklab's two)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from tricklab.errors import InputError
from tricklab.tricks.optimizers import (
    OPTIMIZERS,
    LessonMomentum,
    NormalizedSGD,
    build_optimizer,
    describe_momentum_form,
)

F64 = torch.float64
Params = list[torch.Tensor]


def _problem() -> tuple[torch.Tensor, torch.Tensor, Params]:
    """A small least-squares problem: y ≈ X·Wᵀ + b, loss = mean squared error (float64)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen, dtype=F64)
    y = torch.randn(16, 3, generator=gen, dtype=F64)
    w0 = [torch.randn(3, 4, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)]
    return x, y, w0


X, Y, W0 = _problem()


def _loss(params: Params) -> torch.Tensor:
    return ((X @ params[0].T + params[1] - Y) ** 2).mean()


def _grads(params: Params) -> Params:
    live = [p.clone().requires_grad_(True) for p in params]
    return [g.detach() for g in torch.autograd.grad(_loss(live), live)]


def _run_torch(make: Callable[[Params], torch.optim.Optimizer], steps: int, lr_at=None) -> list[Params]:
    """Weights after each of ``steps`` steps of the optimiser ``make(params)`` (lr_at(t) overrides every group's lr)."""
    params = [p.clone().requires_grad_(True) for p in W0]
    opt = make(params)
    trajectory = []
    for t in range(steps):
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(t)
        opt.zero_grad()
        _loss(params).backward()
        opt.step()
        trajectory.append([p.detach().clone() for p in params])
    return trajectory


def _run_formula(update: Callable[[int, Params, Params], Params], steps: int) -> list[Params]:
    """Weights after each step of ``update(t, w, grad) -> new w`` (t counts from 1), gradients by autograd."""
    params = [p.clone() for p in W0]
    trajectory = []
    for t in range(1, steps + 1):
        params = update(t, params, _grads(params))
        trajectory.append([p.clone() for p in params])
    return trajectory


def _assert_same(a: list[Params], b: list[Params], rtol: float = 1e-12, atol: float = 1e-12) -> None:
    assert len(a) == len(b)
    for step, (pa, pb) in enumerate(zip(a, b)):
        for x, y in zip(pa, pb):
            assert torch.allclose(x, y, rtol=rtol, atol=atol), f"step {step + 1}: {(x - y).abs().max()}"


def _formula(name: str, lr: float, wd: float, gamma: float = 0.9, betas=(0.9, 0.999), eps: float = 1e-8):
    """The textbook update of each optimiser as a float64 function (t, w, g) -> w; state lives in the closure."""
    state: dict[str, Params] = {}

    def coupled(w: Params, g: Params) -> Params:
        return [gi + wd * wi for wi, gi in zip(w, g)] if name != "adamw" else g

    def update(t: int, w: Params, g: Params) -> Params:
        g = coupled(w, g)
        if name == "sgd":
            return [wi - lr * gi for wi, gi in zip(w, g)]
        if name == "momentum":  # v ← γv − ηg; w ← w + v
            v = state.setdefault("v", [torch.zeros_like(wi) for wi in w])
            state["v"] = [gamma * vi - lr * gi for vi, gi in zip(v, g)]
            return [wi + vi for wi, vi in zip(w, state["v"])]
        if name == "nesterov":  # b ← γb + g (b₁ = g); w ← w − η(g + γb)
            b = state.get("b")
            state["b"] = list(g) if b is None else [gamma * bi + gi for bi, gi in zip(b, g)]
            return [wi - lr * (gi + gamma * bi) for wi, gi, bi in zip(w, g, state["b"])]
        if name == "normalized":  # w ← w − ηg/‖g‖, global norm
            norm = math.sqrt(sum(float((gi**2).sum()) for gi in g))
            return [wi - lr * gi / norm for wi, gi in zip(w, g)]
        if name == "adagrad":  # s ← s + g²; w ← w − ηg/(√s + ε)
            s = state.setdefault("s", [torch.zeros_like(wi) for wi in w])
            state["s"] = [si + gi**2 for si, gi in zip(s, g)]
            return [wi - lr * gi / (si.sqrt() + eps) for wi, gi, si in zip(w, g, state["s"])]
        if name == "rmsprop":  # s ← αs + (1−α)g², α = 0.99; w ← w − ηg/(√s + ε)
            s = state.setdefault("s", [torch.zeros_like(wi) for wi in w])
            state["s"] = [0.99 * si + 0.01 * gi**2 for si, gi in zip(s, g)]
            return [wi - lr * gi / (si.sqrt() + eps) for wi, gi, si in zip(w, g, state["s"])]
        if name in ("adam", "adamw"):
            b1, b2 = betas
            if name == "adamw":  # decoupled: w ← w(1 − ηλ) before the Adam step
                w = [wi * (1 - lr * wd) for wi in w]
            m = state.setdefault("m", [torch.zeros_like(wi) for wi in w])
            v = state.setdefault("v", [torch.zeros_like(wi) for wi in w])
            state["m"] = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
            state["v"] = [b2 * vi + (1 - b2) * gi**2 for vi, gi in zip(v, g)]
            m_hat = [mi / (1 - b1**t) for mi in state["m"]]
            v_hat = [vi / (1 - b2**t) for vi in state["v"]]
            return [wi - lr * mh / (vh.sqrt() + eps) for wi, mh, vh in zip(w, m_hat, v_hat)]
        raise AssertionError(name)

    return update


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "normalized", "adagrad", "rmsprop", "adam", "adamw"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_every_optimizer_follows_its_formula(name: str, weight_decay: float) -> None:
    lr = 0.05
    built = _run_torch(lambda p: build_optimizer(name, p, lr=lr, weight_decay=weight_decay), steps=8)
    expected = _run_formula(_formula(name, lr, weight_decay), steps=8)
    _assert_same(built, expected, rtol=1e-10, atol=1e-12)
    moved = max(float((a - b).abs().max()) for a, b in zip(built[-1], W0))
    assert moved > 1e-3  # the comparison is not between two unchanged copies


def test_registry_has_the_catalogue_names() -> None:
    assert OPTIMIZERS.names() == ["sgd", "momentum", "nesterov", "normalized", "adagrad", "rmsprop", "adam", "adamw"]
    assert "Adagrad" in OPTIMIZERS.get("normalized").lesson and "normalised" in OPTIMIZERS.get("normalized").note


def test_lesson_momentum_equals_torch_sgd_momentum_at_constant_lr() -> None:
    lesson = _run_torch(lambda p: LessonMomentum(p, lr=0.05, momentum=0.9), steps=10)
    torch_sgd = _run_torch(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0), steps=10)
    _assert_same(lesson, torch_sgd, rtol=1e-12, atol=1e-12)


def test_lesson_momentum_differs_from_torch_after_an_lr_change_by_the_predicted_amount() -> None:
    gamma, lr_before, lr_after, change = 0.9, 0.05, 0.01, 5
    p_lesson = [p.clone().requires_grad_(True) for p in W0]
    p_torch = [p.clone().requires_grad_(True) for p in W0]
    lesson = LessonMomentum(p_lesson, lr=lr_before, momentum=gamma)
    reference = torch.optim.SGD(p_torch, lr=lr_before, momentum=gamma)
    for t in range(change + 1):
        lr = lr_before if t < change else lr_after
        buffers = [reference.state[p]["momentum_buffer"].clone() for p in p_torch] if t else None
        for opt, params in ((lesson, p_lesson), (reference, p_torch)):
            opt.param_groups[0]["lr"] = lr
            opt.zero_grad()
            _loss(params).backward()
            opt.step()
        if t < change:  # identical while η is constant
            for a, b in zip(p_lesson, p_torch):
                assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    # first step after η → η′ (same weights and gradient before it): lesson − torch = (η′ − η)·γ·b_{t−1}
    difference = [a.detach() - b.detach() for a, b in zip(p_lesson, p_torch)]
    predicted = [(lr_after - lr_before) * gamma * buf for buf in buffers]
    for d, pred in zip(difference, predicted):
        assert torch.allclose(d, pred, rtol=1e-10, atol=1e-14)
    assert max(float(d.abs().max()) for d in difference) > 1e-3  # a real difference, not rounding


def test_normalized_step_has_length_lr_with_the_global_norm() -> None:
    params = [p.clone().requires_grad_(True) for p in W0]
    opt = NormalizedSGD(params, lr=0.03)
    for _ in range(6):
        before = [p.detach().clone() for p in params]
        opt.zero_grad()
        _loss(params).backward()
        opt.step()
        step = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(params, before)))
        assert step == pytest.approx(0.03, rel=1e-12)


def test_normalized_param_groups_share_one_norm_and_keep_their_lr_and_weight_decay() -> None:
    params = [p.clone().requires_grad_(True) for p in W0]
    opt = build_optimizer(
        "normalized",
        [{"params": [params[0]], "weight_decay": 0.1}, {"params": [params[1]], "lr": 0.2}],
        lr=0.05,
        weight_decay=0.01,
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.01]
    w = [p.detach().clone() for p in params]
    g = _grads(w)
    g = [g[0] + 0.1 * w[0], g[1] + 0.01 * w[1]]
    norm = math.sqrt(sum(float((gi**2).sum()) for gi in g))
    opt.zero_grad()
    _loss(params).backward()
    opt.step()
    assert torch.allclose(params[0].detach(), w[0] - 0.05 * g[0] / norm, rtol=1e-12, atol=1e-14)
    assert torch.allclose(params[1].detach(), w[1] - 0.2 * g[1] / norm, rtol=1e-12, atol=1e-14)


def test_normalized_zero_gradient_does_not_move_or_nan() -> None:
    p = torch.ones(3, dtype=F64, requires_grad=True)
    opt = NormalizedSGD([p], lr=0.1)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=F64))


def test_lesson_momentum_param_groups_and_coupled_weight_decay() -> None:
    params = [p.clone().requires_grad_(True) for p in W0]
    opt = LessonMomentum([{"params": [params[0]], "lr": 0.1, "weight_decay": 0.2}, {"params": [params[1]]}], lr=0.05)
    w, v = [p.detach().clone() for p in params], [torch.zeros_like(p) for p in W0]
    settings = [(0.1, 0.2), (0.05, 0.0)]
    for _ in range(4):
        g = _grads(w)
        v = [0.9 * vi - lr * (gi + wd * wi) for vi, gi, wi, (lr, wd) in zip(v, g, w, settings)]
        w = [wi + vi for wi, vi in zip(w, v)]
        opt.zero_grad()
        _loss(params).backward()
        opt.step()
    for a, b in zip(params, w):
        assert torch.allclose(a.detach(), b, rtol=1e-12, atol=1e-14)


def test_lesson_momentum_resumes_from_its_state_dict() -> None:
    straight = _run_torch(lambda p: LessonMomentum(p, lr=0.05, momentum=0.8), steps=6)[-1]
    params = [p.clone().requires_grad_(True) for p in W0]
    opt = LessonMomentum(params, lr=0.05, momentum=0.8)
    for _ in range(3):
        opt.zero_grad()
        _loss(params).backward()
        opt.step()
    resumed = LessonMomentum(params, lr=0.05, momentum=0.8)
    resumed.load_state_dict(opt.state_dict())
    for _ in range(3):
        resumed.zero_grad()
        _loss(params).backward()
        resumed.step()
    for a, b in zip(params, straight):
        assert torch.allclose(a.detach(), b, rtol=1e-12, atol=1e-14)


def test_param_groups_keep_their_own_weight_decay_in_torch_optimizers() -> None:
    params = [p.clone().requires_grad_(True) for p in W0]
    opt = build_optimizer(
        "adamw", [{"params": [params[0]]}, {"params": [params[1]], "weight_decay": 0.0}], lr=1e-3, weight_decay=0.1
    )
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_unknown_optimizer_is_an_input_error_listing_the_allowed_names() -> None:
    with pytest.raises(InputError) as err:
        build_optimizer("adamm", [torch.zeros(1, requires_grad=True)], lr=0.1)
    assert err.value.field == "optimizer.name"
    assert "adam" in err.value.allowed and "normalized" in err.value.allowed


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"lr": 0.0}, "optimizer.lr"), ({"lr": 0.1, "momentum": 1.5}, "optimizer.momentum")]
)
def test_bad_hyperparameters_are_input_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        build_optimizer("momentum", [torch.zeros(1, requires_grad=True)], **kwargs)
    assert err.value.field == field


def test_describe_momentum_form_says_which_form_runs() -> None:
    assert "v ← γv − η∇L; w ← w + v" in describe_momentum_form("momentum")
    assert "PyTorch" in describe_momentum_form("nesterov")
    assert describe_momentum_form("sgd_momentum").startswith("momentum:")
    with pytest.raises(InputError):
        describe_momentum_form("lion")
