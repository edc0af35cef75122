"""Checkpoints without pickle: tensors in a ``safetensors`` file, everything else as JSON in its header.

A checkpoint is one file, ``checkpoint.safetensors``. Its tensors (the model's and the optimizer's state, the
random number generators' states, any tensor a callback keeps) are stored by safetensors — a JSON header of
names, dtypes, shapes and byte offsets followed by raw little-endian bytes. The rest of the training state (epoch,
step, history, learning-rate scale, stop flags, the schedule and callbacks' state, the optimizer's hyper-parameters)
is a JSON document, the *sidecar*, kept in the same header under ``__metadata__`` (a string → string map that
safetensors reserves for this). Each tensor's place in the payload is a ``{"__tensor__": NAME}`` reference in the
sidecar. Reading parses JSON and copies bytes into tensors: no code in the file ever runs, unlike a pickle (even
``torch.load(weights_only=True)`` runs a restricted unpickler over the file).

The sidecar lives in the header, not in a second file, so that one ``os.replace`` commits a whole checkpoint:
``checkpoint.safetensors`` is the latest complete epoch; before it is replaced, the old one becomes
``checkpoint.prev.safetensors``. A crash at any moment leaves at least one complete, loadable file, and a
damaged latest file falls back to the previous one with a warning instead of losing the run. A file that loads
but does not fit the model it is restored into (another width, a missing layer: ``training_state_mismatch``) is
damaged for this run in the same way — torch's ``load_state_dict`` would stop with a multi-line ``RuntimeError``.

Checkpoints of earlier versions (``checkpoint.pt``, ``checkpoint.prev.pt``: pickles) still resume: they are read
with ``torch.load(weights_only=True)`` when a run directory has no checkpoint of the new format, rewritten in it
at once, and removed (a run directory then holds no ``.pt`` file).

Format of the sidecar (``FORMAT`` = 1): JSON with ``NaN``/``Infinity`` allowed (a diverged history holds them),
floats written with ``repr`` (exact round trip), and three tagged objects for what JSON lacks:
``{"__tensor__": name}``, ``{"__tuple__": [...]}`` and ``{"__dict__": [[key, value], ...]}`` (a mapping with keys
other than strings: the optimizer's state is keyed by parameter index).
"""

from __future__ import annotations

import json
import os
import re
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tricklab.errors import InputError
from tricklab.fsutil import atomic_write

LATEST = "checkpoint.safetensors"
PREVIOUS = "checkpoint.prev.safetensors"
LEGACY_LATEST = "checkpoint.pt"
LEGACY_PREVIOUS = "checkpoint.prev.pt"
CHECKPOINT_FILES = (LATEST, PREVIOUS, LEGACY_LATEST, LEGACY_PREVIOUS)
"""Every name a checkpoint may have in a run directory (the legacy ones until they are rewritten)."""
DAMAGED_SUFFIX = ".damaged"  # a damaged checkpoint that was passed over is kept under its name + this
SIDECAR_KEY = "tricklab"
"""The ``__metadata__`` entry of the safetensors header that holds the sidecar."""
FORMAT = 1
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch colours parts of its messages
REQUIRED_KEYS = ("epoch", "step", "model", "optimizer")
"""What every checkpoint holds; a file that loads but lacks them (another program's file, a bare state dict) is
treated as damaged, like one that does not load."""
_TAGS = ("__tensor__", "__tuple__", "__dict__")
MAX_HEADER_BYTES = 100_000_000
"""safetensors' own limit on the header's size: a larger length field is damage, not a header to allocate."""


# -- the format ---------------------------------------------------------------------------------------------------
def encode(payload: dict[str, Any]) -> bytes:
    """``payload`` (tensors, None, bools, ints, floats, strings, lists, tuples and dicts only) as the bytes of a
    safetensors file whose header carries the JSON sidecar. Raises ``TypeError`` for any other object."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def walk(obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            name = str(len(tensors))
            t = obj.detach().cpu()
            storage = t.untyped_storage().data_ptr()
            if storage in storages or not t.is_contiguous():   # safetensors refuses tensors that share memory (tied
                t = t.clone(memory_format=torch.contiguous_format)  # weights, views): those alone are copied
            storages.add(t.untyped_storage().data_ptr())
            tensors[name] = t
            return {"__tensor__": name}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if isinstance(obj, tuple):
            return {"__tuple__": [walk(v) for v in obj]}
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and k not in _TAGS for k in obj):
                return {k: walk(v) for k, v in obj.items()}
            return {"__dict__": [[walk(k), walk(v)] for k, v in obj.items()]}
        raise TypeError(f"a checkpoint holds tensors, numbers, strings, lists and dicts; not a {type(obj).__name__}")

    sidecar = json.dumps({"format": FORMAT, "payload": walk(payload)}, separators=(",", ":"))
    return save(tensors, metadata={SIDECAR_KEY: sidecar})


def decode(data: bytes) -> Any:
    """The payload of a checkpoint's bytes (``encode``'s inverse); tensors on the CPU. Raises ``ValueError`` for
    bytes that are not a tricklab checkpoint (safetensors' own errors for a damaged tensor section)."""
    from safetensors.torch import load

    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes: too short for a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(MAX_HEADER_BYTES, len(data) - 8):
        raise ValueError(f"its header claims {size} bytes, more than the file holds")
    header = json.loads(data[8:8 + size].decode("utf-8"))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get(SIDECAR_KEY), str):
        raise ValueError("a safetensors file without tricklab's sidecar")
    sidecar = json.loads(meta[SIDECAR_KEY])
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise ValueError(f"sidecar format {sidecar.get('format') if isinstance(sidecar, dict) else '?'}; "
                         f"this version reads format {FORMAT}")
    tensors = load(data)

    def walk(obj: Any) -> Any:
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if len(obj) == 1:
            (tag, value), = obj.items()
            if tag == "__tensor__":
                if value not in tensors:
                    raise ValueError(f"the sidecar names tensor {value!r}, which the file does not hold")
                return tensors[value]
            if tag == "__tuple__" and isinstance(value, list):
                return tuple(walk(v) for v in value)
            if tag == "__dict__" and isinstance(value, list):
                if not all(isinstance(kv, list) and len(kv) == 2 for kv in value):
                    raise ValueError("a malformed __dict__ in the sidecar")
                return {_key(walk(k)): walk(v) for k, v in value}
        return {k: walk(v) for k, v in obj.items()}

    return walk(sidecar["payload"])


