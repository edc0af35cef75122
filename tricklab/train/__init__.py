"""The Trainer (events, checkpoints, progress) and ``train(recipe) -> RunResult``.

This package is callable: ``tricklab.train(recipe, ...)`` is ``tricklab.train.run.train(recipe, ...)``. DESIGN.md
promises ``tl.train(recipe) -> RunResult`` and ``tricklab.train`` is also the name of this package; binding the
function over the package in ``tricklab/__init__`` would make ``import tricklab.train`` and ``tl.train`` depend
on import order. So the package module's class is a ``ModuleType`` subclass whose ``__call__`` forwards to the
function: ``import tricklab.train`` gives this package, ``tl.train`` is the same object, and calling it trains.
``from tricklab.train import train`` is the plain function.

The public names are read lazily (``tricklab.lazy``): importing one submodule (``tricklab.train.checkpoint``)
does not import the others.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import TYPE_CHECKING, Any

from tricklab.lazy import lazy_exports

if TYPE_CHECKING:
    from tricklab.train.events import Callback, TrainState
    from tricklab.train.run import RunResult, train
    from tricklab.train.trainer import Trainer, evaluate

__all__ = ["Callback", "RunResult", "TrainState", "Trainer", "evaluate", "train"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "Callback": "tricklab.train.events:Callback",
    "RunResult": "tricklab.train.run:RunResult",
    "TrainState": "tricklab.train.events:TrainState",
    "Trainer": "tricklab.train.trainer:Trainer",
    "evaluate": "tricklab.train.trainer:evaluate",
    "train": "tricklab.train.run:train",
})


class _CallablePackage(types.ModuleType):
    """The ``tricklab.train`` package; calling it calls ``tricklab.train.run.train`` (see the module docstring)."""

    def __call__(self, *args: Any, **kwargs: Any) -> RunResult:
        return self.train(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:   # help() and inspect show train's own parameters
        return inspect.signature(self.train)


sys.modules[__name__].__class__ = _CallablePackage
