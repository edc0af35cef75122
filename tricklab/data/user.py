"""A user's own datasets: ``data: {python: "pkg.module:factory"}`` in a recipe, as ``model.python`` names a model.

tricklab imports ``pkg.module`` (only when a recipe names it) and calls ``factory()``. It returns the splits as a
mapping ``{"train": ..., "val": ..., "test": ..., "num_classes": C}`` — ``val``, ``test`` and ``num_classes``
optional — or a tuple ``(train, val)`` / ``(train, val, test)``. Each split is a ``torch.utils.data.Dataset`` or a
``DataLoader`` whose batches are (inputs, labels): float inputs, integer class labels.

- ``train`` is ordered by the Trainer (``tricklab.data.loader``): a map-style dataset, or a ``DataLoader`` over one
  with torch's default sampler. Its batch size is the recipe's ``data.batch_size`` (a loader's must be the same:
  the learning-rate schedule counts steps by it). Its collate function and workers are kept.
- ``val`` and ``test`` are evaluated once per epoch and at the end, every example in their own order.
- ``num_classes``: from the mapping, else the training set's ``classes`` (torchvision's convention) or
  ``num_classes`` attribute, else — for ``TensorDataset``s, whose labels are in memory — the largest training or
  validation label + 1. The input shape is that of the first training example.

The data is used as the factory gives it: ``data.scale`` and the carving keys (``val_fraction``, ``size``, ...) do
not apply (the recipe refuses them next to ``data.python``). Every failure — importing, calling the factory, a
result of the wrong kind, a first batch that is not (inputs, labels) — is an ``InputError`` on ``data.python``
naming the factory and, where the user's code raised, its own line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from tricklab.data.loader import BatchError, evaluation_batches, known_length, reorderable
from tricklab.errors import InputError
from tricklab.user_code import describe, import_factory, user_frame

FIELD = "data.python"
SPEC_FORMAT = '"package.module:factory", e.g. "mydata.sets:make_splits"'
FACTORY_CONTRACT = ('a factory() that returns {"train": Dataset or DataLoader, "val": ..., "test": ..., '
                    '"num_classes": int} (val, test, num_classes optional) or (train, val[, test])')


@dataclass
class DataSplits:
    """A user's train / validation / test data (``Dataset``s or ``DataLoader``s), with what a run needs to know
    of them. The same reading interface as ``Splits`` (``device``, ``n_train``, ``n_val``, ``train_data``, ...)."""

    name: str
    train: Dataset | DataLoader
    val: Dataset | DataLoader | None
    test: Dataset | DataLoader | None
    input_shape: tuple[int, ...]
    num_classes: int
    classes: list[str] | None = None
    device: torch.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> DataSplits:
        """The same data, its batches to be moved to ``device`` (datasets stay where they are)."""
        return replace(self, device=torch.device(device))

    @property
    def n_train(self) -> int:
        return known_length(_dataset(self.train)) or 0

    @property
    def n_val(self) -> int:
        return (known_length(_dataset(self.val)) or 0) if self.val is not None else 0

    def train_data(self) -> Dataset | DataLoader:
        return self.train

    def val_data(self) -> Dataset | DataLoader | None:
        return self.val

    def test_data(self) -> Dataset | DataLoader | None:
        return self.test

    def sample(self, n: int) -> torch.Tensor:
        """Up to ``n`` training inputs from the start of the training set, on the device (LSUV's sample)."""
        xs, got = [], 0
        for x, _ in evaluation_batches(_dataset(self.train), min(n, 512), self.device):
            xs.append(x[:n - got])
            got += len(xs[-1])
            if got >= n:
                break
        return torch.cat(xs)

    def summary(self) -> dict[str, Any]:
        """Sizes, example shape and classes as plain JSON-able values (for logs, the store and ``--json``)."""
        return {"name": self.name, "train": self.n_train, "val": self.n_val,
                "test": (known_length(_dataset(self.test)) or 0) if self.test is not None else 0,
                "input_shape": [int(d) for d in self.input_shape], "num_classes": int(self.num_classes),
                "classes": None if self.classes is None else [str(c) for c in self.classes]}


def _dataset(data: Dataset | DataLoader) -> Dataset:
    return data.dataset if isinstance(data, DataLoader) else data


def load_user_data(spec: str, batch_size: int) -> DataSplits:
    """Import ``spec`` = "pkg.module:factory", call it, check its splits (see the module's docstring)."""
    factory = _factory(spec)
    try:
        result = factory()
    except (Exception, SystemExit) as exc:
        raise InputError(FIELD, f"{spec}() raised {describe(exc)}{user_frame(exc)}", FACTORY_CONTRACT) from None
    splits = _splits(spec, result)
    train = splits["train"]
    for key in ("train", "val", "test"):
        data = splits.get(key)
        if data is not None and not isinstance(data, (Dataset, DataLoader)):
            raise InputError(FIELD, f"{spec}(): {key} is a {type(data).__name__}, not a torch Dataset or DataLoader",
                             FACTORY_CONTRACT)
    if isinstance(train, IterableDataset) or (isinstance(train, DataLoader) and not reorderable(train)):
        raise InputError(FIELD, f"{spec}(): the training data must be a map-style Dataset (len and [i]) or a "
                                "DataLoader over one with shuffle=True/False: the run orders it by its seed and "
                                "counts its steps (an iterable dataset or a sampler of its own trains through "
                                "tl.Trainer)", FACTORY_CONTRACT)
    n = known_length(train)
    if not n:
        raise InputError(FIELD, f"{spec}(): the training data is empty", "at least one training example")
    if isinstance(train, DataLoader) and train.batch_size != batch_size:
        raise InputError("data.batch_size", f"{batch_size}, but the training DataLoader of {spec}() batches "
                                            f"{train.batch_size} examples (the schedule counts steps by it)",
                         f"data.batch_size: {train.batch_size}, or return the Dataset")
    x, y = _first_batch(spec, train)
    num_classes = _num_classes(spec, splits, train)
    if y.is_floating_point() or y.ndim != 1:
        raise InputError(FIELD, f"{spec}(): labels of dtype {y.dtype} and shape {tuple(y.shape)}; expected one integer "
                                "class per example", "integer class labels, shape (batch,)")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise InputError(FIELD, f"{spec}(): a label {int(y.max()) if int(y.max()) >= num_classes else int(y.min())} "
                                f"outside 0..{num_classes - 1} in the first batch", f"labels in 0..{num_classes - 1}")
    if not x.is_floating_point():
        raise InputError(FIELD, f"{spec}(): inputs of dtype {x.dtype}; models take floating-point inputs",
                         "float32 inputs (convert in the dataset or its collate function)")
    classes = getattr(_dataset(train), "classes", None)
    return DataSplits(name=spec, train=train, val=splits.get("val"), test=splits.get("test"),
                      input_shape=tuple(int(d) for d in x.shape[1:]), num_classes=num_classes,
                      classes=[str(c) for c in classes] if isinstance(classes, (list, tuple)) else None)


def _factory(spec: str) -> Any:
    return import_factory(spec, FIELD, SPEC_FORMAT)


def _splits(spec: str, result: Any) -> dict[str, Any]:
    if isinstance(result, Mapping):
        unknown = sorted(str(k) for k in result if k not in ("train", "val", "test", "num_classes"))
        if unknown or "train" not in result:
            what = f"unknown key(s) {', '.join(unknown)}" if unknown else "no 'train'"
            raise InputError(FIELD, f"{spec}() returned a mapping with {what}", FACTORY_CONTRACT)
        return dict(result)
    if isinstance(result, tuple) and len(result) in (2, 3):
        return dict(zip(("train", "val", "test"), result))
    raise InputError(FIELD, f"{spec}() returned a {type(result).__name__}", FACTORY_CONTRACT)


def _first_batch(spec: str, train: Dataset | DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of the training data (two examples of a dataset), without touching the global RNG."""
    data = train if isinstance(train, DataLoader) else DataLoader(train, batch_size=2)
    with torch.random.fork_rng(devices=[]):
        try:
            return next(evaluation_batches(data, 2, torch.device("cpu")))
        except BatchError as exc:
            raise InputError(FIELD, f"{spec}(): {exc}", "batches of (inputs, labels)") from None
        except (Exception, SystemExit) as exc:
            raise InputError(FIELD, f"{spec}(): reading the first training batch raised {describe(exc)}"
                                    f"{user_frame(exc)}", "a dataset whose examples are (input, label)") from None


def _num_classes(spec: str, splits: dict[str, Any], train: Dataset | DataLoader) -> int:
    value = splits.get("num_classes")
    if value is None:
        dataset = _dataset(train)
        classes = getattr(dataset, "classes", None)
        value = len(classes) if isinstance(classes, (list, tuple)) else getattr(dataset, "num_classes", None)
    if value is None:   # labels already in memory: the largest of them + 1
        labels = [d.tensors[1] for d in (_dataset(train), _dataset(splits.get("val") or train))
                  if isinstance(d, TensorDataset) and len(d.tensors) > 1 and not d.tensors[1].is_floating_point()]
        value = int(max(int(t.max()) for t in labels)) + 1 if labels and all(t.numel() for t in labels) else None
    if value is None:
        raise InputError(FIELD, f"{spec}(): the number of classes is unknown",
                         'a "num_classes" entry in the returned mapping, a classes / num_classes attribute of the '
                         "training dataset, or TensorDatasets")
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise InputError(FIELD, f"{spec}(): num_classes is {value!r}", "an integer >= 2")
    return value
