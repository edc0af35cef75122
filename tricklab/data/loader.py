"""Batches from a ``torch.utils.data.Dataset`` or ``DataLoader``: seeded order, resumable at any batch.

For data that does not fit in memory, or that a user already feeds PyTorch the usual way. In-memory tensors keep
the Trainer's fast path (index slices on the device, no ``DataLoader``); this module serves everything else.

Order. A map-style dataset (``__len__`` and ``__getitem__``) is visited in an order given by the caller — the
Trainer's ``epoch_order(seed, epoch, n)``, the same permutation its tensor path uses — cut into the same batches
(``steps`` slices of ``batch_size`` indices), so a run is a function of its seed whatever feeds it. A user's
``DataLoader`` over a map-style dataset with torch's default sampler is rebuilt with the loader's own batch size,
collate function, workers, pinning and worker initialisation: around that order when it shuffles (a
``RandomSampler``), in the dataset's order when it does not (a ``SequentialSampler``), cut by the same rule. A loader with a sampler of its own, and any iterable dataset, yield
what they yield: their randomness comes from torch's global generator — the run's, seeded and checkpointed — and
their worker processes are seeded from a generator of (seed, epoch) (``DataLoader.generator``, which torch uses
for the workers' base seed), so they repeat per seed too.

Resuming. ``epoch(e, start)`` begins epoch ``e`` at its batch ``start``: a map-style source slices its order
(nothing before ``start`` is loaded); any other source draws and drops ``start`` batches.

Batches. A batch is what the collate function returns: a pair (inputs, labels) — a tuple or list of two, or of
more (the rest is ignored, e.g. sample weights) — moved to the device (``non_blocking`` from pinned memory).
Anything else is a ``BatchError`` naming what came.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler

Order = Callable[[int, int], Tensor]
"""``order(epoch, n)``: the permutation of ``range(n)`` that epoch ``epoch`` (from 0) visits."""
Seeds = Callable[[int], torch.Generator]
"""``seeds(epoch)``: the generator that seeds epoch ``epoch``'s worker processes."""


class BatchError(TypeError):
    """A batch that is not (inputs, labels)."""


def is_data(obj: Any) -> bool:
    """Whether ``obj`` is something this module serves: a ``Dataset`` or a ``DataLoader``."""
    return isinstance(obj, (Dataset, DataLoader))


def known_length(obj: Dataset | DataLoader) -> int | None:
    """``len(obj)`` where it has one (an iterable dataset may not), else None."""
    try:
        return len(obj)  # type: ignore[arg-type]
    except TypeError:
        return None


def reorderable(loader: DataLoader) -> bool:
    """Whether the Trainer orders ``loader``'s batches itself: a loader over a map-style dataset with torch's
    default sampler (``shuffle=True``: a ``RandomSampler``, ``shuffle=False``: a ``SequentialSampler``) and a batch
    size (no ``batch_sampler`` of its own)."""
    return (isinstance(loader.sampler, (RandomSampler, SequentialSampler)) and loader.batch_size is not None
            and not isinstance(loader.dataset, IterableDataset))


