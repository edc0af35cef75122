"""A user's own code named in a recipe — ``"package.module:factory"`` (``model.python``, ``data.python``): imported
only when a recipe names it, and every failure told in the user's terms.

``import_factory`` turns the reference into the callable or raises an ``InputError`` on the recipe field that
names it: a malformed reference, a module that cannot be imported (or fails, or calls ``sys.exit()``, while
importing), a missing attribute, something that is not callable. ``describe`` and ``user_frame`` word an
exception raised inside the user's code: its type and first line, and the user's own line (file:line and its
code) — never tricklab's, torch's or the standard library's. ``KeyboardInterrupt`` is never caught.

A base module (no torch import: torch's location is looked up, not imported), so that ``models`` and ``data``,
independent layers, share it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tricklab.errors import InputError

SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
"""``package.module:factory``, the factory possibly a dotted attribute path (``pkg.mod:Nets.small``)."""


def _libraries() -> tuple[Path, ...]:
    paths = [Path(__file__).resolve().parent]
    torch_spec = importlib.util.find_spec("torch")
    if torch_spec is not None and torch_spec.origin:
        paths.append(Path(torch_spec.origin).resolve().parent)
    return tuple(paths)


_LIBRARIES = _libraries()
_STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def import_factory(spec: Any, field: str, spec_format: str) -> Callable[..., Any]:
    """The callable ``spec`` names; an ``InputError`` on ``field`` (``spec_format``: the allowed form, with an
    example) for every way it cannot be had."""
    if not isinstance(spec, str) or not SPEC.match(spec.strip()):
        raise InputError(field, f"{spec!r} is not a factory reference", spec_format)
    module_name, attr_path = spec.strip().split(":")
    try:
        module = _import(module_name)
    except ImportError as exc:
        raise InputError(field, f"cannot import module {module_name!r} ({exc}){user_frame(exc)}; is it in the "
                                "current directory or its folder on PYTHONPATH?", spec_format) from None
    except (Exception, SystemExit) as exc:  # the user's module itself fails (or exits) while being imported
        raise InputError(field, f"importing {module_name!r} failed: {describe(exc)}{user_frame(exc)}") from None
    factory: object = module
    for part in attr_path.split("."):
        if not hasattr(factory, part):
            raise InputError(field, f"module {module_name!r} has no attribute {attr_path!r}", spec_format)
        factory = getattr(factory, part)
    if not callable(factory):
        raise InputError(field, f"{spec!r} is a {type(factory).__name__}, not a callable factory", spec_format)
    return factory


def _import(module_name: str) -> Any:
    """``importlib.import_module``, and where the module's top-level package is not found, again with the current
    directory on ``sys.path`` — as ``python -m tricklab`` and ``python script.py`` have it, so ``mymodels.py``
    beside the command works for the ``tricklab`` console script too (whose ``sys.path`` starts at its bin/)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        if exc.name != module_name.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, cwd)   # kept: the module may import its siblings later
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as again:
            if again.name == exc.name:   # not there either: as it was
                sys.path.remove(cwd)
            raise


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``; for ``SystemExit``, that the user's code called ``sys.exit``."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}): the code called sys.exit() or raised SystemExit"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def user_frame(exc: BaseException) -> str:
    """`` (at FILE:LINE: CODE)`` for the user's own line where ``exc`` arose: the innermost frame of its traceback
    outside tricklab, torch and Python's standard library (a ``SyntaxError``: the line it names); '' if none."""
    if isinstance(exc, SyntaxError) and exc.filename:
        code = f": {exc.text.strip()}" if exc.text and exc.text.strip() else ""
        return f" (at {exc.filename}:{exc.lineno}{code})"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.startswith("<") or _is_library(frame.filename):
            continue
        code = f": {frame.line.strip()}" if frame.line and frame.line.strip() else ""
        return f" (at {frame.filename}:{frame.lineno}{code})"
    return ""


def _is_library(filename: str) -> bool:
    """Whether ``filename`` belongs to tricklab, torch or the standard library (not to its site-packages)."""
    path = Path(filename).resolve()
    if any(path.is_relative_to(lib) for lib in _LIBRARIES):
        return True
    return path.is_relative_to(_STDLIB) and "site-packages" not in path.relative_to(_STDLIB).parts
