"""Checkpoints: written atomically, read with ``weights_only=True``, with one previous good copy kept.

``checkpoint.pt`` is the latest complete epoch; before it is replaced, the old one becomes
``checkpoint.prev.pt``. A crash at any moment leaves at least one complete, loadable file, and a damaged
latest file falls back to the previous one with a warning instead of losing the run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from tricklab.errors import InputError
from tricklab.fsutil import atomic_write

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


def save_checkpoint(directory: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Save ``payload`` (tensors, numbers, strings, lists, dicts only) as the latest checkpoint."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    latest = d / LATEST
    if latest.exists():
        os.replace(latest, d / PREVIOUS)
    atomic_write(latest, lambda fh: torch.save(payload, fh))
    return latest


def load_checkpoint(directory: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any] | None:
    """The newest loadable checkpoint in ``directory``, or None when there is none yet.

    Loads with ``weights_only=True`` (no arbitrary pickle code runs). A damaged latest file falls back to the
    previous one; if every file present is damaged, an ``InputError`` names them.
    """
    d = Path(directory)
    errors = []
    for name in (LATEST, PREVIOUS):
        path = d / name
        if not path.exists():
            continue
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to read means "damaged"; try the older copy
            errors.append(f"{path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            continue
        if errors:
            warnings.warn(f"damaged checkpoint ignored ({errors[0]}); resumed from {path}", stacklevel=2)
        return ckpt
    if errors:
        raise InputError("--resume", "no loadable checkpoint: " + "; ".join(errors))
    return None