def _key(key: Any) -> Any:
    if isinstance(key, (list, dict, torch.Tensor)):
        raise ValueError(f"a {type(key).__name__} as a mapping key in the sidecar")
    return key


def read_checkpoint_file(path: str | os.PathLike[str]) -> Any:
    """The payload of one checkpoint file: the safetensors format, or a legacy ``.pt`` read with
    ``torch.load(weights_only=True)``; tensors on the CPU."""
    p = Path(path)
    if p.name.endswith(".pt") or p.name.endswith(".pt" + DAMAGED_SUFFIX):
        return torch.load(p, map_location="cpu", weights_only=True)
    return decode(p.read_bytes())


# -- saving and loading a run's checkpoints -------------------------------------------------------------------------
def save_checkpoint(directory: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Save ``payload`` (tensors, numbers, strings, lists, tuples, dicts only) as the latest checkpoint."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    latest = d / LATEST
    # Serialised in memory first: a failure to encode leaves the files as they were, and writing finished bytes on a
    # full disk fails with the OSError(ENOSPC) that says what happened.
    data = encode(payload)
    if latest.exists():
        os.replace(latest, d / PREVIOUS)
    atomic_write(latest, lambda fh: fh.write(data))
    return latest


def load_checkpoint(directory: str | os.PathLike[str], map_location: Any = "cpu", *,
                    fits: Callable[[dict[str, Any]], str | None] | None = None) -> dict[str, Any] | None:
    """The newest loadable checkpoint in ``directory``, or None when there is none yet.

    Never runs code from the file (see the module's docstring). A damaged latest file (unreadable, not a dict with
    ``REQUIRED_KEYS``, or one that ``fits`` — a function saying why a checkpoint does not fit what it will be
    restored into, None when it does — refuses) falls back to the previous one, with a warning, and is renamed to
    ``checkpoint.safetensors.damaged``; if every file present is damaged, an ``InputError`` names them and nothing
    is renamed. A directory with only legacy ``.pt`` checkpoints is read from those and rewritten in the new format
    (``_rewrite_legacy``). Tensors are moved to ``map_location`` (the RNG states stay where torch needs them: the
    caller hands them to ``torch.set_rng_state``, which takes CPU tensors only, so keep the default "cpu" there).
    """
    d = Path(directory)
    legacy = not any((d / n).exists() for n in (LATEST, PREVIOUS))
    names = (LEGACY_LATEST, LEGACY_PREVIOUS) if legacy else (LATEST, PREVIOUS)
    errors: list[str] = []
    damaged: list[Path] = []
    unfit = False  # a file loaded but did not fit the model
    for name in names:
        path = d / name
        if not path.exists():
            continue
        try:
            ckpt = read_checkpoint_file(path)
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
        if legacy:
            _rewrite_legacy(d, path, ckpt, fits)
        return _to_device(ckpt, map_location) if map_location not in (None, "cpu") else ckpt
    if errors:
        raise InputError("--resume", "no loadable checkpoint: " + "; ".join(errors),
                         "checkpoints of the model this run was started with; a changed model is a new run"
                         if unfit else None)
    return None


def _rewrite_legacy(d: Path, used: Path, ckpt: dict[str, Any], fits: Callable[[dict[str, Any]], str | None] | None
                    ) -> None:
    """``ckpt`` (read from the legacy file ``used``) becomes ``checkpoint.safetensors``; when ``used`` was the
    legacy latest file and the legacy previous one reads and fits too, it becomes ``checkpoint.prev.safetensors``.
    Then the legacy files go. Written before anything is removed: a crash in between leaves a readable copy."""
    if used.name == LEGACY_LATEST and (d / LEGACY_PREVIOUS).exists():
        try:
            older = read_checkpoint_file(d / LEGACY_PREVIOUS)
            ok = isinstance(older, dict) and all(k in older for k in REQUIRED_KEYS) and (fits is None or not fits(older))
        except Exception:  # noqa: BLE001 - an unreadable previous copy is simply not carried over
            ok = False
        if ok:
            data = encode(older)
            atomic_write(d / PREVIOUS, lambda fh: fh.write(data))
    latest = encode(ckpt)
    atomic_write(d / LATEST, lambda fh: fh.write(latest))
    for name in (LEGACY_LATEST, LEGACY_PREVIOUS):
        (d / name).unlink(missing_ok=True)


def _to_device(obj: Any, device: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: (v if k in ("rng", "cuda_rng") else _to_device(v, device)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


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
