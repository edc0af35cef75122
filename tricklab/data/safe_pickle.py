"""Read a Python pickle that may only contain plain data and NumPy arrays; refuse everything else.

``pickle.load`` runs whatever callable a file names (``os.system`` included), so loading a pickle from an
untrusted download is running untrusted code (Python docs, "pickle — Warning"). CIFAR-10's "python version"
ships as pickles, so tricklab reads them through ``RestrictedUnpickler``, whose ``find_class`` — the only way a
pickle can reach a global — hands out exactly the builtins ``dict``, ``list``, ``bytes``, ``str``, ``int`` and
NumPy's ndarray reconstruction (``_reconstruct``, ``ndarray``, ``dtype``), and raises ``InputError`` for any
other name. The CIFAR files were written by Python 2, so ``__builtin__`` and ``numpy.core`` spellings map to
the same objects; ``encoding="bytes"`` reads Python 2 strings as ``bytes``, as the CIFAR page instructs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.errors import InputError

_RECONSTRUCT = np.ndarray(0).__reduce__()[0]  # numpy's ``_core.multiarray._reconstruct``, however it is spelled

ALLOWED: dict[tuple[str, str], Any] = {
    **{
        (module, kind.__name__): kind
        for module in ("builtins", "__builtin__")
        for kind in (dict, list, bytes, str, int)
    },
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``ALLOWED``; ``source`` names the file in messages."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED.get((module, name))
        if allowed is None:
            raise InputError(
                "data.path",
                f"refused to load {self.source}: the pickle asks for {module}.{name}, which is not plain data "
                "(a pickle can run code; only data and NumPy arrays are read)",
                allowed=sorted({f"{m}.{n}" for m, n in ALLOWED if m != "__builtin__"}),
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise InputError("data.path", f"refused to load {self.source}: it refers to external objects")


def load_pickle(file: Path) -> Any:
    """The object pickled in ``file``, read with ``RestrictedUnpickler``; ``InputError`` if refused or broken."""
    try:
        with open(file, "rb") as fh:
            return RestrictedUnpickler(fh, str(file)).load()
    except InputError:
        raise
    except Exception as err:  # a broken pickle fails in many ways (EOFError, UnpicklingError, ValueError, ...)
        raise InputError("data.path", f"cannot read {file} as a pickle: {type(err).__name__}: {err}") from None
