"""Optimisers by name: the update rule that turns a gradient into a weight change.

- ``sgd``: w ← w − η∇L (torch.optim.SGD).
- ``momentum``: the lesson's form v ← γv − η∇L; w ← w + v (``LessonMomentum``, our own optimiser).
- ``nesterov``: Nesterov momentum (torch.optim.SGD, nesterov=True).
- ``normalized``: w ← w − η∇L/‖∇L‖ (``NormalizedSGD``); the lesson calls this "Adagrad", it is normalised
  gradient descent.
- ``adagrad``: the real Adagrad, per-coordinate step η/√(Σg²) (torch.optim.Adagrad).
- ``rmsprop``, ``adam``, ``adamw``: as in the papers / torch.optim. Lesson: "Wenn Sie sich nicht sicher sind,
  welchen Sie verwenden sollen, nehmen Sie Adam."

``build_optimizer`` is the one entry point the trainer uses; the ``OPTIMIZERS`` registry feeds recipe
validation and ``tricklab tricks``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from tricklab.errors import InputError
from tricklab.registry import Registry

OPTIMIZERS = Registry("optimizer")

ParamsT = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


def _check_hyper(lr: float, momentum: float, weight_decay: float) -> None:
    """Raise ValueError (as torch.optim does) for hyperparameters no optimiser accepts."""
    if not lr >= 0.0:
        raise ValueError(f"invalid learning rate: {lr}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"invalid momentum: {momentum} (allowed: 0 <= γ <= 1)")
    if not weight_decay >= 0.0:
        raise ValueError(f"invalid weight_decay: {weight_decay}")


def _decayed_grad(p: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """∇L + λw: coupled L2 weight decay, added to the gradient as torch.optim.SGD does."""
    return p.grad if weight_decay == 0 else p.grad.add(p, alpha=weight_decay)


class LessonMomentum(Optimizer):
    r"""Momentum SGD in the lesson's form: v ← γv − η(∇L + λw); w ← w + v, with v₀ = 0.

    Polyak 1964 ("heavy ball"); Sutskever et al. 2013 use this same velocity form. γ = 0 is plain SGD,
    γ = 1 "a pure equation of motion" (lesson). λ (``weight_decay``) is coupled L2: λw is added to ∇L.

    PyTorch's ``SGD(momentum=γ)`` runs a different form: b ← γb + ∇L; w ← w − ηb. Unrolled, the lesson's
    velocity is v_t = −Σ_k γ^{t−k} η_k g_k (each gradient keeps the η of *its own* step), PyTorch's step is
    −η_t Σ_k γ^{t−k} g_k (the *current* η scales the whole history). The two are identical while η is constant;
    right after η changes from η to η′ they differ by (η′ − η)·γ·b in that step, and the difference fades with
    γ^t. Under a learning-rate schedule the lesson's form reacts more smoothly to LR changes (the velocity
    does not jump).

    Param groups may set their own ``lr``, ``momentum`` and ``weight_decay``. State per parameter:
    ``velocity`` (v).
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        _check_hyper(lr, momentum, weight_decay)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update v ← γv − η(∇L + λw); w ← w + v for every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, gamma, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _decayed_grad(p, wd)
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                v = state["velocity"]
                v.mul_(gamma).add_(g, alpha=-lr)
                p.add_(v)
        return loss


class NormalizedSGD(Optimizer):
    r"""Normalised gradient descent: w ← w − η·g/max(‖g‖, ε), g = ∇L + λw, ‖g‖ the global L2 norm.

    ‖g‖ = √(Σ g²) over *all* parameters of the optimiser (all param groups together), so every step has
    length exactly η (per group: that group's η) whatever the gradient's size — the lesson's remedy for
    exploding/vanishing gradients. ε = 1e-12 guards a zero gradient. Reference: Nesterov 1984; Hazan, Levy &
    Shalev-Shwartz 2015, "Beyond Convexity: Stochastic Quasi-Convex Optimization" (arXiv:1507.02030).

    The lesson names this rule **Adagrad**; it is not: Adagrad (Duchi et al. 2011) divides each coordinate by
    the root of its own accumulated squared gradients (``adagrad`` in ``OPTIMIZERS``). λ (``weight_decay``)
    is coupled L2 (added to ∇L before normalising). The norm stays on the device: no host synchronisation.
    """

    def __init__(self, params: ParamsT, lr: float = 1e-2, weight_decay: float = 0.0, eps: float = 1e-12) -> None:
        _check_hyper(lr, 0.0, weight_decay)
        if not eps > 0.0:
            raise ValueError(f"invalid eps: {eps}")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.eps = eps

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step of length η: w ← w − η·g/max(‖g‖, ε) with the global norm of all decayed gradients."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    work.append((group, p, _decayed_grad(p, group["weight_decay"])))
        if not work:
            return loss
        first_device = work[0][1].device
        norms = torch._foreach_norm([g for _, _, g in work])
        total = torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]))
        inv_norm = 1.0 / total.clamp(min=self.eps)
        inv_on: dict[torch.device, torch.Tensor] = {first_device: inv_norm}
        for group, p, g in work:
            if p.device not in inv_on:
                inv_on[p.device] = inv_norm.to(p.device)
            p.add_(g * inv_on[p.device].to(g.dtype), alpha=-group["lr"])
        return loss


