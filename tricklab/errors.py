"""Errors meant for people. The CLI turns an ``InputError`` into a one-paragraph message and exit code 2."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any

MAX_MESSAGE = 1024
"""Characters of a whole message at most: hostile input (a 30 MB YAML alias bomb, a 100 KB unknown key) must not
become a 30 MB message. The field, the problem and the allowed values are each elided to their share."""
_MAX_FIELD, _MAX_ALLOWED = 120, 240

_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 2, 60, 60, 40
_BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxdict = _BRIEF.maxset = _BRIEF.maxfrozenset = 5


def brief(value: Any) -> str:
    """``repr(value)`` cut to a readable size (nested containers and long strings elided with ``...``)."""
    try:
        return _BRIEF.repr(value)
    except ValueError:  # an integer too long for str() (Python >= 3.11 refuses over 4300 digits)
        return f"<{type(value).__name__} of {value.bit_length() if isinstance(value, int) else '?'} bits>"


def elide(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start, ``...`` and how much was left out."""
    if len(text) <= limit:
        return text
    cut = max(0, limit - 32)
    return f"{text[:cut]}... ({len(text) - cut} more characters)"


class TricklabError(Exception):
    """Base class of tricklab's own errors."""


class InputError(TricklabError):
    """Bad input from the user: a recipe field, a flag, a data file, a study spec.

    ``field`` names where the problem is (``optimizer.lr``, ``data.path``, ``--set``); ``allowed`` says what
    would have been accepted. ``str(err)`` is the whole message a person reads.
    """

    def __init__(self, field: str, problem: str, allowed: str | Iterable[str] | None = None) -> None:
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(str(a) for a in allowed)
        field = elide(str(field), _MAX_FIELD)
        allowed = None if allowed is None else elide(allowed, _MAX_ALLOWED)
        problem = elide(problem, MAX_MESSAGE - len(field) - len(allowed or "") - 16)
        self.field = field
        self.problem = problem
        self.allowed = allowed
        message = f"{field}: {problem}"
        if allowed:
            message += f" (allowed: {allowed})"
        super().__init__(message)


class Interrupted(TricklabError):
    """The user stopped a command (SIGINT, SIGTERM). ``str(err)`` says what was kept; ``resume`` is the command
    that continues it (None: the same command again). The CLI prints both on one line and exits 130."""

    def __init__(self, message: str, resume: str | None = None) -> None:
        super().__init__(message)
        self.resume = resume
