"""Per-member probe statistics of a stacked population step — what ``tricklab.diagnose.probes.Probe`` measures
for one model, computed for every member at once from the stacked tensors.

For each member and each weight layer: the layer's output (mean, population std), the output of the activation
that follows it (mean, std, the share of saturated tanh/sigmoid units, the share of dead ReLU units — channels
of a convolution, features of a dense layer — whose activation input is <= 0 for the whole batch), ‖∂L/∂W‖
before clipping, ‖W‖ and the update ratio ‖ΔW‖/‖W‖ of the step. Every reduction is over one member's slice
(dim 0 after ``per_member``), never across members. All numbers are gathered on the device and read with one
``.tolist()`` per probe step. The records are plain data (``MemberProbe``: the fields of the doctor's
``ProbeRecord``/``LayerStats``) so that ``tricklab.train`` stays below ``tricklab.diagnose``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.population.stacked import ProbeTape, StackedNet, per_member
from tricklab.tricks.activations import RECTIFIERS as DEAD_FAMILIES
from tricklab.tricks.activations import SATURATION
from tricklab.tricks.init import layer_kind


@dataclass
class MemberProbe:
    """One member's probe step: the fields of ``tricklab.diagnose.records.ProbeRecord``; ``layers`` holds the
    fields of ``LayerStats`` as dicts."""

    step: int
    epoch: int
    loss: float
    grad_norm: float
    input_mean: float
    input_std: float
    input_absmax: float
    lr: float
    layers: list[dict[str, Any]] = field(default_factory=list)


def layer_kinds(template: nn.Module) -> dict[str, str]:
    """Module path → ``linear``/``conv1d``/... for every weight layer of ``template``."""
    return {name: kind for name, module in template.named_modules() if (kind := layer_kind(module)) is not None}


def _moments(t: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per member (dim 0): mean, ‖t − mean‖ (two-pass, as the probe's ``Moments``) and the element count."""
    flat = t.reshape(t.shape[0], -1)
    mean = flat.mean(dim=1)
    return mean, torch.linalg.vector_norm(flat - mean.unsqueeze(1), dim=1), max(flat.shape[1], 1)


class PopulationProbe:
    """Arms one forward pass, snapshots weights before the update, and turns the step into ``MemberProbe``s."""

    def __init__(self, net: StackedNet, kinds: dict[str, str]) -> None:
        self.net = net
        self.kinds = kinds
        self.tape: ProbeTape | None = None
        self._grad_norm: dict[str, Tensor] = {}
        self._weight_norm: dict[str, Tensor] = {}
        self._before: dict[str, Tensor] = {}

    def begin(self) -> ProbeTape:
        self.tape = ProbeTape()
        return self.tape

    @torch.no_grad()
    def after_backward(self) -> None:
        """‖∂L/∂W‖ (before clipping) and ‖W‖ per member, and a copy of W for the update ratio."""
        assert self.tape is not None
        for name in self.tape.order:
            w = self.net.param(f"{name}.weight")
            K = w.shape[0]
            g = self.net.grad(f"{name}.weight")
            self._grad_norm[name] = torch.linalg.vector_norm(g.reshape(K, -1), dim=1)
            self._weight_norm[name] = torch.linalg.vector_norm(w.reshape(K, -1), dim=1)
            self._before[name] = w.detach().clone()

    @torch.no_grad()
    def after_step(self, *, step: int, epochs: list[int], x: Tensor, losses: Tensor, grad_norms: Tensor,
                   lrs: list[float]) -> list[MemberProbe]:
        """One ``MemberProbe`` per member (in row order) for the step that just ran; disarms the probe."""
        tape, net = self.tape, self.net
        assert tape is not None
        K = x.shape[0]
        rows: list[Tensor] = [losses.detach(), grad_norms]
        xm, xd, xn = _moments(x)
        rows += [xm, xd, x.reshape(K, -1).abs().amax(dim=1)]
        plan: list[tuple[str, str | None, int, int, int, int]] = []   # name, family, n_pre, n_act, n_units, index
        for name in tape.order:
            pre, layout = tape.pre[name]
            pm, pd, pn = _moments(per_member(pre, layout, K))
            w = net.param(f"{name}.weight")
            change = torch.linalg.vector_norm((w - self._before[name]).reshape(K, -1), dim=1)
            start = len(rows)
            rows += [pm, pd, self._grad_norm[name], self._weight_norm[name], change]
            family, n_act, n_units = None, 1, 1
            if name in tape.act:
                u, a, a_layout, family = tape.act[name]
                a4 = per_member(a, a_layout, K)
                am, ad, n_act = _moments(a4)
                rows += [am, ad]
                if family in SATURATION:
                    centre, width = SATURATION[family]
                    d = (a4.reshape(K, -1) - centre).abs()
                    rows.append(d.sub_(width).clamp_(min=0).sign_().mean(dim=1))
                elif family in DEAD_FAMILIES:
                    u4 = per_member(u, a_layout, K)
                    peak = u4.amax(dim=(1, 3))                       # (K, units)
                    rows.append((peak <= 0).sum(dim=1).float())
                    n_units = max(peak.shape[1], 1)
            plan.append((name, family, pn, n_act, n_units, start))
        values = torch.stack([r.to(rows[0].device, torch.float64) for r in rows]).tolist()   # the one host sync

        out = []
        for k in range(K):
            col = [float(row[k]) for row in values]

            def v(i: int, col: list[float] = col) -> float:
                return col[i]

            layers = []
            for depth, (name, family, n_pre, n_act, n_units, i) in enumerate(plan):
                has_act = name in tape.act
                weight_norm, change = v(i + 3), v(i + 4)
                extra = v(i + 7) if has_act and (family in SATURATION or family in DEAD_FAMILIES) else None
                layers.append({
                    "name": name, "kind": self.kinds.get(name, "linear"), "depth_index": depth, "activation": family,
                    "pre_mean": v(i), "pre_std": v(i + 1) / math.sqrt(n_pre),
                    "act_mean": v(i + 5) if has_act else None,
                    "act_std": v(i + 6) / math.sqrt(n_act) if has_act else None,
                    "frac_saturated": extra if family in SATURATION else None,
                    "frac_dead": extra / n_units if extra is not None and family in DEAD_FAMILIES else None,
                    "grad_norm": v(i + 2), "weight_norm": weight_norm,
                    "update_ratio": _ratio(change, weight_norm),
                })
            out.append(MemberProbe(step=step, epoch=epochs[k], loss=v(0), grad_norm=v(1), input_mean=v(2),
                                   input_std=v(3) / math.sqrt(xn), input_absmax=v(4), lr=lrs[k], layers=layers))
        self.tape = None
        self._grad_norm, self._weight_norm, self._before = {}, {}, {}
        return out


def _ratio(change: float, weight_norm: float) -> float:
    """‖ΔW‖/‖W‖ without dividing by zero (0/0 → nan, x/0 → inf), as the probe's."""
    if weight_norm == 0:
        return math.nan if change == 0 or math.isnan(change) else math.inf
    return change / weight_norm