def _sgd(params: ParamsT, *, lr: float, weight_decay: float, **_: Any) -> Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def _momentum(params: ParamsT, *, lr: float, momentum: float, weight_decay: float, **_: Any) -> Optimizer:
    return LessonMomentum(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _nesterov(params: ParamsT, *, lr: float, momentum: float, weight_decay: float, **_: Any) -> Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)


def _normalized(params: ParamsT, *, lr: float, weight_decay: float, **_: Any) -> Optimizer:
    return NormalizedSGD(params, lr=lr, weight_decay=weight_decay)


def _adagrad(params: ParamsT, *, lr: float, eps: float, weight_decay: float, **_: Any) -> Optimizer:
    return torch.optim.Adagrad(params, lr=lr, eps=eps, weight_decay=weight_decay)


def _rmsprop(params: ParamsT, *, lr: float, eps: float, weight_decay: float, **_: Any) -> Optimizer:
    return torch.optim.RMSprop(params, lr=lr, eps=eps, weight_decay=weight_decay)


def _adam(
    params: ParamsT, *, lr: float, betas: tuple[float, float], eps: float, weight_decay: float, **_: Any
) -> Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _adamw(
    params: ParamsT, *, lr: float, betas: tuple[float, float], eps: float, weight_decay: float, **_: Any
) -> Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


OPTIMIZERS.register(
    "sgd",
    formula="w ← w − η(∇L + λw)",
    reference="Robbins & Monro 1951; torch.optim.SGD",
    lesson="stochastischer Gradientenabstieg: w^{t+1} = w^t − η∇ℒ auf zufälligen Minibatches",
    obj=_sgd,
)
OPTIMIZERS.register(
    "momentum",
    formula="v ← γv − η(∇L + λw); w ← w + v   (the lesson's form, LessonMomentum)",
    reference="Polyak 1964; Sutskever et al. 2013 (ICML)",
    lesson="Momentum-SGD: v^{t+1} = γv^t − η∇ℒ, w^{t+1} = w^t + v^{t+1}",
    note="PyTorch's SGD(momentum) runs b ← γb + ∇L; w ← w − ηb: equal only while η is constant; "
    "tricklab runs the lesson's form",
    aliases=("sgd_momentum",),
    obj=_momentum,
)
OPTIMIZERS.register(
    "nesterov",
    formula="b ← γb + ∇L; w ← w − η(∇L + γb)   (PyTorch's form)",
    reference="Nesterov 1983; Sutskever et al. 2013; torch.optim.SGD(nesterov=True)",
    obj=_nesterov,
)
OPTIMIZERS.register(
    "normalized",
    formula="w ← w − η∇L/max(‖∇L‖, 1e-12), ‖·‖ the global L2 norm over all parameters",
    reference="Hazan, Levy & Shalev-Shwartz 2015, arXiv:1507.02030",
    lesson='w^{t+1} = w^t − η(∇ℒ/‖∇ℒ‖) — "Dieser Algorithmus wird Adagrad genannt"',
    note="the lesson calls this Adagrad; it is normalised gradient descent (every step has length η)",
    aliases=("normalised", "normalized_sgd"),
    obj=_normalized,
)
OPTIMIZERS.register(
    "adagrad",
    formula="s ← s + g²; w ← w − η·g/(√s + ε), per coordinate",
    reference="Duchi, Hazan & Singer 2011, JMLR 12; torch.optim.Adagrad",
    lesson="(the lesson's 'Adagrad' is normalised gradient descent, see `normalized`)",
    note="the real Adagrad: a per-coordinate step η/√(Σg²)",
    obj=_adagrad,
)
OPTIMIZERS.register(
    "rmsprop",
    formula="s ← αs + (1−α)g², α = 0.99; w ← w − η·g/(√s + ε)",
    reference="Tieleman & Hinton 2012, Coursera lecture 6.5; torch.optim.RMSprop",
    lesson='"Andere Algorithmen, die dieselbe Idee verwenden: RMSProp, Adam"',
    obj=_rmsprop,
)
OPTIMIZERS.register(
    "adam",
    formula="m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; w ← w − η·m̂/(√v̂ + ε), g = ∇L + λw (coupled)",
    reference="Kingma & Ba 2015, arXiv:1412.6980; torch.optim.Adam",
    lesson='"Wenn Sie sich nicht sicher sind, welchen Sie verwenden sollen, nehmen Sie Adam."',
    obj=_adam,
)
OPTIMIZERS.register(
    "adamw",
    formula="w ← w(1 − ηλ), then the Adam step on ∇L (decoupled weight decay)",
    reference="Loshchilov & Hutter 2019, arXiv:1711.05101; torch.optim.AdamW",
    note="weight decay is decoupled from the gradient, unlike Adam's coupled L2",
    obj=_adamw,
)


