"""Gradient clipping: limit the size of a step when the gradient explodes.

The lesson: "Wenn ||∇ℒ|| ≤ θ, verwenden wir den ursprünglichen Gradienten …, und wenn ||∇ℒ|| > θ, teilen wir den
Gradienten durch seine Norm", with θ = 1 or θ = 10 in most cases. Taken literally that is ``unit``; the rule
the field uses is ``norm`` (rescale to norm θ). ``value`` and ``agc`` are the two other common variants.

``clip_gradients_`` clips in place, between ``loss.backward()`` and ``optimizer.step()``, and returns the global
gradient norm before clipping and whether clipping fired — the run records both. It never synchronises with
the host: no ``.item()``, no Python ``if`` on a tensor; every decision is a ``torch.where`` or a multiplication
by a factor that is 1 when nothing is to be done, so it costs no stall on a GPU.

Non-finite gradients: if the global norm is Inf or NaN, every mode leaves all gradients exactly as they are and
reports ``fired = False``; ``norm_before`` carries the Inf/NaN (``ClipStats.finite`` is False), so the caller
can skip the step. (``torch.nn.utils.clip_grad_norm_`` would instead multiply by θ/Inf = 0, turning finite
entries into 0 and Inf entries into NaN; ``value`` clipping would silently turn an Inf into θ.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

from tricklab.errors import InputError
from tricklab.registry import Registry

NORM_EPS = 1e-6
"""Added to the norm in ``norm`` clipping, θ/(‖g‖ + 1e-6), exactly as torch.nn.utils.clip_grad_norm_ does."""

AGC_EPS = 1e-3
"""AGC's floor on the weight norm, max(‖w_i‖, 1e-3), so zero-initialised weights (biases) can still move."""


class ClipStats(NamedTuple):
    """What clipping saw and did in one step, as 0-dim tensors on the gradients' device (no host sync)."""

    norm_before: Tensor
    """Global L2 norm of all gradients before clipping, √(Σ_p ‖g_p‖²); Inf/NaN if a gradient is non-finite."""
    fired: Tensor
    """bool: whether clipping changed any gradient in this step."""

    @property
    def finite(self) -> Tensor:
        """bool: whether the gradient norm was finite (if not, the gradients were left untouched)."""
        return torch.isfinite(self.norm_before)


