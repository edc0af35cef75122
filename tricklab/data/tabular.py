"""Tabular data from a local CSV or NPZ file: one row (or one array entry) per example.

CSV: the delimiter is the most frequent of ``,`` ``;`` tab in the first line; the header is detected (a first
row whose cell is not a number in a column that is numeric below it, or that names ``label_column``); the label
column is chosen by name or index (default: the last). Labels may be names or numbers: they are mapped to
``0..C-1`` in sorted order and ``classes`` keeps the originals (see ``checks.encode_labels``). Every feature
cell must be a number; the first one that is not is named by column and line — missing values are refused,
not guessed, because an imputation is a modelling decision the user should make.

NPZ: a NumPy ``.npz`` with arrays ``x`` (N, ...) and ``y`` (N,), optionally ``x_test`` and ``y_test``; read with
``allow_pickle=False`` so the file cannot carry code. Examples keep the per-example shape of ``x`` (a 1-D ``x``
becomes (N, 1)).
"""

from __future__ import annotations

import csv
import zipfile
from itertools import compress
from pathlib import Path

import numpy as np

from tricklab.data.checks import encode_labels
from tricklab.data.registry import DATASETS
from tricklab.data.source import LoadRequest, RawData
from tricklab.errors import InputError

CSV_EXPECTED = "a CSV file with one example per row and a label column"
NPZ_EXPECTED = "an .npz file with arrays x and y (optionally x_test and y_test)"
_DELIMITERS = (",", ";", "\t")
_HEADER_PROBE_ROWS = 20  # rows below the first that decide whether a column is numeric


def _numeric(cells: np.ndarray) -> bool:
    """Whether every cell of a string array reads as a float."""
    try:
        cells.astype(np.float64)
    except ValueError:
        return False
    return True


