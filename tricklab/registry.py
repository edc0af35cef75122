"""One registry per kind of thing (inits, optimisers, schedules, clippers, models, datasets, ...).

The same table feeds recipe validation (allowed values), ``tricklab tricks`` (the catalogue) and the docs,
so a name exists in exactly one place. Standard library only: every layer may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
            raise KeyError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.allowed())}") from None

    def names(self) -> list[str]:
        """Canonical names in registration order."""
        return list(self._entries)

    def allowed(self) -> list[str]:
        """Canonical names and aliases: every spelling a recipe may use."""
        return list(self._entries) + list(self._alias)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())


ALL_REGISTRIES: dict[str, Registry] = {}