def _by_device_and_dtype(tensors: list[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[Tensor]]:
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def global_grad_norm(grads: list[Tensor]) -> Tensor:
    """√(Σ ‖g‖²) over all tensors in ``grads``, as torch.nn.utils.clip_grad_norm_ computes it.

    Per-tensor norms with ``torch._foreach_norm`` (accumulated in at least float32, so float16 gradients cannot
    overflow the norm), then the norm of the stacked per-tensor norms, on the first gradient's device.
    """
    first = grads[0].device
    norms: list[Tensor] = []
    for (_, dtype), group in _by_device_and_dtype(grads).items():
        norms.extend(torch._foreach_norm(group, 2.0, dtype=torch.promote_types(dtype, torch.float32)))
    dtype = norms[0].dtype
    for n in norms[1:]:
        dtype = torch.promote_types(dtype, n.dtype)
    return torch.linalg.vector_norm(torch.stack([n.to(first, dtype) for n in norms]), 2.0)


def _scale_(grads: list[Tensor], factor: Tensor) -> None:
    """g ← factor·g for every gradient (``factor`` a 0-dim tensor; 1 where nothing is to change)."""
    for (device, _), group in _by_device_and_dtype(grads).items():
        torch._foreach_mul_(group, factor.to(device))


Clipper = Callable[[list[Tensor], list[Tensor], Tensor, float], Tensor]
"""(params, grads, global norm, threshold) -> fired; clips ``grads`` in place."""


def _false_like(norm: Tensor) -> Tensor:
    return torch.zeros((), dtype=torch.bool, device=norm.device)


def no_clipping(params: list[Tensor], grads: list[Tensor], norm: Tensor, threshold: float) -> Tensor:
    """``none``: leave the gradients alone (the norm is still recorded)."""
    return _false_like(norm)


def clip_by_global_norm(params: list[Tensor], grads: list[Tensor], norm: Tensor, threshold: float) -> Tensor:
    """``norm``: if ‖g‖ > θ then g ← θ·g/‖g‖, with ‖g‖ the L2 norm over all parameters' gradients together.

    Pascanu, Mikolov & Bengio 2013, arXiv:1211.5063. Implemented as torch.nn.utils.clip_grad_norm_ does it:
    g ← g·min(1, θ/(‖g‖ + 1e-6)), so the clipped norm is θ·‖g‖/(‖g‖ + 1e-6), i.e. θ up to 1e-6 relative — and a
    norm within 1e-6 below θ is scaled by a factor just under 1 (``fired`` is then True, as the gradient did
    change). The direction is kept. The lesson's literal rule (divide by the norm) is ``unit``.
    """
    factor = torch.clamp(threshold / (norm + NORM_EPS), max=1.0)
    factor = torch.where(torch.isfinite(norm), factor, torch.ones_like(factor))
    _scale_(grads, factor)
    return factor < 1.0


def clip_to_unit_norm(params: list[Tensor], grads: list[Tensor], norm: Tensor, threshold: float) -> Tensor:
    """``unit``: if ‖g‖ > θ then g ← g/‖g‖ (global norm) — the lesson's literal wording.

    "wenn ||∇ℒ|| > θ, teilen wir den Gradienten durch seine Norm": after clipping the norm is 1, whatever θ is.
    For θ ≥ 1 this is a harsher ``norm`` clipping (norm 1 instead of θ); for θ < 1 it *raises* a norm in
    (θ, 1) up to 1, a discontinuity at θ. The standard rule is ``norm``.
    """
    over = torch.isfinite(norm) & (norm > threshold)
    factor = torch.where(over, 1.0 / norm, torch.ones_like(norm))
    _scale_(grads, factor)
    return over


def clip_by_value(params: list[Tensor], grads: list[Tensor], norm: Tensor, threshold: float) -> Tensor:
    """``value``: g ← clamp(g, −θ, θ) element by element, as torch.nn.utils.clip_grad_value_.

    Changes the direction of the gradient (large coordinates are cut, small ones kept). Mikolov 2012 (PhD
    thesis) used it for RNNs. Not in the lesson.
    """
    finite = torch.isfinite(norm)
    maxima: list[Tensor] = []
    for group in _by_device_and_dtype(grads).values():
        maxima.extend(m.to(norm.device, norm.dtype) for m in torch._foreach_norm(group, float("inf")))
    largest = torch.stack(maxima).max()
    bound = torch.where(finite, torch.full_like(norm, threshold), torch.full_like(norm, float("inf")))
    for g in grads:
        b = bound.to(g.device, g.dtype)
        g.clamp_(min=-b, max=b)
    return finite & (largest > threshold)


def adaptive_clip(params: list[Tensor], grads: list[Tensor], norm: Tensor, threshold: float) -> Tensor:
    """``agc``: per unit i (a row of the weight, dim 0), if ‖g_i‖/max(‖w_i‖, 1e-3) > λ then
    g_i ← λ·max(‖w_i‖, 1e-3)·g_i/‖g_i‖.

    Adaptive gradient clipping, Brock, De, Smith & Simonyan 2021, arXiv:2102.06171 (NFNets): the allowed size
    of a unit's gradient is relative to the size of its weights. ‖·‖ is the Frobenius norm over all dims but
    the first (a conv filter: in·k values); a 1-D (or 0-D) parameter such as a bias is one unit. The paper uses
    λ = 0.01–0.16 and does not clip the final classifier layer — leave it out of ``params`` to do the same.
    Not in the lesson.
    """
    finite = torch.isfinite(norm)
    fired = _false_like(norm)
    for p, g in zip(params, grads):
        dims = tuple(range(1, p.dim())) if p.dim() > 1 else None
        keep = p.dim() > 1
        w_norm = torch.linalg.vector_norm(p.detach(), 2.0, dim=dims, keepdim=keep).clamp(min=AGC_EPS)
        g_norm = torch.linalg.vector_norm(g, 2.0, dim=dims, keepdim=keep)
        max_norm = threshold * w_norm
        trigger = (g_norm > max_norm) & finite.to(g.device)
        g.mul_(torch.where(trigger, max_norm / g_norm, torch.ones_like(g_norm)))
        fired = fired | trigger.any().to(fired.device)
    return fired


CLIPPERS = Registry("clip")
CLIPPERS.register("none", formula="g unchanged (the norm is still recorded)", reference="—", obj=no_clipping)
CLIPPERS.register(
    "norm",
    formula="if ‖g‖ > θ: g ← θ·g/‖g‖ (global L2 norm over all gradients)",
    reference="Pascanu, Mikolov & Bengio 2013, arXiv:1211.5063; torch.nn.utils.clip_grad_norm_",
    lesson="θ = 1 oder θ = 10",
    note="the standard rule (norm θ after clipping); the lesson's wording describes 'unit'",
    obj=clip_by_global_norm,
)
CLIPPERS.register(
    "unit",
    formula="if ‖g‖ > θ: g ← g/‖g‖",
    reference="the lesson's literal wording",
    lesson="wenn ||∇ℒ|| > θ, teilen wir den Gradienten durch seine Norm",
    note="the clipped norm is 1 whatever θ is; for θ < 1 it raises norms in (θ, 1) to 1",
    obj=clip_to_unit_norm,
)
CLIPPERS.register(
    "value",
    formula="g ← clamp(g, −θ, θ) elementwise",
    reference="Mikolov 2012 (PhD thesis); torch.nn.utils.clip_grad_value_",
    note="changes the gradient's direction; not in the lesson",
    obj=clip_by_value,
)
CLIPPERS.register(
    "agc",
    formula="per unit i: if ‖g_i‖/max(‖w_i‖, 1e-3) > λ: g_i ← λ·max(‖w_i‖, 1e-3)·g_i/‖g_i‖",
    reference="Brock, De, Smith & Simonyan 2021, arXiv:2102.06171",
    note="adaptive: the threshold λ is relative to the weights; not in the lesson",
    obj=adaptive_clip,
)


def clip_gradients_(params: Iterable[Tensor] | Tensor, mode: str, threshold: float) -> ClipStats:
    """Clip the gradients of ``params`` in place with ``mode`` (see ``CLIPPERS``) at ``threshold`` θ (λ for agc).

    Parameters whose ``.grad`` is None are skipped; with no gradients at all it returns norm 0, fired False.
    Returns ``ClipStats(norm_before, fired)`` as 0-dim tensors — no host synchronisation happens here.
    A non-finite global norm leaves every gradient untouched (see the module docstring).
    """
    if mode not in CLIPPERS:
        raise InputError("clip.mode", f"unknown clipping mode {mode!r}", CLIPPERS.allowed())
    name = CLIPPERS.canonical(mode)
    if name != "none" and not threshold > 0:
        raise InputError("clip.threshold", f"must be a positive number, got {threshold!r}", "θ > 0, e.g. 1 or 10")
    if isinstance(params, Tensor):
        params = [params]
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return ClipStats(torch.zeros(()), torch.zeros((), dtype=torch.bool))
    grads = [p.grad for p in with_grad]
    with torch.no_grad():
        norm = global_grad_norm(grads)
        fired = CLIPPERS.get(name).obj(with_grad, grads, norm, float(threshold))
    return ClipStats(norm, fired)


class ClipTally:
    """An epoch's clipping record — the share of steps that clipped and the gradient norm before clipping (mean
    and largest) — for one model (``shape=()``) or for each of a stack of K models (``shape=(K,)``), kept on the
    device without a host sync until ``metrics`` reads it. The Trainer's ``GradientClipping`` callback and the
    population engine both record through it, so the three metrics mean the same thing in every run."""

    def __init__(self, shape: tuple[int, ...] = (), device: torch.device | str = "cpu") -> None:
        self.fired = torch.zeros(shape, dtype=torch.int64, device=device)
        self.norm_sum = torch.zeros(shape, dtype=torch.float64, device=device)
        self.norm_max = torch.zeros(shape, dtype=torch.float64, device=device)
        self.count = 0

    @torch.no_grad()
    def add(self, fired: Tensor, norm_before: Tensor) -> None:
        """One step: whether clipping fired and the norm before it (each of ``shape``)."""
        self.fired += fired.to(torch.int64)
        norm = norm_before.double()
        self.norm_sum += norm
        torch.maximum(self.norm_max, norm, out=self.norm_max)
        self.count += 1

    def keep(self, rows: list[int]) -> None:
        """Keep the models ``rows`` of a stack (the others left it)."""
        self.fired, self.norm_sum, self.norm_max = (t[rows] for t in (self.fired, self.norm_sum, self.norm_max))

    def metrics(self, row: int | None = None) -> dict[str, float]:
        """``clip_fraction``, ``grad_norm_mean``, ``grad_norm_max`` of the model (of stack row ``row``); empty
        before the first step."""
        if not self.count:
            return {}
        pick = (lambda t: t) if row is None else (lambda t: t[row])
        return {"clip_fraction": pick(self.fired).item() / self.count,
                "grad_norm_mean": pick(self.norm_sum).item() / self.count,
                "grad_norm_max": pick(self.norm_max).item()}
