"""Which way a metric improves: one rule, from the metric's name, for everything that watches or compares one.

Early stopping, the plateau schedule, a run's best epoch, a study's target and its report, and the lessons'
rankings all ask the same question — is a larger value of this metric better? — and all get the answer here:
an accuracy is better higher; everything else tricklab records (a loss, seconds, steps, an epoch count) is better
lower. Keras decides it the same way from the name (``MonitorCallback``: ``"acc"`` in the name → max, else min).

Torch-free, so the study spec and the report read it without importing torch; in ``tricks`` (the lowest layer
with a meaning) so that early stopping, which may import nothing of ``train``, uses it too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

HIGHER_IS_BETTER_SUFFIX = "accuracy"
"""A metric whose name ends in this improves upwards (``val_accuracy``, ``train_eval_accuracy``); any other name
improves downwards."""

KNOWN_METRICS: dict[str, tuple[str, ...]] = {
    "higher is better": ("test_accuracy", "val_accuracy", "train_accuracy", "train_eval_accuracy"),
    "lower is better": ("test_loss", "val_loss", "train_loss", "train_eval_loss", "wall_seconds", "train_seconds",
                        "epoch_seconds", "steps", "best_epoch"),
}
"""The metrics tricklab records (``RunResult`` fields and per-epoch history keys) by direction — what the rule
gives for each, listed so a reader need not apply it by hand (``tests/test_monitor.py`` checks the two agree)."""


def higher_is_better(name: str) -> bool:
    """Whether a larger value of the metric ``name`` is an improvement (``HIGHER_IS_BETTER_SUFFIX``)."""
    return name.endswith(HIGHER_IS_BETTER_SUFFIX)


def improved(new: float | None, best: float | None, min_delta: float = 0.0, *, higher: bool) -> bool:
    """Whether ``new`` beats ``best`` by more than ``min_delta`` (``>`` for ``higher``, ``<`` otherwise).

    A non-finite or missing ``new`` never improves (a diverged epoch is no best epoch); any finite value improves
    on a missing ``best`` (nothing seen yet) or on the worst value (±inf, an early stopper's start)."""
    if new is None or not math.isfinite(new):
        return False
    if best is None or math.isnan(best):
        return True
    return new > best + min_delta if higher else new < best - min_delta


@dataclass(frozen=True)
class Monitor:
    """A metric watched for improvement: its ``name`` and which way is better.

    ``higher_is_better`` is taken from the name (``higher_is_better(name)``) unless given — a study's target may
    say it explicitly. ``Monitor("val_accuracy").mode == "max"``; ``Monitor("val_loss").best([0.3, 0.2])
    == 0.2``."""

    name: str
    higher: bool | None = None

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.name) if self.higher is None else self.higher

    @property
    def mode(self) -> Literal["min", "max"]:
        """``"max"`` or ``"min"``, as Keras, torch's ``ReduceLROnPlateau`` and ``EarlyStopping`` spell it."""
        return "max" if self.higher_is_better else "min"

    @property
    def worst(self) -> float:
        """The value every finite one improves on: −inf for a higher-is-better metric, +inf otherwise."""
        return -math.inf if self.higher_is_better else math.inf

    def improved(self, new: float | None, best: float | None, min_delta: float = 0.0) -> bool:
        """Whether ``new`` beats ``best`` by more than ``min_delta`` (see the module function ``improved``)."""
        return improved(new, best, min_delta, higher=self.higher_is_better)

    def reached(self, value: float | None, target: float) -> bool:
        """Whether ``value`` is at or past ``target`` (≥ for higher-is-better, ≤ otherwise); never when not finite."""
        if value is None or not math.isfinite(value):
            return False
        return value >= target if self.higher_is_better else value <= target

    def best(self, values: Iterable[float | None]) -> float | None:
        """The best finite value, or None when there is none."""
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            return None
        return max(finite) if self.higher_is_better else min(finite)

    def best_index(self, history: Sequence[float | None | Mapping[str, Any]]) -> int | None:
        """The index of the best finite value (ties: the earliest), or None when there is none.

        ``history`` holds values, or mappings (a run's per-epoch history) from which this monitor's name is read."""
        best: float | None = None
        index = None
        for i, entry in enumerate(history):
            value = entry.get(self.name) if isinstance(entry, Mapping) else entry
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if improved(float(value), best, higher=self.higher_is_better):
                best, index = float(value), i
        return index
