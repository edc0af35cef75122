"""CIFAR-10 from its "python version" batches in a local directory (nothing is downloaded).

Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images" (https://www.cs.toronto.edu/~kriz/cifar.html):
60000 colour images of 32×32 in 10 classes, 50000 for training in ``data_batch_1`` … ``data_batch_5`` and
10000 in ``test_batch``; ``batches.meta`` holds the class names. Each batch is a pickled dict with ``b"data"``,
a uint8 array (N, 3072) — 1024 red, then 1024 green, then 1024 blue values, each a 32×32 image in row-major
order, hence ``reshape(N, 3, 32, 32)`` — and ``b"labels"``, a list of N integers 0..9.

The batches are pickles, so they are read with ``safe_pickle.load_pickle``: only plain data and NumPy arrays,
never code. ``path`` may be the ``cifar-10-batches-py`` directory itself or the directory containing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tricklab.data.registry import DATASETS
from tricklab.data.safe_pickle import load_pickle
from tricklab.data.source import LoadRequest, RawData, member
from tricklab.errors import InputError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
EXPECTED = "the CIFAR-10 python batches " + ", ".join((*TRAIN_BATCHES, TEST_BATCH)) + f" (and {META})"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_PIXELS = 3 * 32 * 32


def _field(batch: Any, key: str, file: Path) -> Any:
    """``batch[b"key"]`` (Python 2 pickles) or ``batch["key"]`` (re-pickled by Python 3)."""
    if not isinstance(batch, dict):
        raise InputError("data.path", f"{file} is not a CIFAR-10 batch: it holds a {type(batch).__name__}, not a dict")
    for spelling in (key.encode(), key):
        if spelling in batch:
            return batch[spelling]
    raise InputError("data.path", f"{file} is not a CIFAR-10 batch: it has no {key!r} entry")


def read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch file."""
    batch = load_pickle(file)
    data = _field(batch, "data", file)
    labels = np.asarray(_field(batch, "labels", file))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        shape = getattr(data, "shape", None)
        raise InputError("data.path", f"{file}: 'data' must be a uint8 array (N, {_PIXELS}), found {shape}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError("data.path", f"{file}: 'labels' must be a list of integers")
    if labels.shape[0] != data.shape[0]:
        raise InputError("data", f"{file} holds {data.shape[0]} images but {labels.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def class_names(file: Path | None) -> list[str]:
    """The ``label_names`` of ``batches.meta``; the standard ten names when the file is absent (None)."""
    if file is None:
        return list(CLASSES)
    names = _field(load_pickle(file), "label_names", file)
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise InputError("data.path", f"{file}: 'label_names' must be a list of strings")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def batch_directory(path: Path) -> Path:
    """``path`` or its ``cifar-10-batches-py`` subdirectory, whichever holds the batches."""
    nested = path / "cifar-10-batches-py"
    return nested if not (path / TEST_BATCH).is_file() and nested.is_dir() else path


@DATASETS.register(
    "cifar10",
    formula="x: (N, 3, 32, 32) colour values 0..255; y: 10 classes; own test split (test_batch)",
    reference="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images",
    note="reads the python-version batches from the local directory data.path with a restricted unpickler "
    "(data and NumPy arrays only); no download",
)
def load_cifar10(request: LoadRequest) -> RawData:
    """Read the five training batches, the test batch and the class names from ``request.path``."""
    request.choose_variant((), None)
    directory = batch_directory(request.require_directory(f"a directory with {EXPECTED}"))
    files = {name: member(directory, name, EXPECTED) for name in (*TRAIN_BATCHES, TEST_BATCH, META)}
    missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if files[name] is None]
    if missing:
        raise InputError("data.path", f"{str(directory)!r} lacks {', '.join(missing)}; expected {EXPECTED}")
    parts = [read_batch(directory / name) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(directory / TEST_BATCH)
    classes = class_names(files[META])
    return RawData(
        x=np.concatenate([x for x, _ in parts]),
        y=np.concatenate([y for _, y in parts]),
        x_test=x_test,
        y_test=y_test,
        num_classes=len(classes),
        classes=classes,
        where=str(directory),
    )
