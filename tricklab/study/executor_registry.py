"""The executors by name: ``EXECUTORS`` (the study spec's ``executor`` values and the CLI's ``--executor``
choices) and ``make_executor``, the one way to get one.

It sits above both modules of back ends — ``executors`` (the interface, ``local`` and ``ray``) and ``population``
(which builds on ``executors``) — so that neither has to import the other's way up: no cycle between them. It
imports no torch (the back ends import it inside the workers), so ``tricklab study --help`` starts at once.
"""

from __future__ import annotations

from tricklab.errors import InputError
from tricklab.study.executors import Executor, LocalExecutor, RayExecutor
from tricklab.study.population import PopulationExecutor

EXECUTORS = ("local", "population", "ray")


def make_executor(name: str, *, workers: int | None = None, address: str | None = None) -> Executor:
    """The executor called ``name`` with ``workers`` parallel trials (``address``: the Ray cluster, ``ray`` only);
    an ``InputError`` naming the allowed names otherwise."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address, workers)
    if name == "population":
        return PopulationExecutor(workers)
    raise InputError("--executor", f"unknown executor {name!r}", allowed=", ".join(EXECUTORS))
