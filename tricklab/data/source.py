"""What a dataset loader receives (``LoadRequest``) and what it hands back (``RawData``).

A loader only reads or generates arrays; everything that is the same for every dataset — checks, size cap,
test and validation carve, training subset, conversion to tensors — happens once in ``load_data``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tricklab.errors import InputError
from tricklab.fsutil import require_directory_path, require_file


@dataclass(frozen=True)
class LoadRequest:
    """The user's arguments that a loader may use (see ``load_data`` for their meaning)."""

    name: str
    path: str | None = None
    size: int | None = None
    split_seed: int = 0
    label_column: str | int = -1
    variant: str | None = None

    def require_path(self, expected: str) -> Path:
        """The local path as a ``Path``; an ``InputError`` on ``data.path`` saying ``expected`` if it is missing."""
        if self.path is None or str(self.path) == "":
            raise InputError(
                "data.path", f"dataset {self.name!r} reads local files and needs a path; expected {expected}"
            )
        path = Path(self.path).expanduser()
        if not path.exists():
            raise InputError("data.path", f"{str(path)!r} does not exist; expected {expected}")
        return path

    def require_file(self, expected: str) -> Path:
        """The local path, if it is a regular file. Its type is read with ``stat`` before anything opens it: a FIFO
        would block the run forever and a device never ends, so neither is opened."""
        return require_file(self.require_path(expected), "data.path", what=expected)

    def require_directory(self, expected: str) -> Path:
        """The local path, if it is a directory (its files are checked one by one with ``member``)."""
        path = self.require_path(expected)
        if not path.is_dir():
            require_directory_path(path, "data.path", what=expected)  # names what is there instead
        return path

    def choose_variant(self, allowed: Sequence[str], default: str | None) -> str | None:
        """The requested variant, ``default`` when none was given; an ``InputError`` on ``data.variant`` if unknown."""
        if self.variant is None:
            return default
        if self.variant not in allowed:
            problem = f"dataset {self.name!r} has no variant {self.variant!r}"
            raise InputError("data.variant", problem, allowed=list(allowed) or "none (leave it unset)")
        return self.variant


@dataclass
class RawData:
    """Arrays as a loader produced them: ``x`` unscaled with examples along axis 0, ``y`` integer class indices.

    ``x_test``/``y_test`` are the dataset's own test split, or None when the test split must be carved.
    ``generated`` is True when the loader already used ``size`` as the number of examples to generate, so
    ``load_data`` must not cap again.
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    classes: list[str] | None = None
    generated: bool = False
    where: str = "data"  # names the source in messages, e.g. the file path


def member(directory: Path, name: str, expected: str) -> Path | None:
    """``directory/name`` if it is a regular file, None if there is nothing of that name; anything else there — a
    FIFO, a device, a socket, a subdirectory, a broken link — is an ``InputError`` on ``data.path``, raised
    before the file is opened (so a dataset directory cannot make a run block or read forever)."""
    path = directory / name
    if not os.path.lexists(path):
        return None
    return require_file(path, "data.path", what=expected)

