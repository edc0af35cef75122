"""Datasets a lesson derives from a built-in one and writes as ``.npz`` into its output directory.

- ``digits-x100``: the UCI digits (8×8 grey levels 0..16) as they would arrive from a sensor with another unit
  and a zero point: x' = 100·x + 1000, so every input lies in [1000, 2600] — far outside the [0, 1] / [−1, 1]
  the lesson asks for, and with a large offset (the lesson's floating point point: a big common value next to
  small differences). The scaling lesson's arms then scale these raw numbers (or not).
- ``digits-flat``: the same digits as 64-feature vectors, so that ``resnet`` builds a residual MLP (vectors)
  rather than a convolutional net (images) and can be compared with plain MLPs of the same depth.

Both keep every example and label of ``digits`` in the same order, so ``load_data`` carves the same test and
validation splits from them (same sizes, same ``split_seed``). Written atomically, and only when missing or
different (same bytes, same file: re-runs reuse the lesson's finished trials).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tricklab.errors import InputError
from tricklab.fsutil import atomic_write

SCALE, OFFSET = 100.0, 1000.0


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def _x100() -> dict[str, np.ndarray]:
    x, y = _digits()
    return {"x": (SCALE * x + OFFSET).reshape(-1, 1, 8, 8), "y": y}


def _flat() -> dict[str, np.ndarray]:
    x, y = _digits()
    return {"x": x, "y": y}


DERIVED: dict[str, tuple[Callable[[], dict[str, np.ndarray]], str]] = {
    "digits-x100": (_x100, f"UCI digits ×{SCALE:g} + {OFFSET:g} (raw values 1000..2600), shape (1, 8, 8)"),
    "digits-flat": (_flat, "UCI digits as 64-feature vectors (grey levels 0..16)"),
}


def derived_data(name: str, out_dir: str | Path) -> Path:
    """Write dataset ``name`` to ``out_dir/data/<name>.npz`` (if missing or different) and return its path."""
    if name not in DERIVED:
        raise InputError("derived data", f"unknown derived dataset {name!r}", allowed=list(DERIVED))
    make, _ = DERIVED[name]
    arrays = make()
    path = Path(out_dir) / "data" / f"{name}.npz"
    if not _holds(path, arrays):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(path, lambda fh: fh.write(buffer.getvalue()))
    return path.resolve()


def _holds(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Whether ``path`` is an .npz with exactly these arrays (dtype, shape and values)."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as stored:
            return set(stored.files) == set(arrays) and all(
                stored[k].dtype == v.dtype and np.array_equal(stored[k], v) for k, v in arrays.items())
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def describe(name: str) -> str:
    return DERIVED[name][1]
