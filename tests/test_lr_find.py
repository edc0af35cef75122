"""LR range test: a sensible suggestion on a synthetic problem, divergence stop, and no side effects."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.tricks.lr_find import LR_FINDERS, lr_find, suggest_lr

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(n: int = 512, classes: int = 4, dim: int = 10, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 2
    y = torch.randint(0, classes, (n,), generator=gen)
    return centres[y] + torch.randn(n, dim, generator=gen), y


def _classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4))


def _cross_entropy(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def _sgd(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


@pytest.mark.parametrize(
    "factory", [_sgd, lambda params, lr: torch.optim.Adam(params, lr=lr)], ids=["sgd_momentum", "adam"]
)
def test_suggestion_is_sensible_and_the_model_is_unchanged(factory) -> None:
    x, y = _blobs()
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]
    model = _classifier()
    model.eval()
    before = copy.deepcopy(model.state_dict())
    result = lr_find(model, _cross_entropy, batches, factory)
    assert 1e-4 <= result.suggestion <= 1.0
    assert result.suggestion in result.lrs
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert not model.training and all(p.grad is None for p in model.parameters())
    # the curve really was trained: the smoothed loss fell well below its start before any divergence
    assert min(result.losses) < 0.5 * result.losses[0]


def test_learning_rates_grow_exponentially_from_lr_min() -> None:
    x, y = _blobs(n=128)
    result = lr_find(_classifier(), _cross_entropy, lambda: (x, y), _sgd, lr_min=1e-5, lr_max=1.0, num_steps=21)
    assert result.lrs[0] == pytest.approx(1e-5)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios == pytest.approx([10 ** (5 / 20)] * len(ratios), rel=1e-9)


def test_stops_when_the_smoothed_loss_diverges() -> None:
    # f(w) = ½‖w‖²: gradient descent diverges for η > 2, so the ramp to η = 100 must stop early
    model = nn.Linear(8, 1, bias=False)
    result = lr_find(
        model,
        lambda m, _: 0.5 * (m.weight**2).sum(),
        lambda: None,
        lambda params, lr: torch.optim.SGD(params, lr=lr),
        lr_min=1e-3,
        lr_max=100.0,
        num_steps=100,
    )
    assert result.diverged and len(result.lrs) < 100
    assert result.lrs[-1] > 2.0
    assert result.losses[-1] > 4.0 * min(result.losses)


def test_rng_and_an_existing_optimizer_are_left_as_they_were() -> None:
    x, y = _blobs(n=128)
    model = _classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.123, momentum=0.9)
    torch.manual_seed(7)
    lr_find(model, _cross_entropy, [(x, y)], lambda params, lr: opt, num_steps=20)  # dropout draws random numbers
    after_call = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_call, torch.rand(3))
    assert opt.param_groups[0]["lr"] == 0.123 and len(opt.state) == 0


def test_a_one_shot_iterator_ends_the_test_early() -> None:
    x, y = _blobs(n=128)
    batches = iter([(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)])
    result = lr_find(_classifier(), _cross_entropy, batches, _sgd, num_steps=50)
    assert len(result.lrs) == 4 and not result.diverged


def test_suggest_lr_picks_the_steepest_descent_before_the_minimum() -> None:
    lrs = [10 ** (-6 + 0.1 * i) for i in range(61)]  # 1e-6 … 1
    # a loss falling fastest at η = 1e-3 (a logistic step in log η), then rising steeply after η = 0.1
    losses = [
        2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 3))) + max(0.0, math.log10(lr) + 1) ** 2 * 20 for lr in lrs
    ]
    assert suggest_lr(lrs, losses) == pytest.approx(1e-3, rel=1e-6)
    rising = [1.0 + i for i in range(len(lrs))]
    assert suggest_lr(lrs, rising) == pytest.approx(lrs[0] / 10)  # fallback: minimum's η / 10


def test_registry_entry() -> None:
    assert LR_FINDERS.get("lr_find").obj is lr_find
