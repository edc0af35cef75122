"""Model averaging: average weights along one run (EMA, SWA) or predictions of k runs (ensemble).

- ``ema``: w_ema ← d·w_ema + (1 − d)·w after every step (Polyak & Juditsky 1992 with exponential weights).
- ``swa``: the equal average of the weights from a start step on (Izmailov et al. 2018, arXiv:1803.05407).
- ``ensemble``: train k models, average their predicted probabilities — the lesson's "Modellmittelwertbildung
  -- Training mehrerer Modelle und anschließendes Mitteln der Ergebnisse. Dies hilft, die Varianz zu minimieren."
- ``none``: no averaging.

Averaged weights come with BatchNorm statistics of *other* weights, so after EMA/SWA the running statistics
are recomputed on training data (``recompute_bn_stats``). Weight averaging keeps everything on the model's
device: no host synchronisation per update.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from tricklab.errors import InputError
from tricklab.registry import Registry

AVERAGERS = Registry("averaging")


class WeightAverage:
    """A running average of a model's parameters, kept in a deep copy (``averaged_model``).

    w_avg ← (1 − α)·w_avg + α·w with α = 1 − decay (EMA) or α = 1/(n + 1) after n averaged models
    (``decay=None``: the equal average, SWA). The first counted update copies the weights (as torch's
    ``AveragedModel``); buffers (BatchNorm statistics, counters) are copied from the model at every update,
    not averaged — call ``recompute_bn_stats`` for the averaged weights. Updates with ``step`` < ``start`` are
    ignored (SWA's "average from epoch s on"). Use ``EMA`` or ``SWA``.
    """

    def __init__(self, model: nn.Module, decay: float | None = None, *, start: int = 0) -> None:
        if decay is not None and not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.averaged_model = copy.deepcopy(model)
        for p in self.averaged_model.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.start = start
        self.n_averaged = 0

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """Fold ``model``'s current weights into the average (skipped while ``step`` < ``start``)."""
        if step is not None and step < self.start:
            return
        averaged = [p.detach() for p in self.averaged_model.parameters()]
        current = [p.detach().to(a.device) for p, a in zip(model.parameters(), averaged, strict=True)]
        if self.n_averaged == 0:
            torch._foreach_copy_(averaged, current)
        else:
            alpha = 1.0 - self.decay if self.decay is not None else 1.0 / (self.n_averaged + 1)
            floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point() or a.is_complex()]
            if floats:
                torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], alpha)
            for a, c in zip(averaged, current):
                if not (a.is_floating_point() or a.is_complex()):  # frozen integer parameters: round the mean
                    a.copy_(a * (1 - alpha) + c * alpha)
        for b_avg, b_model in zip(self.averaged_model.buffers(), model.buffers(), strict=True):
            b_avg.copy_(b_model.detach().to(b_avg.device))
        self.n_averaged += 1

    def state_dict(self) -> dict[str, Any]:
        """Counters, settings and the averaged model's weights: enough to resume the average."""
        return {
            "n_averaged": self.n_averaged,
            "decay": self.decay,
            "start": self.start,
            "model": self.averaged_model.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()``."""
        if (state["decay"] is None) != (self.decay is None):
            raise ValueError("an EMA state cannot be loaded into an SWA average or vice versa")
        self.n_averaged = int(state["n_averaged"])
        self.decay = state["decay"]
        self.start = int(state["start"])
        self.averaged_model.load_state_dict(state["model"])


class EMA(WeightAverage):
    """Exponential moving average of the weights: w_ema ← d·w_ema + (1 − d)·w after every update.

    The first update copies w (W₀^EMA = W₀, as torch's ``get_ema_multi_avg_fn``); buffers are copied.
    The average's memory is about 1/(1 − d) updates (d = 0.999: the last ~1000 steps). Polyak & Juditsky 1992,
    "Acceleration of stochastic approximation by averaging"; widely used since Tan & Le 2019 (EfficientNet).
    Not in the lesson (its "Modellmittelwertbildung" averages predictions of several models: ``Ensemble``).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, start: int = 0) -> None:
        super().__init__(model, decay, start=start)


class SWA(WeightAverage):
    """Stochastic weight averaging: the equal average of the weights seen from ``start`` on.

    w_swa ← w_swa + (w − w_swa)/(n + 1) after n averaged models, i.e. w_swa = (1/N)·Σ w_i. Izmailov, Podoprikhin,
    Garipov, Vetrov & Wilson 2018, "Averaging Weights Leads to Wider Optima and Better Generalization"
    (arXiv:1803.05407): average once per epoch (or per cycle) at a constant or cyclic LR, then recompute the
    BatchNorm statistics. Not in the lesson.
    """

    def __init__(self, model: nn.Module, *, start: int = 0) -> None:
        super().__init__(model, None, start=start)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable[Any]) -> None:
    """Reset every BatchNorm's running statistics and recompute them as the plain average over ``batches``.

    Momentum is set to None for the pass (cumulative average: μ = mean of the batch means, σ² likewise with
    the unbiased batch variance), then restored, as is train/eval mode. A batch is a tensor or a tuple/list
    whose first element is the input (as torch.optim.swa_utils.update_bn). Needed after EMA/SWA: the averaged
    weights never produced the stored statistics (Izmailov et al. 2018, section 3.2).
    """
    layers = _bn_layers(model)
    if not layers:
        return
    momenta = {layer: layer.momentum for layer in layers}
    was_training = model.training
    model.train()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    try:
        for batch in batches:
            model(batch[0] if isinstance(batch, (list, tuple)) else batch)
    finally:
        for layer, momentum in momenta.items():
            layer.momentum = momentum
        model.train(was_training)


