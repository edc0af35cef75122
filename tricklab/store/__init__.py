"""SQLite persistence of runs, metric series and alarms."""

from tricklab.store.sqlite import DEFAULT_STORE, Store

__all__ = ["DEFAULT_STORE", "Store"]
