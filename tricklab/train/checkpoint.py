"""Checkpoints: written atomically, read with ``weights_only=True``, with one previous good copy kept.

``checkpoint.pt`` is the latest complete epoch; before it is replaced, the old one becomes
``checkpoint.prev.pt``. A crash at any moment leaves at least one complete, loadable file, and a damaged
latest file falls back to the previous one with a warning instead of losing the run. A file that loads but does
not fit the model it is restored into (another width, a missing layer: ``training_state_mismatch``) is damaged
for this run in the same way — torch's ``load_state_dict`` would stop with a multi-line ``RuntimeError``.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


def load_checkpoint(directory: str | os.PathLike[str], map_location: Any = "cpu", *,
                    fits: Callable[[dict[str, Any]], str | None] | None = None) -> dict[str, Any] | None:
    """The newest loadable checkpoint in ``directory``, or None when there is none yet.

    Loads with ``weights_only=True`` (no arbitrary pickle code runs). A damaged latest file (unreadable, not
    a dict with ``REQUIRED_KEYS``, or one that ``fits`` — a function saying why a checkpoint does not fit what it
    will be restored into, None when it does — refuses) falls back to the previous one, with a warning, and is
    renamed to ``checkpoint.pt.damaged``; if every file present is damaged, an ``InputError`` names them and
    nothing is renamed.
    """
    d = Path(directory)
    errors: list[str] = []
    damaged: list[Path] = []
    unfit = False  # a file loaded but did not fit the model
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
        misfit = None if missing or fits is None else fits(ckpt)
        if missing or misfit:
            unfit = unfit or bool(misfit)
            errors.append(f"{path}: does not fit the model: {misfit}" if misfit else
                          f"{path}: not a tricklab checkpoint (a {type(ckpt).__name__} without {', '.join(missing)})")
            damaged.append(path)
            continue
        if errors:
            for bad in damaged:  # set aside, so that the next save does not rotate it into the place of a good copy
                os.replace(bad, bad.with_name(bad.name + DAMAGED_SUFFIX))
            warnings.warn(f"damaged checkpoint ignored ({errors[0]}); resumed from {path}; the damaged file was "
                          f"kept as {damaged[0].name}{DAMAGED_SUFFIX}", stacklevel=2)
        return ckpt
    if errors:
        raise InputError("--resume", "no loadable checkpoint: " + "; ".join(errors),
                         "checkpoints of the model this run was started with; a changed model is a new run"
                         if unfit else None)
    return None


def training_state_mismatch(ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """The first thing in ``ckpt`` that does not fit ``model`` and ``optimizer``, in words, or None.

    Compared: every tensor of the model's state (missing, unexpected, another shape — named with both shapes);
    the optimizer's parameter groups (count and sizes) and the shape of every per-parameter state tensor; the
    CPU random number generator's state (a byte tensor of torch's size).
    """
    saved, expected = ckpt["model"], model.state_dict()
    if not isinstance(saved, dict):
        return f"its model state is a {type(saved).__name__}, not a mapping of tensors"
    for name, tensor in expected.items():
        got = saved.get(name)
        if got is None:
            return f"tensor {name!r} {tuple(tensor.shape)} of the model is missing from the checkpoint"
        if not isinstance(got, torch.Tensor) or got.shape != tensor.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return f"tensor {name!r} is {shape} in the checkpoint but {tuple(tensor.shape)} in the model"
    unexpected = [name for name in saved if name not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        return f"tensor {unexpected[0]!r} of the checkpoint is not in the model{more}"
    return _optimizer_mismatch(ckpt["optimizer"], optimizer) or _rng_mismatch(ckpt.get("rng"))


def _optimizer_mismatch(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    groups = [g["params"] for g in optimizer.param_groups]
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list) \
            or not isinstance(saved.get("state"), dict):
        return "its optimizer state is not a torch optimizer state dict"
    sizes = [len(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list) else -1
             for g in saved["param_groups"]]
    if sizes != [len(g) for g in groups]:
        return (f"the optimizer's parameter groups hold {sizes} parameters in the checkpoint but "
                f"{[len(g) for g in groups]} in the model")
    params = [p for g in groups for p in g]
    for index, state in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params) or not isinstance(state, dict):
            return f"the optimizer state names parameter {index!r}, which the model's optimizer does not have"
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != params[index].shape:
                return (f"optimizer state {key!r} of parameter {index} is {tuple(value.shape)} in the checkpoint but "
                        f"{tuple(params[index].shape)} in the model")
    return None


def _rng_mismatch(rng: Any) -> str | None:
    expected = torch.get_rng_state()
    if not isinstance(rng, torch.Tensor) or rng.dtype != expected.dtype or rng.shape != expected.shape:
        return f"its random number generator state is not a {expected.dtype} tensor of {expected.numel()} bytes"
    return None
