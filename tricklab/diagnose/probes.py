"""The probe: per-layer statistics of one training step, read from the device with one host sync.

Every ``every`` steps the probe arms forward hooks for one forward pass and measures, per weight layer
(``nn.Linear``, ``nn.Conv1d/2d/3d``, weight-norm parametrised ones included):

- ``pre_mean``/``pre_std``: the layer's output (before norm and activation);
- ``act_mean``/``act_std``: the output of the activation module that follows it; ``frac_saturated`` for
  tanh (|a| > 0.97) and sigmoid (a < 0.03 or a > 0.97); ``frac_dead`` for the ReLU family: the share of units
  (features of a Linear, channels of a convolution) whose activation *input* is <= 0 for every example and
  position of the batch — fastai's ``ActivationStats`` and AUTOTRAINER (Zhang et al. 2021, ICSE) watch the
  same quantities;
- ``grad_norm`` ‖∂L/∂W‖ (weight only, before clipping) and the global norm of all gradients;
- ``weight_norm`` ‖W‖ and ``update_ratio`` ‖W_after − W_before‖/‖W_before‖ of this step's optimizer update —
  Karpathy's heuristic ("CS231n: Neural Networks Part 3"): about 1e-3 is healthy; far below, the learning
  rate is too low; far above, too high.

Which activation follows which weight layer is read from the execution order of an armed forward pass: the
first activation call — a module's or a function's (``F.relu``, ``torch.sigmoid``, ``x.clamp(min=0)``: see
``functional``) — run after weight layer k and before the next weight layer belongs to k. So ``HiddenLayer``
(weights → norm → activation) pairs each layer with its own activation, as does ``F.relu(self.fc1(x))``. In a
pre-activation ResNet
(norm → act → conv inside each block) the activation that opens block b+1 is attributed to the last conv of
block b (it runs after it and before the next conv), although its input is the residual sum x + F(x), not
that conv's output alone; the stem is paired with the first block's opening activation and the last conv
with the final norm → activation. ``depth_index`` is the order of first execution, fixed the first time a
layer runs in an armed forward pass.

Means and standard deviations are over every element (examples × units × positions); the standard deviation
is the population one (divide by n), computed in two passes, ‖t − mean‖/√n, for numerical stability.

Cost model. On a step the probe does not want, nothing runs: no hook is registered (a module with any hook
leaves PyTorch's fast ``__call__`` path; permanent hooks that return at once measured +1–2% on every step of
the bench), and ``begin``/``after_backward``/``after_step`` return on a Python bool. On an armed step, hooks
are registered in ``begin`` and removed when the model's forward pass ends (activation calls are seen through a
``TorchFunctionMode`` until hooks on the activation modules are seen to report the same calls, ``functional.Capture``:
the mode routes every op through Python and cost the default MLP a third of its every-step overhead); every
statistic stays a device
tensor until ``after_step`` stacks them all and reads them with one ``.tolist()``. Only the first forward
pass after ``begin`` is measured (later ones — gradient accumulation, an evaluation in training mode — are
not). Between ``after_backward`` and ``after_step`` the probe holds one copy of the weight layers' weights
(for ‖ΔW‖); after ``after_step`` it holds no tensor at all.

Non-finite values do not raise: a NaN/Inf statistic is reported as ``float('nan')``/``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from tricklab.diagnose.detectors.precision import FP16_TINY
from tricklab.diagnose.functional import Capture
from tricklab.diagnose.records import LayerStats, ProbeRecord
from tricklab.tricks.activations import RECTIFIERS as DEAD_FAMILIES
from tricklab.tricks.activations import SATURATION, activation_family  # noqa: F401  (re-exported)
from tricklab.tricks.init import layer_kind

UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "UNKNOWN"})()
"""``Probe.scaler`` when the loop has not said whether a loss scaler runs (``None`` says: none runs)."""

DEFAULT_EVERY = 20
"""Probe every 20th step: the worst measured overhead stays under 5% and MNIST-1D (57 steps per epoch at batch
64) still gets ~3 records per epoch. ``bench/probe_overhead.py`` (600 AdamW steps, batch 64; 2-core x86_64 CPU
shared with other jobs, 1 torch thread, torch 2.13.0+cpu; median CPU time over the bare loop's; two sessions
of 7 and 5 runs): default CNN 1.000 / 1.031 at every 20 (every 10: 1.012 / 1.034, every 50: 1.002 / 1.020,
every step: 1.224 / 1.221); its MLP variant 1.044 / 1.013 (every 10: 1.061 / 1.020, every 50: 1.013 / 0.993,
every step: 1.451 / 1.422); run-to-run noise is about ±2%. The MLP pays most at every step: its steps are short
(3.2 ms) and a probe step's fixed costs (~1.4 ms: hooks, the weight copy, the read) weigh more there."""

