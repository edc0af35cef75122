"""A user's own model: ``model: {python: "pkg.module:factory"}`` in a recipe.

tricklab imports ``pkg.module`` (only when a recipe names it), calls ``factory(input_shape, num_classes)``
with the data's input shape (without the batch dimension) and class count, and then treats the returned
``nn.Module`` like a built-in one (the recipe's init, optimizer, tricks and the doctor all apply).

Before training, the model is tried once (``check_user_model``): it must have parameters, at least one of them
trainable, all of them float32 (the data and every trick are float32), and its forward must map a batch of two
inputs of the data's shape to one tensor of logits of shape (2, num_classes) — run in eval mode under
``torch.no_grad()`` (batch norm's running statistics stay untouched), with the random number generators saved
and restored, so a seeded run is the same as without the check. Every failure — importing, calling the factory,
the check, ``sys.exit()`` anywhere in the user's code — becomes an ``InputError`` on ``model.python`` that names
the factory, says what is wrong and points at the user's own line (file:line and its code), never at tricklab's.
``KeyboardInterrupt`` is never caught: Ctrl-C still stops the run.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from tricklab.errors import InputError
from tricklab.user_code import describe, import_factory, user_frame

FIELD = "model.python"
SPEC_FORMAT = '"package.module:factory", e.g. "mymodels.nets:make_net"'
FACTORY_CONTRACT = "a factory(input_shape, num_classes) (or one without arguments) that returns a torch.nn.Module"
TRIAL_BATCH = 2
"""Examples in the trial forward pass: the smallest batch whose shape shows the batch dimension is kept."""


def load_user_model(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Import ``spec`` = "pkg.module:factory", return ``factory(input_shape, num_classes)`` once it passed
    ``check_user_model``.

    ``factory`` may be a dotted attribute path inside the module (``"pkg.mod:Nets.small"``). Raises
    ``InputError("model.python", ...)`` for a malformed spec, a module that cannot be imported, a missing or
    non-callable factory, a factory that raises (or exits), a result that is not an ``nn.Module``, and a model
    that fails the check.
    """
    factory = import_factory(spec, FIELD, SPEC_FORMAT)
    shape = tuple(input_shape)
    try:
        model = factory() if _takes_no_arguments(factory, shape, num_classes) else factory(shape, num_classes)
    except (Exception, SystemExit) as exc:
        raise InputError(FIELD, f"{spec}({shape}, {num_classes}) raised {describe(exc)}{user_frame(exc)}",
                         FACTORY_CONTRACT) from None
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise InputError(FIELD, f"{spec} returned the class {model.__name__}, not a model: return an instance, "
                                f"{model.__name__}(...)", FACTORY_CONTRACT)
    if not isinstance(model, nn.Module):
        raise InputError(FIELD, f"{spec} returned a {type(model).__name__}, not a torch.nn.Module", FACTORY_CONTRACT)
    check_user_model(model, spec, shape, num_classes)
    return model


def _takes_no_arguments(factory: Any, *args: Any) -> bool:
    """True for a factory that cannot take ``(input_shape, num_classes)`` but can be called with nothing —
    ``def make(): return Net()``, the model's sizes fixed in the user's code (its output width is then checked
    like any other's). A factory whose signature cannot be read is called with both."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(*args)
        return False
    except TypeError:
        pass
    try:
        signature.bind()
        return True
    except TypeError:
        return False


def check_user_model(model: nn.Module, spec: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse a model that cannot be trained as a classifier of ``input_shape`` into ``num_classes`` (see the
    module's docstring); ``spec`` names it in the messages. Leaves the model's mode and the RNG states as found."""
    params = list(model.parameters())
    name = f"{spec} returned a {type(model).__name__}"
    if not params:
        raise InputError(FIELD, f"{name} without parameters: there is nothing to train",
                         "a model with trainable parameters (nn.Linear, nn.Conv1d, ... registered as submodules)")
    if not any(p.requires_grad for p in params):
        raise InputError(FIELD, f"{name} whose {len(params)} parameters are all frozen (requires_grad=False): there "
                                "is nothing to train", "a model with at least one parameter that requires grad")
    tensors = params + [b for b in model.buffers() if b.is_floating_point()]
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors if t.dtype != torch.float32})
    if dtypes:
        raise InputError(FIELD, f"{name} with {', '.join(dtypes)} parameters or buffers; tricklab's data and tricks "
                                "are float32: return model.float() from the factory", "float32 parameters")
    expected = (TRIAL_BATCH, num_classes)
    batch = (TRIAL_BATCH, *input_shape)
    wanted = f"a forward that maps inputs {batch} to one tensor of logits {expected}"
    out = _trial_forward(model, spec, batch, params[0].device)
    if not isinstance(out, torch.Tensor):
        got = "None" if out is None else f"a {type(out).__name__}"
        raise InputError(FIELD, f"{spec}: forward returned {got}, not one tensor of logits "
                                "(return only the logits; keep extra outputs out of forward)", wanted)
    if tuple(out.shape) != expected:
        what = (f"{out.shape[-1]} outputs per example for {num_classes} classes" if out.ndim == 2
                and out.shape[0] == TRIAL_BATCH else f"shape {tuple(out.shape)}")
        raise InputError(FIELD, f"{spec}: forward on inputs of shape {batch} returned {what}; expected "
                                f"{expected}, one logit per class", wanted)
    if not out.is_floating_point():
        raise InputError(FIELD, f"{spec}: forward returned {out.dtype} values; logits are floating point", wanted)


def _trial_forward(model: nn.Module, spec: str, batch: tuple[int, ...], device: torch.device) -> object:
    """``model`` on ``batch``-shaped standard-normal inputs (from a private generator), in eval mode, without
    gradients, the global RNG states saved and restored (also for CUDA when the model is there)."""
    x = torch.randn(batch, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        model.eval()
        try:
            with torch.no_grad():
                return model(x)
        except (Exception, SystemExit) as exc:
            raise InputError(FIELD, f"{spec}: forward on inputs of shape {batch} raised {describe(exc)}"
                                    f"{user_frame(exc)}", "a model that accepts the data's input shape") from None
        finally:
            model.train(was_training)
