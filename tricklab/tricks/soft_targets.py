"""Soft targets: label smoothing and mixup — regularisers that stop a classifier from betting everything on one class.

Cross-entropy with one-hot targets is minimised only by logits that grow without bound: the network is pushed to
ever more confident predictions, which overfits and calibrates badly. Both tricks train on targets that are not
one-hot.

- **Label smoothing** (Szegedy, Vanhoucke, Ioffe, Shlens & Wojna 2016, "Rethinking the Inception Architecture for
  Computer Vision", §7): the target puts 1 − ε on the true class and spreads ε uniformly over all C classes,
  q_k = (1 − ε)·[k = y] + ε/C, so the loss is

      L = −Σ_k q_k log p_k = (1 − ε)·(−log p_y) + ε·(1/C)·Σ_k (−log p_k).

  The second term is the cross-entropy against the uniform distribution: it keeps the logits finite. (This is
  what ``F.cross_entropy(label_smoothing=ε)`` computes; the tests check it against that.)
- **Mixup** (Zhang, Cissé, Dauphin & Lopez-Paz 2018, "mixup: Beyond Empirical Risk Minimization", ICLR, Eq. 1):
  train on convex combinations of pairs of examples and of their targets,

      x̃ = λ·x_i + (1 − λ)·x_j,   ỹ = λ·y_i + (1 − λ)·y_j,   λ ~ Beta(α, α),

  one λ per batch and j a random permutation of the batch (the paper's implementation). Since cross-entropy is
  linear in the target, the loss of x̃ is λ·L(x̃, y_i) + (1 − λ)·L(x̃, y_j) — two ordinary losses, no soft label
  tensor. α → 0 is no mixing; the paper uses α ∈ [0.1, 0.4] on ImageNet and 1 on CIFAR-10.

The random numbers come from a generator (the permutation) and a ``random.Random`` (λ: the standard library's
Beta sampler, seeded per batch), so a run mixes the same pairs with the same λ whatever else draws random numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.registry import Registry

SOFT_TARGETS = Registry("soft_targets")

LossFn = Callable[[Tensor, Tensor], Tensor]


@SOFT_TARGETS.register(
    "label_smoothing", formula="L = (1 − ε)·CE(p, y) + ε·(1/C)·Σ_k −log p_k",
    reference="Szegedy, Vanhoucke, Ioffe, Shlens & Wojna 2016, CVPR, §7",
    lesson="regularise the output: no target of exactly 1, so no logit is pushed to infinity")
def smoothed_cross_entropy(logits: Tensor, y: Tensor, epsilon: float) -> Tensor:
    """Mean cross-entropy of ``logits`` (B, C) against targets smoothed by ``epsilon`` (see the module's
    docstring); ε = 0 is the plain cross-entropy."""
    log_p = F.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    if epsilon == 0:
        return nll.mean()
    uniform = -log_p.mean(dim=-1)
    return ((1 - epsilon) * nll + epsilon * uniform).mean()


def smoothed_loss(epsilon: float) -> LossFn:
    """``loss(logits, y)``: cross-entropy with label smoothing ``epsilon`` (``smoothed_cross_entropy``)."""
    return lambda logits, y: smoothed_cross_entropy(logits, y, epsilon)


@SOFT_TARGETS.register(
    "mixup", formula="x̃ = λx_i + (1 − λ)x_j, L = λ·L(x̃, y_i) + (1 − λ)·L(x̃, y_j), λ ~ Beta(α, α)",
    reference="Zhang, Cissé, Dauphin & Lopez-Paz 2018, ICLR, Eq. 1",
    lesson="regularise between examples: linear behaviour between training points")
def mixup(x: Tensor, y: Tensor, alpha: float, generator: torch.Generator, lam_rng: random.Random
          ) -> tuple[Tensor, Tensor, Tensor, float]:
    """The mixed batch x̃, the two label sets (y_i, y_j) and λ, for ``mixed_loss``."""
    lam = lam_rng.betavariate(alpha, alpha)
    perm = torch.randperm(x.shape[0], generator=generator, device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def mixed_loss(loss_fn: LossFn, logits: Tensor, y_a: Tensor, y_b: Tensor, lam: float) -> Tensor:
    """λ·L(logits, y_a) + (1 − λ)·L(logits, y_b): the loss of a mixed batch (cross-entropy is linear in the
    target, so this is the loss against the mixed target)."""
    return lam * loss_fn(logits, y_a) + (1 - lam) * loss_fn(logits, y_b)


def lambda_rng(seed: int, step: int) -> random.Random:
    """The source of λ for the batch at global ``step`` of a run with ``seed`` (a function of both alone)."""
    return random.Random(seed * 1_000_003 + step)