def _detached(t: torch.Tensor) -> torch.Tensor:
    """Detached (no autograd graph for the statistics), in float32 at least (half precision rounds too coarsely)."""
    t = t.detach()
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _first_tensor(args: tuple[Any, ...]) -> torch.Tensor | None:
    return next((a for a in args if isinstance(a, torch.Tensor)), None)


class Moments:
    """Mean and population standard deviation of a tensor, two-pass (stable): std = ‖t − mean‖/√n.

    Holds device tensors (mean, ‖t − mean‖) and n; the division happens on the host after the read.
    ``torch.std_mean`` (Welford) measured 10–20× slower on CPU for a (64, 32, 40) activation (566 vs 28 µs).
    """

    __slots__ = ("mean", "deviation", "n")

    def __init__(self, t: torch.Tensor) -> None:
        self.mean = t.mean()
        self.deviation = torch.linalg.vector_norm(t - self.mean)
        self.n = max(t.numel(), 1)


def fraction_saturated(a: torch.Tensor, centre: float, width: float) -> torch.Tensor:
    """Share of elements with |a − centre| > width, in float arithmetic: sign(relu(|a − c| − w)) is 1 or 0.

    Comparisons (``>`` → bool → float) measured 3–5× slower than this on CPU.
    """
    d = (a - centre).abs_() if centre else a.abs()
    return d.sub_(width).clamp_(min=0).sign_().mean()


def count_dead(u: torch.Tensor, unit_dim: int) -> tuple[torch.Tensor, int]:
    """(how many, out of how many) units along ``unit_dim`` have input ``u`` <= 0 everywhere in the batch.

    The peak over examples and positions is taken examples first, then positions: measured 4× faster on CPU
    than one ``amax`` over dims (0, 2).
    """
    if u.dim() <= 1:
        peak = u.reshape(-1)
    else:
        unit_dim %= u.dim()
        if unit_dim == u.dim() - 1:
            peak = u.reshape(-1, u.shape[-1]).amax(0)
        else:
            peak = u.amax(0)
            peak = peak.flatten(1).amax(1) if peak.dim() > 1 else peak
    return (peak <= 0).sum(), max(peak.numel(), 1)


class Readout:
    """0-d device tensors gathered during one probe step and read to the host together: the one sync."""

    def __init__(self) -> None:
        self._scalars: list[torch.Tensor] = []
        self._values: list[float] = []

    def add(self, t: torch.Tensor | None) -> int | None:
        """Add a 0-d tensor; returns its key (None passes through)."""
        if t is None:
            return None
        self._scalars.append(t)
        return len(self._scalars) - 1

    def read(self) -> None:
        """Stack everything on one device in one dtype, then one ``.tolist()``."""
        if not self._scalars:
            return
        device = self._scalars[0].device
        dtype = torch.float64 if any(t.dtype == torch.float64 for t in self._scalars) else torch.float32
        self._values = torch.stack([t if t.dtype == dtype and t.device == device else t.to(device, dtype)
                                    for t in self._scalars]).tolist()

    def get(self, key: int | None, default: float | None = math.nan) -> float | None:
        return default if key is None else self._values[key]


