"""Activation capture independent of modules: every activation *function* a forward pass calls, wherever it is.

Most hand-written models call their activations as functions inside ``forward`` (``F.relu(self.fc1(x))``,
``torch.sigmoid(h)``, ``x.clamp(min=0)``, ``F.gelu``); an ``nn.ReLU`` module calls ``F.relu`` too. Forward
hooks on activation *modules* see only the second kind. ``ActivationCapture`` is a
``torch.overrides.TorchFunctionMode`` — PyTorch's own interposition point for every ``torch`` function and
``Tensor`` method called from Python — pushed on probe steps only (``Probe.begin`` enters it, the end of the
model's forward pass leaves it), so on other steps nothing is intercepted and the loop runs at full speed.

While it is active each call is run as it would be, then classified by ``call_family``:

- an activation of a known family (``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``, ``gelu``, ``selu``; the
  families of ``tricklab.tricks.activations``) is handed to the probe with its input and output, which pairs it
  with the weight layer that ran last (the execution-order attribution described in ``probes``);
- any other nonlinearity (softmax in attention, max pooling, a recurrent cell's gates computed inside
  ``torch.gru``/``torch.lstm``, ``F.glu``) is only counted: the linear-model check asks whether *anything*
  nonlinear runs between two weight layers.

``x.clamp(min=0)``/``torch.clamp_min(x, 0)`` is a ReLU; ``clamp`` with other bounds is not an activation.

The mode has a price: every op of the armed forward pass — the model's and the probe's own statistics — passes
through Python (about 2 ms of a 6 ms step for the default MLP, ``bench/probe_overhead.py``). ``Capture`` therefore
uses it only until it has seen that forward hooks on the model's activation *modules* (``MODULE_FAMILIES``) report
exactly the calls the mode reports, in the same order — true for a model whose every activation is a module;
false as soon as one is a function, a module calls one, or an ``nn.ReLU`` is followed by ``F.relu``. Then the
hooks report the calls, and every ``RECHECK``-th armed pass runs the mode again beside shadow hooks to confirm
(a model whose forward branches on its input is caught there and goes back to the mode).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

T = torch.Tensor

ACTIVATION_FUNCTIONS: dict[Any, str] = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", T.relu: "relu", T.relu_: "relu", F.relu6: "relu",
    F.leaky_relu: "leaky_relu", F.prelu: "leaky_relu", F.rrelu: "leaky_relu", torch.prelu: "leaky_relu",
    torch.tanh: "tanh", T.tanh: "tanh", T.tanh_: "tanh", F.tanh: "tanh", F.hardtanh: "tanh",
    torch.sigmoid: "sigmoid", T.sigmoid: "sigmoid", T.sigmoid_: "sigmoid", F.sigmoid: "sigmoid",
    torch.special.expit: "sigmoid", F.hardsigmoid: "sigmoid",
    F.gelu: "gelu", F.silu: "gelu", F.mish: "gelu", F.hardswish: "gelu",
    F.elu: "selu", F.selu: "selu", F.celu: "selu", torch.selu: "selu",
}
"""Function → activation family (``tricklab.tricks.activations``' families; SiLU and Mish are GELU-like)."""

CLAMPS = frozenset({torch.clamp, T.clamp, T.clamp_, torch.clamp_min, T.clamp_min, T.clamp_min_, torch.clip,
                    T.clip})
"""``clamp(x, min=0)`` (no upper bound) is a ReLU written by hand."""

OTHER_NONLINEAR = frozenset({
    F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, T.softmax, T.log_softmax,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    torch.max_pool1d, torch.max_pool2d, F.glu, torch.gru, torch.lstm, torch.rnn_tanh, torch.rnn_relu,
    torch.gru_cell, torch.lstm_cell, torch.rnn_tanh_cell, torch.rnn_relu_cell, F.softplus, F.softsign,
    F.tanhshrink, F.logsigmoid, torch.abs, T.abs, torch.exp, T.exp, F.scaled_dot_product_attention,
    F.multi_head_attention_forward,
})
"""Nonlinear functions that are not a unit's activation: counted for the linear-model check only."""


_CALLS: dict[Any, str] = {**{f: "other" for f in OTHER_NONLINEAR}, **{f: "clamp" for f in CLAMPS},
                          **ACTIVATION_FUNCTIONS}
"""Every function the capture looks at → its family, ``clamp`` or ``other``: one dictionary lookup per call."""


def _clamp_is_relu(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    low = kwargs.get("min", args[1] if len(args) > 1 else None)
    high = kwargs.get("max", args[2] if len(args) > 2 else None)
    return isinstance(low, (int, float)) and not isinstance(low, bool) and low == 0 and high is None


def call_family(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The activation family of one call (``relu`` … ``selu``), ``"other"`` for another nonlinearity, else None."""
    try:
        family = _CALLS.get(func)
    except TypeError:     # an unhashable callable: not one of ours
        return None
    if family == "clamp":
        return "relu" if _clamp_is_relu(args, kwargs) else None
    return family


class ActivationCapture(TorchFunctionMode):
    """A ``TorchFunctionMode`` that reports each activation call: ``on_call(family, input, output)`` with
    ``family`` from ``call_family``. Enter it for one forward pass (``start``/``stop``); see the module docstring."""

    def __init__(self, on_call: Callable[[str, torch.Tensor | None, torch.Tensor], None]) -> None:
        super().__init__()
        self.on_call = on_call
        self.active = False

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        family = call_family(func, args, kwargs)
        if family is not None:
            result = out[0] if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor) else out
            if isinstance(result, torch.Tensor):
                first = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input")
                self.on_call(family, first if isinstance(first, torch.Tensor) else None, result)
        return out

    def start(self) -> None:
        """Push the mode (no-op when it is active already)."""
        if not self.active:
            self.__enter__()
            self.active = True

    def stop(self) -> None:
        """Pop the mode (no-op when it is not active)."""
        if self.active:
            self.active = False
            self.__exit__(None, None, None)


MODULE_FAMILIES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.PReLU: "leaky_relu", nn.RReLU: "leaky_relu",
    nn.Tanh: "tanh", nn.Hardtanh: "tanh", nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "sigmoid",
    nn.GELU: "gelu", nn.SiLU: "gelu", nn.Mish: "gelu", nn.Hardswish: "gelu", nn.ELU: "selu", nn.SELU: "selu",
    nn.CELU: "selu", nn.Softmax: "other", nn.LogSoftmax: "other", nn.MaxPool1d: "other", nn.MaxPool2d: "other",
    nn.MaxPool3d: "other", nn.AdaptiveMaxPool1d: "other", nn.AdaptiveMaxPool2d: "other", nn.GLU: "other",
    nn.Softplus: "other", nn.Softsign: "other", nn.Tanhshrink: "other", nn.LogSigmoid: "other",
}
"""Activation modules → the family ``call_family`` gives the function their ``forward`` calls (``nn.ReLU6`` is an
``nn.Hardtanh``, which calls ``F.hardtanh``: ``tanh`` for both). A class not here is looked up by its bases."""

RECHECK = 16
"""Every 16th armed pass runs the mode again beside shadow hooks, once the hooks were trusted."""


def module_family(module: nn.Module) -> str | None:
    """The family of an activation module (its class or the nearest base in ``MODULE_FAMILIES``), else None."""
    for cls in type(module).__mro__:
        family = MODULE_FAMILIES.get(cls)
        if family is not None:
            return family
    return None


def _result(output: Any) -> torch.Tensor | None:
    """The tensor an activation call produced (the first one of a tuple, as a recurrent module returns)."""
    out = output[0] if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor) else output
    return out if isinstance(out, torch.Tensor) else None


class Capture:
    """The activation calls of one armed forward pass, by the mode or by module hooks (see the module docstring).

    ``start()`` before the pass, ``stop(finished=True)`` when it ended (``stop()`` to abandon it); ``on_call``
    receives ``(family, input, output)`` either way. ``trusted``: the hooks were seen to report what the mode does.
    """

    def __init__(self, model: nn.Module, on_call: Callable[[str, torch.Tensor | None, torch.Tensor], None]) -> None:
        self.on_call = on_call
        self.mode = ActivationCapture(self._from_mode)
        self.modules = [(m, family) for m in model.modules() if (family := module_family(m)) is not None]
        self.trusted = False
        self.verifying = False
        self.passes = 0
        self._handles: list[Any] = []
        self._seen: list[str] = []       # the mode's calls in this pass
        self._shadow: list[str] = []     # the module hooks' calls in this pass (verifying)

    @property
    def active(self) -> bool:
        return self.mode.active or bool(self._handles)

    def start(self) -> None:
        if self.active:
            return
        self.passes += 1
        self.verifying = not self.trusted or self.passes % RECHECK == 0
        self._seen, self._shadow = [], []
        hook = self._shadow_hook if self.verifying else self._module_hook
        self._handles = [m.register_forward_hook(functools.partial(hook, family)) for m, family in self.modules]
        if self.verifying:
            self.mode.start()

    def stop(self, finished: bool = False) -> None:
        self.mode.stop()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self.verifying and finished:
            self.trusted = self._seen == self._shadow
        self.verifying = False

    def _from_mode(self, family: str, u: torch.Tensor | None, output: torch.Tensor) -> None:
        self._seen.append(family)
        self.on_call(family, u, output)

    def _shadow_hook(self, family: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if _result(output) is not None:
            self._shadow.append(family)

    def _module_hook(self, family: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        result = _result(output)
        if result is not None:
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            self.on_call(family, first, result)