def build_optimizer(
    name: str,
    params_or_groups: ParamsT,
    *,
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> Optimizer:
    """The optimiser ``name`` (see ``OPTIMIZERS``) over parameters or param groups.

    ``momentum`` (γ) is used by ``momentum`` and ``nesterov``; ``betas`` by ``adam``/``adamw``; ``eps`` by
    ``adagrad``/``rmsprop``/``adam``/``adamw`` (``normalized`` keeps its own 1e-12 guard). ``weight_decay``
    is the optimiser's own: coupled L2 (λw added to ∇L) for every optimiser except ``adamw``, where it is
    decoupled (w ← w(1 − ηλ)). Param groups carrying their own ``"weight_decay"`` (or ``"lr"``) keep it.
    """
    try:
        entry = OPTIMIZERS.get(name)
    except KeyError:
        raise InputError("optimizer.name", f"unknown optimizer {name!r}", allowed=OPTIMIZERS.allowed()) from None
    if not (isinstance(lr, (int, float)) and lr > 0 and lr < float("inf")):
        raise InputError("optimizer.lr", f"learning rate must be a positive finite number, got {lr!r}")
    if not 0.0 <= momentum <= 1.0:
        raise InputError("optimizer.momentum", f"momentum γ must lie in [0, 1], got {momentum!r}")
    if entry.name == "nesterov" and momentum == 0:
        raise InputError("optimizer.momentum", "nesterov needs a momentum γ > 0")
    if not (len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)):
        raise InputError("optimizer.betas", f"betas must be two numbers in [0, 1), got {betas!r}")
    if not eps > 0:
        raise InputError("optimizer.eps", f"eps must be positive, got {eps!r}")
    if not weight_decay >= 0:
        raise InputError("optimizer.weight_decay", f"weight decay must be >= 0, got {weight_decay!r}")
    return entry.obj(params_or_groups, lr=lr, momentum=momentum, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


_MOMENTUM_FORMS = {
    "sgd": "no momentum: w ← w − η∇L",
    "momentum": "the lesson's form: v ← γv − η∇L; w ← w + v (LessonMomentum). PyTorch's SGD(momentum) form "
    "b ← γb + ∇L; w ← w − ηb is the same only while η is constant.",
    "nesterov": "PyTorch's Nesterov form: b ← γb + ∇L; w ← w − η(∇L + γb) (the current η scales the whole velocity)",
    "normalized": "no momentum: w ← w − η∇L/‖∇L‖",
    "adagrad": "no momentum: per-coordinate η/√(Σg²)",
    "rmsprop": "no momentum (torch RMSprop, momentum=0)",
    "adam": "Adam's first moment m ← β₁m + (1−β₁)g, bias-corrected, acts as momentum",
    "adamw": "Adam's first moment m ← β₁m + (1−β₁)g, bias-corrected, acts as momentum",
}


def describe_momentum_form(name: str) -> str:
    """One line saying which momentum form the optimiser ``name`` runs (the CLI prints it)."""
    try:
        canonical = OPTIMIZERS.canonical(name)
    except KeyError:
        raise InputError("optimizer.name", f"unknown optimizer {name!r}", allowed=OPTIMIZERS.allowed()) from None
    return f"{canonical}: {_MOMENTUM_FORMS[canonical]}"
