"""A run's per-epoch history as the store's metric rows — written once, for ``train``, a study's trials and a
population's members."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from tricklab.store.records import MetricRow

KEYS = ("epoch", "step")
"""The history keys that place a row (its epoch and the optimizer step at the epoch's end), not metrics."""


def metric_rows(history: Iterable[Mapping[str, Any]]) -> list[MetricRow]:
    """``[{"epoch": 1, "step": 50, "val_loss": 0.4, ...}, ...]`` → ``[(50, 1, "val_loss", 0.4), ...]``.

    One row per metric per epoch, in the history's order; a value that is not a finite number (NaN/Inf of a
    diverged epoch, or anything not numeric) becomes None — SQLite and strict JSON have no NaN."""
    return [(int(h["step"]), int(h["epoch"]), name, _finite(value))
            for h in history for name, value in h.items() if name not in KEYS]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
