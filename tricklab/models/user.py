"""A user's own model: ``model: {python: "pkg.module:factory"}`` in a recipe.

tricklab imports ``pkg.module`` (only when a recipe names it), calls ``factory(input_shape, num_classes)``
with the data's input shape (without the batch dimension) and class count, and then treats the returned
``nn.Module`` like a built-in one (the recipe's init, optimizer, tricks and the doctor all apply).
Every failure becomes an ``InputError`` on ``model.python`` that says what went wrong.
"""

from __future__ import annotations

import importlib
import re

from torch import nn

from tricklab.errors import InputError

FIELD = "model.python"
SPEC_FORMAT = '"package.module:factory", e.g. "mymodels.nets:make_net"'
_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_user_model(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Import ``spec`` = "pkg.module:factory" and return ``factory(input_shape, num_classes)``.

    ``factory`` may be a dotted attribute path inside the module (``"pkg.mod:Nets.small"``). Raises
    ``InputError("model.python", ...)`` for a malformed spec, a module that cannot be imported, a missing or
    non-callable factory, a factory that raises, and a result that is not an ``nn.Module``.
    """
    if not isinstance(spec, str) or not _SPEC.match(spec.strip()):
        raise InputError(FIELD, f"{spec!r} is not a factory reference", SPEC_FORMAT)
    module_name, attr_path = spec.strip().split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(
            FIELD, f"cannot import module {module_name!r} ({exc}); is its folder on PYTHONPATH?", SPEC_FORMAT
        ) from exc
    except Exception as exc:  # the user's module itself fails while being imported
        raise InputError(FIELD, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    factory: object = module
    for part in attr_path.split("."):
        if not hasattr(factory, part):
            raise InputError(FIELD, f"module {module_name!r} has no attribute {attr_path!r}", SPEC_FORMAT)
        factory = getattr(factory, part)
    if not callable(factory):
        raise InputError(FIELD, f"{spec!r} is a {type(factory).__name__}, not a callable factory", SPEC_FORMAT)
    shape = tuple(input_shape)
    try:
        model = factory(shape, num_classes)
    except Exception as exc:
        raise InputError(
            FIELD,
            f"{spec}({shape}, {num_classes}) raised {type(exc).__name__}: {exc}",
            "a factory(input_shape, num_classes) that returns a torch.nn.Module",
        ) from exc
    if not isinstance(model, nn.Module):
        raise InputError(
            FIELD,
            f"{spec} returned a {type(model).__name__}, not a torch.nn.Module",
            "a factory(input_shape, num_classes) that returns a torch.nn.Module",
        )
    return model
