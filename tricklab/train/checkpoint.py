"""Checkpoints: written atomically, read with ``weights_only=True``, with one previous good copy kept.

``checkpoint.pt`` is the latest complete epoch; before it is replaced, the old one becomes
``checkpoint.prev.pt``. A crash at any moment leaves at least one complete, loadable file, and a damaged
latest file falls back to the previous one with a warning instead of losing the run.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from tricklab.errors import InputError
from tricklab.fsutil import atomic_write

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
DAMAGED_SUFFIX = ".damaged"  # a damaged checkpoint that was passed over is kept under its name + this
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours parts of its messages
REQUIRED_KEYS = ("epoch", "step", "model", "optimizer")
"""What every checkpoint holds; a file that loads but lacks them (another program's file, a bare state dict) is
treated as damaged, like one that does not load."""


def save_checkpoint(directory: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Save ``payload`` (tensors, numbers, strings, lists, dicts only) as the latest checkpoint."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    latest = d / LATEST
    # Serialised in memory first: torch.save streaming into a file on a full disk fails with a RuntimeError about
    # stream positions; writing finished bytes fails with the OSError(ENOSPC) that says what happened.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if latest.exists():
        os.replace(latest, d / PREVIOUS)
    atomic_write(latest, lambda fh: fh.write(buffer.getbuffer()))
    return latest


def load_checkpoint(directory: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any] | None:
    """The newest loadable checkpoint in ``directory``, or None when there is none yet.

    Loads with ``weights_only=True`` (no arbitrary pickle code runs). A damaged latest file (unreadable, or not
    a dict with ``REQUIRED_KEYS``) falls back to the previous one, with a warning, and is renamed to
    ``checkpoint.pt.damaged``; if every file present is damaged, an ``InputError`` names them and nothing is
    renamed.
    """
    d = Path(directory)
    errors: list[str] = []
    damaged: list[Path] = []
    for name in (LATEST, PREVIOUS):
        path = d / name
        if not path.exists():
            continue
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to read means "damaged"; try the older copy
            first_line = _ANSI.sub("", str(err)).splitlines()[0] if str(err) else ""
            errors.append(f"{path}: {type(err).__name__}: {first_line}")
            damaged.append(path)
            continue
        missing = [k for k in REQUIRED_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(REQUIRED_KEYS)
        if missing:
            errors.append(f"{path}: not a tricklab checkpoint (a {type(ckpt).__name__} without "
                          f"{', '.join(missing)})")
            damaged.append(path)
            continue
        if errors:
            for bad in damaged:  # set aside, so that the next save does not rotate it into the place of a good copy
                os.replace(bad, bad.with_name(bad.name + DAMAGED_SUFFIX))
            warnings.warn(f"damaged checkpoint ignored ({errors[0]}); resumed from {path}; the damaged file was "
                          f"kept as {damaged[0].name}{DAMAGED_SUFFIX}", stacklevel=2)
        return ckpt
    if errors:
        raise InputError("--resume", "no loadable checkpoint: " + "; ".join(errors))
    return None