class Probe:
    """Per-layer statistics every ``every`` steps; see the module docstring for what and why.

    Per step, in this order: ``begin(step, x)`` before the forward pass, ``after_backward()`` after
    ``loss.backward()`` and before clipping and ``optimizer.step()``, ``after_step(loss, ...)`` after
    ``optimizer.step()``. ``after_step`` returns a ``ProbeRecord`` on probe steps, None otherwise.
    Call ``close()`` (or use ``with Probe(model) as probe:``) to remove every hook. Like an optimizer, the
    probe takes the model's layers and parameters when it is made: make it after weight norm is applied.

    Half precision: a weight layer's float16/bfloat16 output sets the record's ``compute_dtype``. ``scaler`` is
    the loop's loss scaler (``torch.amp.GradScaler``), or None when it has none: then float16 records carry the
    scale after the step's update and the share of gradient entries that float16 held as subnormals
    (``grad_subnormal``; measured on probe steps only, in float16 runs only). Left ``UNKNOWN``, neither is
    recorded — with a scaler unknown, unscaled gradients would read as underflow (``detectors.precision``).
    """

    def __init__(self, model: nn.Module, every: int = DEFAULT_EVERY, *, scaler: Any = UNKNOWN) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number >= 1, got {every!r}")
        self.model = model
        self.every = every
        self.scaler: Any = scaler              # the loop's loss scaler, None for none, ``UNKNOWN`` when not told
        self.layers: list[tuple[str, nn.Module, str]] = []      # (name, module, kind) in module order
        for name, module in model.named_modules():
            kind = layer_kind(module)
            if kind is not None:
                self.layers.append((name or type(module).__name__.lower(), module, kind))
        self.params = list(model.parameters())
        self._weight_hooks = [self._weight_hook(i) for i in range(len(self.layers))]
        self._grad_hooks = [self._weight_grad_hook(i) for i in range(len(self.layers))]
        self._capture = Capture(model, self._on_activation)   # functional and module activations alike
        self._fan_out = [int(m.weight.shape[0]) if getattr(m, "weight", None) is not None else 0
                         for _, m, _ in self.layers]
        self._depth: dict[int, int] = {}        # layer index → order of first execution (kept across steps)
        self._handles: list[Any] = []           # hooks of the current armed forward pass
        self._reset()

    def _reset(self) -> None:
        """Forget the armed step: after it, the probe holds no tensor."""
        self._armed = False
        self.step: int | None = None
        self._pending: int | None = None        # last weight layer run without an activation after it yet
        self._pre: dict[int, Moments] = {}
        self._in_norm: dict[int, tuple[torch.Tensor, int]] = {}   # ‖layer input‖ and its size (input rms)
        self._output: tuple[int, list[torch.Tensor]] | None = None  # the model output's width and statistics
        self._calls = 0                         # weight-layer calls in the armed forward pass
        self._nonlinear_since = False           # a nonlinear function ran since the last weight-layer call
        self._hidden_nonlinear = 0              # weight-layer calls preceded by one (after the first layer)
        self._last_call: tuple[str, int | None, torch.Tensor] | None = None   # the last activation call
        self._output_activation: str | None = None
        self._act: dict[int, tuple[str, Moments, torch.Tensor | None, tuple[torch.Tensor, int] | None]] = {}
        self._input: tuple[Moments, torch.Tensor] | None = None
        self._parametrized: set[int] = set()        # layers whose weight is computed (weight norm ...)
        self._wgrad: dict[int, torch.Tensor] = {}   # ∂L/∂W of parametrised weights (captured in backward)
        self._grads_seen = False
        self._param_grad_norms: list[torch.Tensor] = []
        self._layer_grad: dict[int, torch.Tensor | None] = {}
        self._weight_norm: dict[int, torch.Tensor] = {}
        self._before: list[torch.Tensor] | None = None
        self._measured: list[int] = []
        self._compute_dtype: torch.dtype | None = None   # a weight layer's output in float16/bfloat16
        self._subnormal: tuple[torch.Tensor, torch.Tensor] | None = None   # float16: (tiny, nonzero) entries

    def _remove_hooks(self) -> None:
        self._capture.stop()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- the step protocol ---------------------------------------------------------------------------
    def wants(self, step: int) -> bool:
        """True on the steps the probe measures (``step % every == 0``)."""
        return step % self.every == 0

    def begin(self, step: int, x: torch.Tensor | None = None) -> bool:
        """Arm the forward hooks for ``step`` if it is a probe step; ``x`` is the batch's inputs.

        Without ``x`` the first tensor argument of the model's forward call is taken. Calling ``begin``
        again for the armed step does nothing; a new step discards a step that never reached ``after_step``.
        """
        if self._armed:
            if step == self.step:
                return True
            self.close()
        if not self.wants(step):
            return False
        self._armed, self.step = True, step
        if x is not None:
            self._input_stats(x)
        else:
            self._handles.append(self.model.register_forward_pre_hook(self._on_model_input))
        for i, (_, module, _) in enumerate(self.layers):
            self._handles.append(module.register_forward_hook(self._weight_hooks[i]))
            if parametrize.is_parametrized(module, "weight"):
                self._parametrized.add(i)
                plist = module.parametrizations["weight"]
                self._handles.append(plist.register_forward_hook(self._grad_hooks[i]))
        self._handles.append(self.model.register_forward_hook(self._on_model_output))
        self._capture.start()
        return True

    def after_backward(self, *, snapshot: bool = True) -> None:
        """Gradient norms (per parameter, so per layer and global; as they are now: call it before clipping)
        and ‖W‖.

        ``snapshot`` keeps a copy of the weights so that ``after_step`` can measure the update; pass False
        when no optimizer step follows before ``after_step`` (update ratios are then None). Only the first
        call per probe step counts.
        """
        if not self._armed or self._grads_seen:
            return
        self._grads_seen = True
        self._measured = sorted(self._pre, key=self._depth.__getitem__)
        with torch.no_grad():
            params = [p for p in self.params if p.grad is not None and not p.grad.is_sparse]
            captured = [i for i in self._measured if i in self._wgrad]
            weights = [self.layers[i][1].weight.detach() for i in self._measured]
            # one call for every norm: gradients of all parameters, ∂L/∂W captured for parametrised layers, ‖W‖
            norms = torch._foreach_norm([p.grad for p in params] + [self._wgrad[i] for i in captured] + weights) \
                if params or weights else []
            n = len(params)
            self._param_grad_norms = list(norms[:n])
            self._layer_grad.update(zip(captured, norms[n:n + len(captured)]))
            self._weight_norm = dict(zip(self._measured, norms[n + len(captured):]))
            self._wgrad = {}
            position = {id(p): k for k, p in enumerate(params)}
            for i in self._measured:
                if i not in self._layer_grad and i not in self._parametrized:
                    k = position.get(id(self.layers[i][1].weight))
                    self._layer_grad[i] = norms[k] if k is not None else None
            if snapshot and weights:
                self._before = list(torch._foreach_mul(weights, 1.0))  # a copy: the optimizer updates in place
            if self._compute_dtype == torch.float16 and self.scaler is not UNKNOWN:
                self._subnormal = self._count_subnormal()

    def _count_subnormal(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(entries below float16's smallest normal after the loss scale, nonzero entries) of the measured weight
        layers' gradients — device tensors. The gradients here are unscaled (g = fp16 value / S), so |S·g| is the
        value float16 held."""
        grads = [g for i in self._measured if (g := self.layers[i][1].weight.grad) is not None and not g.is_sparse]
        if not grads:
            return None
        scale = current_scale(self.scaler)
        tiny = nonzero = None
        for g in grads:
            a = g.detach().abs()
            held = a > 0
            t, n = (((a * scale if scale is not None else a) < FP16_TINY) & held).sum(), held.sum()
            tiny, nonzero = (t, n) if tiny is None else (tiny + t, nonzero + n)
        return tiny, nonzero

    def after_step(
        self,
        loss: torch.Tensor | float,
        *,
        epoch: int = 0,
        lr: float | None = None,
        clip_fired: bool | None = None,
    ) -> ProbeRecord | None:
        """The record of this probe step (None on other steps), read with one host sync; disarms the probe."""
        if not self._armed:
            return None
        self._remove_hooks()
        self.after_backward(snapshot=False)  # a no-op when it ran already
        delta: dict[int, torch.Tensor] = {}
        if self._before is not None:
            with torch.no_grad():
                torch._foreach_sub_(self._before, [self.layers[i][1].weight.detach() for i in self._measured])
                delta = dict(zip(self._measured, torch._foreach_norm(self._before)))
            self._before = None

        out = Readout()
        loss_key = out.add(_detached(loss).mean()) if isinstance(loss, torch.Tensor) else None
        grad_keys = [out.add(n) for n in self._param_grad_norms]
        inputs = self._input
        input_keys = (out.add(inputs[0].mean), out.add(inputs[0].deviation), out.add(inputs[1])) \
            if inputs is not None else (None, None, None)
        output_dim, output_keys = (self._output[0], [out.add(t) for t in self._output[1]]) \
            if self._output is not None else (None, [None] * 4)
        scale = current_scale(self.scaler) if self._compute_dtype is not None else None
        scale_key = out.add(scale) if isinstance(scale, torch.Tensor) else None
        subnormal_keys = [out.add(t) for t in self._subnormal] if self._subnormal is not None else None
        rows = []
        for i in self._measured:
            pre = self._pre[i]
            family, act, saturated, dead = self._act.get(i, (None, None, None, None))
            in_norm = self._in_norm.get(i)
            rows.append((i, family, pre.n, act.n if act else 1, dead[1] if dead else 1, in_norm[1] if in_norm else 1, [
                out.add(pre.mean), out.add(pre.deviation),
                out.add(act.mean if act else None), out.add(act.deviation if act else None),
                out.add(saturated), out.add(dead[0] if dead else None), out.add(self._layer_grad.get(i)),
                out.add(self._weight_norm.get(i)), out.add(delta.get(i)), out.add(in_norm[0] if in_norm else None),
            ]))
        out.read()

        layers = []
        for i, family, n_pre, n_act, n_units, n_in, k in rows:
            name, _, kind = self.layers[i]
            act_dev, dead_units = out.get(k[3], None), out.get(k[5], None)
            weight_norm, change = out.get(k[7]), out.get(k[8], None)
            layers.append(LayerStats(
                name=name, kind=kind, depth_index=self._depth[i], activation=family,
                pre_mean=out.get(k[0]), pre_std=out.get(k[1]) / math.sqrt(n_pre),
                act_mean=out.get(k[2], None), act_std=None if act_dev is None else act_dev / math.sqrt(n_act),
                frac_saturated=out.get(k[4], None),
                frac_dead=None if dead_units is None else dead_units / n_units,
                grad_norm=out.get(k[6], 0.0), weight_norm=weight_norm,
                update_ratio=None if change is None else _ratio(change, weight_norm),
                input_rms=None if (in_norm := out.get(k[9], None)) is None else in_norm / math.sqrt(n_in),
                weight_gain=weight_norm / math.sqrt(self._fan_out[i]) if self._fan_out[i] else None,
            ))
        grads = [out.get(k) for k in grad_keys]
        record = ProbeRecord(
            step=int(self.step or 0), epoch=epoch,
            loss=out.get(loss_key) if loss_key is not None else float(loss),
            grad_norm=math.sqrt(sum(g * g for g in grads)),
            input_mean=out.get(input_keys[0]),
            input_std=out.get(input_keys[1]) / math.sqrt(inputs[0].n) if inputs is not None else math.nan,
            input_absmax=out.get(input_keys[2]), layers=layers, clip_fired=clip_fired, lr=lr,
            output_dim=output_dim, output_rms=out.get(output_keys[0]), output_min=out.get(output_keys[1]),
            output_max=out.get(output_keys[2]), output_rowsum_dev=out.get(output_keys[3]),
            hidden_nonlinear=self._hidden_nonlinear if self._calls > 1 else None,
            output_activation=self._output_activation,
            compute_dtype=_dtype_name(self._compute_dtype),
            weight_dtype=self._weight_dtype(),
            loss_scale=out.get(scale_key) if scale_key is not None else scale,
            grad_subnormal=_share(out.get(subnormal_keys[0]), out.get(subnormal_keys[1]))
            if subnormal_keys is not None else None,
        )
        self._reset()
        return record

    def _weight_dtype(self) -> str | None:
        """The measured weight layers' dtype when it is 16-bit (the first such layer's), else None."""
        for i in self._measured:
            dtype = self.layers[i][1].weight.dtype
            if dtype in (torch.float16, torch.bfloat16):
                return _dtype_name(dtype)
        return None

    def close(self) -> None:
        """Remove every hook and drop the state of an unfinished probe step."""
        self._remove_hooks()
        self._reset()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hooks (registered on armed steps only) ------------------------------------------------------
    def _input_stats(self, x: torch.Tensor) -> None:
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel():
            x = _detached(x)
            self._input = (Moments(x), x.abs().amax())

    def _on_model_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._input is None and (x := _first_tensor(args)) is not None:
            self._input_stats(x)

    def _on_model_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        out = _output_tensor(output)
        if out is not None and self._last_call is not None and self._last_call[2] is out:
            # the forward pass ends in an activation (a sigmoid or softmax head): the output's, not a hidden
            # layer's units — the output/loss check judges it, the unit rules do not
            family, i, _ = self._last_call
            self._output_activation = family
            if i is not None:
                self._act.pop(i, None)
        self._last_call = None
        self._capture.stop(finished=True)
        if out is not None and out.is_floating_point() and out.dim() >= 2 and out.numel():
            o = _detached(out)
            self._output = (int(o.shape[-1]), [torch.linalg.vector_norm(o) / math.sqrt(o.numel()), o.amin(),
                                               o.amax(), (o.sum(-1) - 1).abs_().amax()])
        self._remove_hooks()  # the forward pass is over: later ones (accumulation, evaluation) run hook-free

    def _weight_hook(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor):
                return
            self._calls += 1
            if self._compute_dtype is None and output.dtype in (torch.float16, torch.bfloat16):
                self._compute_dtype = output.dtype      # autocast (or a .half() model) computes in 16 bits
            if self._calls > 1 and self._nonlinear_since:
                self._hidden_nonlinear += 1
            self._nonlinear_since = False
            if i in self._pre:                      # a shared layer's second call: not measured, pairs nothing
                self._pending = None
                return
            self._depth.setdefault(i, len(self._depth))
            self._pre[i] = Moments(_detached(output))
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is not None and x.is_floating_point() and x.numel():
                self._in_norm[i] = (torch.linalg.vector_norm(_detached(x)), x.numel())
            self._pending = i

        return hook

    def _weight_grad_hook(self, i: int) -> Callable[..., None]:
        """On a parametrisation's output (the computed W): keep ∂L/∂W, which no ``.grad`` holds."""

        def keep(grad: torch.Tensor) -> None:
            self._wgrad[i] = grad if i not in self._wgrad else self._wgrad[i] + grad

        def hook(module: nn.Module, args: tuple[Any, ...], weight: torch.Tensor) -> None:
            if weight.requires_grad:
                weight.register_hook(keep)

        return hook

    def _on_activation(self, family: str, u: torch.Tensor | None, output: torch.Tensor) -> None:
        """One activation call seen by ``ActivationCapture`` (a module's or a function's): paired with the weight
        layer that ran last and has no activation yet; any nonlinearity counts for the linear-model check."""
        self._nonlinear_since = True
        i = self._pending
        self._last_call = (family, None if family == "other" else i, output)
        if family == "other" or i is None:
            return
        self._pending = None
        a = _detached(output)
        saturated = dead = None
        if family in SATURATION:
            saturated = fraction_saturated(a, *SATURATION[family])
        elif family in DEAD_FAMILIES:
            # The activation's input (an in-place ReLU hands its output here: relu(u) <= 0 ⇔ u <= 0 alike).
            src = u.detach() if u is not None and u.shape == a.shape else a
            dead = count_dead(src, 1 if self.layers[i][2].startswith("conv") else -1)
        self._act[i] = (family, Moments(a), saturated, dead)


def _output_tensor(output: Any) -> torch.Tensor | None:
    """The model's prediction: the tensor itself, a ``.logits`` attribute (Hugging Face outputs), or the first
    tensor of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, dict) else getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)):
        return next((t for t in output if isinstance(t, torch.Tensor)), None)
    return None


def current_scale(scaler: Any) -> torch.Tensor | float | None:
    """A loss scaler's current scale — a device tensor where the scaler keeps one (no host sync) — or None
    without an enabled scaler (``UNKNOWN`` and None included)."""
    if scaler is UNKNOWN or scaler is None or not getattr(scaler, "is_enabled", lambda: True)():
        return None
    held = getattr(scaler, "_scale", None)   # torch.amp.GradScaler's scale tensor (made on first use)
    if isinstance(held, torch.Tensor):
        return held.detach().float()
    try:
        return float(scaler.get_scale())
    except (AttributeError, TypeError, RuntimeError):
        return None


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    """``torch.float16`` → ``"float16"`` (None passes through)."""
    return str(dtype).removeprefix("torch.") if dtype is not None else None


def _share(part: float | None, whole: float | None) -> float | None:
    """part / whole, None when there is nothing to divide."""
    return part / whole if part is not None and whole else None


def _ratio(change: float, weight_norm: float) -> float:
    """‖ΔW‖/‖W‖ without dividing by zero (0/0 → nan, x/0 → inf)."""
    if weight_norm == 0:
        return math.nan if change == 0 or math.isnan(change) else math.inf
    return change / weight_norm
