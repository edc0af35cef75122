"""Errors meant for people. The CLI turns an ``InputError`` into a one-paragraph message and exit code 2."""

from __future__ import annotations

from collections.abc import Iterable


class TricklabError(Exception):
    """Base class of tricklab's own errors."""


class InputError(TricklabError):
    """Bad input from the user: a recipe field, a flag, a data file, a study spec.

    ``field`` names where the problem is (``optimizer.lr``, ``data.path``, ``--set``); ``allowed`` says what
    would have been accepted. ``str(err)`` is the whole message a person reads.
    """

    def __init__(self, field: str, problem: str, allowed: str | Iterable[str] | None = None) -> None:
        self.field = field
        self.problem = problem
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(str(a) for a in allowed)
        self.allowed = allowed
        message = f"{field}: {problem}"
        if allowed:
            message += f" (allowed: {allowed})"
        super().__init__(message)
