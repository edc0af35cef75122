"""Early stopping: watch a validation metric, stop when it stops improving, keep the best weights.

Lesson ("Überanpassung verhindern"): "Frühes Stoppen -- kontinuierliches Überwachen des Fehlers auf dem
Validierungsdatensatz und Beenden des Trainings, wenn der Validierungsfehler zu steigen beginnt." The lesson
stops at the first rise; a noisy validation curve rises many times before its true minimum, so tricklab waits
``patience`` evaluations without improvement and then restores the best weights (Prechelt 1998).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from tricklab.registry import Registry
from tricklab.tricks.monitor import improved

STOPPERS = Registry("early_stopping")


def _cpu_copy(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a state_dict on the CPU (tensors detached and copied, other values as they are)."""
    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v for k, v in state.items()}


class EarlyStopping:
    """Stop after ``patience`` evaluations without an improvement of at least ``min_delta``; keep the best.

    An evaluation improves when value < best − min_delta (mode "min", e.g. validation loss) or
    value > best + min_delta (mode "max", e.g. accuracy; ``Monitor(name).mode`` gives it from a metric's name);
    a non-finite value never improves (``tricks.monitor.improved``). ``update`` returns True on the
    ``patience``-th consecutive non-improving evaluation (with patience 0: on the first). The best model's
    state_dict is kept as a CPU copy (one device→host copy per improvement); ``restore(model)`` loads it.
    Prechelt 1998, "Early stopping — but when?" (Neural Networks: Tricks of the Trade, LNCS 1524); Keras'
    ``EarlyStopping(restore_best_weights=True)``.
    """

    def __init__(self, patience: int, min_delta: float = 0.0, mode: Literal["min", "max"] = "min") -> None:
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best_value = math.inf if mode == "min" else -math.inf
        self.best_index = -1  # 0-based index of the update() call that gave best_value (the epoch, if per epoch)
        self.num_bad = 0  # consecutive evaluations without improvement
        self.count = 0  # update() calls so far
        self.best_state: dict[str, Any] | None = None

    def improves(self, value: float) -> bool:
        """True when ``value`` beats the best so far by more than ``min_delta``."""
        return improved(value, self.best_value, self.min_delta, higher=self.mode == "max")

    def update(self, value: float, model: nn.Module) -> bool:
        """Record one evaluation of the monitored metric for ``model``; True means: stop training now."""
        value = float(value)
        if self.improves(value):
            self.best_value = value
            self.best_index = self.count
            self.best_state = _cpu_copy(model.state_dict())
            self.num_bad = 0
        else:
            self.num_bad += 1
        self.count += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        """Whether the last ``update`` asked to stop."""
        return self.num_bad > 0 and self.num_bad >= self.patience

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the best weights seen into ``model`` (on the model's own device) and return it."""
        if self.best_state is None:
            raise RuntimeError("EarlyStopping.restore() before any improving update(): no best weights kept")
        model.load_state_dict(self.best_state)
        return model

    def state_dict(self) -> dict[str, Any]:
        """Settings, counters, best value and best weights: enough to resume after a checkpoint."""
        return {
            "patience": self.patience,
            "min_delta": self.min_delta,
            "mode": self.mode,
            "best_value": self.best_value,
            "best_index": self.best_index,
            "num_bad": self.num_bad,
            "count": self.count,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()``."""
        for key in ("patience", "min_delta", "mode", "best_value", "best_index", "num_bad", "count", "best_state"):
            setattr(self, key, state[key])


STOPPERS.register(
    "early_stopping",
    formula="stop after `patience` evaluations without improving by > min_delta; restore the best weights",
    reference="Prechelt 1998, 'Early stopping — but when?', LNCS 1524",
    lesson="Frühes Stoppen: Validierungsfehler überwachen, beenden wenn er zu steigen beginnt",
    note="the lesson stops at the first rise; tricklab waits `patience` epochs and restores the best weights",
    obj=EarlyStopping,
)
