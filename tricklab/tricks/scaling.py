"""Input scaling: bring every input feature into a range where floating point and the activations work well.

The lesson: values inside a network should stay in a reasonable range, typically [−1, 1] or [0, 1], because
floating point cannot add numbers of very different magnitudes exactly (its example: 1e−10 + 1e10 gives 1e10),
and most activations are non-linear around [−1, 1]. So the inputs are scaled first.

"Per feature" means per element of the non-batch shape: for images (N, C, H, W) every pixel of every channel
gets its own statistics. The statistics come from the training split only and are then applied, unchanged, to
validation and test data — otherwise information from those splits leaks into training. A constant feature
(max = min, or σ = 0) is divided by 1 instead of 0, so it maps to 0 (``minmax01``, ``standard``) or −1
(``minmax11``) rather than to NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tricklab.errors import InputError
from tricklab.registry import Registry

SCALINGS = Registry("scaling")
SCALINGS.register(
    "none",
    formula="x' = x",
    reference="—",
    note="the baseline for the lesson's claim that scaling helps",
    obj="none",
)
SCALINGS.register(
    "minmax01",
    formula="x' = (x − min)/(max − min), per feature, train-split statistics",
    reference="standard practice (e.g. sklearn.preprocessing.MinMaxScaler)",
    lesson="alle Eingabedaten auf den Bereich [0..1] skalieren",
    note="statistics from the training split only; a constant feature is divided by 1",
    obj="minmax01",
)
SCALINGS.register(
    "minmax11",
    formula="x' = 2·(x − min)/(max − min) − 1, per feature, train-split statistics",
    reference="standard practice",
    lesson="alle Eingabedaten auf den Bereich [-1..1] skalieren",
    note="statistics from the training split only; a constant feature is divided by 1",
    obj="minmax11",
)
SCALINGS.register(
    "standard",
    formula="x' = (x − μ)/σ, per feature, train-split statistics (σ with 1/N)",
    reference="standard practice (e.g. sklearn.preprocessing.StandardScaler); LeCun et al. 1998, Efficient BackProp",
    lesson="(mean 0 / std 1 inputs are the premise of the N(0,1/√n_in) initialisation)",
    note="the lesson names only the [0,1] and [−1,1] ranges; a constant feature is divided by 1",
    obj="standard",
)


@dataclass
class Scaler:
    """A fitted per-feature scaling x' = (x − center)/scale (then 2x' − 1 for ``minmax11``).

    ``center`` is min (minmax) or μ (standard); ``scale`` is max − min or σ, with 0 replaced by 1. Both have the
    shape of one example (the non-batch shape); for ``none`` they are ``None``. The statistics are computed and
    stored in float64; ``transform`` returns the input's dtype.
    """

    name: str
    center: Tensor | None = None
    scale: Tensor | None = None

    @classmethod
    def fit(cls, name: str, x_train: Tensor) -> Scaler:
        """The scaler ``name`` with statistics of ``x_train`` (N, *feature_shape) over its first dimension."""
        return fit_scaler(name, x_train)

    def transform(self, x: Tensor) -> Tensor:
        """Scale ``x`` (N, *feature_shape) with the fitted statistics.

        Computed in float64 (a one-off preprocessing step: subtracting a large offset from a float32 feature
        would otherwise lose the digits that matter — the lesson's floating point point) and returned in ``x``'s
        floating dtype; integer inputs (uint8 images) come back as the default float dtype.
        """
        if self.center is None or self.scale is None:
            return x
        if x.shape[1:] != self.center.shape:
            raise ValueError(
                f"scaler {self.name!r} was fitted on examples of shape {tuple(self.center.shape)}, "
                f"got a batch of shape {tuple(x.shape)}"
            )
        out_dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        work = _work_dtype(x)
        scaled = (x.to(work) - self.center.to(x.device, work)) / self.scale.to(x.device, work)
        if self.name == "minmax11":
            scaled = 2 * scaled - 1
        return scaled.to(out_dtype)

    __call__ = transform

    def inverse_transform(self, x: Tensor) -> Tensor:
        """Undo ``transform``: x = x'·scale + center (with x' ← (x' + 1)/2 first for ``minmax11``)."""
        if self.center is None or self.scale is None:
            return x
        work = _work_dtype(x)
        y = x.to(work)
        if self.name == "minmax11":
            y = (y + 1) / 2
        return (y * self.scale.to(x.device, work) + self.center.to(x.device, work)).to(x.dtype)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the scaler (save it with the run: ``torch.save(scaler.state_dict())``)."""
        return {"name": self.name, "center": self.center, "scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict()``."""
        name = _canonical(state["name"])
        if (state["center"] is None) != (name == "none") or (state["scale"] is None) != (name == "none"):
            raise ValueError(f"inconsistent scaler state for {name!r}: center/scale must be set unless 'none'")
        self.name, self.center, self.scale = name, state["center"], state["scale"]

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Scaler:
        """A new scaler restored from ``state_dict()``."""
        scaler = cls("none")
        scaler.load_state_dict(state)
        return scaler


def _work_dtype(x: Tensor) -> torch.dtype:
    """float64 for the arithmetic, except on Apple's MPS backend, which has no float64."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def _canonical(name: str) -> str:
    if name not in SCALINGS:
        raise InputError("data.scale", f"unknown scaling {name!r}", SCALINGS.allowed())
    return SCALINGS.canonical(name)


def fit_scaler(name: str, x_train: Tensor) -> Scaler:
    """Fit scaling ``name`` (see ``SCALINGS``) on the training split ``x_train`` of shape (N, *feature_shape).

    minmax01: center = min, scale = max − min;  minmax11: the same, then x' ← 2x' − 1;
    standard: center = μ, scale = σ = √(mean((x − μ)²)) (population std, as sklearn's StandardScaler).
    A scale of 0 (a constant feature) is replaced by 1. Statistics computed and stored in float64 on the CPU.
    """
    name = _canonical(name)
    if name == "none":
        return Scaler("none")
    if x_train.dim() < 1 or x_train.shape[0] == 0:
        raise InputError("data.scale", f"cannot fit {name!r} scaling on an empty training split")
    x = x_train.detach().to(device="cpu", dtype=torch.float64)  # CPU: saved with the run, moved on use
    if name == "standard":
        center = x.mean(dim=0)
        scale = x.std(dim=0, correction=0)
    else:
        center = x.amin(dim=0)
        scale = x.amax(dim=0) - center
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return Scaler(name, center, scale)


_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def float_epsilons() -> dict[str, float]:
    """Machine epsilon (the gap between 1 and the next representable number) of the training dtypes.

    float32 ≈ 1.19e−7, float16 ≈ 9.77e−4, bfloat16 ≈ 7.81e−3: a sum a + b loses b entirely once
    |b| < eps/2·|a|. For the catalogue's note on the lesson's floating point example.
    """
    return {name: torch.finfo(dtype).eps for name, dtype in _FLOAT_DTYPES.items()}


def lesson_float_example(
    small: float = 1e-10, large: float = 1e10, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """The lesson's example: in float32, 1e−10 + 1e10 == 1e10 — the small summand vanishes completely.

    The lesson says the smaller value is brought to the larger one's exponent and its mantissa is lost: the
    spacing of float32 numbers near 1e10 is 1024, far more than 1e−10 (it is lost in float64 too, whose spacing
    there is ~2e−6). The lesson says "wahrscheinlich" (probably); in IEEE arithmetic it is certain.
    Returns plain data for the catalogue (JSON): ``dtype``, ``small``, ``large``, ``result``, ``small_lost`` and
    ``text``, a sentence saying it.
    """
    a = torch.tensor(small, dtype=dtype)
    b = torch.tensor(large, dtype=dtype)
    result = a + b
    lost = bool(result == b)
    name = str(dtype).removeprefix("torch.")
    text = f"in {name}, {small:g} + {large:g} = {result.item():g}" + (f": the {small:g} is lost" if lost else "")
    return {"dtype": name, "small": small, "large": large, "result": result.item(), "small_lost": lost, "text": text}