class Ensemble(nn.Module):
    """The average of k members' predicted probabilities, returned as log-probabilities.

    forward(x) = log((1/k)·Σ_i softmax(f_i(x))), computed stably as logsumexp_i(log_softmax(f_i(x))) − log k.
    Because the output is a log-probability, ``F.nll_loss`` on it — and equally ``F.cross_entropy``, since
    log_softmax of a log-probability is itself — is the loss of the averaged probabilities, and argmax gives
    the ensemble's prediction. Averaging probabilities (not logits or weights) is the lesson's
    "Modellmittelwertbildung"; Lakshminarayanan et al. 2017 (arXiv:1612.01474) for deep ensembles. Dropout
    is the implicit version (lesson: "Dropout (implizite Modellmittelwertbildung)").
    """

    def __init__(self, members: Iterable[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        if len(self.members) == 0:
            raise ValueError("an ensemble needs at least one member")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log of the mean of the members' softmax probabilities over the last dimension."""
        log_probs = torch.stack([torch.log_softmax(member(x), dim=-1) for member in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


def make_averager(name: str, model: nn.Module, *, decay: float = 0.999, start: int = 0) -> WeightAverage | None:
    """The weight averager for ``name``: an ``EMA``/``SWA`` of ``model``, or None for ``none``/``ensemble``.

    ``ensemble`` averages predictions of k separately trained models; the trainer builds those and wraps them
    in ``Ensemble``, so there is no weight averager for it.
    """
    try:
        canonical = AVERAGERS.canonical(name)
    except KeyError:
        raise InputError("averaging.name", f"unknown averaging {name!r}", allowed=AVERAGERS.allowed()) from None
    if canonical == "ema":
        return EMA(model, decay, start=start)
    if canonical == "swa":
        return SWA(model, start=start)
    return None


AVERAGERS.register("none", formula="no averaging", reference="—", obj="none")
AVERAGERS.register(
    "ema",
    formula="w_ema ← d·w_ema + (1 − d)·w every step (buffers copied); recompute BN statistics",
    reference="Polyak & Juditsky 1992; torch.optim.swa_utils.get_ema_multi_avg_fn",
    obj=EMA,
)
AVERAGERS.register(
    "swa",
    formula="w_swa = (1/N)·Σ_{i≥start} w_i (equal average); recompute BN statistics",
    reference="Izmailov et al. 2018, arXiv:1803.05407; torch.optim.swa_utils.AveragedModel",
    obj=SWA,
)
AVERAGERS.register(
    "ensemble",
    formula="p(y|x) = (1/k)·Σ_i softmax(f_i(x)) over k separately trained models",
    reference="Lakshminarayanan et al. 2017, arXiv:1612.01474",
    lesson="Modellmittelwertbildung: mehrere Modelle trainieren und die Ergebnisse mitteln (minimiert die Varianz)",
    note="averages predicted probabilities, not weights; k times the training cost",
    obj=Ensemble,
)
