"""Gradient accumulation: the gradient of a large batch from several small ones, for a batch that does not fit.

A batch of S examples split into micro-batches of sizes s_1 … s_N (Σ s_i = S) has the mean loss
L = (1/S)·Σ_examples ℓ = Σ_i (s_i/S)·L_i, where L_i is micro-batch i's mean loss; the gradient is linear, so

    ∇L = Σ_i (s_i/S)·∇L_i.

Backpropagating each micro-batch's loss scaled by s_i/S and stepping once after the last one gives the gradient
of the whole batch, up to the order of the floating-point sums — at the memory cost of one micro-batch
(Ott, Edunov, Grangier & Auli 2018, "Scaling Neural Machine Translation", WMT, §4.2: accumulating 16 batches
before each update). What is *not* the same: a layer that looks across the batch — batch norm normalises each
micro-batch by its own statistics — so accumulation equals a larger batch exactly only for networks without
batch norm (layer or group norm, or none).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from tricklab.registry import Registry

ACCUMULATION = Registry("accumulation")


@ACCUMULATION.register(
    "accumulate", formula="∇L = Σ_i (s_i/S)·∇L_i over micro-batches of sizes s_i, Σ s_i = S; one step after all",
    reference="Ott, Edunov, Grangier & Auli 2018, Scaling Neural Machine Translation, WMT, §4.2",
    lesson="a large batch's gradient with a small batch's memory (not across batch norm)")
def micro_batches(x: Tensor, y: Tensor, parts: int) -> Iterator[tuple[Tensor, Tensor, float]]:
    """``(x_i, y_i, s_i/S)`` for the batch (x, y) cut into ``parts`` micro-batches of ⌈S/parts⌉ examples (the last
    may be smaller; fewer parts when S < parts)."""
    total = len(y)
    size = -(-total // parts)
    for start in range(0, total, size):
        yb = y[start:start + size]
        yield x[start:start + size], yb, len(yb) / total
