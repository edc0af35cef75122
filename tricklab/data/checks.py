"""Checks on loaded arrays that turn bad data into an ``InputError`` a person can act on, before any training.

A NaN in the inputs poisons every gradient it touches and shows up epochs later as a "diverged" run; a label
count that does not match the example count silently misaligns every pair. Both are refused here, with the
offending rows named. Label encoding lives here too: whatever the file holds (names, 1..10, -1/+1), the model
sees ``0..C-1`` and ``classes`` keeps the original names.
"""

from __future__ import annotations

import numpy as np

from tricklab.errors import InputError

_SHOWN_ROWS = 5  # how many offending row indices a message lists before "and N more"


def _rows(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:_SHOWN_ROWS])
    more = indices.size - _SHOWN_ROWS
    return shown + (f" and {more} more" if more > 0 else "")


def check_examples(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Refuse empty data, non-numeric inputs, labels that are not one per example, and NaN/Inf inputs.

    ``where`` names the part of the data in messages ("training data of /data/train.csv"). Row indices in
    messages count from 0 in that part, before any split.
    """
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError("data", f"{where} has no examples")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_):
        raise InputError("data", f"{where}: inputs must be real numbers, found dtype {x.dtype}")
    if y.ndim != 1:
        raise InputError("data", f"{where}: labels must hold one class per example (shape (N,)), found shape {y.shape}")
    if y.shape[0] != x.shape[0]:
        raise InputError("data", f"{where}: {x.shape[0]} examples but {y.shape[0]} labels; the counts must match")
    if np.issubdtype(x.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1))
        if bad.size:
            raise InputError(
                "data",
                f"{where}: rows {_rows(bad)} contain NaN/Inf (rows counted from 0); remove or impute them first",
            )


def check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    """Refuse labels that are not integers in ``0..num_classes-1``."""
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError("data", f"{where}: labels must be integer class indices, found dtype {y.dtype}")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise InputError(
            "data",
            f"{where}: rows {_rows(bad)} have labels outside 0..{num_classes - 1} (e.g. {int(y[bad[0]])})",
        )


def check_training_classes(y_train: np.ndarray, classes: list[str] | None, where: str) -> None:
    """Refuse a training split with fewer than two classes (or no example at all).

    With one class the cross-entropy is 0 from the first step and every prediction is "right": a run would
    report 100% accuracy having learned nothing. Usually the label column is the wrong one (an ID or a constant)
    or the file holds one class only; a message here, before training, says so."""
    present = np.unique(y_train)
    if present.size >= 2:
        return
    shown = ", ".join(repr(classes[int(c)]) if classes else str(int(c)) for c in present)
    held = f"only {present.size} class ({shown})" if present.size else "no example"
    raise InputError("data", f"{where}: the training split holds {held}; a classifier needs at least 2 classes "
                             "to learn anything — check data.label_column and the file's labels",
                     allowed="data whose training labels hold 2 or more classes")


def _as_numbers(labels: np.ndarray) -> np.ndarray | None:
    """Labels as float64 when every one of them reads as a number, else None (they are names)."""
    if labels.dtype.kind in "biuf":
        return labels.astype(np.float64)
    if labels.dtype.kind in "US":
        try:
            return np.char.strip(labels).astype(np.float64)
        except ValueError:
            return None
    return None


def _name(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def encode_labels(parts: list[np.ndarray], where: str) -> tuple[list[np.ndarray], list[str] | None, int]:
    """Map the labels of all ``parts`` (train, then test) jointly to ``0..C-1``.

    Returns ``(codes per part, classes, C)``. Integer labels that already are exactly ``0..C-1`` are kept and
    ``classes`` is None; any other set of labels (names, 1..10, -1/+1, a gap) is mapped in sorted order and
    ``classes`` records the original values as strings. Non-integer numbers are refused: they look like a
    regression target, which a classifier cannot learn.
    """
    for part in parts:
        if part.ndim != 1:
            raise InputError("data", f"{where}: labels must hold one class per example, found shape {part.shape}")
    joined = np.concatenate(parts)
    if joined.size == 0:
        raise InputError("data", f"{where} has no labels")
    numbers = _as_numbers(joined)
    if numbers is not None:
        bad = np.flatnonzero(~np.isfinite(numbers) | (numbers != np.round(numbers)))
        if bad.size:
            raise InputError(
                "data",
                f"{where}: labels must be class labels (whole numbers or names); rows {_rows(bad)} hold "
                f"{_name(joined[bad[0]])!r}, which looks like a regression target",
            )
        values = numbers.astype(np.int64)
        uniq, codes = np.unique(values, return_inverse=True)
        classes = None if np.array_equal(uniq, np.arange(uniq.size)) else [_name(v) for v in uniq]
    else:
        if joined.dtype.kind == "U":
            joined = np.char.strip(joined)
        uniq, codes = np.unique(joined, return_inverse=True)
        classes = [_name(v) for v in uniq]
    codes = codes.reshape(-1).astype(np.int64)
    bounds = np.cumsum([p.shape[0] for p in parts])[:-1]
    return list(np.split(codes, bounds)), classes, int(uniq.size)
