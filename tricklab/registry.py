"""One registry per kind of thing (inits, optimisers, schedules, clippers, models, datasets, ...).

The same table feeds recipe validation (allowed values), ``tricklab tricks`` (the catalogue) and the docs,
so a name exists in exactly one place. Standard library only: every layer may import it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One named trick (or model, or dataset) with the words a person needs to trust it."""

    name: str
    kind: str
    obj: Any
    formula: str = ""
    reference: str = ""
    lesson: str = ""
    note: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "formula": self.formula,
            "reference": self.reference,
            "lesson": self.lesson,
            "note": self.note,
            "aliases": list(self.aliases),
        }


class Registry:
    """A named table of entries of one kind; aliases resolve to their canonical entry."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._alias: dict[str, str] = {}
        ALL_REGISTRIES[kind] = self

    def register(
        self,
        name: str,
        *,
        formula: str = "",
        reference: str = "",
        lesson: str = "",
        note: str = "",
        aliases: tuple[str, ...] = (),
        obj: Any = None,
    ) -> Callable[[Any], Any]:
        """Decorator (or direct call with ``obj=``) that adds ``name`` to this registry."""

        def add(target: Any) -> Any:
            if name in self._entries or name in self._alias:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, self.kind, target, formula, reference, lesson, note, tuple(aliases))
            for alias in aliases:
                self._alias[alias] = name
            return target

        if obj is not None:
            return add(obj)
        return add

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` or an alias; KeyError if unknown."""
        if name in self._entries:
            return name
        if name in self._alias:
            return self._alias[name]
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._alias)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[self.canonical(name)]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.allowed())}; "
                           f"allowed: {', '.join(self.allowed())}") from None

    def names(self) -> list[str]:
        """Canonical names in registration order."""
        return list(self._entries)

    def allowed(self) -> list[str]:
        """Canonical names and aliases: every spelling a recipe may use."""
        return list(self._entries) + list(self._alias)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())


ALL_REGISTRIES: dict[str, Registry] = {}


def closest(word: object, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The choice nearest to a misspelt ``word`` (``optimzer`` → ``optimizer``, ``adamw_`` → ``adamw``), or None
    when none is close: difflib's similarity ratio at least ``cutoff``, case ignored, ties to the first choice
    given."""
    if not isinstance(word, str) or not word or len(word) > 200:
        return None
    options = [c for c in choices if isinstance(c, str)]
    by_lower = {c.lower(): c for c in reversed(options)}   # reversed: the first spelling of a name wins
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[match[0]] if match else None


def did_you_mean(word: object, choices: Iterable[str], *, prefix: str = "") -> str:
    """``" — did you mean 'lr'?"`` for the choice nearest to ``word`` (``prefix`` is put before it, so a dotted key
    reads whole: ``optimizer.lr``), or ``""`` when none is close. Ready to append to a message."""
    match = closest(word, choices)
    return f" — did you mean {prefix + match!r}?" if match is not None else ""
