"""The dataset table (``DATASETS``) and ``load_data``, the one door through which a run gets its data.

Each loader registered here turns a ``LoadRequest`` into ``RawData``; ``load_data`` then does what is the same
for every dataset, in this order:

1. check the arrays (no empty data, one label per example, no NaN/Inf, labels in ``0..C-1``);
2. cap file datasets at ``size`` examples (a fixed seeded subset, keeping the train:test ratio);
3. take the dataset's own test split, or carve a seeded ``test_fraction`` of all examples;
4. carve a seeded ``val_fraction`` of the training examples as the validation split;
5. keep the first ``train_subset`` training examples (a seeded random subset, for overfitting experiments);
   refuse a training split that holds fewer than two classes;
6. convert to float32 inputs and int64 labels, unscaled.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from tricklab.data.checks import check_examples, check_labels, check_training_classes
from tricklab.data.source import LoadRequest, RawData
from tricklab.data.splits import Splits, cap_indices, carve, to_inputs, to_labels
from tricklab.errors import InputError
from tricklab.registry import Registry

DATASETS = Registry("dataset")


def _fraction(value: Any, field: str, *, zero_ok: bool) -> float:
    interval = "[0, 1)" if zero_ok else "(0, 1)"
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (0.0 <= value < 1.0 if zero_ok else 0.0 < value < 1.0)
    if not ok:
        raise InputError(field, f"must be a fraction in {interval}, got {value!r}", allowed=f"a number in {interval}")
    return value


def _count(value: Any, field: str, *, minimum: int, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= minimum:
        return int(value)
    allowed = f"an integer >= {minimum}" + (" or none" if optional else "")
    raise InputError(field, f"must be an integer >= {minimum}, got {value!r}", allowed=allowed)


def _check(raw: RawData) -> None:
    check_examples(raw.x, raw.y, raw.where)
    check_labels(raw.y, raw.num_classes, raw.where)
    if (raw.x_test is None) != (raw.y_test is None):
        raise InputError("data", f"{raw.where}: test inputs and test labels must come together")
    if raw.x_test is not None and raw.y_test is not None:
        check_examples(raw.x_test, raw.y_test, f"test split of {raw.where}")
        check_labels(raw.y_test, raw.num_classes, f"test split of {raw.where}")
        if raw.x_test.shape[1:] != raw.x.shape[1:]:
            raise InputError(
                "data",
                f"{raw.where}: test examples have shape {raw.x_test.shape[1:]}, training examples {raw.x.shape[1:]}",
            )


def load_data(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    size: int | None = None,
    train_subset: int | None = None,
    label_column: str | int = -1,
    variant: str | None = None,
) -> Splits:
    """Load dataset ``name`` (see ``DATASETS``) as unscaled train/val/test splits.

    ``path``: local file or directory for file datasets (ignored by the others). ``val_fraction``: share of the
    training examples held out for validation, in [0, 1). ``test_fraction``: share of all examples held out for
    testing when the dataset has no test split of its own, in (0, 1). ``split_seed``: seeds every random split
    (and the synthetic generators). ``size``: examples to generate (mnist1d, synthetic) or a cap on the examples
    read (file datasets, digits). ``train_subset``: keep only this many training examples after the validation
    carve (all of them when there are fewer). ``label_column``: the CSV column holding the label, by name or index. ``variant``: a dataset's
    flavour (synthetic: spirals|teacher; idx: mnist|fashion).

    Same arguments, same tensors, bit for bit. Every bad argument or file raises ``InputError``.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise InputError("data.name", f"unknown dataset {name!r}", allowed=DATASETS.allowed())
    val_fraction = _fraction(val_fraction, "data.val_fraction", zero_ok=True)
    test_fraction = _fraction(test_fraction, "data.test_fraction", zero_ok=False)
    seed = _count(split_seed, "data.split_seed", minimum=0, optional=False)
    assert seed is not None
    size = _count(size, "data.size", minimum=1, optional=True)
    train_subset = _count(train_subset, "data.train_subset", minimum=1, optional=True)
    if not isinstance(label_column, str | int) or isinstance(label_column, bool):
        raise InputError("data.label_column", f"must be a column name or index, got {label_column!r}")
    if path is not None and not isinstance(path, str | os.PathLike):
        raise InputError("data.path", f"must be a file or directory path, got {path!r}")
    if variant is not None and not isinstance(variant, str):
        raise InputError("data.variant", f"must be a name, got {variant!r}")
    entry = DATASETS.get(name)
    request = LoadRequest(
        name=entry.name,
        path=None if path is None else os.fspath(path),
        size=size,
        split_seed=seed,
        label_column=label_column,
        variant=variant,
    )
    raw: RawData = entry.obj(request)
    _check(raw)

    x, y, x_test, y_test = raw.x, raw.y, raw.x_test, raw.y_test
    if size is not None and not raw.generated:
        keep, keep_test = cap_indices(len(y), None if y_test is None else len(y_test), size)
        x, y = x[keep], y[keep]
        if x_test is not None and y_test is not None and keep_test is not None:
            x_test, y_test = x_test[keep_test], y_test[keep_test]
    if x_test is None or y_test is None:
        pool, test = carve(len(y), test_fraction, seed, purpose="test", what=raw.where)
        x, y, x_test, y_test = x[pool], y[pool], x[test], y[test]
    train, val = carve(len(y), val_fraction, seed, purpose="val", what=f"training split of {raw.where}")
    if train_subset is not None:
        train = train[:train_subset]
    check_training_classes(y[train], raw.classes, raw.where)
    return Splits(
        name=entry.name,
        x_train=to_inputs(x[train]),
        y_train=to_labels(y[train]),
        x_val=to_inputs(x[val]),
        y_val=to_labels(y[val]),
        x_test=to_inputs(x_test),
        y_test=to_labels(y_test),
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=raw.num_classes,
        classes=raw.classes,
    )
