"""SQLite persistence of runs, metric series and alarms.

The public names are read lazily (``tricklab.lazy``), as in every package on the CLI's import path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tricklab.lazy import lazy_exports

if TYPE_CHECKING:
    from tricklab.store.sqlite import DEFAULT_STORE, Store

__all__ = ["DEFAULT_STORE", "Store"]

__getattr__, __dir__ = lazy_exports(__name__, {name: f"tricklab.store.sqlite:{name}" for name in __all__})
