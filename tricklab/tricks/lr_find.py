"""The learning-rate range test: train briefly while η grows exponentially, read a good η off the loss curve.

Smith 2017, "Cyclical Learning Rates for Training Neural Networks" (arXiv:1506.01186), section 3.3; fastai's
``lr_find``. The lesson says η decides whether training succeeds ("Der Erfolg des Trainings hängt oft vom
Lernratenparameter η ab") but not how to find it; this is the standard way.

Layering: this module only needs a model, a loss function, batches and an optimiser factory — it does not
know tricklab's data or training loop.
"""

from __future__ import annotations

import copy
import io
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from tricklab.registry import Registry
from tricklab.tricks.schedules import apply_lr

LR_FINDERS = Registry("lr_finder")

OptimizerFactory = Callable[[Iterable[nn.Parameter], float], Optimizer]
_END = object()  # end of the batch stream (a batch itself may be None: the loss function may ignore it)


@dataclass(frozen=True)
class LRFindResult:
    """The range test's curve and its suggestion.

    ``lrs[i]`` is the η of step i, ``losses[i]`` the smoothed (bias-corrected EMA) loss after it, ``raw_losses[i]``
    the batch loss itself; ``diverged`` says the test stopped because the smoothed loss exceeded
    ``diverge_factor`` × its best (or became NaN/Inf) before reaching ``lr_max``.
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float
    diverged: bool

    def plot(self, path: str | os.PathLike[str] | None = None, *, title: str = "") -> Any:
        """The range test as users know it from fastai: smoothed loss against η (log axis), the raw batch
        losses faint behind it, the suggestion marked. Returns the matplotlib ``Figure`` (no window, no
        pyplot state); ``path``: also save it there as PNG."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.0, 4.2), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(self.lrs, self.raw_losses, color="#8c959f", linewidth=0.8, alpha=0.6, label="batch loss")
        ax.plot(self.lrs, self.losses, color="#0969da", linewidth=1.8, label="smoothed loss")
        at = min(range(len(self.lrs)), key=lambda i: abs(math.log(self.lrs[i]) - math.log(self.suggestion)))
        ax.axvline(self.suggestion, color="#cf222e", linestyle="--", linewidth=1)
        ax.plot([self.suggestion], [self.losses[at]], "o", color="#cf222e",
                label=f"suggestion η = {self.suggestion:.3g}")
        ax.set_xscale("log")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:   # the divergence at the end would squash the useful part of the curve
            low, high = min(finite), self.losses[0] if math.isfinite(self.losses[0]) else max(finite)
            ax.set_ylim(low - 0.1 * (high - low + 1e-12), max(high, low) + 0.3 * (high - low + 1e-12))
        ax.set_xlabel("learning rate η (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title(title or "learning-rate range test" + (" (stopped: the loss diverged)" if self.diverged else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3, frameon=False)   # off the curve
        if path is not None:
            fig.savefig(path, format="png")
        return fig

    def png(self, *, title: str = "") -> bytes:
        """``plot`` as PNG bytes."""
        buf = io.BytesIO()
        self.plot(title=title).savefig(buf, format="png")
        return buf.getvalue()


def suggest_lr(lrs: list[float], losses: list[float], skip_start: float = 0.1) -> float:
    """The η where the smoothed loss falls fastest: argmin of d loss / d log η, searched up to the loss minimum.

    The slope is a central difference in log η over ±2 points at every interior point up to the index of the
    smallest finite loss (past the minimum the curve turns into divergence, where the slope means nothing).
    The first ``skip_start`` fraction of the points is skipped: there the exponential smoothing has seen only
    a handful of batches and batch noise looks like a steep descent (as fastai skips the first 10 points).
    Smith 2017 picks the η "when the loss starts decreasing quickly" as the lower bound of a good range — the
    steepest descent is where a step of the current size buys the most; it lies well below the minimum's η,
    which is already at the edge of divergence. Fallback when the curve never falls (too few points, or
    flat/rising): the η of the minimum loss divided by 10 (fastai's ``lr_min`` rule: one decade below the edge).
    """
    finite = [i for i, loss in enumerate(losses) if math.isfinite(loss)]
    if not finite:
        return lrs[0]
    i_min = min(finite, key=losses.__getitem__)
    n, span = len(losses), 2
    first = max(span, int(skip_start * n)) if n > 4 * span else 1
    span = span if n > 4 * span else 1
    steepest, at = 0.0, None
    for i in range(first, min(i_min, n - 1 - span) + 1):
        lo, hi = i - span, i + span
        slope = (losses[hi] - losses[lo]) / (math.log(lrs[hi]) - math.log(lrs[lo]))
        if slope < steepest:
            steepest, at = slope, i
    return lrs[at] if at is not None else lrs[i_min] / 10.0


def _batch_stream(batches: Iterable[Any] | Callable[[], Any]) -> Iterator[Any]:
    """Batches from a callable (called each step) or an iterable (cycled; a one-shot iterator runs out)."""
    if callable(batches):
        while True:
            yield batches()
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            return


def lr_find(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    batches: Iterable[Any] | Callable[[], Any],
    optimizer_factory: OptimizerFactory,
    *,
    lr_min: float = 1e-7,
    lr_max: float = 10.0,
    num_steps: int = 100,
    smooth: float = 0.98,
    diverge_factor: float = 4.0,
) -> LRFindResult:
    """Run the LR range test on ``model`` and leave the model exactly as it was.

    The model runs in train mode (dropout, BatchNorm batch statistics) as in real training. Step i (of
    ``num_steps``) trains one batch at η_i = lr_min·(lr_max/lr_min)^(i/(num_steps − 1)) with the
    optimiser from ``optimizer_factory(model.parameters(), lr_min)`` (η is written into every group, times its
    ``lr_scale``). The loss ``loss_fn(model, batch)`` is smoothed as a = β·a + (1 − β)·loss, reported as
    a/(1 − β^(i+1)) (bias-corrected, β = ``smooth``); the test stops early when the smoothed loss exceeds
    ``diverge_factor`` × the best so far (losses are assumed positive) or is not finite. The suggestion is
    ``suggest_lr`` (steepest descent of the smoothed curve; fallback: minimum's η / 10).

    Afterwards the model's state_dict (parameters and buffers, e.g. BatchNorm statistics), its gradients and
    train/eval mode, the optimiser's state_dict (in case the factory hands out an existing optimiser) and the
    torch random-number state are restored: the call has no side effect on training. Reading each loss is one
    host synchronisation per step (the test must see the value to stop).
    """
    if not 0 < lr_min < lr_max:
        raise ValueError(f"need 0 < lr_min < lr_max, got {lr_min}, {lr_max}")
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    if not 0.0 <= smooth < 1.0:
        raise ValueError(f"smooth must lie in [0, 1), got {smooth}")

    saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    was_training = model.training
    optimizer = optimizer_factory(model.parameters(), lr_min)
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    cuda_devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})

    lrs: list[float] = []
    losses: list[float] = []
    raw_losses: list[float] = []
    diverged = False
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            model.train()
            stream = _batch_stream(batches)
            average, best = 0.0, math.inf
            for i in range(num_steps):
                batch = next(stream, _END)
                if batch is _END:
                    break
                lr = lr_min * (lr_max / lr_min) ** (i / (num_steps - 1))
                apply_lr(optimizer, lr)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model, batch)
                loss.backward()
                optimizer.step()
                raw = float(loss.detach())
                average = smooth * average + (1.0 - smooth) * raw
                smoothed = average / (1.0 - smooth ** (i + 1))
                lrs.append(lr)
                raw_losses.append(raw)
                losses.append(smoothed)
                if not math.isfinite(smoothed) or smoothed > diverge_factor * best:
                    diverged = True
                    break
                best = min(best, smoothed)
    finally:
        model.load_state_dict(saved_model)
        for p, grad in zip(model.parameters(), saved_grads):
            p.grad = grad
        model.train(was_training)
        optimizer.load_state_dict(saved_optimizer)
    if not lrs:
        raise ValueError("lr_find got no batches")
    return LRFindResult(lrs, losses, raw_losses, suggest_lr(lrs, losses), diverged)


LR_FINDERS.register(
    "lr_find",
    formula="η_i = η_min·(η_max/η_min)^(i/(n−1)); stop when smoothed loss > 4·best; suggest argmin d loss/d log η",
    reference="Smith 2017, arXiv:1506.01186 (LR range test); fastai lr_find",
    note="not in the lesson, which only says that η decides success; the model is left unchanged",
    obj=lr_find,
)
