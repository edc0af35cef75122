"""Each stacked optimizer rule and clipping mode, step by step, against its single-model twin.

The single-model rules (``tricks.optimizers`` through ``train.run.build_recipe_optimizer``, the Trainer's own
path, and ``tricks.clipping.clip_gradients_``) are tested against torch.optim and the formulas in their own
tests; here K = 3 members with different hyperparameters run 20 steps in float64 on random gradients (one of
them ten times larger, so clipping and the optimizers' state see a jump), and every member's parameters must
follow its twin's trajectory to 1e-12 after every step — a rule that is right only on average, or that mixes
members, fails at the step where it goes wrong.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tricklab.population.stacked_optim import STACKED_OPTIMIZERS, StackedOptimizer, clip_, member_grad_norms
from tricklab.train.run import build_recipe_optimizer
from tricklab.tricks.clipping import clip_gradients_
from tricklab.tricks.regularization import param_groups
from tricklab.tricks.schedules import apply_lr

STEPS = 20
TOL = {"rtol": 1e-12, "atol": 1e-12}


def _member(seed: int) -> nn.Module:
    """A small model with a dense weight, a convolution kernel (3-D), biases and norm parameters: decayed and
    non-decayed parameters of 1, 2 and 3 dimensions."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(2, 3, 5), nn.BatchNorm1d(3), nn.Flatten(), nn.Linear(3 * 4, 4)).double()


def _stack(members: list[nn.Module]) -> tuple[dict[str, torch.Tensor], list[bool]]:
    """Each parameter of the K members as one float64 leaf (K, *shape), and whether it gets weight decay."""
    template = members[0]
    by_id = {id(p): n for n, p in template.named_parameters()}
    decayed = {by_id[id(p)] for g in param_groups(template, 1.0) if g["decay_name"] == "decay" for p in g["params"]}
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in members]).clone().requires_grad_(True)
              for n, _ in template.named_parameters()}
    return params, [n in decayed for n in params]


def _random_grads(members: list[nn.Module], params: dict[str, torch.Tensor], gen: torch.Generator,
                  scale: list[float]) -> None:
    """The same random gradient for member k's own parameters and for row k of the stacked ones."""
    for name, p in params.items():
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64) * torch.tensor(scale).reshape(
            (-1,) + (1,) * (p.dim() - 1)).double()
        p.grad = g.clone()
        for k, m in enumerate(members):
            dict(m.named_parameters())[name].grad = g[k].clone()


def _assert_members_equal(members: list[nn.Module], params: dict[str, torch.Tensor], what: str) -> None:
    for k, m in enumerate(members):
        for name, p in m.named_parameters():
            torch.testing.assert_close(params[name][k].detach(), p.detach(), **TOL, msg=f"{what}: member {k} {name}")


HYPER = [  # three members that share nothing
    {"lr": 0.01, "weight_decay": 0.0, "decay": "decoupled", "momentum": 0.9, "betas": (0.9, 0.999), "eps": 1e-8},
    {"lr": 0.003, "weight_decay": 0.01, "decay": "l2", "momentum": 0.5, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 0.03, "weight_decay": 0.1, "decay": "decoupled", "momentum": 0.3, "betas": (0.5, 0.9), "eps": 1e-4},
]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", STACKED_OPTIMIZERS)
def test_stacked_optimizer_follows_each_members_own_optimizer(name, fused):
    """Per member: its own η (changed by a schedule every step), weight decay (none, coupled L2, decoupled),
    momentum, betas and eps — the stacked update equals ``build_recipe_optimizer``'s after every step."""
    hyper = [dict(h, name=name) for h in HYPER]
    members = [_member(k) for k in range(3)]
    own = copy.deepcopy(members)
    own_opts = [build_recipe_optimizer(SimpleNamespace(optimizer=SimpleNamespace(**h)), m) for h, m in zip(hyper, own)]
    params, decayed = _stack(members)
    opt = StackedOptimizer(name, list(params.values()), decayed, weight_decay=[h["weight_decay"] for h in hyper],
                           decoupled=[h["decay"] == "decoupled" for h in hyper],
                           momentum=[h["momentum"] for h in hyper], betas=[h["betas"] for h in hyper],
                           eps=[h["eps"] for h in hyper], fused=fused)
    gen = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        lrs = [h["lr"] * (1 + 0.5 * torch.cos(torch.tensor(step / 3.0)).item()) for h in hyper]
        _random_grads(own, params, gen, [10.0 if step == 7 else 1.0, 1.0, 0.1])
        for k, o in enumerate(own_opts):
            apply_lr(o, lrs[k])
            o.step()
        opt.step(lrs)
        _assert_members_equal(own, params, f"{name} step {step}")


@pytest.mark.parametrize("mode", ["none", "norm", "unit", "value", "agc"])
def test_stacked_clipping_follows_each_members_own_clipping(mode):
    """Per member: its own threshold; the gradient norm, whether clipping fired and the clipped gradients equal
    ``clip_gradients_`` on the member alone at every step; an SGD step between steps moves the weights (AGC's
    reference) along the same trajectory. The thresholds make clipping fire at some steps and not at others."""
    thresholds = [0.05, 0.01, 1e3] if mode == "agc" else [20.0, 100.0, 8.0]
    members = [_member(k) for k in range(3)]
    own = copy.deepcopy(members)
    params, _ = _stack(members)
    gen = torch.Generator().manual_seed(1)
    outcomes = set()
    for step in range(STEPS):
        _random_grads(own, params, gen, [10.0 if step % 4 == 0 else 1.0, 0.3, 3.0])
        grads = [p.grad for p in params.values()]
        norms = member_grad_norms(grads)
        fired = clip_(grads, mode, torch.tensor(thresholds, dtype=torch.float64), norms,
                      [p.detach() for p in params.values()])
        for k, m in enumerate(own):
            stats = clip_gradients_(list(m.parameters()), mode, thresholds[k])
            torch.testing.assert_close(norms[k], stats.norm_before, **TOL, msg=f"{mode} step {step}: norm of {k}")
            assert bool(fired[k]) == bool(stats.fired), f"{mode} step {step}: member {k} fired"
            outcomes.add(bool(fired[k]))
            for name, p in m.named_parameters():
                torch.testing.assert_close(params[name].grad[k], p.grad, **TOL,
                                           msg=f"{mode} step {step}: member {k} {name}")
        with torch.no_grad():
            for p in params.values():
                p.sub_(0.1 * p.grad)
            for m in own:
                for p in m.parameters():
                    p.sub_(0.1 * p.grad)
        _assert_members_equal(own, params, f"{mode} step {step}")
    assert outcomes == ({False} if mode == "none" else {True, False})   # both paths taken, none never fires
