"""Errors meant for people. The CLI turns an ``InputError`` into a one-paragraph message and exit code 2."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any

MAX_MESSAGE = 2000  # characters of a problem shown; hostile input (a 30 MB YAML alias bomb) must not become 30 MB

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 2, 60, 60, 40
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = _BRIEF.maxfrozenset = 5


def brief(value: Any) -> str:
    """``repr(value)`` cut to a readable size (nested containers and long strings elided with ``...``)."""
    try:
        return _BRIEF.repr(value)
    except ValueError:  # an integer too long for str() (Python >= 3.11 refuses over 4300 digits)
        return f"<{type(value).__name__} of {value.bit_length() if isinstance(value, int) else '?'} bits>"


class TricklabError(Exception):
    """Base class of tricklab's own errors."""


class InputError(TricklabError):
    """Bad input from the user: a recipe field, a flag, a data file, a study spec.

    ``field`` names where the problem is (``optimizer.lr``, ``data.path``, ``--set``); ``allowed`` says what
    would have been accepted. ``str(err)`` is the whole message a person reads.
    """

    def __init__(self, field: str, problem: str, allowed: str | Iterable[str] | None = None) -> None:
        if len(problem) > MAX_MESSAGE:
            problem = f"{problem[:MAX_MESSAGE]}... ({len(problem) - MAX_MESSAGE} more characters)"
        self.field = field
        self.problem = problem
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(str(a) for a in allowed)
        self.allowed = allowed
        message = f"{field}: {problem}"
        if allowed:
            message += f" (allowed: {allowed})"
        super().__init__(message)
