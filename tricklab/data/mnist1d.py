"""MNIST-1D: the ten digit templates as 1-D signals of length 40, shifted, scaled, sheared and noised.

Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439. A small dataset on which an MLP, a CNN and a GRU
differ as much as on CIFAR-10, but which trains on a laptop CPU in seconds — the lesson's default playground.

Generated locally by the ``mnist1d`` package (``mnist1d.data.make_dataset``) with its default arguments
(``get_dataset_args()``: 5000 samples, 80 % train, seed 42), never downloaded, and cached as ``.npz`` (see
``cache``). ``size`` replaces ``num_samples``; the generator makes ``size // 10`` examples per class, so the
paper's 5000 give 4000 train + 1000 test. The generator already centres the whole dataset and divides it by its
standard deviation; tricklab adds no scaling of its own here (the caller standardises with train statistics).
"""

from __future__ import annotations

import json
import random
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from tricklab.data.cache import cache_dir, cached_arrays
from tricklab.data.registry import DATASETS
from tricklab.data.source import LoadRequest, RawData
from tricklab.errors import InputError
from tricklab.fsutil import atomic_write_text

_ARRAYS = ("x", "y", "x_test", "y_test")
_CLASSES = 10


def generator_args(size: int | None) -> dict[str, Any]:
    """The ``mnist1d`` package's default arguments, with ``num_samples = size`` when given."""
    from mnist1d.data import get_dataset_args

    args = dict(get_dataset_args(as_dict=True))
    if size is not None:
        args["num_samples"] = size
    return args


def _key_args(size: int | None) -> dict[str, Any]:
    """``generator_args`` as the cache key sees them (JSON values), without importing ``mnist1d`` when possible.

    Importing the package costs ~1.2 s per process (it imports matplotlib) — a tenth of a default run, paid again
    by every study worker. Its defaults are a function of its version, so they are memoised per version in the
    cache directory (``mnist1d-args-<version>.json``, written atomically); a missing or unreadable memo is
    rebuilt from the package."""
    memo = cache_dir() / f"mnist1d-args-{_package_version()}.json"
    args: Any = None
    try:
        args = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if not isinstance(args, dict) or "num_samples" not in args:
        args = json.loads(json.dumps(generator_args(None), default=str))
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(memo, json.dumps(args, sort_keys=True))
        except OSError:
            pass   # a read-only cache: the package is imported again next time
    if size is not None:
        args["num_samples"] = size
    return {k: v for k, v in args.items() if k != "url"}


def _package_version() -> str:
    try:
        return version("mnist1d")
    except PackageNotFoundError:
        return "unknown"


def _generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run the reference generator. It reseeds Python's and NumPy's global generators; restore them after, so
    loading data never changes the random stream of the caller."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {name: np.asarray(data[name]) for name in _ARRAYS}


@DATASETS.register(
    "mnist1d",
    formula="x: (N, 1, 40) float signals; y: 10 digit classes; own test split (20 %)",
    reference="Greydanus 2020, Scaling down deep learning, arXiv:2011.14439",
    note="generated locally by the mnist1d package (default args, seed 42; size = num_samples, default 5000) "
    "and cached as .npz; no download",
)
def load_mnist1d(request: LoadRequest) -> RawData:
    """Generate (or read from the cache) MNIST-1D with ``request.size`` samples (default 5000)."""
    request.choose_variant((), None)
    if request.size is not None and request.size < _CLASSES:
        raise InputError(
            "data.size",
            f"mnist1d makes size // 10 examples per class, so {request.size} makes none",
            allowed="an integer >= 10",
        )
    key = {"args": _key_args(request.size), "mnist1d": _package_version()}
    arrays = cached_arrays("mnist1d", key, _ARRAYS, lambda: _generate(generator_args(request.size)))
    return RawData(
        x=arrays["x"][:, None, :],
        y=arrays["y"].astype(np.int64),
        x_test=arrays["x_test"][:, None, :],
        y_test=arrays["y_test"].astype(np.int64),
        num_classes=_CLASSES,
        classes=[str(d) for d in range(_CLASSES)],
        generated=True,
        where="mnist1d",
    )
