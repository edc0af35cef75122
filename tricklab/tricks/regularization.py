"""Regularisation against overfitting: dropout, weight decay (coupled and decoupled), and a capacity check.

The lesson: always balance the number of model parameters against the number of training examples; then
prevent overfitting by early stopping, explicit weight decay ("a penalty on large absolute weights added to
the loss"), model averaging, and dropout ("implicit model averaging"). Early stopping and averaging live in
``early_stopping.py`` and ``averaging.py``.

Weight decay is applied to the weights of Linear/Conv layers (every parameter with ≥ 2 dimensions) only —
never to biases or the scale/shift of normalisation layers, whose size carries no capacity and whose decay
only fights the normalisation. ``param_groups`` makes that split for any optimiser.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import _WeightNorm
from torch.nn.utils.parametrize import ParametrizationList
from torch.utils.hooks import RemovableHandle

from tricklab.errors import InputError
from tricklab.registry import Registry
from tricklab.tricks.norm import is_norm

REGULARIZERS = Registry("regularization")
REGULARIZERS.register(
    "dropout",
    formula="training: y = m ⊙ x/(1 − p), m_i ~ Bernoulli(1 − p); evaluation: y = x",
    reference="Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov 2014, JMLR 15:1929",
    lesson="Prozentsatz der zu entfernenden Neuronen, typischerweise 10%-50%; implizite Modellmittelwertbildung",
    note="the 1/(1 − p) scaling in training (inverted dropout) keeps the expected activation, so evaluation needs no rescaling",
    obj=nn.Dropout,
)


def make_dropout(p: float) -> nn.Module:
    """A dropout layer that zeroes each unit with probability ``p`` in training and scales the rest by 1/(1 − p).

    Srivastava et al. 2014. The lesson's typical range is p = 0.1–0.5. ``p = 0`` gives ``nn.Identity`` (the
    ablation removes the layer instead of keeping a no-op).
    """
    if not 0.0 <= p < 1.0:
        raise InputError("model.dropout", f"dropout probability must lie in [0, 1), got {p!r}", "0.0 to 0.5 is typical")
    return nn.Dropout(p) if p > 0 else nn.Identity()


def l2_penalty(params: Iterable[Tensor], weight_decay: float) -> Tensor:
    """λ/2·Σ‖w‖² over ``params`` — the term coupled L2 weight decay adds to the loss.

    Its gradient is λw, which is exactly what ``torch.optim.SGD(weight_decay=λ)`` adds to ∇L; so passing λ to the
    optimiser (``param_groups``) is the same trick without building the term. The lesson: "Hinzufügen einer
    zusätzlichen Strafe zur Verlustfunktion für hohe absolute Werte der Gewichte".
    """
    return 0.5 * weight_decay * sum((p.pow(2).sum() for p in params), torch.zeros(()))


def _no_decay_ids(model: nn.Module) -> set[int]:
    """ids of parameters that get no decay beyond the 1-D rule: norm layers' γ/β and weight norm's g."""
    ids: set[int] = set()
    for module in model.modules():
        if is_norm(module):
            ids.update(id(p) for p in module.parameters())
        if isinstance(module, ParametrizationList) and any(isinstance(f, _WeightNorm) for f in module):
            ids.add(id(module.original0))  # g (the per-unit length, shape (out, 1, ...)); original1 is v
    return ids


def param_groups(model: nn.Module, weight_decay: float, decoupled: bool = False) -> list[dict[str, Any]]:
    """Split ``model``'s parameters into a decayed and a non-decayed optimiser param group.

    ``decay`` (``"weight_decay": λ``): the weights of Linear/Conv layers and every other parameter with ≥ 2
    dimensions; under weight normalisation (w = g·v/‖v‖) the direction v (``original1``).
    ``no_decay`` (``"weight_decay": 0.0``): biases and all other 1-D parameters, every parameter of a
    normalisation layer (``tricklab.tricks.norm.is_norm``), and weight norm's length g (``original0``, which is
    2-D but a per-unit scale like BatchNorm's γ).
    Each group has ``"decay_name"``: ``"decay"`` | ``"no_decay"``; empty groups are dropped; the order of
    parameters is ``model.parameters()``'s. With ``decoupled=True`` the groups carry
    ``"decoupled_decay": λ`` (or 0.0) and ``"weight_decay": 0.0`` instead, for
    ``add_decoupled_weight_decay``. Loshchilov & Hutter 2019 (arXiv:1711.05101) decay only the weights too.
    """
    if not weight_decay >= 0:
        raise InputError("optimizer.weight_decay", f"weight decay must be >= 0, got {weight_decay!r}")
    excluded = _no_decay_ids(model)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        (no_decay if id(p) in excluded or p.dim() < 2 else decay).append(p)
    groups = []
    for name, params, lam in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
        if not params:
            continue
        group: dict[str, Any] = {"params": params, "decay_name": name}
        if decoupled:
            group.update(weight_decay=0.0, decoupled_decay=float(lam))
        else:
            group["weight_decay"] = float(lam)
        groups.append(group)
    return groups


REGULARIZERS.register(
    "weight_decay_l2",
    formula="L ← L + λ/2·‖w‖² (coupled: the optimiser adds λw to the gradient)",
    reference="Krogh & Hertz 1992, NeurIPS; torch.optim.*(weight_decay=λ)",
    lesson="Expliziter Gewichtsrückgang: zusätzliche Strafe in der Verlustfunktion für hohe absolute Gewichte",
    note="only on weights (≥ 2-D), not on biases and norm parameters; with Adam the penalty is rescaled per coordinate",
    obj=param_groups,
)


def _decay_(optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Step pre-hook: w ← w·(1 − η·λ) for every param group with a numeric ``decoupled_decay`` λ > 0."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            lam = group.get("decoupled_decay", 0.0)
            if isinstance(lam, bool) or not lam > 0:
                continue
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            factor = 1 - group["lr"] * lam
            if isinstance(factor, Tensor):  # a tensor learning rate (capturable optimisers)
                for p in params:
                    p.mul_(factor)
            else:
                torch._foreach_mul_(params, factor)


def add_decoupled_weight_decay(optimizer: torch.optim.Optimizer) -> RemovableHandle:
    """Decoupled weight decay for any optimiser: before each ``step()``, w ← w − η·λ·w.

    Loshchilov & Hutter 2019, arXiv:1711.05101 (AdamW, SGDW): the decay is applied to the weights directly,
    outside the gradient, so Adam's per-coordinate scaling does not weaken it; η is the group's current
    learning rate (the schedule scales the decay too, as in torch.optim.AdamW). Acts on param groups with a
    numeric key ``"decoupled_decay"`` λ > 0 (``param_groups(..., decoupled=True)`` sets it; named so as not to
    collide with torch's own boolean ``decoupled_weight_decay`` group flag, which AdamW sets) and on
    parameters that have a gradient. Returns the hook's handle
    (``handle.remove()`` undoes it). The lesson does not distinguish coupled from decoupled decay.
    """
    return optimizer.register_step_pre_hook(_decay_)


REGULARIZERS.register(
    "weight_decay_decoupled",
    formula="w ← w − η·λ·w before each step, outside the gradient",
    reference="Loshchilov & Hutter 2019, arXiv:1711.05101 (AdamW / SGDW)",
    lesson="Expliziter Gewichtsrückgang / Regularisierung",
    note="for SGD equal to L2 (with λ scaled by η); for Adam different and better; no decay on biases and norm parameters",
    obj=add_decoupled_weight_decay,
)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in ``model`` (parameters shared between layers counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def capacity_warning(num_params: int, num_examples: int, ratio: float = 10.0) -> str | None:
    """A sentence when the model has more than ``ratio`` × as many parameters as training examples, else None.

    The lesson: "sollten wir die Anzahl der Modellparameter immer mit der Anzahl der Trainingsbeispiele in
    Einklang bringen". The ratio 10 is a rule of thumb, not a law: modern over-parametrised nets generalise
    well with far more parameters than examples when regularised — so this is a warning, not an error.
    """
    if num_examples <= 0:
        return f"The model has {num_params:,} parameters but there are no training examples."
    if num_params <= ratio * num_examples:
        return None
    return (
        f"The model has {num_params:,} parameters for {num_examples:,} training examples "
        f"({num_params / num_examples:,.0f} per example, more than {ratio:g}): it can memorise the training set. "
        "Watch the validation loss and consider a smaller model, weight decay, dropout or early stopping."
    )


REGULARIZERS.register(
    "capacity_check",
    formula="warn if #parameters > ratio · #training examples (ratio = 10)",
    reference="rule of thumb",
    lesson="die Anzahl der Modellparameter immer mit der Anzahl der Trainingsbeispiele in Einklang bringen",
    note="a warning, not a law: over-parametrised nets can generalise well when regularised",
    obj=capacity_warning,
)
