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

EVALS = "evals"
"""The history key of an epoch's evaluations when a run validates several times per epoch (``tricklab.train.loop``):
a list of ``{"step", "seconds", "val_loss", "val_accuracy"}``, the epoch-end one last."""


def metric_rows(history: Iterable[Mapping[str, Any]]) -> list[MetricRow]:
    """``[{"epoch": 1, "step": 50, "val_loss": 0.4, ...}, ...]`` → ``[(50, 1, "val_loss", 0.4), ...]``.

    One row per metric per epoch, in the history's order; a value that is not a finite number (NaN/Inf of a
    diverged epoch, or anything not numeric) becomes None — SQLite and strict JSON have no NaN. An epoch's
    evaluations (``EVALS``) become one row per value at the step of each evaluation, named ``evals.val_loss``,
    ``evals.val_accuracy`` and ``evals.seconds`` (a series apart from the per-epoch ``val_loss``: one value per
    name and step)."""
    rows: list[MetricRow] = []
    for h in history:
        step, epoch = int(h["step"]), int(h["epoch"])
        for name, value in h.items():
            if name == EVALS:
                rows += [(int(e["step"]), epoch, f"{EVALS}.{key}", _finite(v))
                         for e in value if isinstance(e, Mapping) for key, v in e.items() if key != "step"]
            elif name not in KEYS:
                rows.append((step, epoch, name, _finite(value)))
    return rows


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def history_csv(history: Iterable[Mapping[str, Any]]) -> str:
    """The history as CSV: one line per epoch, a column per key (``epoch`` and ``step`` first, the others in the
    order they first appear — a key that only later epochs have, such as ``swa_val_accuracy``, is a column with
    empty cells before). Numbers keep every digit (``repr``); a missing, NaN or infinite value is an empty cell,
    which spreadsheets read as "no value". An epoch's evaluations (``EVALS``, several per line) are not columns:
    ``metrics.json`` and the store keep them."""
    rows = list(history)
    columns = [k for k in KEYS if any(k in h for h in rows)]
    for h in rows:
        columns += [k for k in h if k not in columns and k != EVALS]
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