def as_pair(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    """(inputs, labels) of a collated batch, on ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2 or not all(isinstance(t, Tensor) for t in batch[:2]):
        what = type(batch).__name__ + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise BatchError(f"a batch must be (inputs, labels), two tensors (a tuple or list; more items are ignored); "
                         f"the data gave a {what}")
    x, y = batch[0], batch[1]
    return x.to(device, non_blocking=x.is_pinned()), y.to(device, non_blocking=y.is_pinned())


class _IndexBatches(torch.utils.data.Sampler[list[int]]):
    """Epoch ``epoch``'s batches of indices from batch ``start`` on: slices of ``batch_size`` of its order."""

    def __init__(self, order: Tensor, batch_size: int, steps: int, start: int) -> None:
        self.order, self.batch_size, self.steps, self.start = order, batch_size, steps, start

    def __iter__(self) -> Iterator[list[int]]:
        bs = self.batch_size
        for b in range(self.start, self.steps):
            yield self.order[b * bs:(b + 1) * bs].tolist()

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


class DataBatches:
    """The training batches of ``data`` (a ``Dataset`` or ``DataLoader``), epoch after epoch.

    ``batch_size`` applies to a dataset (a loader keeps its own), times ``accumulate`` (the examples of one
    optimizer step, split into micro-batches by the Trainer); ``order`` and ``seeds`` make the order a function
    of the run's seed (see the module's docstring); ``steps(n, batch_size)`` is how many batches an epoch of ``n``
    examples has (the Trainer's ``batches_per_epoch``); ``num_workers``, ``collate_fn`` and ``pin_memory`` build the
    loader of a plain dataset. ``steps_per_epoch`` is None for a source of unknown length."""

    def __init__(self, data: Dataset | DataLoader, *, batch_size: int, order: Order, seeds: Seeds,
                 steps: Callable[[int, int], int], device: torch.device, num_workers: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False,
                 accumulate: int = 1) -> None:
        self.device, self.order, self.seeds = device, order, seeds
        self.loader: DataLoader | None = data if isinstance(data, DataLoader) else None
        dataset = data.dataset if isinstance(data, DataLoader) else data
        self.dataset = dataset
        self.loader_args: dict[str, Any] = {}
        self.reordered = False   # batches from our index order (a map-style dataset, or a loader of one)
        self.shuffle = True      # the order is ``order``'s permutation (False: a loader that does not shuffle)
        if self.loader is None:
            if isinstance(dataset, IterableDataset):
                self.loader = DataLoader(dataset, batch_size=batch_size * accumulate, num_workers=num_workers,
                                         collate_fn=collate_fn, pin_memory=pin_memory)
            else:
                self.reordered = True
                self.batch_size = batch_size * accumulate
                self.loader_args = {"num_workers": num_workers, "collate_fn": collate_fn, "pin_memory": pin_memory}
        elif reorderable(self.loader):
            self.reordered = True
            self.shuffle = isinstance(self.loader.sampler, RandomSampler)
            self.batch_size = (self.loader.batch_size or 0) * accumulate
            ld = self.loader
            self.loader_args = {"num_workers": ld.num_workers, "collate_fn": ld.collate_fn,
                                "pin_memory": ld.pin_memory, "timeout": ld.timeout,
                                "worker_init_fn": ld.worker_init_fn,
                                "multiprocessing_context": ld.multiprocessing_context}
            if ld.num_workers > 0:
                self.loader_args.update(prefetch_factor=ld.prefetch_factor, persistent_workers=False)
        self.n = known_length(dataset) if self.reordered else None
        if self.reordered:
            assert self.n is not None
            self.steps_per_epoch: int | None = steps(self.n, self.batch_size) if self.n else 0
            self.batch_size = min(self.batch_size, max(self.n, 1))
        else:
            assert self.loader is not None
            if accumulate > 1 and data is self.loader:
                raise ValueError("accumulate > 1 batches accumulate × the loader's batch size, but a DataLoader with a "
                                 "sampler of its own (or over an iterable dataset) cannot be rebatched: pass its "
                                 "dataset, or give the loader the larger batch and accumulate=1")
            self.steps_per_epoch = known_length(self.loader)
            self.batch_size = self.loader.batch_size or 0

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Epoch ``epoch``'s (from 0) batches from its batch ``start`` on, on the device."""
        if self.reordered:
            assert self.n is not None and self.steps_per_epoch is not None
            order = self.order(epoch, self.n) if self.shuffle else torch.arange(self.n)
            sampler = _IndexBatches(order, self.batch_size, self.steps_per_epoch, start)
            loader = DataLoader(self.dataset, batch_sampler=sampler, generator=self.seeds(epoch), **self.loader_args)
            for batch in loader:
                yield as_pair(batch, self.device)
            return
        assert self.loader is not None
        self.loader.generator = self.seeds(epoch)   # the workers' base seed: drawn from it, not from the global RNG
        for b, batch in enumerate(self.loader):
            if b >= start:
                yield as_pair(batch, self.device)


class EpochBatches:
    """One epoch of a ``DataBatches`` for the training loop (``tricklab.train.loop.Batches``): ``steps`` batches
    (None: unknown), iterated from batch ``start``; ``keep`` does nothing (one model: when it leaves, the epoch
    ends)."""

    def __init__(self, data: DataBatches, epoch: int, start: int = 0) -> None:
        self.data, self.epoch, self.start = data, epoch, start
        self.steps = None if data.steps_per_epoch is None else max(0, data.steps_per_epoch - start)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.data.epoch(self.epoch, self.start)

    def keep(self, rows: list[int]) -> None:
        pass


def evaluation_batches(data: Dataset | DataLoader, batch_size: int, device: torch.device
                       ) -> Iterator[tuple[Tensor, Tensor]]:
    """Every example of ``data`` once, in its own order, in batches on ``device``: a loader as it is, a dataset
    in batches of ``batch_size`` (nothing shuffled, so an evaluation is the same every time). The loader draws its
    workers' base seed from a fixed generator, not torch's global one: evaluating leaves the training's random
    numbers (dropout, augmentation) as they were."""
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size)
    loader.generator = torch.Generator().manual_seed(0)
    for batch in loader:
        yield as_pair(batch, device)