def read_rows(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """All non-blank rows of ``file`` as a 2-D array of stripped strings, and each row's line number (from 1)."""
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
            delimiter = max(_DELIMITERS, key=first.count)
            fh.seek(0)
            rows = list(csv.reader(fh, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError("data.path", f"cannot read {file} as CSV: {err}") from None
    widths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    lines = np.flatnonzero(widths > 0)
    if lines.size == 0:
        raise InputError("data", f"{file} has no examples (it is empty)")
    width = int(widths[lines[0]])
    ragged = lines[widths[lines] != width]
    if ragged.size:
        line = int(ragged[0])
        raise InputError("data.path", f"{file}: line {line + 1} has {widths[line]} fields, the first line has {width}")
    table = np.array(list(compress(rows, widths > 0)), dtype=str).reshape(lines.size, width)
    return np.char.strip(table), lines + 1


def _has_header(table: np.ndarray, label_column: str | int) -> bool:
    if isinstance(label_column, str) and label_column in table[0]:
        return True
    probe = table[1 : 1 + _HEADER_PROBE_ROWS]
    if probe.shape[0] == 0:
        return not _numeric(table[0])
    return any(not _numeric(table[:1, j]) and _numeric(probe[:, j]) for j in range(table.shape[1]))


def _label_index(label_column: str | int, names: list[str] | None, width: int, file: Path) -> int:
    """The index of the label column given by name or (possibly negative) index."""
    if isinstance(label_column, str):
        if names is not None and label_column in names:
            return names.index(label_column)
        try:
            label_column = int(label_column)
        except ValueError:
            allowed = names if names is not None else f"an index -{width}..{width - 1} (the file has no header)"
            raise InputError("data.label_column", f"{file} has no column {label_column!r}", allowed=allowed) from None
    if not -width <= label_column < width:
        raise InputError(
            "data.label_column",
            f"column index {label_column} is out of range for {file}, which has {width} columns",
            allowed=f"an index -{width}..{width - 1} or a column name",
        )
    return label_column % width


def _features(cells: np.ndarray, columns: list[str], lines: np.ndarray, file: Path) -> np.ndarray:
    """The feature cells as float64; the first cell that is not a number is named by column and line."""
    try:
        return cells.astype(np.float64)
    except ValueError:
        pass
    for j in range(cells.shape[1]):  # error path only: find the first offending column, then its first row
        if not _numeric(cells[:, j]):
            row = next(i for i in range(cells.shape[0]) if not _numeric(cells[i : i + 1, j]))
            value = cells[row, j]
            problem = "is empty (missing value)" if value == "" else f"holds {value!r}, which is not a number"
            raise InputError(
                "data",
                f"{file}: feature column {columns[j]} at line {lines[row]} (data row {row}) {problem}; "
                "features must be numbers — encode or drop this column, fill or drop this row",
            )
    raise AssertionError("unreachable: astype failed but every column converts")  # pragma: no cover


@DATASETS.register(
    "csv",
    formula="x: (N, F) float features; y: classes from the label column (names or numbers → 0..C-1)",
    reference="RFC 4180 (CSV)",
    note="local file data.path; header auto-detected; label column by name or index (data.label_column, "
    "default last); test split carved",
)
def load_csv(request: LoadRequest) -> RawData:
    """Read ``request.path`` as CSV: features from every column but the label column."""
    request.choose_variant((), None)
    file = request.require_file(CSV_EXPECTED)
    table, lines = read_rows(file)
    header = _has_header(table, request.label_column)
    names = [str(n) for n in table[0]] if header else None
    if header:
        table, lines = table[1:], lines[1:]
    if table.shape[0] == 0:
        raise InputError("data", f"{file} has a header but no examples")
    width = table.shape[1]
    if width < 2:
        raise InputError("data", f"{file} has {width} column; a label column and at least one feature are needed")
    label = _label_index(request.label_column, names, width, file)
    feature_columns = [j for j in range(width) if j != label]
    columns = [repr(names[j]) if names else f"#{j}" for j in feature_columns]
    x = _features(table[:, feature_columns], columns, lines, file)
    (y,), classes, num_classes = encode_labels([table[:, label]], str(file))
    return RawData(x=x, y=y, num_classes=num_classes, classes=classes, where=str(file))


@DATASETS.register(
    "npz",
    formula="x: (N, ...) as stored; y: classes (N,) → 0..C-1; own test split if x_test/y_test are present",
    reference="NumPy .npz format (numpy.savez), read with allow_pickle=False",
    note="local file data.path with arrays x and y, optionally x_test and y_test",
)
def load_npz(request: LoadRequest) -> RawData:
    """Read arrays ``x``, ``y`` (and ``x_test``, ``y_test`` when present) from ``request.path``."""
    request.choose_variant((), None)
    file = request.require_file(NPZ_EXPECTED)
    try:
        stored = np.load(file, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            raise InputError("data.path", f"{file} holds a single array; expected {NPZ_EXPECTED}")
        with stored:
            present = set(stored.files)
            if not {"x", "y"} <= present:
                found = ", ".join(sorted(present)) or "none"
                raise InputError("data.path", f"{file} has arrays {found}; expected {NPZ_EXPECTED}")
            if ("x_test" in present) != ("y_test" in present):
                raise InputError("data.path", f"{file} has only one of x_test and y_test; expected both or neither")
            arrays = {name: stored[name] for name in ("x", "y", "x_test", "y_test") if name in present}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InputError("data.path", f"cannot read {file}: {err}; expected {NPZ_EXPECTED}") from None
    for name, array in arrays.items():
        if name.startswith("x") and array.ndim == 1:
            arrays[name] = array[:, None]
    labels = [arrays["y"]] + ([arrays["y_test"]] if "y_test" in arrays else [])
    codes, classes, num_classes = encode_labels(labels, str(file))
    return RawData(
        x=arrays["x"],
        y=codes[0],
        x_test=arrays.get("x_test"),
        y_test=codes[1] if len(codes) > 1 else None,
        num_classes=num_classes,
        classes=classes,
        where=str(file),
    )
