"""A run's per-epoch history as the store's metric rows — written once, for ``train``, a study's trials and a
population's members — and as the CSV table a spreadsheet opens (``metrics.csv`` beside ``metrics.json``)."""

from __future__ import annotations

import csv
import io
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


def history_csv(history: Iterable[Mapping[str, Any]]) -> str:
    """The history as CSV: one line per epoch, a column per key (``epoch`` and ``step`` first, the others in the
    order they first appear — a key that only later epochs have, such as ``swa_val_accuracy``, is a column with
    empty cells before). Numbers keep every digit (``repr``); a missing, NaN or infinite value is an empty cell,
    which spreadsheets read as "no value"."""
    rows = list(history)
    columns = [k for k in KEYS if any(k in h for h in rows)]
    for h in rows:
        columns += [k for k in h if k not in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for h in rows:
        writer.writerow([_cell(h.get(k)) for k in columns])
    return out.getvalue()


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ""
    return "" if value is None else str(value)
