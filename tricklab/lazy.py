"""Lazy public names for a package's ``__init__`` (PEP 562), so that ``import tricklab`` stays torch-free.

A package lists its public names and where each lives; nothing is imported until a name is first read::

    __all__ = ["Recipe", "load_recipe"]
    __getattr__, __dir__ = lazy_exports(__name__, {
        "Recipe": "tricklab.recipe.schema:Recipe",   # MODULE:NAME — an attribute of a module
        "load_recipe": "tricklab.recipe.io:load_recipe",
    })

``"MODULE"`` alone (no ``:``) names a module itself (``"tricks": "tricklab.tricks"``). The first read imports the
module, binds the name in the package (later reads are plain attribute reads) and returns it; ``dir(package)``
lists the lazy names too. A public name never equals the name of one of the package's own submodules: importing
the submodule would rebind the attribute, so ``pkg.name`` would depend on what was imported before
(``tests/test_startup.py`` checks this for every package).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package`` that resolve ``exports`` (name → ``"MODULE:NAME"``
    or ``"MODULE"``) on first use."""
    table = dict(exports)

    def __getattr__(name: str) -> Any:
        try:
            target = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        value = getattr(module, attr) if attr else module
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
