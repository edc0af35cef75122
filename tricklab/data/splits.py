"""The train / validation / test splits a run trains on, and the seeded index helpers that carve them.

Every split is a pure function of its arguments: the permutations come from ``numpy.random.default_rng`` seeded
with ``[split_seed, purpose]``, so the same arguments give bit-identical tensors on every machine, and the test
carve, the validation carve and the size cap draw from independent streams.

Inputs stay unscaled here; the caller standardises them with statistics of ``x_train`` only, so nothing of the
validation or test split leaks into training (the usual rule, e.g. Goodfellow, Bengio & Courville 2016, §5.3).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from tricklab.errors import InputError

# Independent random streams per purpose; the cap stream ignores ``split_seed`` so that runs with different
# split seeds still draw their train/val/test from the same capped pool of examples.
_CAP, _TEST, _VAL = 0, 1, 2
_CAP_SEED = 0


@dataclass
class Splits:
    """Train, validation and test tensors of one dataset: float32 inputs, int64 labels in ``0..num_classes-1``.

    ``input_shape`` is the shape of one example (no batch dimension): ``(1, L)`` for 1-D signals, ``(C, H, W)``
    for images, ``(F,)`` for tabular rows. ``classes`` names the labels when the dataset knows their names.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int
    classes: list[str] | None = None

    def to(self, device: torch.device | str) -> Splits:
        """A copy with every tensor on ``device`` (the same object's tensors are left where they are)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name.startswith(("x_", "y_"))}
        return replace(self, **moved)

    # The reading interface a run uses, shared with ``tricklab.data.user.DataSplits`` (a user's datasets).
    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_val(self) -> int:
        return len(self.x_val)

    def train_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_train, self.y_train

    def val_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_val, self.y_val

    def test_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_test, self.y_test

    def sample(self, n: int) -> torch.Tensor:
        """The first ``n`` training inputs (LSUV's sample)."""
        return self.x_train[:n]

    def summary(self) -> dict[str, Any]:
        """Sizes, example shape and classes as plain JSON-able values (for logs, the store and ``--json``)."""
        return {
            "name": self.name,
            "train": int(self.y_train.shape[0]),
            "val": int(self.y_val.shape[0]),
            "test": int(self.y_test.shape[0]),
            "input_shape": [int(d) for d in self.input_shape],
            "num_classes": int(self.num_classes),
            "classes": None if self.classes is None else [str(c) for c in self.classes],
        }


def _rng(seed: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, purpose])


def fraction_count(n: int, fraction: float) -> int:
    """How many of ``n`` examples a ``fraction`` takes: ``round(n·fraction)``, but at least one when
    ``fraction > 0`` (a requested split is never silently empty)."""
    if fraction <= 0:
        return 0
    return max(1, round(n * fraction))


def carve(n: int, fraction: float, split_seed: int, *, purpose: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` at random into ``(kept, carved)`` index arrays, ``carved`` holding ``fraction`` of them.

    Both arrays are in permuted order, so "the first k kept examples" is itself a seeded random subset.
    ``purpose`` ("test" or "val") picks the random stream; ``what`` names the pool in error messages.
    """
    stream = {"test": _TEST, "val": _VAL}[purpose]
    k = fraction_count(n, fraction)
    if n - k < 1:
        raise InputError(
            "data",
            f"{what} has {n} example(s): too few to carve a {purpose} split of {fraction:g} and keep any for training",
        )
    order = _rng(split_seed, stream).permutation(n)
    return order[k:], order[:k]


def cap_indices(n_train: int, n_test: int | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices of at most ``size`` examples, drawn once with a fixed seed (the same for every ``split_seed``).

    With a test split of its own (``n_test`` not None) the cap keeps the dataset's train:test ratio, e.g.
    MNIST's 60000:10000 capped at 7000 → 6000 train + 1000 test. Indices come back sorted (file order).
    """
    total = n_train + (n_test or 0)
    if size >= total:
        return np.arange(n_train), None if n_test is None else np.arange(n_test)
    rng = _rng(_CAP_SEED, _CAP)
    if n_test is None:
        return np.sort(rng.choice(n_train, size, replace=False)), None
    if size < 2:
        raise InputError(
            "data.size", f"a cap of {size} cannot keep both a training and a test example", "an integer >= 2"
        )
    k_test = min(n_test, size - 1, max(1, round(size * n_test / total)))
    k_train = size - k_test
    train = np.sort(rng.choice(n_train, k_train, replace=False))
    test = np.sort(rng.choice(n_test, k_test, replace=False))
    return train, test


def to_inputs(x: np.ndarray) -> torch.Tensor:
    """float32, C-contiguous, writable and owning its memory; copies only when one of these does not hold yet.

    Called after the split, so uint8 images stay four times smaller until this point.
    """
    return torch.from_numpy(np.require(x, np.float32, ["C", "W", "O"]))


def to_labels(y: np.ndarray) -> torch.Tensor:
    """int64 class indices (same memory rules as ``to_inputs``)."""
    return torch.from_numpy(np.require(y, np.int64, ["C", "W", "O"]))
