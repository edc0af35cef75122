"""A small on-disk cache for generated datasets, so MNIST-1D is built once per machine, not once per run.

Arrays are stored as ``.npz`` read with ``allow_pickle=False`` — a cache file is data, never code. The file name
carries a hash of everything that determines the content (generator arguments, generator version, format),
so changing an argument can never return stale data. Writes go to a temporary file in the same directory and
are moved into place with ``os.replace`` (atomic on POSIX and Windows), so parallel runs of a study never read
a half-written file; a file that cannot be read anyway (truncated, corrupted, wrong arrays) is regenerated.

Location: ``$TRICKLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/tricklab``, else ``~/.cache/tricklab``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.fsutil import atomic_write

_FORMAT = 1  # bump when the stored layout changes: old files then simply stop matching


def cache_dir() -> Path:
    """The directory tricklab caches generated data in (not created here)."""
    explicit = os.environ.get("TRICKLAB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "tricklab"
    return Path.home() / ".cache" / "tricklab"


def cache_file(stem: str, key: Mapping[str, Any]) -> Path:
    """Where the arrays for ``key`` live: ``<cache_dir>/<stem>-<16 hex digits of sha256(key)>.npz``."""
    text = json.dumps({"format": _FORMAT, **key}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return cache_dir() / f"{stem}-{digest}.npz"


def _read(file: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unusable in any way."""
    if not file.is_file():
        return None
    try:
        stored = np.load(file, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            return None
        with stored:
            if not set(names) <= set(stored.files):
                return None
            return {name: stored[name] for name in names}
    except Exception:  # any unreadable cache (bad zip, truncated array, wrong header, ...) means: regenerate
        return None


def _write_atomically(file: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``file`` atomically (``fsutil.atomic_write``); warn (do not fail) if impossible."""
    try:
        atomic_write(file, lambda fh: np.savez(fh, **arrays))
    except OSError as err:
        warnings.warn(f"could not write the dataset cache {file}: {err}; continuing without it", stacklevel=3)


def cached_arrays(
    stem: str, key: Mapping[str, Any], names: tuple[str, ...], build: Callable[[], Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays ``names`` for ``key``: read from the cache if a usable file exists, else ``build()`` and store.

    A cached file that lacks one of ``names`` or cannot be read is rebuilt and replaced.
    """
    file = cache_file(stem, key)
    cached = _read(file, names)
    if cached is not None:
        return cached
    built = build()
    arrays = {name: np.asarray(built[name]) for name in names}
    _write_atomically(file, arrays)
    return arrays
