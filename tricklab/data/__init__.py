"""Datasets: built-in (MNIST-1D, digits, synthetic) and local files (IDX, CIFAR-10, CSV, NPZ), as ``Splits``.

``load_data(name, ...)`` is the entry point; ``DATASETS`` lists every dataset with its reference. Nothing is
downloaded at run time. Importing this package registers every loader.
"""

from __future__ import annotations

# The import order is the registration order, hence the order of ``DATASETS.names()`` and of the catalogue.
# isort: off
from tricklab.data import mnist1d, digits, idx, cifar10, tabular, synthetic  # noqa: F401 — registers the loaders

# isort: on
from tricklab.data.cache import cache_dir
from tricklab.data.registry import DATASETS, load_data
from tricklab.data.safe_pickle import RestrictedUnpickler, load_pickle
from tricklab.data.source import LoadRequest, RawData
from tricklab.data.splits import Splits

__all__ = [
    "DATASETS",
    "LoadRequest",
    "RawData",
    "RestrictedUnpickler",
    "Splits",
    "cache_dir",
    "load_data",
    "load_pickle",
]
